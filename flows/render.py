"""The render stage as its own flow: render → score → record for one batch of jobs, deployable on a ``gpu`` pool.

``build_pairs`` calls its body (:func:`render_and_record`) in-process, or hands it batches with
``run_deployment("render/render", ...)`` when ``RunConfig.render_deployment`` is set. Its parameters are JSON (the
jobs' ids and uris, the catalog URL, the run's ``RenderConfig``), never arrays: it reloads clips and masks from the
catalog's media, so it can run on any machine that reaches the catalog.

On each worker, renders hold a slot of the global concurrency limit ``gpu:<worker id>`` (``$VPF_WORKER_ID``, else the
host name; created with ``gpu_slots`` slots when missing), so two flow runs on one GPU never load models at once.
The engine's models are loaded once per batch.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed
from pydantic import BaseModel, Field

from catalog.store import Catalog
from tasks.config import RenderConfig
from tasks.contracts import InpaintEngine, Judge
from tasks.stages import (
    RenderJob,
    failure_rows,
    inpaint_task,
    pending_jobs,
    record_task,
    score_task,
    worker_id,
)


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


@contextmanager
def gpu_slot(slots: int) -> Iterator[str]:
    """Hold one slot of ``gpu:<worker id>`` while the block runs."""
    name = gpu_limit_name()
    ensure_concurrency_limit(name, slots)
    with concurrency(name, occupy=1, strict=True):
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

    The final state carries the ``BatchSummary`` twice: as the return value, and as JSON in the state message, which
    ``run_deployment`` callers read from the API without any shared result storage.
    """
    cat = Catalog(catalog, storage_options=storage_options)
    engine, judge = make_engine(config), make_judge(config, cat)
    summary = render_and_record(jobs, cat, engine, config=config, judge=judge, run_id=run_id, batch_label=batch_label)
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
) -> BatchSummary:
    """Inpaint → score → record one batch inside the current flow run (the ``render`` flow's body; ``build_pairs``
    calls it directly when rendering in-process, so the engine's models load once for the whole run)."""
    logger = get_run_logger()
    generation = config.generation(run_id)  # None unless --rerender: then a new generation named after the run
    todo, done = pending_jobs(cat, jobs, engine, config.seed, generation)
    counts: dict[str, int] = {"jobs": len(jobs), "already_done": done}
    if done:
        logger.info("%d of %d jobs already have their pairs in the catalog: skipped", done, len(jobs))
    if not todo:
        return BatchSummary(counts=counts)
    with gpu_slot(config.gpu_slots) as limit:
        logger.info("holding %s; rendering %d jobs with %s", limit, len(todo), engine.engine_id)
        engine.setup()  # idempotent: loads models on the first batch only
        rendered, inpainted = inpaint_task.with_options(task_run_name=f"inpaint {batch_label} ({len(todo)} jobs)")(
            todo, cat, engine, seed=config.seed, run_id=run_id, generation=generation
        )
    scored = score_task.with_options(task_run_name=f"score {batch_label} ({len(rendered)} renders)")(
        rendered, cat, config=config, judge=judge, run_id=run_id
    )
    # Renders before pairs: a resumed run re-scores a render whose pairs are missing, never the other way round.
    failures = [*inpainted.failures, *scored.failures]
    record_task.with_options(task_run_name=f"record {batch_label}")(
        cat,
        {
            "renders": inpainted.rows["renders"],
            "pairs": scored.rows["pairs"],
            "failures": failure_rows(failures, run_id),
        },
    )
    for out in (inpainted, scored):
        for key, n in out.counts.items():
            counts[key] = counts.get(key, 0) + n
    counts["failures"] = len(failures) - counts.get("skipped", 0)
    preview_uris = [p["preview_uri"] for p in scored.rows["pairs"] if p.get("preview_uri")]
    return BatchSummary(counts=counts, previews=list(dict.fromkeys(preview_uris))[:12])
