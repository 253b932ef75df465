"""End-to-end: prefect.yaml deployed with ``prefect deploy --all`` on a real Prefect server, a worker per pool,
``build-pairs`` on the cpu pool handing its render batches to the ``render`` deployment on the gpu pool; ``compact``
and ``export`` run on that catalog; and every deployment run as shipped either works or refuses in one clear message
naming the parameter to set."""

from __future__ import annotations

import csv
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from catalog.store import Catalog


pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 240.0
TINY = {"num_frames": 17, "height": 64, "width": 96, "fps": 8.0}  # frames 8k+1, sizes even: the smallest sane clip


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """prefect.yaml deployed with ``prefect deploy --all`` from the repository root, a cpu and a gpu worker."""
    out = prefect_server.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=REPO, timeout=300)
    for name in ("build-pairs/build-pairs", "render/render", "compact/compact", "export/export"):
        assert name in out.stdout + out.stderr, f"{name} not deployed:\n{out.stdout}\n{out.stderr}"
    prefect_server.start_worker("cpu", name="cpu-e2e")
    prefect_server.start_worker("gpu", name="gpu-e2e")
    return prefect_server


def _start(server, deployment: str, params: dict[str, Any] | None = None) -> uuid.UUID:
    """``prefect deployment run DEPLOYMENT`` (with ``--params`` on top of the deployment's own when given); the
    flow run's id."""
    args = ["prefect", "deployment", "run", deployment] + (["--params", json.dumps(params)] if params else [])
    out = server.run(args, timeout=120)
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert match, out.stdout
    return uuid.UUID(match.group(1))


def _finished(server, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The flow runs ``ids`` once each is in a final state (waits up to ``WAIT_S``)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + WAIT_S
    with server.settings(), get_client(sync_client=True) as client:
        while True:
            runs = {i: client.read_flow_run(i) for i in ids}
            if all(r.state and r.state.is_final() for r in runs.values()) or time.monotonic() > deadline:
                break
            time.sleep(2)
    logs = server.log("cpu-e2e") + server.log("gpu-e2e")
    assert all(r.state and r.state.is_final() for r in runs.values()), (
        f"{[(r.name, r.state) for r in runs.values()]}\n--- worker logs\n{logs[-6000:]}"
    )
    return runs


def _samples(tmp_path: Path) -> tuple[Path, int]:
    from tasks.synthetic import write_samples

    manifest = write_samples(
        tmp_path / "samples", cameras=("static", "pan"), num_frames=17, height=64, width=96, write_background=False
    )
    with manifest.open() as f:
        n_objects = sum(1 for _ in csv.DictReader(f))
    return manifest, n_objects


def test_deploy_all_and_route_rendering_to_the_gpu_pool(deployed, tmp_path: Path) -> None:
    manifest, n_objects = _samples(tmp_path)
    catalog = tmp_path / "catalog"
    prefect_server = deployed

    params = {
        "config": {
            "source": str(manifest),
            "catalog": str(catalog),
            "render": {"engine": "null"},
            "score": {"previews": False},
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
            parents = {client.read_task_run(r.parent_task_run_id).flow_run_id for r in renders if r.parent_task_run_id}
    assert renders and all(r.state.is_completed() for r in renders), [(r.name, r.state) for r in renders]
    # ... each of them a child of the build-pairs run that dispatched it (the UI shows them as its subflows)
    (build,) = Catalog(str(catalog)).query("SELECT flow_run_id FROM runs").to_pylist()
    assert all(r.parent_task_run_id for r in renders) and {str(p) for p in parents} == {build["flow_run_id"]}
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

    # Run names say what each run works on; renders are named after their batch.
    with prefect_server.settings(), get_client(sync_client=True) as client:
        build_run = client.read_flow_run(uuid.UUID(build["flow_run_id"]))
    assert build_run.name == f"build-pairs {manifest}"
    assert all(re.fullmatch(r"render \S+ \d+/\d+\.\d+", r.name) for r in renders), [r.name for r in renders]

    # compact and export, deployed as shipped, on this catalog: the run's parameters on top of prefect.yaml's
    out = tmp_path / "exported"
    every = {"format": "parquet", "decisions": ["accepted", "rejected"]}  # the null engine's pairs are rejected
    started = [
        _start(prefect_server, "compact/compact", {"catalog": str(catalog)}),
        _start(prefect_server, "export/export", {"catalog": str(catalog), "out_url": str(out), "config": every}),
    ]
    compacted, exported = _finished(prefect_server, started).values()
    assert compacted.state.is_completed() and exported.state.is_completed(), (compacted.state, exported.state)
    assert (compacted.name, exported.name) == (f"compact {catalog}", f"export {out}")
    assert list(out.rglob("*.parquet")), "the export wrote no parquet file"
    compacted_cat = Catalog(str(catalog))
    assert len(compacted_cat.fragments("pairs")) == 1, "compact left the pairs in several fragments"
    assert compacted_cat.query("SELECT count(*) AS n FROM pairs").column(0)[0].as_py() == 2 * n_objects


def test_shipped_defaults_run_or_name_the_parameter_to_set(deployed) -> None:
    """Each deployment started with only what prefect.yaml sets: ``./vpf-data`` and ``./incoming`` resolve against
    the deployment's working directory (the repository root, where ``prefect deploy`` ran), which holds neither, so
    each run fails at once, naming the path it resolved, that directory and the parameter to set; nothing is
    written. (``render`` takes its jobs from ``build-pairs`` only.)"""
    for shipped in ("vpf-data", "incoming", "exports"):
        if (REPO / shipped).exists():
            pytest.skip(f"./{shipped} exists in the checkout: the shipped defaults would run on it")
    names = ("compact/compact", "export/export", "build-pairs/build-pairs")
    runs = dict(zip(names, _finished(deployed, [_start(deployed, name) for name in names]).values()))
    assert {name: run.name for name, run in runs.items()} == {
        "compact/compact": "compact ./vpf-data",
        "export/export": "export ./exports/pairs",
        "build-pairs/build-pairs": "build-pairs ./incoming",
    }
    expected = {
        "compact/compact": [f"NoCatalogError: no catalog at {REPO / 'vpf-data'}", "set parameter `catalog` of "
                            "deployment compact/compact to the catalog's absolute path or URL"],
        "export/export": [f"NoCatalogError: no catalog at {REPO / 'vpf-data'}", "set parameter `catalog` of "
                          "deployment export/export"],
        "build-pairs/build-pairs": ["SourceNotFoundError: no source at ./incoming (no such file, folder or object",
                                    "set parameter `config.source` of deployment build-pairs/build-pairs"],
    }  # fmt: skip
    for name, run in runs.items():
        message = run.state.message or ""
        assert run.state.is_failed(), (name, run.state)
        for needle in expected[name]:
            assert needle in message, (name, needle, message)
        relative = "./incoming" if name.startswith("build-pairs") else "./vpf-data"
        assert f"{relative} is relative to the flow run's working directory {REPO}" in message, (name, message)
    for shipped in ("vpf-data", "incoming", "exports"):
        assert not (REPO / shipped).exists(), f"a refused run wrote ./{shipped}"
