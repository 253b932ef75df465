"""The factory's stages as plain batch functions, plus thin Prefect ``@task`` wrappers around them.

Stages (docs/architecture.md), each over a batch of items, each returning rows and ``Failure`` values instead of
raising for bad inputs::

    discover_stage  source URL           -> SourceItem list            (+ failures)
    ingest_stage    SourceItem batch     -> clips/objects rows, media  (+ failures)   probe, split, normalise, segment
    propose_stage   objects rows         -> instructions rows          (+ failures)
    plan_stage      instructions rows    -> RenderJob list
    inpaint_stage   RenderJob batch      -> Rendered list, renders rows (+ failures, + skipped: edit types the
                                                                         engine cannot render)
    score_stage     Rendered list        -> pairs rows (remove + add for a removal render) (+ failures)
    record_rows     rows                 -> appended to the catalog, ids already there skipped

The plain functions are what ``bench/orchestration.py`` loops over; the ``*_task`` objects wrap the same functions
for the flows (retries only on I/O errors, no Prefect result caching: resume is reconciled against the catalog's
ids). Flows name each task run after its batch with ``.with_options(task_run_name=...)``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from catalog import ids
from catalog.schema import ID_COLUMNS
from catalog.store import Catalog
from tasks.config import AnnotateConfig, RenderConfig, parse_sam_spec
from tasks.contracts import InpaintEngine, Judge, Proposer, Segmenter
from tasks.engines.base import Inpainted
from tasks.errors import InputError, UnsupportedEditError
from tasks.gate import AcceptRule, ClipScorer, ResegScorer
from tasks.timings import StageTimer, span, use_timer
from tasks.types import Failure, Geometry, SourceItem


# --------------------------------------------------------------------------------------------------------- values
class RenderJob(BaseModel):
    """One instruction to render, as JSON: everything the render flow needs to reload the clip and mask from the
    catalog (it may run on another machine)."""

    instruction_id: str
    object_id: str
    clip_id: str
    edit_type: str
    instruction: str
    instruction_long: str | None = None
    prompt: str = Field("", description="the target caption: what the clip shows after the edit")
    clip_video_uri: str
    mask_uri: str
    fps: float
    dilation_radius: int = Field(
        0, ge=0, description="dilation of the mask before inpainting: radius in pixels (square kernel of side 2r+1)"
    )
    add_instruction_id: str | None = Field(None, description="for a removal: the reverse `add` instruction")
    add_instruction: str | None = None
    add_instruction_long: str | None = None
    label: str | None = Field(None, description="the object's name (the gate's CLIP check)")


@dataclass
class Rendered:
    """A finished render kept in memory for scoring.

    ``frames``/``edited``: `(num_frames, height, width, 3)` uint8; ``masks``: `(num_frames, height, width)` bool,
    the dilated mask that was inpainted.
    """

    job: RenderJob
    render_row: dict[str, Any]
    frames: np.ndarray
    edited: np.ndarray
    masks: np.ndarray
    flags: list[str] = field(default_factory=list)


@dataclass
class StageOutput:
    """Rows per table written (or to write) by a stage, the failures it met, and small counters."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timer: StageTimer | None = field(default=None, repr=False)  # where the stage spent its time (``stage_timings``)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def failure_rows(failures: Iterable[Failure], run_id: str | None) -> list[dict[str, Any]]:
    """``failures`` rows with deterministic ids (stage + item + reason): a rerun never duplicates them."""
    return [f.row(run_id) for f in failures]


def worker_id() -> str:
    """This worker's identity for the per-GPU concurrency limit: ``$VPF_WORKER_ID``, else the host name."""
    return os.environ.get("VPF_WORKER_ID") or socket.gethostname()


# --------------------------------------------------------------------------------------------------------- record
def record_rows(catalog: Catalog, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append the rows whose ids the catalog does not hold yet (and drop repeats within ``rows``); returns how many
    were written. Media named by the rows must already be stored (``Catalog.put_media``)."""
    if not rows:
        return 0
    id_col = ID_COLUMNS[table]
    unique: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        unique.setdefault(row[id_col], row)
    with span("record", items=len(unique)):
        present = catalog.existing_ids(table, list(unique))
        fresh = [row for key, row in unique.items() if key not in present]
        catalog.append(table, fresh)
    return len(fresh)


def record_tables(catalog: Catalog, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """:func:`record_rows` for several tables, in the mapping's order (write referenced rows first); returns the
    number of rows written per table."""
    return {table: record_rows(catalog, table, table_rows) for table, table_rows in rows.items()}


def record_failures(catalog: Catalog, failures: Iterable[Failure], run_id: str | None) -> int:
    return record_rows(catalog, "failures", failure_rows(failures, run_id))


# --------------------------------------------------------------------------------------------------------- discover
def discover_stage(
    source: str,
    *,
    limit: int | None = None,
    roots: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[SourceItem], list[Failure]]:
    """List the work items of a folder, glob, manifest (CSV/JSONL/Parquet) or VPData CSV at any fsspec URL.

    ``limit`` keeps the first N items (manifest order, else sorted by uri). Bad manifest rows are failures.
    """
    from tasks.sources import discover_sources

    items, failures = discover_sources(source, roots=list(roots) if roots else None, storage_options=storage_options)
    if limit is not None:
        items = items[:limit]
    return items, failures


# --------------------------------------------------------------------------------------------------------- ingest
def make_annotators(
    segmenter_spec: str,
    annotate: AnnotateConfig | None = None,
    *,
    cache_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``(segmenter, annotation)`` of a run: the segmenter of ``segmenter_spec`` (``provided``, ``sam:…``,
    ``detect+track:…``, ``sam3:…``) and the :class:`tasks.ingest.Annotation` of ``annotate``
    (a ``tasks.config.AnnotateConfig``; default settings when ``None``). A vision-language model named both as
    captioner and tagger is loaded once. Models load in the parts' ``setup()``; VLM answers are cached under
    ``cache_url`` (the catalog)."""
    from tasks.annotate.caption import make_vlm
    from tasks.annotate.selection import AestheticScorer
    from tasks.annotate.specs import build_segmenter, is_vocab_segmenter, make_vocabulary
    from tasks.ingest import Annotation
    from tasks.segment import ProvidedSegmenter, SamSegmenter

    annotate = annotate or AnnotateConfig()
    vlms: dict[str, Any] = {}

    def vlm(spec: str | None) -> Any:
        if spec is None:
            return None
        if spec not in vlms:
            vlms[spec] = make_vlm(spec, cache_url=cache_url, storage_options=storage_options)
        return vlms[spec]

    aesthetic = None
    if annotate.aesthetic_clip is not None:
        aesthetic = AestheticScorer(annotate.aesthetic_clip, annotate.aesthetic_head)
    annotation = Annotation(captioner=vlm(annotate.captioner), selection=annotate.select, aesthetic=aesthetic)
    if is_vocab_segmenter(segmenter_spec):
        vocabulary = make_vocabulary(
            annotate.vocab, from_caption=annotate.vocab_from_caption, tagger=vlm(annotate.tagger),
            storage_options=storage_options,
        )  # fmt: skip
        segmenter = build_segmenter(segmenter_spec, vocabulary, storage_options=storage_options)
    elif segmenter_spec == "provided":
        segmenter = ProvidedSegmenter(storage_options)
    else:
        segmenter = SamSegmenter(**parse_sam_spec(segmenter_spec), storage_options=storage_options)
    return segmenter, annotation


def make_segmenter(spec: str, annotate: AnnotateConfig | None = None) -> Segmenter:
    """``provided`` (masks from the manifest or next to the videos), ``sam:CHECKPOINT[#options]`` (segment-anything
    from a path or URL; see :func:`parse_sam_spec`), ``detect+track:…`` or ``sam3:…`` (open-vocabulary, with the
    vocabulary of ``annotate``, a ``tasks.config.AnnotateConfig``; see :mod:`tasks.annotate.specs`)."""
    return make_annotators(spec, annotate)[0]


def ingest_stage(
    items: Sequence[SourceItem],
    catalog: Catalog,
    *,
    geometry: Geometry,
    segmenter: Segmenter,
    run_id: str,
    storage_options: Mapping[str, Any] | None = None,
    annotation: Any = None,
) -> StageOutput:
    """Probe, split, normalise and segment a batch of items; media and rows go to the catalog clip by clip (a
    killed run keeps every finished clip; clips already there are not decoded again), and the rows are returned.

    ``storage_options``: for the sources' file system (the catalog has its own). ``annotation``: captions and
    selection (``tasks.ingest.Annotation``; default selection thresholds without it).

    Returns rows for ``sources``, ``clips`` and ``objects`` (already recorded, also those found in the catalog) and
    per-item failures.
    """
    from tasks.ingest import ingest_batch

    timer = StageTimer()  # returned with the output: ingest may run in another process (Dask, Ray)
    with use_timer(timer), timer.span("ingest", items=len(items)):
        result = ingest_batch(
            list(items), catalog, geometry=geometry, segmenter=segmenter, run_id=run_id,
            storage_options=storage_options, record=True, annotation=annotation,
        )  # fmt: skip
    out = StageOutput(rows={k: list(v) for k, v in result.rows.items()}, failures=list(result.failures), timer=timer)
    out.add("items", len(items))
    out.add("clips", len({row["clip_id"] for row in out.rows.get("clips", [])}))
    out.add("objects", len({row["object_id"] for row in out.rows.get("objects", [])}))
    if result.skipped_clips:
        out.add("clips_already_done", result.skipped_clips)
    return out


# --------------------------------------------------------------------------------------------------------- propose
def propose_stage(
    objects: Sequence[Mapping[str, Any]],
    clips: Sequence[Mapping[str, Any]],
    proposer: Proposer,
    *,
    edit_types: Sequence[str],
    run_id: str | None,
    seed: int = 0,
) -> StageOutput:
    """Instructions for every object that passed mask QA (objects rejected by QA are not proposed for).

    ``objects``/``clips``: catalog rows; ``proposer``: already set up.
    """
    from tasks.proposers import ProposalRequest

    clip_by_id = {c["clip_id"]: c for c in clips}
    requests = []
    for obj in objects:
        if obj.get("qa_status", "ok") != "ok":
            continue
        clip = clip_by_id[obj["clip_id"]]
        bbox = obj.get("bbox")
        requests.append(
            ProposalRequest(
                object_id=obj["object_id"],
                clip_id=obj["clip_id"],
                label=obj.get("label"),
                caption=obj.get("caption") or clip.get("caption"),  # the object's own row first
                bbox=tuple(bbox) if bbox else None,
                frame_size=(int(clip["width"]), int(clip["height"])),
                area_ratio=obj.get("area_ratio_mean"),
                edit_types=tuple(edit_types),
                seed=seed,
            )
        )
    out = StageOutput(rows={"instructions": []})
    if not requests:
        return out
    with span("propose", items=len(requests)):
        for outcome in proposer.propose(requests):
            req = outcome.request
            out.rows["instructions"].extend(p.to_row(req.object_id, req.clip_id, run_id) for p in outcome.proposals)
            out.failures.extend(outcome.failures)
    out.add("instructions", len(out.rows["instructions"]))
    return out


# --------------------------------------------------------------------------------------------------------- plan
def plan_stage(
    instructions: Sequence[Mapping[str, Any]],
    objects: Sequence[Mapping[str, Any]],
    clips: Sequence[Mapping[str, Any]],
    *,
    dilation_radius: int | None = None,
) -> list[RenderJob]:
    """Turn instructions into render jobs.

    ``dilation_radius``: dilation of the object masks before inpainting, in pixels (None: the object's own
    ``dilation_radius`` when it has one, else ``tasks.masks.default_dilation_radius`` of the clip width).

    An ``add`` instruction is never rendered on its own: it becomes the reverse pair of its object's removal render
    (inpainted → original). Every other edit type is a job; the inpaint stage skips, with a recorded reason, the ones
    its engine cannot render.
    """
    from tasks.masks import default_dilation_radius

    clip_by_id = {c["clip_id"]: c for c in clips}
    object_by_id = {o["object_id"]: o for o in objects}
    adds = {i["object_id"]: i for i in instructions if i["edit_type"] == "add"}
    jobs = []
    for ins in instructions:
        if ins["edit_type"] == "add":
            continue
        obj, clip = object_by_id[ins["object_id"]], clip_by_id[ins["clip_id"]]
        add = adds.get(ins["object_id"]) if ins["edit_type"] == "remove" else None
        jobs.append(
            RenderJob(
                instruction_id=ins["instruction_id"],
                object_id=ins["object_id"],
                clip_id=ins["clip_id"],
                edit_type=ins["edit_type"],
                instruction=ins["instruction"],
                instruction_long=ins.get("instruction_long"),
                prompt=ins.get("target_caption") or "",
                clip_video_uri=clip["video_uri"],
                mask_uri=obj["mask_uri"],
                fps=float(clip["fps"]),
                dilation_radius=dilation_radius
                if dilation_radius is not None
                else int(obj.get("dilation_radius") or default_dilation_radius(int(clip["width"]))),
                add_instruction_id=add["instruction_id"] if add else None,
                add_instruction=add["instruction"] if add else None,
                add_instruction_long=add.get("instruction_long") if add else None,
                label=obj.get("label"),
            )
        )
    return jobs


# --------------------------------------------------------------------------------------------------------- render
def pair_directions(job: RenderJob) -> list[str]:
    """The pairs one render of ``job`` yields: a removal yields ``remove`` and, with an add instruction, ``add``."""
    if job.edit_type == "remove" and job.add_instruction_id:
        return ["remove", "add"]
    return [job.edit_type]


def output_params(job: RenderJob, engine: InpaintEngine) -> dict[str, Any]:
    """What changes a render's output besides instruction and seed: the engine's parameters and the dilation
    (recorded as ``renders.params_json`` and hashed into the render id)."""
    return {**engine.params(), "dilation_radius": job.dilation_radius}


def job_render_id(job: RenderJob, engine: InpaintEngine, seed: int, generation: str | None = None) -> str:
    """The id ``inpaint_stage`` gives this job's render: instruction + engine id + engine version (code and checkpoint
    hashes) + pixel-changing params + seed (+ ``generation``)."""
    return ids.render_id(
        job.instruction_id,
        engine.engine_id,
        output_params(job, engine),
        seed,
        version=engine.version,
        generation=generation,
    )


def pending_jobs(
    catalog: Catalog, jobs: Sequence[RenderJob], engine: InpaintEngine, seed: int, generation: str | None = None
) -> tuple[list[RenderJob], int]:
    """Resume: drop jobs whose every pair is already in the catalog. Returns (to render, already done).

    Render ids include the engine version, so a rerun with new weights renders every job again (the earlier
    generation stays in the catalog); a new ``generation`` does so on purpose."""
    expected = {
        job.instruction_id: [
            ids.pair_id(job_render_id(job, engine, seed, generation), d) for d in pair_directions(job)
        ]
        for job in jobs
    }
    present = catalog.existing_ids("pairs", [p for ps in expected.values() for p in ps])
    todo = [job for job in jobs if not all(p in present for p in expected[job.instruction_id])]
    return todo, len(jobs) - len(todo)


@dataclass
class Loaded:
    """A job's inputs, read for the engine: `(num_frames, height, width, 3)` uint8 ``frames`` and the dilated
    `(num_frames, height, width)` bool ``masks``."""

    frames: np.ndarray
    masks: np.ndarray
    started: float = field(default_factory=time.perf_counter)


def load_job(job: RenderJob, catalog: Catalog, engine: InpaintEngine) -> Loaded:
    """Read and check a job's clip and mask, dilated as the job says.

    Raises:
        UnsupportedEditError: the engine cannot render the job's edit type (checked before reading anything).
        InputError: the mask does not match the clip (``mask_shape_mismatch``) or a file is unreadable.
    """
    from tasks.masks import decode_masks_npz, dilate_masks
    from tasks.video_io import read_frames

    engine.check_edit_type(job.edit_type)
    with span("render"):
        started = time.perf_counter()
        frames = read_frames(catalog.full_url(job.clip_video_uri), storage_options=catalog.storage_options)
        masks = decode_masks_npz(catalog.read_media(job.mask_uri))
        if masks.shape != frames.shape[:3]:
            raise InputError(
                job.mask_uri, "mask_shape_mismatch", f"mask {masks.shape} does not match clip {frames.shape[:3]}"
            )
        dilated = dilate_masks(masks, job.dilation_radius) if job.dilation_radius else masks
    return Loaded(frames, dilated, started)


def inpaint_job(job: RenderJob, loaded: Loaded, engine: InpaintEngine, *, seed: int) -> Inpainted:
    """The engine's render of one loaded job (the device's part of the work). The wait for an exclusive engine's
    device (another render lane is rendering) is not counted as render time."""
    with engine.device_lock() if engine.exclusive else nullcontext(), span("render", items=1):
        return engine.run(
            loaded.frames, loaded.masks, prompt=job.prompt, edit_type=job.edit_type, seed=seed, name=job.clip_video_uri
        )


def store_render(
    job: RenderJob,
    loaded: Loaded,
    result: Inpainted,
    catalog: Catalog,
    engine: InpaintEngine,
    *,
    seed: int,
    run_id: str | None,
    generation: str | None = None,
) -> Rendered:
    """Store the edited clip and the inpainted mask as media; returns the render with its ``renders`` row
    (``generation``: recorded with the render and part of its id, ``vpf run --rerender``)."""
    from tasks.masks import encode_masks_npz
    from tasks.pairs import renders_table_row
    from tasks.video_io import encode_stored

    with span("encode", items=1):
        video_uri = catalog.put_media(encode_stored(result.frames, job.fps), "mp4")
        mask_uri = catalog.put_media(encode_masks_npz(loaded.masks), "npz")
    row = renders_table_row(
        instruction_id=job.instruction_id,
        clip_id=job.clip_id,
        object_id=job.object_id,
        engine=engine.engine_id,
        engine_version=engine.version,
        params=output_params(job, engine),
        seed=seed,
        video_uri=video_uri,
        mask_uri=mask_uri,
        device=str(engine.device),
        elapsed_s=time.perf_counter() - loaded.started,
        run_id=run_id,
        generation=generation,
    )
    return Rendered(job, row, loaded.frames, result.frames, loaded.masks, list(result.flags))


def inpaint_stage(
    jobs: Sequence[RenderJob],
    catalog: Catalog,
    engine: InpaintEngine,
    *,
    seed: int,
    run_id: str | None,
    generation: str | None = None,
) -> tuple[list[Rendered], StageOutput]:
    """Render a batch, one job after another, with an engine that is already set up (models loaded once per batch).

    ``generation``: recorded with each render and part of its id (``vpf run --rerender``).

    Edit types the engine cannot render are skipped with reason ``unsupported_edit_type`` (counted as ``skipped``,
    recorded as ``failures`` rows). The edited clip and the inpainted mask are stored as media before any row.
    The flows use :func:`render_score_record` (pipelined, recorded per render); this is the plain sequential form.
    """
    out = StageOutput(rows={"renders": []})
    rendered: list[Rendered] = []
    for job in jobs:
        try:
            loaded = load_job(job, catalog, engine)
        except UnsupportedEditError as exc:
            out.failures.append(Failure.from_exception("render", "instruction", job.instruction_id, exc))
            out.add("skipped")
            continue
        except InputError as exc:
            out.failures.append(Failure.from_exception("render", "instruction", job.instruction_id, exc))
            continue
        try:
            result = inpaint_job(job, loaded, engine, seed=seed)
            done = store_render(job, loaded, result, catalog, engine, seed=seed, run_id=run_id, generation=generation)
        except InputError as exc:
            out.failures.append(Failure.from_exception("render", "instruction", job.instruction_id, exc))
            continue
        out.rows["renders"].append(done.render_row)
        rendered.append(done)
    out.add("renders", len(rendered))
    return rendered, out


def render_score_record(
    jobs: Sequence[RenderJob],
    catalog: Catalog,
    engine: InpaintEngine,
    *,
    config: RenderConfig,
    judge: Judge | None = None,
    run_id: str | None,
    generation: str | None = None,
    workers: int = 1,
    timer: StageTimer | None = None,
    in_flight: threading.Semaphore | None = None,
    scorers: GateScorers | None = None,
) -> StageOutput:
    """Render, score and record a batch with an engine that is already set up, pipelined (``tasks.pipeline``): the
    next job renders while the previous render is stored, scored, judged and recorded on ``workers`` threads.

    Each render is recorded as soon as it is done: its ``renders`` row (after its media), then its ``pairs`` rows,
    so a batch stopped after k renders keeps those k. Any exception of one job, expected or not, becomes a
    ``failures`` row (stage ``render``, ``score`` or ``record``) recorded at once, and the batch goes on.
    ``workers=0``: the sequential reference (one job after another, no threads). ``generation``: see
    :func:`store_render`. ``in_flight``: a semaphore bounding the renders held in memory, shared by batches that
    render at once (default: ``workers + 1`` for this batch alone). ``scorers``: the gate's CLIP and re-segmentation
    models, shared by the batches of one run (default: loaded for this batch).

    Returns counts (``renders``, ``skipped``, ``pairs``, ``accepted``, ``judged``, ``failures``: all recorded
    already), the failures, ``rows["previews"]`` (``{"preview_uri": …}`` per pair with a preview) and ``timer``.
    """
    from threading import Lock

    from tasks.pipeline import RenderPipeline

    timer = timer or StageTimer()
    out = StageOutput(rows={"previews": []}, timer=timer)
    lock = Lock()
    # the gate's models: once for the batch (or once for the run, from the caller's ``scorers``), never per render
    clip, reseg = (scorers or GateScorers()).get(config, catalog.storage_options)

    def failed(failure: Failure, *, skipped: bool = False) -> None:
        record_rows(catalog, "failures", failure_rows([failure], run_id))
        with lock:
            out.failures.append(failure)
            out.add("skipped" if skipped else "failures")

    def on_error(job: RenderJob, step: str, exc: BaseException) -> None:
        failed(Failure.from_exception("render", "instruction", job.instruction_id, exc),
               skipped=isinstance(exc, UnsupportedEditError))  # fmt: skip

    def finish(job: RenderJob, item: tuple[Loaded, Inpainted]) -> None:
        loaded, result = item
        stored = store_render(
            job, loaded, result, catalog, engine, seed=config.seed, run_id=run_id, generation=generation
        )
        del loaded, result
        record_rows(catalog, "renders", [stored.render_row])  # durable before it is scored
        with lock:
            out.add("renders")
        render_id = stored.render_row["render_id"]
        try:
            scored = score_stage([stored], catalog, config=config, judge=judge, run_id=run_id, clip=clip, reseg=reseg)
        except Exception as exc:  # a bug or a broken judge: this render's pairs fail, the batch goes on
            failed(Failure.from_exception("score", "render", render_id, exc))
            return
        try:
            record_tables(catalog, {"pairs": scored.rows["pairs"], "failures": failure_rows(scored.failures, run_id)})
        except Exception as exc:
            failed(Failure.from_exception("record", "render", render_id, exc))
            return
        with lock:
            out.failures.extend(scored.failures)
            out.add("failures", len(scored.failures))
            for key in ("pairs", "accepted", "judged"):
                out.add(key, scored.counts.get(key, 0))
            out.rows["previews"].extend(
                {"preview_uri": p["preview_uri"]} for p in scored.rows["pairs"] if p.get("preview_uri")
            )

    pipeline: RenderPipeline[RenderJob, Loaded, tuple[Loaded, Inpainted]] = RenderPipeline(
        lambda job: load_job(job, catalog, engine),
        lambda job, loaded: (loaded, inpaint_job(job, loaded, engine, seed=config.seed)),
        finish,
        on_error,
        workers=workers,
        concurrent=not engine.exclusive,  # CPU engines render on every finishing thread at once
        slots=in_flight,
    )
    with use_timer(timer):
        pipeline.run(list(jobs))
    for key in ("renders", "pairs", "accepted", "failures", "skipped"):
        out.counts.setdefault(key, 0)
    return out


# --------------------------------------------------------------------------------------------------------- score
class GateScorers:
    """The gate's weighted scorers (CLIP, re-segmentation) of one render configuration, loaded on first use and then
    shared: one per render batch, or one per run when a caller renders several batches in one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[ClipScorer | None, ResegScorer | None] | None = None

    def get(
        self, config: RenderConfig, storage_options: Mapping[str, Any] | None = None
    ) -> tuple[ClipScorer | None, ResegScorer | None]:
        """``(clip, reseg)`` for ``config`` (None where not configured), loaded once."""
        with self._lock:
            if self._loaded is None:
                self._loaded = (clip_scorer(config), reseg_scorer(config, storage_options=storage_options))
            return self._loaded


def clip_scorer(config: RenderConfig) -> ClipScorer | None:
    """The CLIP scorer of ``config.clip_weights``, loaded (None without weights): build it once per render batch. A
    missing folder fails the batch loudly."""
    if not config.clip_weights:
        return None
    clip = ClipScorer(config.clip_weights)
    clip.setup()
    return clip


def reseg_scorer(config: RenderConfig, *, storage_options: Mapping[str, Any] | None = None) -> ResegScorer | None:
    """The re-segmentation scorer of ``config.reseg_segmenter``, loaded (None without one): build it once per render
    batch. Models that cannot be loaded fail the batch loudly, naming the spec and the path."""
    if not config.reseg_segmenter:
        return None
    reseg = ResegScorer(config.reseg_segmenter, storage_options=dict(storage_options or {}))
    reseg.setup()
    return reseg


def score_stage(
    rendered: Sequence[Rendered],
    catalog: Catalog,
    *,
    config: RenderConfig,
    judge: Judge | None = None,
    run_id: str | None,
    clip: ClipScorer | None = None,
    reseg: ResegScorer | None = None,
) -> StageOutput:
    """The quality gate, accept/reject decisions and previews for each render; returns ``pairs`` rows.

    The gate (``tasks.gate``) scores what a trainer reads: the stored clip as decoded for rendering and the stored
    render decoded back from the catalog, with the inpainted (dilated) mask and the object's own mask. Each render is
    scored once; a removal render yields two pairs from that one score: ``remove`` (original → inpainted) with the
    removal decision, and ``add`` (inpainted → original), which must pass the same checks plus its own
    (``AcceptRule.decide(..., "add")``). With ``config.clip_weights`` the CLIP label check runs with ``clip`` (the
    batch's scorer, see :func:`clip_scorer`; built here when not given, i.e. once per call); with
    ``config.reseg_segmenter`` the re-segmentation check runs with ``reseg`` (likewise, :func:`reseg_scorer`). With a
    ``judge`` every pair is also scored by the judge from its own source and target frames, in one batch; its scores
    are stored with the pair and the rule is applied to gate and judge columns together.
    """
    from tasks import gate, pairs
    from tasks import previews as previews_mod
    from tasks.masks import decode_masks_npz
    from tasks.video_io import read_frames

    rule = config.accept_rule
    if clip is None:
        clip = clip_scorer(config)
    if reseg is None:
        reseg = reseg_scorer(config, storage_options=catalog.storage_options)
    out = StageOutput(rows={"pairs": []})
    judged: list[tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]] = []
    for r in rendered:
        try:
            with span("score", items=1):  # the stored render, decoded back, as a trainer reads it
                stored = read_frames(
                    catalog.full_url(r.render_row["video_uri"]), storage_options=catalog.storage_options
                )
                objects = decode_masks_npz(catalog.read_media(r.job.mask_uri))
                quality = gate.score_render(
                    r.frames,
                    stored,
                    r.masks,
                    object_masks=objects,
                    flags=r.flags,
                    label=r.job.label,
                    clip=clip,
                    reseg=reseg,
                )
            preview_uri = sheet_uri = None
            if config.previews:
                with span("encode", items=1):
                    preview_uri = catalog.put_media(
                        previews_mod.side_by_side_mp4(r.frames, r.masks, stored, r.job.fps), "mp4"
                    )
                    sheet_uri = catalog.put_media(previews_mod.contact_sheet_png(r.frames, r.masks, stored), "png")
            rows = pairs.pair_rows(
                r.render_row,
                r.job.model_dump(),
                quality=quality,
                decision=rule.decide(quality, "remove"),
                preview_uri=preview_uri,
                contact_sheet_uri=sheet_uri,
                run_id=run_id,
            )
        except InputError as exc:
            out.failures.append(Failure.from_exception("score", "render", r.render_row["render_id"], exc))
            continue
        for row in rows:
            if row["edit_type"] == "add":
                row["decision"], row["decision_reason"] = rule.decide(quality, "add")
        out.rows["pairs"].extend(rows)
        if judge is not None:
            for row in rows:
                # an ``add`` pair of a removal runs backwards: inpainted → original
                source, target = (stored, r.frames) if row["src_video_uri"] == r.render_row["video_uri"] else (
                    r.frames, stored)  # fmt: skip
                judged.append((row, quality, source, target))
    if judged:
        with span("score"):
            _judge_pairs(judge, judged, rule, out)
    out.add("pairs", len(out.rows["pairs"]))
    out.add("accepted", sum(1 for p in out.rows["pairs"] if p.get("decision") == "accepted"))
    return out


def _judge_pairs(
    judge: Judge,
    judged: Sequence[tuple[dict[str, Any], Mapping[str, Any], np.ndarray, np.ndarray]],
    rule: AcceptRule,
    out: StageOutput,
) -> None:
    """Score pairs with the judge in one batch; update their ``judge_*`` columns and decisions in place (the gate's
    columns and the judge's scores together, each pair in its own direction)."""
    from tasks.judge import JudgeRequest

    requests = [
        JudgeRequest(
            pair_id=row["pair_id"],
            instruction=row.get("instruction_long") or row["instruction"],
            edit_type=row["edit_type"],
            source_frames=source,
            edited_frames=target,
        )
        for row, _, source, target in judged
    ]
    for (row, quality, _, _), verdict in zip(judged, judge.judge(requests), strict=True):
        columns = verdict.columns()
        row.update(columns)
        direction = "add" if row["edit_type"] == "add" else "remove"
        row["decision"], row["decision_reason"] = rule.decide({**quality, **columns}, direction)
        out.failures.extend(verdict.failures)
    out.add("judged", len(judged))


# --------------------------------------------------------------------------------------------------------- tasks
def _retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only transient I/O problems (object stores, network file systems); never bad data or bugs."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) and not isinstance(exc, InputError)


_TASK_OPTIONS = {"cache_policy": NO_CACHE, "persist_result": False, "retries": 2, "retry_delay_seconds": [2, 10]}

discover_task = task(
    discover_stage, name="discover", task_run_name="discover", retry_condition_fn=_retry_on_io, **_TASK_OPTIONS
)
ingest_task = task(ingest_stage, name="ingest", retry_condition_fn=_retry_on_io, **_TASK_OPTIONS)
propose_task = task(propose_stage, name="propose", retry_condition_fn=_retry_on_io, **_TASK_OPTIONS)
record_task = task(record_tables, name="record", retry_condition_fn=_retry_on_io, **_TASK_OPTIONS)
