"""Session fixtures: the tiny annotation models, built once and saved to folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.annotate import tiny_models


@pytest.fixture(scope="session")
def grounding_dino(tmp_path_factory) -> Path:
    return tiny_models.build_grounding_dino(tmp_path_factory.mktemp("models") / "tiny-grounding-dino")


@pytest.fixture(scope="session")
def owlv2(tmp_path_factory) -> Path:
    return tiny_models.build_owlv2(tmp_path_factory.mktemp("models") / "tiny-owlv2")


@pytest.fixture(scope="session")
def sam2_video(tmp_path_factory) -> Path:
    return tiny_models.build_sam2_video(tmp_path_factory.mktemp("models") / "tiny-sam2-video")


@pytest.fixture(scope="session")
def sam3_video(tmp_path_factory) -> Path:
    return tiny_models.build_sam3_video(tmp_path_factory.mktemp("models") / "tiny-sam3-video")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread on a shared machine; restored after each test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
