"""Scale-out end to end: one Prefect server, two workers on a gpu pool and one on a cpu pool, the catalog on a real
S3-compatible server, credentials only in the workers' environment.

- A run spread over both gpu workers produces every pair exactly once.
- SIGKILL of a gpu worker and of its flow-run process in the middle of a render leaves that flow run ``Crashed``
  (flow-run heartbeats + an automation, Prefect's zombie detection); rerunning completes the work, no duplicates.
- The S3 secret appears in no catalog row and no log, parameter or artifact.

The deployments are those of prefect.yaml (build-pairs, render), deployed under ``*-fleet`` names on ``*-fleet``
pools of the session's Prefect server, so workers other tests left on the ``cpu``/``gpu`` pools take no part.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import yaml

from catalog.schema import TABLES
from catalog.store import Catalog
from tests.conftest import kill_tree
from tests.e2e.conftest import REPO, PrefectServer
from tests.s3server import s3_server


pytestmark = pytest.mark.slow

GPU_POOL, CPU_POOL = "gpu-fleet", "cpu-fleet"
BUILD, RENDER = "build-pairs/build-pairs-fleet", "render/render-fleet"
TINY = {"num_frames": 17, "height": 64, "width": 96, "fps": 8.0}  # frames 8k+1, even sides
HEARTBEAT_S = 30  # Prefect's minimum flow-run heartbeat interval
ZOMBIE_AFTER_S = 40  # no heartbeat for this long: the flow run is marked Crashed


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def fleet(prefect_server: PrefectServer, s3, tmp_path_factory):
    """prefect.yaml's build-pairs and render deployed on the fleet pools; workers gpu-1, gpu-2 (one flow run at a
    time each, like one GPU per machine) and cpu-1; the zombie automation. Credentials only in the environment."""
    base = tmp_path_factory.mktemp("fleet")
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    keep = {"build-pairs": ("build-pairs-fleet", CPU_POOL), "render": ("render-fleet", GPU_POOL)}
    spec["deployments"] = [d for d in spec["deployments"] if d["name"] in keep]
    for d in spec["deployments"]:
        d["name"], d["work_pool"]["name"] = keep[d["name"]]
        d.pop("schedules", None)
    fleet_yaml = base / "prefect-fleet.yaml"
    fleet_yaml.write_text(yaml.safe_dump(spec))
    for pool in (GPU_POOL, CPU_POOL):
        prefect_server.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"], timeout=120)
    out = prefect_server.run(
        ["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(fleet_yaml)], cwd=REPO, timeout=300
    )
    assert BUILD in out.stdout + out.stderr and RENDER in out.stdout + out.stderr, out.stdout + out.stderr

    with prefect_server.settings():
        _create_zombie_automation(ZOMBIE_AFTER_S)

    env = {
        # The only place the object store's credentials live: the workers' environment (passed on to flow runs).
        "AWS_ACCESS_KEY_ID": s3.storage_options["key"],
        "AWS_SECRET_ACCESS_KEY": s3.storage_options["secret"],
        "AWS_DEFAULT_REGION": s3.storage_options["client_kwargs"]["region_name"],
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
    }
    workers = {
        "fleet-gpu-1": prefect_server.start_worker(GPU_POOL, name="fleet-gpu-1", limit=1, extra_env=env),
        "fleet-gpu-2": prefect_server.start_worker(GPU_POOL, name="fleet-gpu-2", limit=1, extra_env=env),
        "fleet-cpu-1": prefect_server.start_worker(CPU_POOL, name="fleet-cpu-1", extra_env=env),
    }
    yield {"server": prefect_server, "workers": workers, "base": base, "secret": env["AWS_SECRET_ACCESS_KEY"]}
    for proc in workers.values():
        prefect_server.stop(proc)


def _create_zombie_automation(within_s: int) -> None:
    """Mark a flow run Crashed when it stops sending heartbeats (see docs/fleet.md)."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    final = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    Automation(
        name="crash flow runs without heartbeats",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *final},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {within_s} s")],
    ).create()


# ---------------------------------------------------------------------------------------------------- helpers
def _samples(out: Path, cameras: tuple[str, ...], seed: int) -> tuple[Path, int]:
    from tasks.synthetic import write_samples

    size = {k: TINY[k] for k in ("num_frames", "height", "width")}
    manifest = write_samples(out, cameras=cameras, seed=seed, write_background=False, **size)
    with manifest.open() as f:
        return manifest, sum(1 for _ in csv.DictReader(f))


def _params(manifest: Path, catalog_url: str, batch_size: int) -> dict:
    # No storage_options: the catalog's credentials come from the workers' environment, never from parameters.
    return {
        "config": {
            "source": str(manifest),
            "catalog": catalog_url,
            "render": {"engine": "null"},
            "score": {"previews": False},
            "geometry": TINY,
            "batch_size": batch_size,
            "render_deployment": RENDER,
        }
    }


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _render_runs(client, catalog_url: str) -> list:
    """The render flow runs handed out by build runs on ``catalog_url`` (each test uses its own catalog)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    deployment = client.read_deployment_by_name(RENDER)
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))
    )
    return [r for r in runs if r.parameters.get("catalog") == catalog_url]


def _run_logs(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def _start_build(server: PrefectServer, params: dict):
    from prefect.deployments import run_deployment

    with server.settings():
        return run_deployment(BUILD, parameters=params, timeout=0)


def _wait_final(server: PrefectServer, flow_run_id, timeout: float):
    deadline = time.monotonic() + timeout
    with server.settings(), _client() as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(1)
    logs = "\n".join(f"--- {n}\n{server.log(n)[-3000:]}" for n in ("fleet-cpu-1", "fleet-gpu-1", "fleet-gpu-2"))
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout:.0f} s: {run.state}\n{logs}")


def _catalog(s3, url: str) -> Catalog:
    return Catalog(url, storage_options=s3.storage_options)


def _assert_each_pair_once(cat: Catalog, n_objects: int) -> None:
    pairs = cat.query("SELECT pair_id, edit_type, src_video_uri, tgt_video_uri, mask_uri FROM pairs").to_pylist()
    assert len(pairs) == 2 * n_objects, f"{len(pairs)} pairs for {n_objects} objects"
    assert sorted(p["edit_type"] for p in pairs).count("add") == n_objects
    for table in ("renders", "pairs"):
        raw = cat.query(f"SELECT count(*) FROM read_parquet('{cat.root_url()}/tables/{table}/*.parquet')")
        distinct = cat.query(f"SELECT count(*) FROM {table}")
        assert raw.column(0)[0].as_py() == distinct.column(0)[0].as_py(), f"a {table} row was written twice"
    for p in pairs:  # no row names missing media
        for key in ("src_video_uri", "tgt_video_uri", "mask_uri"):
            assert cat.fs.exists(cat.path(p[key])), f"{p['pair_id']}.{key} names missing media {p[key]}"


def _worker_running(workers: dict, infrastructure_pid: str | None) -> tuple[str, int] | None:
    """(worker name, flow-run process pid) when one of ``workers`` started the process ``host:pid``."""
    if not infrastructure_pid:
        return None
    pid = int(str(infrastructure_pid).rsplit(":", 1)[-1])
    for name, proc in workers.items():
        try:
            if pid in {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}:
                return name, pid
        except psutil.NoSuchProcess:
            continue
    return None


class HeartbeatWatch:
    """Collects, as they happen, the ids of flow runs whose heartbeat events reach the server (a websocket
    subscription to its event stream, running in a thread)."""

    def __init__(self, server: PrefectServer):
        self.server = server
        self.seen: set[str] = set()
        self.subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="heartbeat-watch", daemon=True)

    def __enter__(self) -> HeartbeatWatch:
        self._thread.start()
        assert self.subscribed.wait(60), "could not subscribe to the server's events"
        return self

    def __exit__(self, *exc) -> None:
        if self._loop and self._task:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(self._watch())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _watch(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        with self.server.settings():
            only = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]))
            async with get_events_subscriber(filter=only) as subscriber:
                self.subscribed.set()
                async for event in subscriber:
                    self.seen.add(event.resource.id.removeprefix("prefect.flow-run."))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for its parent to reap it
    except psutil.NoSuchProcess:
        return True


def _assert_secret_nowhere(secret: str, cat: Catalog, server: PrefectServer, flow_run_ids: list) -> None:
    # Every row of every table, every column, as text.
    for table in TABLES:
        for row in cat.query(f"SELECT * FROM {table}").to_pylist():
            assert secret not in json.dumps(row, default=str), f"the secret is in a {table} row"
    # Every non-media object the catalog holds (fragments are compressed: read them; caches and markers: raw).
    for path in cat.fs.find(cat.root):
        if "/media/" not in path and not path.endswith(".parquet"):
            assert secret.encode() not in cat.fs.cat_file(path), f"the secret is in {path}"
    # Process logs: server and workers (with their flow-run processes' output).
    for name in ("server", "fleet-cpu-1", "fleet-gpu-1", "fleet-gpu-2"):
        assert secret not in server.log(name), f"the secret is in the {name} log"
    # What Prefect stores: parameters, logs, artifacts, deployments.
    with server.settings(), _client() as client:
        for flow_run_id in flow_run_ids:
            run = client.read_flow_run(flow_run_id)
            assert secret not in json.dumps(run.parameters, default=str), f"the secret is a parameter of {run.name}"
            assert not [m for m in _run_logs(client, flow_run_id) if secret in m], (
                f"the secret is in {run.name}'s logs"
            )
        for artifact in client.read_artifacts():
            assert secret not in json.dumps(artifact.data, default=str) + str(artifact.description)
        for name in (BUILD, RENDER):
            deployment = client.read_deployment_by_name(name)
            assert secret not in deployment.model_dump_json()


# ---------------------------------------------------------------------------------------------------- tests
def test_run_spreads_over_both_gpu_workers_each_pair_once_and_no_secret_leaks(fleet, s3) -> None:
    server: PrefectServer = fleet["server"]
    manifest, n_objects = _samples(fleet["base"] / "samples-a", ("static", "pan"), seed=1)  # 3 objects
    url = s3.url(f"fleet-{uuid.uuid4().hex[:8]}")
    build = _start_build(server, _params(manifest, url, batch_size=1))  # one object per render flow run
    done = _wait_final(server, build.id, timeout=300)
    assert done.state.is_completed(), done.state

    with server.settings(), _client() as client:
        renders = _render_runs(client, url)
        assert len(renders) >= 2 and all(r.state.is_completed() for r in renders), [(r.name, r.state) for r in renders]
        holders = set()
        for r in renders:
            holders |= {
                m.split("holding ", 1)[1].split(";")[0] for m in _run_logs(client, r.id) if "holding gpu:" in m
            }
    assert holders == {"gpu:fleet-gpu-1", "gpu:fleet-gpu-2"}, "the render batches did not use both gpu workers"

    cat = _catalog(s3, url)
    _assert_each_pair_once(cat, n_objects)
    runs = cat.query("SELECT status, n_pairs FROM runs").to_pylist()
    assert runs == [{"status": "completed", "n_pairs": 2 * n_objects}]
    _assert_secret_nowhere(fleet["secret"], cat, server, [build.id, *(r.id for r in renders)])


def test_killed_gpu_worker_leaves_its_run_crashed_and_a_rerun_completes_without_duplicates(fleet, s3) -> None:
    server: PrefectServer = fleet["server"]
    workers = {k: v for k, v in fleet["workers"].items() if "gpu" in k}
    manifest, n_objects = _samples(fleet["base"] / "samples-b", ("static", "pan"), seed=1)  # 3 objects
    url = s3.url(f"fleet-{uuid.uuid4().hex[:8]}")
    params = _params(manifest, url, batch_size=1)
    with HeartbeatWatch(server) as heartbeats:
        build = _start_build(server, params)

        # Wait for a render flow run in flight on a gpu worker whose first heartbeat has reached the server; then
        # SIGKILL the worker and the flow-run process it started.
        victim = None
        deadline = time.monotonic() + 240
        with server.settings(), _client() as client:
            while victim is None and time.monotonic() < deadline:
                for run in _render_runs(client, url):
                    if run.state and run.state.is_running() and str(run.id) in heartbeats.seen:
                        found = _worker_running(workers, run.infrastructure_pid)
                        if found:
                            victim = (run, *found)
                            break
                time.sleep(0.1)
        assert victim is not None, "no render flow run was caught in flight"
        run, worker_name, flow_pid = victim
        kill_tree(workers[worker_name].pid)  # the worker first: nobody is left to report the flow run's end
        kill_tree(flow_pid)
    assert _gone(workers[worker_name].pid) and _gone(flow_pid)

    crashed = _wait_final(server, run.id, timeout=ZOMBIE_AFTER_S + 90)
    assert crashed.state.is_crashed(), crashed.state
    _wait_final(server, build.id, timeout=300)  # the other gpu worker finishes the other batches
    with server.settings(), _client() as client:
        for other in _render_runs(client, url):  # nothing of the first run is still writing
            _wait_final(server, other.id, timeout=120)

    cat = _catalog(s3, url)
    statuses = cat.query("SELECT status FROM runs").column(0).to_pylist()
    assert statuses == ["failed"], statuses  # a render batch crashed: the run says so
    assert cat.query("SELECT count(*) FROM pairs").column(0)[0].as_py() < 2 * n_objects

    # Rerun on what is left of the fleet: the missing pairs are made, nothing is written twice.
    rerun = _start_build(server, params)
    done = _wait_final(server, rerun.id, timeout=300)
    assert done.state.is_completed(), done.state
    cat = _catalog(s3, url)
    _assert_each_pair_once(cat, n_objects)
    runs = cat.query("SELECT status FROM runs ORDER BY started_at").column(0).to_pylist()
    assert runs == ["failed", "completed"], runs
