"""The ``build_pairs`` flow: ingest → segment → propose → plan → render → score → record, a batch of items per task.

- One parameter, ``config`` (``tasks.config.RunConfig``): validated once by Prefect, passed down whole; the render
  stage receives ``config.render``.
- Per-item problems become ``failures`` rows (ids from stage + item + reason, so reruns never duplicate them) and the
  batch goes on.
- Resume is reconciled against the catalog: rows whose ids exist are not written again, and render jobs whose pairs
  exist are skipped (``tasks.stages.pending_jobs``).
- Rendering runs in this flow run through the ``render`` flow's body (``flows.render.render_and_record``, one engine
  set up once for the whole run; a subflow per batch would cost seconds each), or on GPU workers when
  ``config.render_deployment`` names a deployment (``"render/render"``): batches are handed over with
  ``run_deployment`` as JSON (ids, uris, the catalog URL, ``config.render``) and run concurrently, one ``render`` flow
  run per batch.
- One ``runs`` row per run: ``running`` at the start, then ``completed``, ``completed_with_failures`` or ``failed``
  with counts (``RunTally.status``). A table artifact summarises the run; a markdown artifact links the previews.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import platform
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.deployments import run_deployment
from pydantic import BaseModel, Field

from catalog import ids
from catalog.store import Catalog
from flows.env import limit_malloc_arenas, numpy_without_huge_pages, serial_opencv
from flows.progress import report
from flows.render import BatchSummary, gpu_slot, make_engine, make_judge, render_and_record
from tasks.annotate.specs import check_masks_or_segmenter
from tasks.config import RunConfig
from tasks.contracts import Judge, Proposer, Segmenter
from tasks.engines.registry import gpu_present
from tasks.pipeline import enter_context
from tasks.stages import (
    GateScorers,
    RenderJob,
    StageOutput,
    discover_task,
    failure_rows,
    ingest_task,
    make_annotators,
    plan_stage,
    propose_task,
    record_rows,
    record_task,
    worker_id,
)
from tasks.timings import StageTimer, use_timer
from tasks.types import Failure, SourceItem


RunStatus = Literal["running", "completed", "completed_with_failures", "failed"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "completed", "completed_with_failures", "failed")
RunLogger = Logger | LoggerAdapter
T = TypeVar("T")


class RunSummary(BaseModel):
    """What a run did; ``counts`` also lands in ``runs.counts_json``."""

    run_id: str
    status: RunStatus
    catalog: str
    counts: dict[str, int]
    failures_by_reason: dict[str, int]
    previews: list[str] = Field(default_factory=list, description="full URLs of a few preview mp4s")
    gallery: str | None = Field(None, description="file:// URL of this run's gallery (local catalogs)")
    elapsed_s: float


@dataclass
class RunTally:
    """What the stages of a run have done so far; the run's status is computed from it."""

    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    seen: dict[str, set[str]] = field(default_factory=lambda: {"clips": set(), "objects": set()})

    def add(self, counts: dict[str, int]) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def failed(self, failures: list[Failure]) -> list[dict[str, Any]]:
        """Count ``failures``; returns their catalog rows."""
        self.failures.extend(failures)
        self.add({"failures": len(failures)})
        return failure_rows(failures, self.run_id)

    def ingested(self, out: StageOutput) -> None:
        """Items of one source may fall in several batches: clips and objects are counted as distinct ids."""
        for table in ("clips", "objects"):
            self.seen[table].update(row[f"{table[:-1]}_id"] for row in out.rows.get(table, []))
            self.counts[table] = len(self.seen[table])

    def rendered(self, summary: BatchSummary | None, cat: Catalog) -> None:
        """Add a render batch's summary (None: the batch's flow run did not complete)."""
        if summary is None:
            self.add({"render_batches_failed": 1})
            return
        self.add(summary.counts)
        for uri in summary.previews[: max(0, 12 - len(self.previews))]:
            self.previews.append(cat.full_url(uri))

    def failures_by_reason(self) -> dict[str, int]:
        by_reason: dict[str, int] = {}
        for f in self.failures:
            by_reason[f"{f.stage}:{f.reason}"] = by_reason.get(f"{f.stage}:{f.reason}", 0) + 1
        return by_reason

    def status(self, config: RunConfig) -> RunStatus:
        """``failed`` when a render batch was lost or failures exceed ``config.max_failure_ratio`` of the items;
        else ``completed_with_failures`` when anything failed; else ``completed``."""
        failures = self.counts.get("failures", 0)
        if self.counts.get("render_batches_failed"):
            return "failed"
        if config.max_failure_ratio is not None and failures > config.max_failure_ratio * self.counts.get("items", 0):
            return "failed"
        return "completed_with_failures" if failures else "completed"


@flow(name="build-pairs", flow_run_name="build-pairs {config.source}", persist_result=False)
def build_pairs(config: RunConfig) -> RunSummary:
    """Make editing pairs from ``config.source`` into ``config.catalog`` (see ``tasks.config.RunConfig``)."""
    logger = get_run_logger()
    limit_malloc_arenas()  # before the run's threads start (a no-op when the CLI did it)
    numpy_without_huge_pages()
    started = datetime.now(timezone.utc)
    run_id, flow_run_id = _run_id()
    cat = Catalog(config.catalog, storage_options=config.storage_options)
    cat.append("runs", [_runs_row(run_id, flow_run_id, config, "running", {}, started, None)])
    logger.info("run %s → catalog %s", run_id, cat.url)

    tally = RunTally(run_id)
    status: RunStatus = "failed"
    try:
        with serial_opencv():  # the run's own threads use the cores
            make_pairs(config, cat, tally, logger)
        status = tally.status(config)
    finally:
        finished = datetime.now(timezone.utc)
        tally.add({"failures": 0})
        cat.append("runs", [_runs_row(run_id, flow_run_id, config, status, tally.counts, started, finished)])
    summary = RunSummary(
        run_id=run_id,
        status=status,
        catalog=cat.url,
        counts=tally.counts,
        failures_by_reason=tally.failures_by_reason(),
        previews=tally.previews,
        gallery=_gallery(cat, run_id, logger) if config.gallery and tally.counts.get("pairs") else None,
        elapsed_s=(finished - started).total_seconds(),
    )
    _artifacts(summary)
    logger.info("run %s %s: %s", run_id, status, json.dumps(tally.counts, sort_keys=True))
    return summary


def make_pairs(config: RunConfig, cat: Catalog, tally: RunTally, logger: RunLogger) -> None:
    """The stages of a run, batch by batch: discover once; then per batch ingest (running ahead on the task
    runner), propose, plan, and render (on this flow run's render thread, or handed to the render deployment), so
    ingest, proposals and renders of different batches overlap. Batches grow 1, 2, 4, … items up to the batch size,
    so the render starts as soon as one clip is ingested. Each ingest batch's busy time per stage is recorded in ``stage_timings``."""
    from tasks.proposers import get_proposer

    items = discover(config, cat, tally)
    check_masks_or_segmenter(items, config.segmenter)  # no masks and no segmenter: stop before ingesting
    batches = _ramp_batches(items, config.batch_size)
    logger.info("%d items in %d batches of ≤ %d", tally.counts["items"], len(batches), config.batch_size)
    proposer = get_proposer(config.proposer, cache_url=cat.url, storage_options=cat.storage_options)
    proposer.setup()
    renderer: LocalRenderer | DeploymentRenderer
    if config.render_deployment:
        renderer = DeploymentRenderer(config.render_deployment, config, cat, tally, logger, len(batches))
    else:
        renderer = LocalRenderer(config, cat, tally)
    segmenter, annotation = make_annotators(
        config.segmenter, config.annotate, cache_url=cat.url, storage_options=config.storage_options
    )
    try:
        for index, ingested in ingest_ahead(batches, config, cat, segmenter, tally.run_id, annotation):
            label = f"{index}/{len(batches)}"
            timer = ingested.timer or StageTimer()  # ingest's own spans; recording and proposing are added here
            with use_timer(timer):
                record_ingested(ingested, cat, tally, label)
                proposed = propose(ingested, proposer, config, cat, tally, label)
            record_rows(cat, "stage_timings", timer.rows(run_id=tally.run_id, batch=label, worker=worker_id()))
            report("ingest", index, len(batches))
            jobs = plan_stage(
                proposed.rows["instructions"],
                ingested.rows.get("objects", []),
                ingested.rows.get("clips", []),
                dilation_radius=config.dilation_radius,
            )
            for part, chunk in enumerate(_batches(jobs, config.batch_size), start=1):
                renderer.submit(chunk, f"{tally.run_id[-8:]} {label}.{part}")
    finally:
        renderer.finish()  # also when ingest failed: the render thread stops and lets the GPU slot go


# ------------------------------------------------------------------------------------------------------ stages
def discover(config: RunConfig, cat: Catalog, tally: RunTally) -> list[SourceItem]:
    """The run's work items; manifest rows that cannot be items are recorded as failures."""
    items, failures = discover_task(
        config.source, limit=config.limit, roots=config.roots, storage_options=config.storage_options
    )
    tally.add({"items": len(items)})
    if failures:
        record_task.with_options(task_run_name="record discover failures")(cat, {"failures": tally.failed(failures)})
    return items


def ingest_ahead(
    batches: Sequence[Sequence[SourceItem]],
    config: RunConfig,
    cat: Catalog,
    segmenter: Segmenter,
    run_id: str,
    annotation: Any = None,
) -> Iterator[tuple[int, StageOutput]]:
    """Ingest + segment each batch, in order, with up to ``config.ingest_ahead()`` batches running ahead on the
    flow's task runner (threads, or Dask/Ray workers with their own segmenter copy) while the caller proposes and
    renders the batch before. Yields ``(batch number from 1, stage output)``."""
    ahead = config.ingest_ahead()

    def submit(index: int) -> Any:
        batch = batches[index - 1]
        return ingest_task.with_options(
            task_run_name=f"ingest+segment batch {index}/{len(batches)} ({len(batch)} items)"
        ).submit(
            batch,
            cat,
            geometry=config.geometry.to_geometry(),
            segmenter=segmenter,
            run_id=run_id,
            storage_options=config.storage_options,
            annotation=annotation,
        )

    in_flight = {index: submit(index) for index in range(1, min(ahead, len(batches)) + 1)}
    for index in range(1, len(batches) + 1):
        ingested = in_flight.pop(index).result()
        if index + ahead <= len(batches):
            in_flight[index + ahead] = submit(index + ahead)
        yield index, ingested


def record_ingested(ingested: StageOutput, cat: Catalog, tally: RunTally, label: str) -> None:
    tally.ingested(ingested)
    rows = {table: ingested.rows.get(table, []) for table in ("sources", "clips", "objects")}
    record_task.with_options(task_run_name=f"record ingest {label}")(
        cat, {**rows, "failures": tally.failed(ingested.failures)}
    )


def propose(
    ingested: StageOutput, proposer: Proposer, config: RunConfig, cat: Catalog, tally: RunTally, label: str
) -> StageOutput:
    """Instructions for the batch's objects, recorded; returns the stage output."""
    proposed = propose_task.with_options(task_run_name=f"propose batch {label}")(
        ingested.rows.get("objects", []),
        ingested.rows.get("clips", []),
        proposer,
        edit_types=config.edit_types,
        run_id=tally.run_id,
        seed=config.render.seed,
    )
    tally.add(proposed.counts)
    record_task.with_options(task_run_name=f"record instructions {label}")(
        cat, {"instructions": proposed.rows["instructions"], "failures": tally.failed(proposed.failures)}
    )
    return proposed


class LocalRenderer:
    """Renders the run's batches in this flow run while the flow goes on ingesting and proposing the next batches:
    ``submit`` hands a batch over and returns (it waits only while one batch is already queued, so memory stays
    flat), ``finish`` waits for the last one.

    Batches run on ``LANES`` threads (one when ``render.score_workers`` is 0), each batch pipelined as the
    ``render`` flow does it (``render_and_record``). An engine that holds a device renders one clip at a time
    (``InpaintEngine.exclusive``: ``run`` holds the engine's lock around ``fill``), so a second lane can render the
    next batch's first clip while the first lane stores, scores and records the end of its batch: the device never
    waits at a batch boundary.

    One engine (and judge) for the run, set up by the first batch that renders. On a machine with a GPU, the run
    holds the GPU slot ``gpu:<worker id>`` from before the models load until the last batch is done (without one,
    no model can reach a GPU and no slot is taken: a killed run leaves no lease for its rerun to wait out).
    """

    LANES = 2  # batches rendered at once (their renders take turns on the engine)

    def __init__(self, config: RunConfig, cat: Catalog, tally: RunTally):
        self.config, self.cat, self.tally = config.render, cat, tally
        self.engine = make_engine(self.config)
        self.batches: queue.Queue[tuple[list[RenderJob], str] | None] = queue.Queue(maxsize=1)
        self.summaries: list[BatchSummary] = []
        self.error: BaseException | None = None
        self.submitted_jobs = self.rendered_jobs = 0
        self.judge: Judge | None = None
        self.hold_slot = gpu_present()
        self.lanes = self.LANES if self.config.finish_workers() > 0 else 1
        # renders held in memory, all lanes together: as many as one batch alone may hold, so memory stays flat
        self.in_flight = threading.BoundedSemaphore(self.config.finish_workers() + 1)
        self.scorers = GateScorers()  # the gate's models, loaded by the first batch and shared by all
        self.prepared = False
        self._lock = threading.Lock()
        self._slot = contextlib.ExitStack()  # the run's GPU slot, entered by the first batch that renders
        # the render thread runs in a copy of the flow's context (run logger, task runs of this flow run)
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._work,), name="vpf-render", daemon=True
        )
        self.thread.start()

    def submit(self, jobs: list[RenderJob], label: str) -> None:
        if self.error is not None:
            raise self.error
        self.submitted_jobs += len(jobs)
        self.batches.put((jobs, label))

    def finish(self) -> None:
        """Wait for every submitted batch; add their summaries to the tally; re-raise a render thread's error."""
        self.batches.put(None)
        self.thread.join()
        for summary in self.summaries:
            self.tally.rendered(summary, self.cat)
        if self.error is not None:
            raise self.error

    def _prepare(self) -> Judge | None:
        """Once per run, before the first render: take the GPU slot (where a GPU is present), set the engine up and
        load the judge. Every lane calls it; the first does the work."""
        with self._lock:
            if not self.prepared:
                if self.hold_slot:
                    limit = self._slot.enter_context(gpu_slot(self.config.gpu_slots))
                    get_run_logger().info("holding %s for the run's renders", limit)
                self.engine.setup()
                self.judge, self.prepared = make_judge(self.config, self.cat), True
            return self.judge

    def _render(self, jobs: list[RenderJob], label: str) -> None:
        summary = render_and_record(
            jobs, self.cat, self.engine, config=self.config, judge=None, run_id=self.tally.run_id,
            batch_label=label, judge_in_slot=self._prepare, hold_slot=False, in_flight=self.in_flight,
            scorers=self.scorers,
        )  # fmt: skip
        with self._lock:
            self.summaries.append(summary)
            self.rendered_jobs += len(jobs)
            done = self.rendered_jobs
        report("render", done, self.submitted_jobs)

    def _work(self) -> None:
        context = contextvars.copy_context()
        free = threading.BoundedSemaphore(self.lanes)

        def lane(jobs: list[RenderJob], label: str) -> None:
            try:
                self._render(jobs, label)
            except BaseException as exc:  # handed to the flow thread by submit/finish
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


class DeploymentRenderer:
    """Hands each batch to ``config.render_deployment`` (one ``render`` flow run per batch, concurrently) and
    collects the summaries when the run's batches are all submitted."""

    def __init__(
        self, deployment: str, config: RunConfig, cat: Catalog, tally: RunTally, logger: RunLogger, in_flight: int
    ):
        self.deployment, self.config, self.cat, self.tally, self.logger = deployment, config, cat, tally, logger
        # bounded: each batch in flight holds a thread that waits for its flow run
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(config.render_in_flight, in_flight)))
        self.pending: list[Future[BatchSummary | None]] = []

    def submit(self, jobs: list[RenderJob], label: str) -> None:
        parameters = {
            "jobs": [job.model_dump() for job in jobs],
            "catalog": self.cat.url,
            "config": self.config.render.model_dump(mode="json"),
            "run_id": self.tally.run_id,
            "batch_label": label,
            "storage_options": self.config.storage_options,
        }
        self.pending.append(self.pool.submit(_run_render_deployment, self.deployment, parameters, label, self.logger))

    def finish(self) -> None:
        for done, future in enumerate(self.pending, start=1):
            report("render", done, len(self.pending))
            self.tally.rendered(future.result(), self.cat)
        self.pool.shutdown()


def _run_render_deployment(
    deployment: str, parameters: dict[str, Any], label: str, logger: RunLogger
) -> BatchSummary | None:
    """Run one render batch on the deployment's pool and wait; returns its summary (None when it did not complete).

    Runs in a worker thread, which has no Prefect run context: ``logger`` is the flow run's logger, taken by the caller.
    """
    flow_run = run_deployment(
        deployment, parameters=parameters, flow_run_name=f"render {label}", timeout=None, poll_interval=2
    )
    if not flow_run.state or not flow_run.state.is_completed():
        logger.error("render batch %s ended %s", label, flow_run.state)
        return None
    return BatchSummary.model_validate(json.loads(flow_run.state.message or "{}").get("result") or {})


# ------------------------------------------------------------------------------------------------------ helpers
def _run_id() -> tuple[str, str | None]:
    try:
        flow_run_id = str(get_run_context().flow_run.id)
    except Exception:  # called outside a flow run (plain Python)
        flow_run_id = None
    return ids.make_id("run", flow_run_id or uuid.uuid4().hex), flow_run_id


def _batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ramp_batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Batches growing 1, 2, 4, … up to ``size`` items, then ``size`` each: the render starts once one item is
    ingested, and in the first minutes the render is never kept waiting for a whole large batch to be ingested."""
    out: list[Sequence[T]] = []
    start, step = 0, 1
    while start < len(items):
        n = min(step, size)
        out.append(items[start : start + n])
        start, step = start + n, step * 2
    return out


def _runs_row(
    run_id: str,
    flow_run_id: str | None,
    config: RunConfig,
    status: RunStatus,
    counts: dict[str, int],
    started: datetime,
    finished: datetime | None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "flow_run_id": flow_run_id,
        "flow_name": "build-pairs",
        "source": config.source,
        "status": status,
        "parameters_json": json.dumps(config.recorded(), sort_keys=True, default=str),
        "counts_json": json.dumps(counts, sort_keys=True),
        "n_clips": counts.get("clips", 0),
        "n_pairs": counts.get("pairs", 0),
        "n_failures": counts.get("failures", 0),
        "started_at": started,
        "finished_at": finished,
        "vpf_version": version("videopainter-factory"),
        "host": platform.node(),
    }


def _gallery(cat: Catalog, run_id: str, logger: RunLogger) -> str | None:
    """Build the run's gallery next to the catalog's tables (local catalogs); returns its file:// URL."""
    from catalog.gallery import GalleryError, build_gallery

    if not cat.is_local:
        logger.info("gallery: not built for a remote catalog; run vpf gallery --where \"run_id = '%s'\"", run_id)
        return None
    try:
        index = build_gallery(cat, f"run_id = '{run_id}'", cat.path(f"galleries/{run_id}"), media="link")
    except GalleryError as exc:  # a gallery is a view of the run, never a reason to fail it
        logger.warning("gallery: not built: %s", exc)
        return None
    return Path(index).resolve().as_uri()


def _artifacts(summary: RunSummary) -> None:
    rows = [{"item": key, "count": n} for key, n in sorted(summary.counts.items())]
    rows += [{"item": f"failure {reason}", "count": n} for reason, n in sorted(summary.failures_by_reason.items())]
    create_table_artifact(
        key="build-pairs-summary",
        table=rows,
        description=f"Run {summary.run_id}: {summary.status} in {summary.elapsed_s:.1f}s, catalog {summary.catalog}",
    )
    links = "\n".join(
        f"- [{url.rsplit('/', 1)[-1]}]({url if '://' in url else 'file://' + url})" for url in summary.previews
    )
    create_markdown_artifact(
        key="build-pairs-previews",
        markdown=(
            f"# Run `{summary.run_id}`: {summary.status}\n\n"
            f"{summary.counts.get('pairs', 0)} pairs, {summary.counts.get('failures', 0)} failures, "
            f"catalog `{summary.catalog}`.\n\n"
            + (f"[Gallery of this run's pairs]({summary.gallery})\n\n" if summary.gallery else "")
            + "## Previews (side by side: original | mask | edited)\n\n"
            + (links or "_no previews in this run_")
            + '\n\nQuery the pairs: `vpf sql "SELECT edit_type, decision, count(*) FROM pairs GROUP BY ALL"'
            + f" --catalog {summary.catalog}`\n"
        ),
        description=f"previews of run {summary.run_id}",
    )
