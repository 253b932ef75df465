"""End-to-end: prefect.yaml deployments on a real Prefect server with cpu and gpu workers."""

from __future__ import annotations

import pytest


pytestmark = pytest.mark.slow


def test_server_has_work_pools(prefect_server) -> None:
    out = prefect_server.run(["prefect", "work-pool", "ls"]).stdout
    assert "cpu" in out and "gpu" in out
