"""``vpf run`` against a Prefect server: INFO logs reach the server, the terminal shows none."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from catalog.store import Catalog


VPF = str(Path(sys.executable).parent / "vpf")
TINY_ARGS = ["--engine", "null", "--frames", "17", "--height", "64", "--width", "96", "--fps", "8"]


def test_run_ships_info_logs_to_the_server_and_keeps_the_terminal_quiet(prefect_harness, tiny_samples, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    manifest, _ = tiny_samples
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})  # fmt: skip
    cat = tmp_path / "cat"
    proc = subprocess.run(
        [VPF, "run", str(manifest), "--catalog", str(cat), "--no-gallery", "--no-previews", *TINY_ARGS],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| INFO" not in proc.stderr, proc.stderr[-3000:]

    flow_run_id = Catalog(str(cat)).query("SELECT flow_run_id FROM runs", read_only=True).to_pylist()[0]["flow_run_id"]
    assert flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))
    info = [log.message for log in logs if log.level == 20]
    assert any("catalog" in m for m in info), [log.message for log in logs]
