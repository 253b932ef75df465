"""One Prefect test harness (a temporary local API) for every flow test in the session, and tiny sample inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


TINY = {"num_frames": 17, "height": 64, "width": 96, "fps": 8.0}  # frames 8k+1, even sizes: the smallest sane clip


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Synthetic scenes (static, pan) at 17×64×96 with provided masks: ``(manifest path, number of objects)``."""
    from tasks.synthetic import write_samples

    manifest = write_samples(
        tmp_path_factory.mktemp("samples"), cameras=("static", "pan"), write_background=False, **TINY
    )
    with manifest.open() as f:
        return manifest, sum(1 for _ in csv.DictReader(f))
