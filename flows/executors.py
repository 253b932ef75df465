"""Executors: where a run's render batches go. One small interface, two placements.

``start`` once, ``submit`` each batch as it is planned (it returns at once), ``collect`` the batch summaries at the
end (it waits). An executor owns what a batch needs besides its jobs: the engine's life (one ``setup()`` per run),
the scoring models and the GPU slot; the helpers both placements share (the slot, ``prepare``, ``make_batch``) are
here too.

- :class:`LocalExecutor` renders in this process on background threads, with one engine for the whole run.
- :class:`DeploymentExecutor` hands each batch to the ``render`` deployment (``run_deployment``), one flow run per
  batch on whichever ``gpu`` worker is free; those runs are children of the calling flow run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import queue
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from pydantic import BaseModel, Field

from catalog.store import Catalog
from flows.prefect_tasks import make_pairs_task
from flows.progress import report
from tasks.config import RenderConfig, RunConfig, ScoreConfig
from tasks.contracts import InpaintEngine
from tasks.effect_segments import EffectSegmenter
from tasks.engines.registry import gpu_present
from tasks.pipeline import enter_context
from tasks.produce import PairMaker
from tasks.steps.plan import RenderJob
from tasks.steps.record import record_rows
from tasks.steps.score import Scorers
from tasks.timings import StageTimer


GPU_LEASE_S = 60  # the server's minimum: a killed holder's slot comes back within about a minute
MAX_PREVIEWS = 12


class BatchSummary(BaseModel):
    """What one render batch did: the counts of ``tasks.produce.COUNTS``; ``previews``: catalog-relative uris of up
    to 12 preview mp4s."""

    counts: dict[str, int] = Field(default_factory=dict)
    previews: list[str] = Field(default_factory=list)


def worker_id() -> str:
    """This worker's identity for the per-GPU concurrency limit: ``$VPF_WORKER_ID``, else the host name."""
    return os.environ.get("VPF_WORKER_ID") or socket.gethostname()


def gpu_limit_name() -> str:
    return f"gpu:{worker_id()}"


def ensure_concurrency_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists (an operator's setting
    wins)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another render on this worker created it meanwhile
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


@contextmanager
def gpu_slot(slots: int) -> Iterator[str]:
    """Hold one slot of ``gpu:<worker id>`` while the block runs (the lease is renewed while it is held)."""
    name = gpu_limit_name()
    ensure_concurrency_limit(name, slots)
    with concurrency(name, occupy=1, strict=True, lease_duration=GPU_LEASE_S):
        yield name


def make_engine(config: RenderConfig) -> InpaintEngine:
    """The configured engine, not yet set up."""
    from tasks.engines.registry import get_engine

    return get_engine(config.engine, **config.engine_options)


def prepare(engine: InpaintEngine, render: RenderConfig, score: ScoreConfig, catalog: Catalog) -> PairMaker:
    """Set ``engine`` up and load the scoring models and the side-effect segmenter (``render.effect_segmenter``: the
    gate's re-segmentation models when the specs are the same; a spec that cannot be loaded fails here, naming spec
    and path): call once, inside the GPU slot where there is one."""
    engine.setup()
    scorers = Scorers.load(score, catalog)
    shared = scorers.reseg.finder if scorers.reseg is not None else None
    effects = EffectSegmenter.load(render, catalog.storage_options, share=shared)
    return PairMaker(engine, scorers, render, score, effects)


def make_batch(
    maker: PairMaker,
    jobs: list[RenderJob],
    catalog: Catalog,
    *,
    run_id: str | None,
    label: str,
    slots: threading.Semaphore | None = None,
) -> BatchSummary:
    """One batch through ``maker`` as a task run of the current flow run; records the batch's ``stage_timings``."""
    logger = get_run_logger()
    timer = StageTimer()
    out = make_pairs_task.with_options(task_run_name=f"render {label} ({len(jobs)} jobs)")(
        maker, jobs, catalog, run_id=run_id, timer=timer, slots=slots
    )
    if out.counts.get("already_done"):
        logger.info("%d of %d jobs already have their pairs in the catalog: skipped", out.counts["already_done"],
                    len(jobs))  # fmt: skip
    record_rows(catalog, "stage_timings", timer.rows(run_id=run_id, batch=label, worker=worker_id()))
    logger.info("render batch %s: %s; busy seconds %s", label, json.dumps(out.counts), timer.summary())
    previews = list(dict.fromkeys(p["preview_uri"] for p in out.rows["previews"]))[:MAX_PREVIEWS]
    return BatchSummary(counts=out.counts, previews=previews)


class RenderExecutor(ABC):
    """Where render batches run (see the module docstring)."""

    @abstractmethod
    def start(self, config: RunConfig, catalog: Catalog, run_id: str) -> None:
        """Get ready for a run's batches (called once, before the first ``submit``)."""

    @abstractmethod
    def submit(self, jobs: list[RenderJob], label: str) -> None:
        """Hand over one batch; returns without waiting for it to render."""

    @abstractmethod
    def collect(self) -> list[BatchSummary | None]:
        """Every submitted batch's summary, in order (None: that batch's flow run did not complete); re-raises an
        error that stopped the executor."""


def make_executor(config: RunConfig) -> RenderExecutor:
    """The executor ``config`` asks for: the deployment ``config.render_deployment``, else this process."""
    if config.render_deployment:
        return DeploymentExecutor(config.render_deployment)
    return LocalExecutor()


class LocalExecutor(RenderExecutor):
    """Renders batches in this process while the flow goes on: ``submit`` waits only while one batch is already
    queued (memory stays flat). Batches run on ``LANES`` threads (one when ``score.workers`` is 0); an engine that
    holds a device renders one clip at a time, so a second lane renders the next batch's first clip while the first
    lane scores and records the end of its batch. One engine and one set of scoring models for the run, prepared by
    the first batch that renders; on a machine with a GPU the run holds ``gpu:<worker id>`` from before the models
    load until the last batch is done (without one no slot is taken: a killed run leaves no lease behind).

    ``engine``: an engine to use instead of the configured one (tests, benchmarks).
    """

    LANES = 2

    def __init__(self, engine: InpaintEngine | None = None) -> None:
        self._given_engine = engine
        self._lock = threading.Lock()
        self._maker: PairMaker | None = None
        self._slot = contextlib.ExitStack()  # the run's GPU slot, entered by the first batch that renders
        self.summaries: list[BatchSummary] = []
        self.error: BaseException | None = None
        self.submitted_jobs = self.done_jobs = 0

    def start(self, config: RunConfig, catalog: Catalog, run_id: str) -> None:
        self.config, self.catalog, self.run_id = config, catalog, run_id
        self.engine = self._given_engine or make_engine(config.render)
        threads = config.score.threads()
        self.lanes = self.LANES if threads > 0 else 1
        self.slots = threading.BoundedSemaphore(threads + 1)  # renders held in memory, all lanes together
        self.batches: queue.Queue[tuple[list[RenderJob], str] | None] = queue.Queue(maxsize=1)
        # the dispatch thread runs in a copy of the flow's context (run logger, task runs of this flow run)
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._dispatch,), name="vpf-render", daemon=True
        )
        self.thread.start()

    def submit(self, jobs: list[RenderJob], label: str) -> None:
        if self.error is not None:
            raise self.error
        self.submitted_jobs += len(jobs)
        self.batches.put((jobs, label))

    def collect(self) -> list[BatchSummary | None]:
        self.batches.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return list(self.summaries)

    def _prepared(self) -> PairMaker:
        """The run's pair maker, prepared once (in the GPU slot where a GPU is present) by the first lane."""
        with self._lock:
            if self._maker is None:
                if gpu_present():
                    limit = self._slot.enter_context(gpu_slot(self.config.render.gpu_slots))
                    get_run_logger().info("holding %s for the run's renders", limit)
                self._maker = prepare(self.engine, self.config.render, self.config.score, self.catalog)
            return self._maker

    def _render(self, jobs: list[RenderJob], label: str) -> None:
        summary = make_batch(self._prepared(), jobs, self.catalog, run_id=self.run_id, label=label, slots=self.slots)
        with self._lock:
            self.summaries.append(summary)
            self.done_jobs += len(jobs)
            done = self.done_jobs
        report("render", done, self.submitted_jobs)

    def _dispatch(self) -> None:
        context = contextvars.copy_context()
        free = threading.BoundedSemaphore(self.lanes)

        def lane(jobs: list[RenderJob], label: str) -> None:
            try:
                self._render(jobs, label)
            except BaseException as exc:  # handed to the flow thread by submit/collect
                with self._lock:
                    self.error = self.error or exc
            finally:
                free.release()

        ended = False  # the flow has sent its last batch (None)
        try:
            with self._slot, ThreadPoolExecutor(self.lanes, "vpf-render-lane", initializer=enter_context,
                                                initargs=(context,)) as pool:  # fmt: skip
                while self.error is None:
                    if (batch := self.batches.get()) is None:
                        ended = True
                        break
                    free.acquire()  # at most ``lanes`` batches at once
                    if self.error is None:
                        pool.submit(lane, *batch)
                # leaving the pool waits for every started batch, also after another lane failed
        except BaseException as exc:
            with self._lock:
                self.error = self.error or exc
        while not ended and self.batches.get() is not None:  # after an error: let submit() return until the flow,
            pass  # which then raises the error, sends its last batch


class DeploymentExecutor(RenderExecutor):
    """Hands each batch to ``deployment`` (one ``render`` flow run per batch, up to ``render_in_flight`` at once)
    as JSON parameters; the flow runs are children of the calling flow run."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.pending: list[Future[BatchSummary | None]] = []

    def start(self, config: RunConfig, catalog: Catalog, run_id: str) -> None:
        self.config, self.catalog, self.run_id = config, catalog, run_id
        # bounded: each batch in flight holds a thread that waits for its flow run
        self.pool = ThreadPoolExecutor(max_workers=config.render_in_flight, thread_name_prefix="vpf-dispatch")

    def submit(self, jobs: list[RenderJob], label: str) -> None:
        parameters = {
            "jobs": [job.model_dump() for job in jobs],
            "catalog": self.catalog.url,
            "render": self.config.render.model_dump(mode="json"),
            "score": self.config.score.model_dump(mode="json"),
            "run_id": self.run_id,
            "batch_label": label,
            "storage_options": self.config.storage_options,
        }
        # each waiting thread runs in a copy of the flow's context: the render run is linked as its child
        context = contextvars.copy_context()
        self.pending.append(self.pool.submit(context.run, self._run, parameters, label))

    def collect(self) -> list[BatchSummary | None]:
        summaries = []
        for done, future in enumerate(self.pending, start=1):
            report("render", done, len(self.pending))
            summaries.append(future.result())
        self.pool.shutdown()
        return summaries

    def _run(self, parameters: dict[str, Any], label: str) -> BatchSummary | None:
        """Run one batch on the deployment's pool and wait; its summary, or None when it did not complete."""
        flow_run = run_deployment(
            self.deployment, parameters=parameters, flow_run_name=f"render {label}", timeout=None, poll_interval=2
        )
        if not flow_run.state or not flow_run.state.is_completed():
            get_run_logger().error("render batch %s ended %s", label, flow_run.state)
            return None
        return BatchSummary.model_validate(json.loads(flow_run.state.message or "{}").get("result") or {})
