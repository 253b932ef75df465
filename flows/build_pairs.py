"""The ``build-pairs`` flow: discover → ingest → propose → plan → render → score → record, a batch of items per task.

One parameter, ``config`` (``tasks.config.RunConfig``), validated once and passed down in parts. Per-item problems
are ``failures`` rows and the batch goes on; resume is reconciled against the catalog's ids. Render batches go to an
executor (``flows/executors.py``): this process, or the ``render`` deployment on GPU workers. One ``runs`` row per
run: ``running`` at the start and again every heartbeat (``RunHeartbeat``: a killed run reads as ``interrupted``), then
its final status with counts (``RunTally.status``; ``interrupted`` after SIGINT/SIGTERM: ``stop_on_signals``).
Prefect records the run's name and parameters redacted.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect._internal import control_listener
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, get_run_context
from pydantic import BaseModel, Field

from catalog import ids
from catalog.ids import failure_id
from catalog.maintenance import HEARTBEAT_ENV, HEARTBEAT_S
from catalog.redact import install_log_redaction, redact, redact_value
from catalog.store import Catalog
from flows.env import limit_malloc_arenas, numpy_without_huge_pages, serial_opencv
from flows.executors import BatchSummary, RenderExecutor, make_executor, worker_id
from flows.options import deployment_hint, relative_note
from flows.prefect_tasks import discover_task, ingest_task, propose_task, record_task
from flows.progress import report
from tasks.annotate.specs import check_annotation, check_masks_or_segmenter
from tasks.annotate.stop import RunInterrupted, clear_stop, request_stop, stop_requested
from tasks.config import RunConfig
from tasks.contracts import Proposer
from tasks.steps.discover import SourceNotFoundError
from tasks.steps.ingest import Annotators, make_annotators
from tasks.steps.outputs import StepOutput
from tasks.steps.plan import plan
from tasks.steps.record import failure_rows, record_rows
from tasks.timings import StageTimer, use_timer
from tasks.types import Failure, SourceItem


RunStatus = Literal["running", "completed", "completed_with_failures", "failed", "interrupted"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "completed", "completed_with_failures", "failed", "interrupted")
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
        self._count_failures(failures)
        return failure_rows(failures, self.run_id)

    def ingested(self, out: StepOutput) -> None:
        """Count an ingested batch (its rows and failures are recorded by ingest itself). Items of one source may
        fall in several batches: clips and objects are counted as distinct ids."""
        self._count_failures(out.failures)
        for table in ("clips", "objects"):
            self.seen[table].update(row[f"{table[:-1]}_id"] for row in out.rows.get(table, []))
            self.counts[table] = len(self.seen[table])

    def _count_failures(self, failures: list[Failure]) -> None:
        """Count each failure once by its catalog id (stage + item + reason), as the ``failures`` table holds it: the
        same bad input met in two batches, or named by two rows, is one row there and one count here."""
        seen = self.seen.setdefault("failures", set())
        new = []
        for failure in failures:
            key = failure_id(failure.stage, failure.item_id, failure.reason)
            if key not in seen:
                seen.add(key)
                new.append(failure)
        self.failures.extend(new)
        self.add({"failures": len(new)})

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


class RedactedParametersFlow(Flow):
    """A flow whose parameters reach Prefect's flow-run record redacted: a ``RunConfig`` as ``RunConfig.recorded()``
    (no storage options, no credentials), anything else through ``catalog.redact.redact_value``. The flow itself
    gets the parameters as given. Kept by ``with_options``. Runs started from a deployment carry the parameters their
    caller sent, unredacted: credentials belong in the workers' environment (``$VPF_OPENAI_API_KEY``, ``AWS_*``)."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        serialized = super().serialize_parameters(parameters)
        return {
            key: parameters[key].recorded() if isinstance(parameters.get(key), RunConfig) else redact_value(value)
            for key, value in serialized.items()
        }

    def with_options(self, **kwargs: Any) -> RedactedParametersFlow:
        copy = super().with_options(**kwargs)
        copy.__class__ = type(self)  # Flow.with_options builds a plain Flow
        return copy


def _flow_run_name() -> str:
    """``build-pairs <source>``, the source redacted (Prefect stores and shows run names)."""
    context = FlowRunContext.get()
    config = (context.parameters or {}).get("config") if context else None
    source = config.get("source") if isinstance(config, dict) else getattr(config, "source", None)
    return f"build-pairs {redact(str(source))}" if source else "build-pairs"


@flow(name="build-pairs", flow_run_name=_flow_run_name, persist_result=False)
def build_pairs(config: RunConfig, executor: RenderExecutor | None = None) -> RunSummary:
    """Make editing pairs from ``config.source`` into ``config.catalog`` (see ``tasks.config.RunConfig``).

    ``executor``: where render batches go (default :func:`flows.executors.make_executor` of ``config``); in-process
    callers may pass one, e.g. a ``LocalExecutor`` with their own engine.

    Raises before anything is written, the catalog folder included: ``SourceNotFoundError`` when the source does not
    exist or holds no video (for a deployment's run, naming the parameter to set), ``NoMasksError`` when no source
    has masks and no segmenter was chosen, ``AnnotationSpecError`` for a wrong annotation option or model folder.
    """
    logger = get_run_logger()
    install_log_redaction()  # what this process logs through Prefect's and the root handlers is redacted
    limit_malloc_arenas()  # before the run's threads start (a no-op when the CLI did it)
    numpy_without_huge_pages()
    started = datetime.now(timezone.utc)
    run_id, flow_run_id = _run_id()
    try:
        items, failures = discover_task(config)
    except SourceNotFoundError as exc:  # a wrong source: stop before the catalog is touched
        if hint := deployment_hint("config.source"):
            notes = [exc.detail, relative_note(exc.source), hint]
            raise SourceNotFoundError(exc.source, "; ".join(note for note in notes if note)) from None
        raise
    check_masks_or_segmenter(items, config.segmenter)  # no masks and no segmenter: stop before any write
    check_annotation(config)  # wrong annotation options or model folders: stop before any write
    cat = Catalog(config.catalog, storage_options=config.storage_options)
    heartbeat = RunHeartbeat(cat, _runs_row(run_id, flow_run_id, config, "running", {}, started, None))
    heartbeat.start()  # the running row now, then again every heartbeat until finish()
    logger.info("run %s → catalog %s", run_id, redact(cat.url))

    tally = RunTally(run_id)
    tally.add({"items": len(items)})
    status: RunStatus = "failed"
    try:
        if failures:
            record_task.with_options(task_run_name="record discover failures")(
                cat, {"failures": tally.failed(failures)}
            )
        with serial_opencv(), stop_on_signals(logger):  # the run's own threads use the cores
            make_pairs(config, items, cat, tally, executor or make_executor(config))
        status = tally.status(config)
    except BaseException:
        if stop_requested() is not None:  # SIGINT/SIGTERM: what finished is recorded, the row says so
            status = "interrupted"
        raise
    finally:
        finished = datetime.now(timezone.utc)
        tally.add({"failures": 0})
        heartbeat.finish(_runs_row(run_id, flow_run_id, config, status, tally.counts, started, finished))
    summary = RunSummary(
        run_id=run_id,
        status=status,
        catalog=redact(cat.url),
        counts=tally.counts,
        failures_by_reason=tally.failures_by_reason(),
        previews=tally.previews,
        gallery=_gallery(cat, run_id, logger) if config.gallery and tally.counts.get("pairs") else None,
        elapsed_s=(finished - started).total_seconds(),
    )
    _artifacts(summary)
    logger.info("run %s %s: %s", run_id, status, json.dumps(tally.counts, sort_keys=True))
    return summary


build_pairs.__class__ = RedactedParametersFlow  # Prefect's record of each run's parameters is redacted


def make_pairs(
    config: RunConfig, items: list[SourceItem], cat: Catalog, tally: RunTally, executor: RenderExecutor
) -> None:
    """The steps of a run after discovery, batch by batch: ingest (running ahead on the task runner), propose and
    plan, and hand the jobs to ``executor``, so ingest, proposals and renders of different batches overlap. Batches
    grow 1, 2, 4, … items up to the batch size, so rendering starts once one clip is ingested."""
    from tasks.proposers import get_proposer

    logger = get_run_logger()
    batches = _ramp_batches(items, config.batch_size)
    logger.info("%d items in %d batches of ≤ %d", len(items), len(batches), config.batch_size)
    proposer = get_proposer(config.proposer, cache_url=cat.url, storage_options=cat.storage_options)
    proposer.setup()
    annotators = make_annotators(config, cat)
    executor.start(config, cat, tally.run_id)
    try:
        for index, ingested in ingest_ahead(batches, config, cat, annotators, tally.run_id):
            label = f"{index}/{len(batches)}"
            timer = ingested.timer or StageTimer()  # ingest's own spans; proposing is added here
            tally.ingested(ingested)
            with use_timer(timer):
                proposed = propose(ingested, proposer, config, cat, tally, label)
            record_rows(cat, "stage_timings", timer.rows(run_id=tally.run_id, batch=label, worker=worker_id()))
            report("ingest", index, len(batches))
            jobs = plan(
                proposed.rows["instructions"],
                ingested.rows.get("objects", []),
                ingested.rows.get("clips", []),
                dilation_radius=config.render.dilation_radius,
                effect_masks=config.render.effect_masks,
            )
            for part, chunk in enumerate(_batches(jobs, config.batch_size), start=1):
                executor.submit(list(chunk), f"{tally.run_id[-8:]} {label}.{part}")
    finally:
        for summary in executor.collect():  # also when ingest failed: the executor stops and lets the GPU go
            tally.rendered(summary, cat)


def ingest_ahead(
    batches: Sequence[Sequence[SourceItem]], config: RunConfig, cat: Catalog, annotators: Annotators, run_id: str
) -> Iterator[tuple[int, StepOutput]]:
    """Ingest each batch, in order, with up to ``config.ingest_ahead()`` batches running ahead on the flow's task
    runner (threads, or Dask/Ray workers with their own annotators) while the caller proposes and renders the batch
    before. Yields ``(batch number from 1, step output)``; ingest has recorded the batch's rows already."""
    ahead = config.ingest_ahead()

    def submit(index: int) -> Any:
        batch = batches[index - 1]
        name = f"ingest batch {index}/{len(batches)} ({len(batch)} items)"
        return ingest_task.with_options(task_run_name=name).submit(
            batch, cat, config.geometry, annotators, run_id=run_id
        )

    in_flight = {index: submit(index) for index in range(1, min(ahead, len(batches)) + 1)}
    for index in range(1, len(batches) + 1):
        ingested = in_flight.pop(index).result()
        if index + ahead <= len(batches):
            in_flight[index + ahead] = submit(index + ahead)
        yield index, ingested


def propose(
    ingested: StepOutput, proposer: Proposer, config: RunConfig, cat: Catalog, tally: RunTally, label: str
) -> StepOutput:
    """Instructions for the batch's objects, recorded; returns the step output."""
    proposed = propose_task.with_options(task_run_name=f"propose batch {label}")(
        ingested.rows.get("objects", []),
        ingested.rows.get("clips", []),
        proposer,
        edit_types=config.edit_types,
        seed=config.render.seed,
        run_id=tally.run_id,
    )
    tally.add(proposed.counts)
    record_task.with_options(task_run_name=f"record instructions {label}")(
        cat, {"instructions": proposed.rows["instructions"], "failures": tally.failed(proposed.failures)}
    )
    return proposed


@contextmanager
def stop_on_signals(logger: RunLogger) -> Iterator[None]:
    """While the block runs (in the main thread; elsewhere a no-op), SIGINT and SIGTERM ask the run's loops to stop
    (``tasks.annotate.stop``: the tracking loops check between frames, ingest between clips, so the ingest threads
    end within a frame's work) and unwind this thread: SIGINT as ``KeyboardInterrupt`` (the previous handler),
    SIGTERM as :class:`tasks.annotate.stop.RunInterrupted`, so the process exits through ``vpf run``'s one line
    rather than by Prefect re-sending the signal; a SIGTERM that Prefect's runner sends to cancel a deployment's run
    (a control intent is set) goes to Prefect's handler as before. Rows recorded before the signal stay;
    ``build_pairs`` records the run as ``interrupted``. A stop left from an earlier run is cleared."""
    clear_stop()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous = {sig: before for sig, before in previous.items() if before != signal.SIG_IGN}  # ignored stays ignored

    def handler(signum: int, frame: Any) -> None:
        request_stop(signum)
        logger.warning("%s: stopping at the next frame; what finished stays recorded", signal.Signals(signum).name)
        before = previous[signal.Signals(signum)]
        if callable(before) and (signum == signal.SIGINT or control_listener.get_intent() is not None):
            before(signum, frame)
        raise RunInterrupted(signum, "the run")

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


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
        "source": redact(config.source),
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


def heartbeat_interval() -> float:
    """Seconds between a run's heartbeats: ``$VPF_RUN_HEARTBEAT_S`` when set to a positive number, else
    ``catalog.maintenance.HEARTBEAT_S``."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, ""))
    except ValueError:
        return HEARTBEAT_S
    return value if value > 0 else HEARTBEAT_S


class RunHeartbeat:
    """A run's ``runs`` row while it runs: written by :meth:`start`, written again (``heartbeat_at`` now) every
    ``interval_s`` seconds by a daemon thread, and replaced by the final row in :meth:`finish`.

    Readers show a ``running`` row whose heartbeat is older than a few intervals as ``interrupted``
    (``catalog.maintenance.run_state``): a run killed with -9, or one whose final write failed (a full disk), stops
    beating. Each beat deletes the beat before it (its row is superseded by the same run's newer row), so a run
    leaves its first and final rows and at most one beat between them. A failed beat is logged and retried at the
    next one.
    """

    def __init__(self, cat: Catalog, row: dict[str, Any], interval_s: float | None = None):
        self.cat, self.row = cat, row
        self.interval_s = interval_s or heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat: str | None = None

    def _write(self, row: dict[str, Any]) -> str | None:
        stamped = {**row, "heartbeat_at": datetime.now(timezone.utc), "heartbeat_s": self.interval_s}
        return self.cat.append("runs", [stamped])

    def _drop_last_beat(self) -> None:
        if self._last_beat is not None:
            try:
                self.cat.fs.rm(self._last_beat)
            except FileNotFoundError:
                pass  # merged by a compaction: its row lives on in the merged fragment, superseded all the same
            self._last_beat = None

    def start(self) -> None:
        """Write the row, then start beating."""
        self._write(self.row)
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.row['run_id']}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                beat = self._write(self.row)
                self._drop_last_beat()
                self._last_beat = beat
            except Exception as exc:  # a beat that fails (a store hiccup) must not end the run
                logging.getLogger(__name__).warning("run %s: heartbeat not written: %s", self.row["run_id"], exc)

    def finish(self, row: dict[str, Any]) -> None:
        """Stop beating, write the final ``row`` and delete the last beat; a failed final write leaves the run
        ``interrupted`` once its beats are stale."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._write(row)
        self._drop_last_beat()


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
