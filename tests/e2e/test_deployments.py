"""End-to-end: prefect.yaml deployed with ``prefect deploy --all`` on a real Prefect server, a worker per pool,
``build-pairs`` on the cpu pool handing its render batches to the ``render`` deployment on the gpu pool."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from catalog.store import Catalog


pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

TINY = {"num_frames": 17, "height": 64, "width": 96, "fps": 8.0}  # frames 8k+1, sizes even: the smallest sane clip


def _samples(tmp_path: Path) -> tuple[Path, int]:
    from tasks.synthetic import write_samples

    manifest = write_samples(
        tmp_path / "samples", cameras=("static", "pan"), num_frames=17, height=64, width=96, write_background=False
    )
    with manifest.open() as f:
        n_objects = sum(1 for _ in csv.DictReader(f))
    return manifest, n_objects


def test_deploy_all_and_route_rendering_to_the_gpu_pool(prefect_server, tmp_path: Path) -> None:
    manifest, n_objects = _samples(tmp_path)
    catalog = tmp_path / "catalog"

    out = prefect_server.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=REPO, timeout=300)
    for name in ("build-pairs/build-pairs", "render/render", "compact/compact", "export/export"):
        assert name in out.stdout + out.stderr, f"{name} not deployed:\n{out.stdout}\n{out.stderr}"

    prefect_server.start_worker("cpu", name="cpu-e2e")
    prefect_server.start_worker("gpu", name="gpu-e2e")
    params = {
        "config": {
            "source": str(manifest),
            "catalog": str(catalog),
            "render": {"engine": "null", "previews": False},
            "geometry": TINY,
            "batch_size": 2,
            "render_deployment": "render/render",
        }
    }
    run = prefect_server.run(
        ["prefect", "deployment", "run", "build-pairs/build-pairs", "--params", json.dumps(params), "--watch",
         "--watch-interval", "2", "--watch-timeout", "420"],
        timeout=480,
        check=False,
    )  # fmt: skip
    logs = prefect_server.log("cpu-e2e") + prefect_server.log("gpu-e2e")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- worker logs\n{logs[-6000:]}"

    # Rendering ran as render flow runs picked up by the gpu worker, holding the worker's concurrency limit.
    with prefect_server.settings():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("render/render")
            renders = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))
            )
            limit = client.read_global_concurrency_limit_by_name("gpu:gpu-e2e")
    assert renders and all(r.state.is_completed() for r in renders), [(r.name, r.state) for r in renders]
    assert {r.work_pool_name for r in renders} == {"gpu"}
    assert limit.limit == 1 and limit.active_slots == 0

    cat = Catalog(str(catalog))
    pairs = cat.query("SELECT pair_id, edit_type, render_id FROM pairs").to_pylist()
    assert len(pairs) == 2 * n_objects  # one removal render per object → a remove and an add pair
    assert sorted(p["edit_type"] for p in pairs).count("add") == n_objects
    raw = cat.query(f"SELECT count(*) AS n FROM read_parquet('{cat.table_dir('pairs')}/*.parquet')").column(0)[0]
    assert raw.as_py() == len(pairs), "a pair row was written twice"
    runs = cat.query("SELECT status, n_pairs, flow_name FROM runs").to_pylist()
    assert runs == [{"status": "completed", "n_pairs": 2 * n_objects, "flow_name": "build-pairs"}]
