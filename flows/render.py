"""The render stage as its own flow: render → score → record for one batch of jobs, deployable on a ``gpu`` pool.

``build_pairs`` calls its body (:func:`render_and_record`) in-process, or hands it batches with
``run_deployment("render/render", ...)`` when ``RunConfig.render_deployment`` is set. Its parameters are JSON (the
jobs' ids and uris, the catalog URL, the run's ``RenderConfig``), never arrays: it reloads clips and masks from the
catalog's media, so it can run on any machine that reaches the catalog.

On each worker, a render batch holds a slot of the global concurrency limit ``gpu:<worker id>`` (``$VPF_WORKER_ID``,
else the host name; created with ``gpu_slots`` slots when missing) around everything that may put a model on the GPU:
the engine's set-up and renders, the scoring and the judge. So two flow runs on one GPU never load models at once.
The engine's models are loaded once per batch (once per run when ``build_pairs`` renders in-process).

Within a batch the work is pipelined (``tasks.stages.render_score_record``): the next job renders while the previous
render is stored, scored, judged and recorded on ``RenderConfig.score_workers`` threads, and each render is recorded
as soon as it is done. Each batch's busy time per stage is recorded in ``stage_timings``.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed
from pydantic import BaseModel, Field

from catalog.store import Catalog
from flows.env import limit_malloc_arenas, numpy_without_huge_pages, serial_opencv
from tasks.config import RenderConfig
from tasks.contracts import InpaintEngine, Judge
from tasks.stages import GateScorers, RenderJob, StageOutput, pending_jobs, record_rows, render_score_record, worker_id
from tasks.timings import StageTimer


class BatchSummary(BaseModel):
    """What one render batch did: counts ``jobs``, ``already_done``, ``renders``, ``skipped``, ``pairs``,
    ``accepted``, ``judged``, ``failures``; ``previews``: catalog-relative uris of up to 12 preview mp4s."""

    counts: dict[str, int] = Field(default_factory=dict)
    previews: list[str] = Field(default_factory=list)


def gpu_limit_name() -> str:
    return f"gpu:{worker_id()}"


def ensure_concurrency_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists (an operator's setting
    wins)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


GPU_LEASE_S = 60  # the server's minimum: a killed holder's slot comes back within about a minute


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


def make_judge(config: RenderConfig, cat: Catalog) -> Judge | None:
    """The configured pair judge, set up once; None for no judge.

    Its answers are cached under the catalog root, so a resumed run never asks twice.
    """
    if not config.judge:
        return None
    from tasks.judge import get_judge

    judge = get_judge(config.judge, cache_url=cat.url, storage_options=cat.storage_options)
    judge.setup()
    return judge


@flow(name="render", flow_run_name="render {batch_label}", log_prints=False, persist_result=False)
def render_flow(
    jobs: list[RenderJob],
    catalog: str,
    config: RenderConfig = RenderConfig(),  # noqa: B008 (pydantic model: validated copy per call)
    run_id: str | None = None,
    batch_label: str = "batch",
    storage_options: dict[str, Any] | None = None,
) -> Completed:
    """Render, score and record one batch of jobs on this worker (see :func:`render_and_record`).

    The GPU slot is held from before the engine and the judge load until the batch's last pair is recorded. The final
    state carries the ``BatchSummary`` twice: as the return value, and as JSON in the state message, which
    ``run_deployment`` callers read from the API without any shared result storage.
    """
    limit_malloc_arenas()  # a worker's flow-run process: before the batch's threads start
    numpy_without_huge_pages()
    cat = Catalog(catalog, storage_options=storage_options)
    engine = make_engine(config)
    with gpu_slot(config.gpu_slots) as limit, serial_opencv():
        get_run_logger().info("holding %s; %d jobs: engine %s", limit, len(jobs), engine.engine_id)
        judge = make_judge(config, cat)
        summary = render_and_record(
            jobs, cat, engine, config=config, judge=judge, run_id=run_id, batch_label=batch_label, hold_slot=False
        )
    return Completed(message=json.dumps({"result": summary.model_dump()}), data=summary)


def render_and_record(
    jobs: list[RenderJob],
    cat: Catalog,
    engine: InpaintEngine,
    *,
    config: RenderConfig,
    judge: Judge | None,
    run_id: str | None,
    batch_label: str = "batch",
    hold_slot: bool = True,
    judge_in_slot: Callable[[], Judge | None] | None = None,
    in_flight: threading.Semaphore | None = None,
    scorers: GateScorers | None = None,
) -> BatchSummary:
    """Inpaint → score → record one batch inside the current flow run (the ``render`` flow's body; ``build_pairs``
    calls it directly when rendering in-process, so the engine's models load once for the whole run).

    ``hold_slot``: take the GPU slot around the batch here (False: the caller holds it). ``judge_in_slot``: when
    ``judge`` is None, called inside the slot before the engine's set-up, for the judge; a caller rendering many
    batches takes its GPU slot, sets the engine up and loads the judge there, once for all of them. ``in_flight``:
    bounds the renders held in memory across batches rendering at once; ``scorers``: the gate's models shared by
    those batches (see ``render_score_record``).
    Records the batch's ``stage_timings``.
    """
    logger = get_run_logger()
    generation = config.generation(run_id)  # None unless --rerender: then a new generation named after the run
    todo, done = pending_jobs(cat, jobs, engine, config.seed, generation)
    counts: dict[str, int] = {"jobs": len(jobs), "already_done": done}
    if done:
        logger.info("%d of %d jobs already have their pairs in the catalog: skipped", done, len(jobs))
    if not todo:
        return BatchSummary(counts=counts)
    timer = StageTimer()
    with gpu_slot(config.gpu_slots) if hold_slot else nullcontext(None) as limit:
        logger.info("%s rendering %d jobs with %s", f"holding {limit};" if limit else "", len(todo), engine.engine_id)
        if judge is None and judge_in_slot is not None:
            judge = judge_in_slot()  # first: the caller may set the engine up here (once for all its batches)
        engine.setup()  # idempotent: loads models on the first batch only
        out: StageOutput = render_task.with_options(task_run_name=f"render {batch_label} ({len(todo)} jobs)")(
            todo, cat, engine, config=config, judge=judge, run_id=run_id, generation=generation,
            workers=config.finish_workers(), timer=timer, in_flight=in_flight, scorers=scorers,
        )  # fmt: skip
    for key, n in out.counts.items():
        counts[key] = counts.get(key, 0) + n
    record_rows(cat, "stage_timings", timer.rows(run_id=run_id, batch=batch_label, worker=worker_id()))
    logger.info("render batch %s: %s; busy seconds %s", batch_label, json.dumps(counts), timer.summary())
    preview_uris = [p["preview_uri"] for p in out.rows["previews"]]
    return BatchSummary(counts=counts, previews=list(dict.fromkeys(preview_uris))[:12])


# One task run per batch (the renders inside are pipelined); no retries: each render is recorded as it finishes and
# per-render problems are failure rows, so a rerun of the run resumes whatever a lost batch did not record.
render_task = task(render_score_record, name="render", cache_policy=NO_CACHE, persist_result=False)
