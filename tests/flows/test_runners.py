"""flows/runners.py: the CPU stages' task runners, each run for real on a local cluster (under the session's Prefect
test harness, tests/flows/conftest.py)."""

from __future__ import annotations

import os

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from catalog.store import Catalog
from flows.runners import TASK_RUNNERS, make_task_runner
from tasks.config import RunConfig


@task
def _where_am_i(item: int) -> dict:
    """Square ``item`` and report the process (and, under Dask/Ray, the cluster worker) that ran the task."""
    info: dict = {"item": item, "square": item * item, "pid": os.getpid()}
    try:
        from distributed import get_worker

        info["dask_worker"] = get_worker().address
    except (ImportError, ValueError):  # ValueError: not inside a Dask worker
        info["dask_worker"] = None
    try:
        import ray

        info["ray_worker"] = ray.get_runtime_context().get_worker_id() if ray.is_initialized() else None
    except ImportError:
        info["ray_worker"] = None
    return info


@flow
def _fan_out(items: list[int]) -> list[dict]:
    return [f.result() for f in _where_am_i.map(items)]


def _run_with(runner_name: str, items: list[int], **kwargs) -> list[dict]:
    return _fan_out.with_options(task_runner=make_task_runner(runner_name, **kwargs))(items)


def test_default_is_prefects_thread_pool() -> None:
    assert isinstance(make_task_runner(), ThreadPoolTaskRunner)
    assert make_task_runner("default", workers=3)._max_workers == 3
    assert TASK_RUNNERS == ("default", "dask", "ray")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("spark", {}, "not one of"),
        ("default", {"address": "tcp://127.0.0.1:8786"}, "address= needs"),
        ("dask", {"address": "tcp://127.0.0.1:8786", "workers": 2}, "not both"),
        ("dask", {"workers": 0}, "workers must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_task_runner(name, **kwargs)  # type: ignore[arg-type]


def test_default_runner_runs_tasks_in_the_flow_process() -> None:
    results = _run_with("default", [1, 2, 3])
    assert [r["square"] for r in results] == [1, 4, 9]
    assert {r["pid"] for r in results} == {os.getpid()}


def test_ray_runner_runs_tasks_on_a_local_cluster() -> None:
    pytest.importorskip("prefect_ray", reason="the optional 'ray' extra is not installed")
    results = _run_with("ray", [1, 2, 3], workers=1)
    assert [r["square"] for r in results] == [1, 4, 9]
    assert all(r["ray_worker"] for r in results), results
    assert os.getpid() not in {r["pid"] for r in results}


@flow
def _ingest_on_runner(batches: list, catalog: Catalog, config: RunConfig) -> dict[str, list]:
    """The real ingest step, one task per batch, next to the probe task (one cluster start for both)."""
    from flows.prefect_tasks import ingest_task
    from tasks.steps.ingest import make_annotators

    annotators = make_annotators(config, catalog)
    futures = [ingest_task.submit(b, catalog, config.geometry, annotators, run_id="run-dask") for b in batches]
    probes = _where_am_i.map([1, 2, 3, 4])
    return {"outputs": [f.result() for f in futures], "probes": [p.result() for p in probes]}


def test_dask_runs_the_real_ingest_stage_on_a_local_cluster(tiny_samples, tmp_path) -> None:
    from tasks.steps.discover import discover

    manifest, n_objects = tiny_samples
    config = RunConfig(source=str(manifest), geometry={"num_frames": 17, "fps": 8.0, "height": 64, "width": 96})
    items, failures = discover(config)
    assert items and not failures
    catalog = Catalog(tmp_path / "cat")
    runner = make_task_runner("dask", workers=2)
    result = _ingest_on_runner.with_options(task_runner=runner)([[item] for item in items], catalog, config)
    outputs, probes = result["outputs"], result["probes"]

    # The tasks ran in the cluster's worker processes, not in the flow's.
    assert [r["square"] for r in probes] == [1, 4, 9, 16]
    assert all(r["dask_worker"] for r in probes), probes
    assert os.getpid() not in {r["pid"] for r in probes}

    objects = [row for out in outputs for row in out.rows.get("objects", [])]
    assert len(objects) == n_objects and not [f for out in outputs for f in out.failures]
    # The clips the worker processes encoded are in the catalog, readable from here.
    for out in outputs:
        for clip in out.rows["clips"]:
            assert catalog.read_media(clip["video_uri"])[4:8] == b"ftyp"


def test_build_pairs_ingests_on_a_dask_cluster_and_makes_the_same_pairs(tiny_samples, tmp_path) -> None:
    from flows.build_pairs import build_pairs
    from tests.flows.conftest import TINY

    manifest, n_objects = tiny_samples
    common = {"source": str(manifest), "render": {"engine": "null"}, "geometry": TINY, "batch_size": 1}
    threads = build_pairs(RunConfig(catalog=str(tmp_path / "threads"), gallery=False, **common))
    dask = build_pairs.with_options(task_runner=make_task_runner("dask", workers=2))(
        RunConfig(catalog=str(tmp_path / "dask"), gallery=False, ingest_in_flight=2, **common)
    )
    assert dask.status == threads.status == "completed"
    assert dask.counts["pairs"] == threads.counts["pairs"] == 2 * n_objects
    ids = "SELECT pair_id FROM pairs ORDER BY pair_id"
    assert Catalog(tmp_path / "dask").query(ids) == Catalog(tmp_path / "threads").query(ids)  # same ids, same work
