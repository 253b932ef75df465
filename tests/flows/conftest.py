"""One Prefect test harness (a temporary local API) for every flow test in the session, and tiny sample inputs."""

from __future__ import annotations

import csv
import os
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


@pytest.fixture(scope="session")
def vpf_env(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> dict[str, str]:
    """``vpf`` subprocesses talk to the session harness's API: a running API as a deployment would have, and no
    ephemeral server to start per process (about 10 s each; ``vpf demo`` covers ephemeral mode)."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {
        **env,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


@pytest.fixture(scope="session")
def annotate_env(vpf_env: dict[str, str]) -> dict[str, str]:
    """:func:`vpf_env` for ``vpf run``s that load the tiny annotation models: offline, one OpenMP thread."""
    return {**vpf_env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
