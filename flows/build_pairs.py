"""The ``build_pairs`` flow: ingest → segment → propose → render → score → record, a batch of items per task.

- Per-item problems become ``failures`` rows (ids from stage + item + reason, so reruns never duplicate them) and the
  batch goes on.
- Resume is reconciled against the catalog: rows whose ids exist are not written again, and render jobs whose pairs
  exist are skipped (``tasks.steps.pending_jobs``).
- Rendering runs in this flow run through the ``render`` flow's body (``flows.render.render_batch``, one engine set
  up once for the whole run; a subflow per batch would cost seconds each), or on GPU workers when
  ``render_deployment`` names a deployment (``"render/render"``): batches are handed over with ``run_deployment`` as
  JSON (ids, uris, the catalog URL) and run concurrently, one ``render`` flow run per batch.
- One ``runs`` row per run: ``running`` at the start, then ``completed``, ``completed_with_failures`` or ``failed``
  with counts. A table artifact summarises the run; a markdown artifact links the previews.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.deployments import run_deployment
from pydantic import BaseModel, Field

from catalog import ids
from catalog.store import Catalog, default_root
from flows.progress import report
from flows.render import make_engine, make_judge, render_batch
from tasks.steps import (
    RenderJob,
    discover_task,
    failure_rows,
    ingest_task,
    plan_stage,
    propose_task,
    record_task,
)
from tasks.types import Failure, Geometry


EngineName = Literal["auto", "propagation", "videopainter", "null", "cv2-inpaint"]
EditTypeName = Literal["remove", "add", "replace", "attribute"]
RUN_STATUSES = ("running", "completed", "completed_with_failures", "failed")


class GeometryParams(BaseModel):
    """Clip geometry: the model's default is 49 frames at 8 fps, 480×720 (PAPER.md §1.1)."""

    num_frames: int = Field(49, ge=2, description="frames per clip")
    height: int = Field(480, ge=16, description="pixels; even")
    width: int = Field(720, ge=16, description="pixels; even")
    fps: float = Field(8.0, gt=0, description="frames per second of the normalised clip")
    resize_mode: Literal["resize", "crop"] = "resize"

    def to_geometry(self) -> Geometry:
        return Geometry(self.num_frames, self.fps, self.height, self.width, self.resize_mode)


class RunSummary(BaseModel):
    """What a run did; ``counts`` also lands in ``runs.counts_json``."""

    run_id: str
    status: str
    catalog: str
    counts: dict[str, int]
    failures_by_reason: dict[str, int]
    previews: list[str] = Field(default_factory=list, description="full URLs of a few preview mp4s")
    gallery: str | None = Field(None, description="file:// URL of this run's gallery (local catalogs)")
    elapsed_s: float


def _run_id() -> tuple[str, str | None]:
    try:
        flow_run_id = str(get_run_context().flow_run.id)
    except Exception:  # called outside a flow run (plain Python)
        flow_run_id = None
    import uuid

    return ids.make_id("run", flow_run_id or uuid.uuid4().hex), flow_run_id


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _runs_row(run_id: str, flow_run_id: str | None, source: str, status: str, params: dict, counts: dict,
              started: datetime, finished: datetime | None) -> dict[str, Any]:  # fmt: skip
    from importlib.metadata import version

    return {
        "run_id": run_id,
        "flow_run_id": flow_run_id,
        "flow_name": "build-pairs",
        "source": source,
        "status": status,
        "parameters_json": json.dumps(params, sort_keys=True, default=str),
        "counts_json": json.dumps(counts, sort_keys=True),
        "n_clips": counts.get("clips", 0),
        "n_pairs": counts.get("pairs", 0),
        "n_failures": counts.get("failures", 0),
        "started_at": started,
        "finished_at": finished,
        "vpf_version": version("videopainter-factory"),
        "host": platform.node(),
    }


def _merge(counts: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        counts[key] = counts.get(key, 0) + n


@flow(name="build-pairs", flow_run_name="build-pairs {source}", persist_result=False)
def build_pairs(
    source: str,
    catalog: str | None = None,
    engine: EngineName = "auto",
    engine_options: dict[str, Any] | None = None,
    proposer: str = "template",
    segmenter: str = "provided",
    edit_types: list[EditTypeName] = ["remove", "add"],  # noqa: B006 (validated copy per call)
    geometry: GeometryParams = GeometryParams(),
    limit: Annotated[int | None, Field(ge=1)] = None,
    batch_size: Annotated[int, Field(ge=1)] = 16,
    seed: int = 0,
    dilation_px: Annotated[int | None, Field(ge=0)] = None,
    previews: bool = True,
    accept_rule: dict[str, Any] | None = None,
    judge: str | None = None,
    render_deployment: str | None = None,
    roots: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    gallery: bool = True,
    ingest_in_flight: Annotated[int, Field(ge=1)] = 1,
) -> RunSummary:
    """Make editing pairs from ``source`` into ``catalog``.

    Args:
        source: a folder, glob, manifest (CSV/JSONL/Parquet) or VPData CSV, local or at any fsspec URL.
        catalog: the catalog root URL (default: ``$VPF_CATALOG``, else ``./vpf-data``).
        engine: the inpainting engine (``auto``: VideoPainter with weights and CUDA, else the CPU engine).
        engine_options: keyword arguments for the engine (e.g. ``{"checkpoint": "s3://…"}``).
        proposer: ``template``, ``transformers:PATH`` or ``openai:URL``.
        segmenter: ``provided`` (masks from the manifest) or ``sam:CHECKPOINT``.
        edit_types: instructions to propose per object; ``add`` pairs come from removal renders.
        geometry: clip geometry.
        limit: process only the first N items.
        batch_size: items per ingest/propose task and jobs per render flow run.
        dilation_px: mask dilation before inpainting (default: 32 px at 720 px wide, in proportion).
        previews: store a side-by-side preview mp4 and a contact sheet per pair.
        accept_rule: keyword arguments of ``tasks.metrics.AcceptRule`` (``min_judge_*`` thresholds use the judge).
        judge: optional pair judge (``openai:URL#MODEL`` or ``transformers:PATH`` of a vision-language model): three
            1–5 scores and reasons per pair, stored with it and used by the accept rule.
        render_deployment: hand render batches to this deployment (``"render/gpu"``) instead of rendering here.
        roots: allowed roots for source paths (anything outside is a failure).
        ingest_in_flight: batches ingested ahead on the flow's task runner while earlier batches are proposed and
            rendered (1 with the default thread pool, where segmenters are shared; the worker count with a Dask or
            Ray task runner, see ``flows.runners.make_task_runner``).
        gallery: build a static gallery of this run's pairs at ``<catalog>/galleries/<run_id>/index.html`` (local
            catalogs; media linked, not copied) and link it from the run's artifact.
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    run_id, flow_run_id = _run_id()
    catalog = catalog or default_root()
    cat = Catalog(catalog, storage_options=storage_options)
    params = {
        "source": source,
        "catalog": catalog,
        "engine": engine,
        "proposer": proposer,
        "segmenter": segmenter,
        "edit_types": list(edit_types),
        "geometry": geometry.model_dump(),
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
        "dilation_px": dilation_px,
        "judge": judge,
        "render_deployment": render_deployment,
    }
    cat.append("runs", [_runs_row(run_id, flow_run_id, source, "running", params, {}, started, None)])
    logger.info("run %s → catalog %s", run_id, cat.url)

    counts: dict[str, int] = {}
    failures: list[Failure] = []
    status = "failed"
    preview_urls: list[str] = []
    try:
        status = _build(
            cat,
            run_id,
            source=source,
            engine=engine,
            engine_options=dict(engine_options or {}),
            proposer_spec=proposer,
            segmenter_spec=segmenter,
            edit_types=list(edit_types),
            geometry=geometry.to_geometry(),
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            dilation_px=dilation_px,
            previews=previews,
            accept_rule=accept_rule,
            judge=judge,
            ingest_in_flight=ingest_in_flight,
            render_deployment=render_deployment,
            roots=roots,
            storage_options=storage_options,
            counts=counts,
            failures=failures,
            preview_urls=preview_urls,
        )
    finally:
        finished = datetime.now(timezone.utc)
        counts["failures"] = counts.get("failures", 0)
        cat.append("runs", [_runs_row(run_id, flow_run_id, source, status, params, counts, started, finished)])
    by_reason: dict[str, int] = {}
    for f in failures:
        by_reason[f"{f.stage}:{f.reason}"] = by_reason.get(f"{f.stage}:{f.reason}", 0) + 1
    summary = RunSummary(
        run_id=run_id,
        status=status,
        catalog=cat.url,
        counts=counts,
        failures_by_reason=by_reason,
        previews=preview_urls,
        gallery=_gallery(cat, run_id, logger) if gallery and counts.get("pairs") else None,
        elapsed_s=(finished - started).total_seconds(),
    )
    _artifacts(summary)
    logger.info("run %s %s: %s", run_id, status, json.dumps(counts, sort_keys=True))
    return summary


def _build(
    cat: Catalog,
    run_id: str,
    *,
    source: str,
    engine: str,
    engine_options: dict[str, Any],
    proposer_spec: str,
    segmenter_spec: str,
    edit_types: list[str],
    geometry: Geometry,
    limit: int | None,
    batch_size: int,
    seed: int,
    dilation_px: int | None,
    previews: bool,
    accept_rule: dict[str, Any] | None,
    judge: str | None,
    ingest_in_flight: int,
    render_deployment: str | None,
    roots: list[str] | None,
    storage_options: dict[str, Any] | None,
    counts: dict[str, int],
    failures: list[Failure],
    preview_urls: list[str],
) -> str:
    """The body of ``build_pairs``; fills ``counts``/``failures``/``preview_urls`` and returns the run status."""
    from tasks.proposers import get_proposer
    from tasks.steps import make_segmenter

    logger = get_run_logger()
    record = record_task

    def note_failures(new: list[Failure]) -> list[dict[str, Any]]:
        failures.extend(new)
        counts["failures"] = counts.get("failures", 0) + len(new)
        return failure_rows(new, run_id)

    items, discover_failures = discover_task(source, limit=limit, roots=roots, storage_options=storage_options)
    counts["items"] = len(items)
    if discover_failures:
        record.with_options(task_run_name="record discover failures")(
            cat, {"failures": note_failures(discover_failures)}
        )
    batches = _batches(items, batch_size)
    logger.info("%d items in %d batches of ≤ %d", len(items), len(batches), batch_size)

    segmenter = make_segmenter(segmenter_spec)
    proposer = get_proposer(proposer_spec, cache_url=cat.url, storage_options=cat.storage_options)
    proposer.setup()

    render_params = {
        "catalog": cat.url,
        "run_id": run_id,
        "engine": engine,
        "engine_options": engine_options,
        "seed": seed,
        "accept_rule": accept_rule,
        "previews": previews,
        "judge": judge,
        "storage_options": storage_options,
    }
    dispatch = ThreadPoolExecutor(max_workers=max(1, len(batches))) if render_deployment else None
    local_engine = None if render_deployment else make_engine(engine, engine_options)
    local_judge = None if render_deployment else make_judge(judge, cat)
    pending = []
    rendered_jobs = 0
    seen: dict[str, set[str]] = {"clips": set(), "objects": set()}

    def submit_ingest(index: int) -> Any:
        batch = batches[index - 1]
        return ingest_task.with_options(
            task_run_name=f"ingest+segment batch {index}/{len(batches)} ({len(batch)} items)"
        ).submit(batch, cat, geometry=geometry, segmenter=segmenter, run_id=run_id, storage_options=storage_options)

    # Ingest runs ahead on the flow's task runner (threads, or Dask/Ray workers with their own segmenter copy) while
    # this thread proposes and renders the batch before: at most ``ingest_in_flight`` batches are being ingested.
    in_flight = {i: submit_ingest(i) for i in range(1, min(ingest_in_flight, len(batches)) + 1)}
    for index in range(1, len(batches) + 1):
        label = f"{index}/{len(batches)}"
        ing = in_flight.pop(index).result()
        if index + ingest_in_flight <= len(batches):
            in_flight[index + ingest_in_flight] = submit_ingest(index + ingest_in_flight)
        for table in ("clips", "objects"):  # items of one source may fall in several batches: count distinct ids
            seen[table].update(row[f"{table[:-1]}_id"] for row in ing.rows.get(table, []))
            counts[table] = len(seen[table])
        record.with_options(task_run_name=f"record ingest {label}")(
            cat,
            {
                **{t: ing.rows.get(t, []) for t in ("sources", "clips", "objects")},
                "failures": note_failures(ing.failures),
            },
        )

        prop = propose_task.with_options(task_run_name=f"propose batch {label}")(
            ing.rows.get("objects", []), ing.rows.get("clips", []), proposer, edit_types=edit_types, run_id=run_id,
            seed=seed,
        )  # fmt: skip
        _merge(counts, prop.counts)
        record.with_options(task_run_name=f"record instructions {label}")(
            cat, {"instructions": prop.rows["instructions"], "failures": note_failures(prop.failures)}
        )

        report("ingest", index, len(batches))
        jobs = plan_stage(
            prop.rows["instructions"], ing.rows.get("objects", []), ing.rows.get("clips", []), dilation_px=dilation_px
        )
        for jindex, chunk in enumerate(_batches(jobs, batch_size), start=1):
            job_label = f"{run_id[-8:]} {label}.{jindex}"
            if dispatch is None:
                result = render_batch(
                    chunk, cat, local_engine, run_id=run_id, seed=seed, accept_rule=accept_rule, previews=previews,
                    judge=local_judge, batch_label=job_label,
                )  # fmt: skip
                _collect(result, counts, preview_urls, cat)
                rendered_jobs += len(chunk)
                report("render", rendered_jobs, rendered_jobs)
            else:
                pending.append(dispatch.submit(_dispatch, render_deployment, chunk, job_label, render_params, logger))

    if dispatch is not None:
        for done, future in enumerate(pending, start=1):
            report("render", done, len(pending))
            result = future.result()
            if result is None:
                counts["render_batches_failed"] = counts.get("render_batches_failed", 0) + 1
            else:
                _collect(result, counts, preview_urls, cat)
        dispatch.shutdown()

    if counts.get("render_batches_failed"):
        return "failed"
    return "completed_with_failures" if counts.get("failures", 0) else "completed"


def _dispatch(
    deployment: str, jobs: list[RenderJob], label: str, params: dict[str, Any], logger: Any
) -> dict[str, Any] | None:
    """Run one render batch on the deployment's pool and wait; returns its summary (None when it did not complete).

    Runs in a worker thread, which has no Prefect run context: ``logger`` is the flow run's logger, taken by the caller.
    """
    flow_run = run_deployment(
        deployment,
        parameters={**params, "jobs": [job.model_dump() for job in jobs], "batch_label": label},
        flow_run_name=f"render {label}",
        timeout=None,
        poll_interval=2,
    )
    if not flow_run.state or not flow_run.state.is_completed():
        logger.error("render batch %s ended %s", label, flow_run.state)
        return None
    return json.loads(flow_run.state.message or "{}").get("result")


def _collect(result: dict[str, Any], counts: dict[str, int], preview_urls: list[str], cat: Catalog) -> None:
    _merge(counts, result["counts"])
    for uri in result.get("previews", [])[: max(0, 12 - len(preview_urls))]:
        preview_urls.append(cat.full_url(uri))


def _gallery(cat: Catalog, run_id: str, logger: Any) -> str | None:
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
