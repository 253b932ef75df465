"""The render stage as its own flow: render → score → record for one batch of jobs, deployable on a ``gpu`` pool.

``build_pairs`` calls it in-process, or hands it batches with ``run_deployment("render/gpu", ...)`` when a GPU
deployment is configured. Its parameters are JSON (ids, uris, the catalog URL), never arrays: it reloads clips and
masks from the catalog's media, so it can run on any machine that reaches the catalog.

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

from catalog.store import Catalog
from tasks.steps import (
    RenderJob,
    failure_rows,
    pending_jobs,
    record_task,
    render_task,
    score_task,
    worker_id,
)


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


def make_engine(name: str, options: dict[str, Any]) -> Any:
    from tasks.engines.registry import get_engine

    return get_engine(name, **options)


def make_judge(spec: str | None, cat: Catalog) -> Any:
    """The pair judge for ``spec`` (``openai:URL#MODEL`` or ``transformers:PATH``), set up once; None for no judge.

    Its answers are cached under the catalog root, so a resumed run never asks twice.
    """
    if not spec:
        return None
    from tasks.judge import get_judge

    judge = get_judge(spec, cache_url=cat.url, storage_options=cat.storage_options)
    judge.setup()
    return judge


@flow(name="render", flow_run_name="render {batch_label}", log_prints=False, persist_result=False)
def render(
    jobs: list[RenderJob],
    catalog: str,
    run_id: str | None = None,
    engine: str = "auto",
    engine_options: dict[str, Any] | None = None,
    seed: int = 0,
    accept_rule: dict[str, Any] | None = None,
    previews: bool = True,
    judge: str | None = None,
    gpu_slots: int = 1,
    batch_label: str = "batch",
    storage_options: dict[str, Any] | None = None,
) -> Completed:
    """Render, score and record one batch of jobs on this worker (see :func:`render_batch`).

    The final state carries the summary twice: as the return value, and as JSON in the state message, which
    ``run_deployment`` callers read from the API without any shared result storage.

    ``judge``: an optional pair judge spec (see :func:`make_judge`).
    ``gpu_slots``: slots of the per-worker limit ``gpu:<worker id>`` when this flow creates it.
    """
    cat = Catalog(catalog, storage_options=storage_options)
    eng = make_engine(engine, dict(engine_options or {}))
    summary = render_batch(
        jobs, cat, eng, run_id=run_id, seed=seed, accept_rule=accept_rule, previews=previews,
        judge=make_judge(judge, cat), gpu_slots=gpu_slots, batch_label=batch_label,
    )  # fmt: skip
    return Completed(message=json.dumps({"result": summary}), data=summary)


def render_batch(
    jobs: list[RenderJob],
    cat: Catalog,
    eng: Any,
    *,
    run_id: str | None,
    seed: int = 0,
    accept_rule: dict[str, Any] | None = None,
    previews: bool = True,
    judge: Any = None,
    gpu_slots: int = 1,
    batch_label: str = "batch",
) -> dict[str, Any]:
    """Render → score → record one batch inside the current flow run (the ``render`` flow's body; ``build_pairs``
    calls it directly when rendering in-process, so the engine's models load once for the whole run).

    Returns ``{"counts": {...}, "previews": [uri, ...]}`` with counts ``jobs``, ``already_done``, ``renders``,
    ``skipped``, ``pairs``, ``accepted`` and ``failures``.
    """
    logger = get_run_logger()
    todo, done = pending_jobs(cat, jobs, eng, seed)
    counts: dict[str, int] = {"jobs": len(jobs), "already_done": done}
    if done:
        logger.info("%d of %d jobs already have their pairs in the catalog: skipped", done, len(jobs))
    if not todo:
        return {"counts": counts, "previews": []}
    with gpu_slot(gpu_slots) as limit:
        logger.info("holding %s; rendering %d jobs with %s", limit, len(todo), eng.engine_id)
        eng.setup()  # idempotent: loads models on the first batch only
        rendered, rout = render_task.with_options(task_run_name=f"render {batch_label} ({len(todo)} jobs)")(
            todo, cat, eng, seed=seed, run_id=run_id
        )
    sout = score_task.with_options(task_run_name=f"score {batch_label} ({len(rendered)} renders)")(
        rendered, cat, accept_rule=accept_rule, previews=previews, judge=judge, run_id=run_id
    )
    # Renders before pairs: a resumed run re-scores a render whose pairs are missing, never the other way round.
    failures = [*rout.failures, *sout.failures]
    record_task.with_options(task_run_name=f"record {batch_label}")(
        cat,
        {"renders": rout.rows["renders"], "pairs": sout.rows["pairs"], "failures": failure_rows(failures, run_id)},
    )
    for out in (rout, sout):
        for key, n in out.counts.items():
            counts[key] = counts.get(key, 0) + n
    counts["failures"] = len(failures) - counts.get("skipped", 0)
    previews_uris = [p["preview_uri"] for p in sout.rows["pairs"] if p.get("preview_uri")]
    return {"counts": counts, "previews": list(dict.fromkeys(previews_uris))[:12]}
