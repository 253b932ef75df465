"""Render: one job's clip and mask read back from the catalog, filled by the engine, stored as media.

This module is the one place a render's identity is built (:func:`render_params`, :func:`render_id_of`): the
instruction, the engine's id and version (code and checkpoint hashes), the engine's own pixel-changing parameters
and the pipeline's (the mask dilation) in separate namespaces, the seed and, with ``--rerender``, the generation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catalog import ids
from catalog.store import Catalog
from tasks.effect_segments import EffectSegmenter, SegmentedEffects, combine
from tasks.engines.base import Inpainted, InpaintEngine
from tasks.errors import InputError, UnsupportedEditError
from tasks.steps.outputs import StepOutput
from tasks.steps.plan import RenderJob
from tasks.timings import span
from tasks.types import Failure


def render_params(job: RenderJob, engine: InpaintEngine) -> dict[str, Any]:
    """What changes a render's pixels besides instruction, engine version and seed: ``{"engine": the engine's own
    parameters, "pipeline": what the factory does around it (the mask dilation; ``effect_masks`` and the finder's
    version ``effect_finder`` when the mask grows to the object's side effects, absent when off, so renders made
    before the option keep their ids;
    ``effect_segmenter`` and ``effect_phrases`` when an open-vocabulary segmenter is asked for them, absent
    otherwise)}``. Recorded as ``renders.params_json`` and hashed into the render id; an engine option and a pipeline
    setting of the same name never overwrite each other."""
    pipeline: dict[str, Any] = {"dilation_radius": job.dilation_radius}
    if job.effect_masks != "off":
        from tasks.effects import FINDER_VERSION

        pipeline["effect_masks"] = job.effect_masks
        pipeline["effect_finder"] = FINDER_VERSION
    if job.effect_segmenter:
        pipeline["effect_segmenter"] = job.effect_segmenter
        pipeline["effect_phrases"] = list(job.effect_phrases)
    return {"engine": engine.params(), "pipeline": pipeline}


def render_id_of(job: RenderJob, engine: InpaintEngine, seed: int, generation: str | None = None) -> str:
    """The id of ``job``'s render by ``engine`` with ``seed`` (and ``generation``: ``vpf run --rerender``)."""
    return ids.render_id(
        job.instruction_id, engine.engine_id, render_params(job, engine), seed, version=engine.version,
        generation=generation,
    )  # fmt: skip


def pending(
    catalog: Catalog, jobs: Sequence[RenderJob], engine: InpaintEngine, seed: int, generation: str | None = None
) -> tuple[list[RenderJob], int]:
    """Resume: ``(jobs with a pair missing from the catalog, number of jobs already done)``. New weights (a new
    engine version) or a new ``generation`` make new render ids, so those jobs render again."""
    expected = {
        job.instruction_id: [ids.pair_id(render_id_of(job, engine, seed, generation), d) for d in job.directions()]
        for job in jobs
    }
    present = catalog.existing_ids("pairs", [p for ps in expected.values() for p in ps])
    todo = [job for job in jobs if not all(p in present for p in expected[job.instruction_id])]
    return todo, len(jobs) - len(todo)


@dataclass
class JobInputs:
    """A job's inputs as the engine and the gate read them: ``frames`` `(num_frames, height, width, 3)` uint8, the
    object's own ``object_masks`` and the dilated ``masks`` to fill (grown to the object's side effects unless
    ``effect_masks="off"``), both `(num_frames, height, width)` bool; ``effect_area`` (share of the clip's pixels)
    and ``effect_source`` (``tasks.effects.EffectMasks.source``, ``segmenter`` or ``segmenter+<that source>`` with the
    open-vocabulary route: ``tasks.effect_segments.combine``; or ``off``) say what the side effects added."""

    frames: np.ndarray
    object_masks: np.ndarray
    masks: np.ndarray
    started: float = field(default_factory=time.perf_counter)
    effect_area: float | None = None
    effect_source: str = "off"


@dataclass
class Rendered:
    """A stored render kept in memory for scoring: its ``renders`` row, the source ``frames`` and the ``edited``
    frames `(num_frames, height, width, 3)` uint8, the filled ``masks`` and the ``object_masks`` `(num_frames,
    height, width)` bool, and the engine's quality ``flags``."""

    job: RenderJob
    row: dict[str, Any]
    frames: np.ndarray
    edited: np.ndarray
    masks: np.ndarray
    object_masks: np.ndarray
    flags: list[str] = field(default_factory=list)


def load(
    job: RenderJob, catalog: Catalog, engine: InpaintEngine, *, effect_segmenter: EffectSegmenter | None = None
) -> JobInputs:
    """Read a job's clip and mask (each decoded once), grow the mask to the object's side effects
    (``tasks.effects.find_effects``, on still and moving cameras; ``job.effect_masks``: ``auto`` or ``all``) and
    dilate it as the job says. A job with ``effect_segmenter`` also grows it by what ``effect_segmenter`` (loaded for
    that spec) finds for its phrases (``tasks.effect_segments``).

    Raises:
        UnsupportedEditError: the engine cannot render the job's edit type (checked before reading anything).
        InputError: the mask does not match the clip (``mask_shape_mismatch``) or a file is unreadable; the job asks
            for a side-effect segmenter other than ``effect_segmenter`` (``effect_segmenter_not_loaded``).
    """
    from tasks.masks import decode_masks_npz, dilate_masks
    from tasks.video_io import read_frames

    engine.check_edit_type(job.edit_type)
    with span("load"):
        started = time.perf_counter()
        frames = read_frames(catalog.full_url(job.clip_video_uri), storage_options=catalog.storage_options)
        masks = decode_masks_npz(catalog.read_media(job.mask_uri))
        if masks.shape != frames.shape[:3]:
            raise InputError(
                job.mask_uri, "mask_shape_mismatch", f"mask {masks.shape} does not match clip {frames.shape[:3]}"
            )
        grown, effect_area, effect_source = masks, None, "off"
        if job.effect_masks != "off":
            from tasks.effects import find_effects

            effects = find_effects(frames, masks, name=job.mask_uri)  # auto and all alike: every camera
            found, effect_area, effect_source = combine(effects, _by_name(job, frames, masks, effect_segmenter))
            grown = masks | found
        dilated = dilate_masks(grown, job.dilation_radius) if job.dilation_radius else grown
    return JobInputs(frames, masks, dilated, started, effect_area, effect_source)


def _by_name(
    job: RenderJob, frames: np.ndarray, masks: np.ndarray, effect_segmenter: EffectSegmenter | None
) -> SegmentedEffects | None:
    """What the job's open-vocabulary segmenter finds of its object's side effects; None when it asks none (or has
    no label: the weight-free finder alone)."""
    if not job.effect_segmenter or not job.label:
        return None
    if effect_segmenter is None or effect_segmenter.name != job.effect_segmenter:
        loaded = effect_segmenter.name if effect_segmenter else "none"
        raise InputError(job.effect_segmenter, "effect_segmenter_not_loaded",
                         f"the job asks this side-effect segmenter; the render has loaded {loaded}")  # fmt: skip
    return effect_segmenter.find(frames, masks, job.label, job.effect_phrases)


def inpaint(job: RenderJob, inputs: JobInputs, engine: InpaintEngine, *, seed: int) -> Inpainted:
    """The engine's fill of one job (the device's part of the work); the wait for an exclusive engine's device is
    not counted as render time."""
    with engine.device_lock() if engine.exclusive else nullcontext(), span("render", items=1):
        return engine.run(
            inputs.frames, inputs.masks, prompt=job.prompt, edit_type=job.edit_type, seed=seed, name=job.clip_video_uri
        )


def store(
    job: RenderJob,
    inputs: JobInputs,
    result: Inpainted,
    catalog: Catalog,
    engine: InpaintEngine,
    *,
    seed: int,
    run_id: str | None,
    generation: str | None = None,
) -> Rendered:
    """Store the edited clip and the filled mask as media; returns the render with its ``renders`` row."""
    from tasks.masks import encode_masks_npz
    from tasks.video_io import encode_stored

    with span("encode", items=1):
        video_uri = catalog.put_media(encode_stored(result.frames, job.fps), "mp4")
        mask_uri = catalog.put_media(encode_masks_npz(inputs.masks), "npz")
    params = render_params(job, engine)
    row = {
        "render_id": render_id_of(job, engine, seed, generation),
        "instruction_id": job.instruction_id,
        "clip_id": job.clip_id,
        "object_id": job.object_id,
        "engine": engine.engine_id,
        "engine_version": engine.version,
        "params_json": json.dumps(params, sort_keys=True, default=str),
        "seed": int(seed),
        "generation": generation,
        "video_uri": video_uri,
        "mask_uri": mask_uri,
        "effect_area": inputs.effect_area,
        "effect_source": inputs.effect_source,
        "device": str(engine.device),
        "elapsed_s": time.perf_counter() - inputs.started,
        "run_id": run_id,
    }
    return Rendered(job, row, inputs.frames, result.frames, inputs.masks, inputs.object_masks, list(result.flags))


def render_jobs(
    jobs: Sequence[RenderJob],
    catalog: Catalog,
    engine: InpaintEngine,
    *,
    seed: int,
    run_id: str | None,
    generation: str | None = None,
    effect_segmenter: EffectSegmenter | None = None,
) -> tuple[list[Rendered], StepOutput]:
    """Render jobs one after another with an engine already set up (and the jobs' side-effect segmenter, if they ask
    one); nothing is recorded (``vpf reproduce`` renders into a scratch catalog this way). Edit types the engine
    cannot render are counted as ``skipped``; both they and bad inputs are returned as failures."""
    out = StepOutput(rows={"renders": []})
    rendered: list[Rendered] = []
    for job in jobs:
        try:
            inputs = load(job, catalog, engine, effect_segmenter=effect_segmenter)
            done = store(job, inputs, inpaint(job, inputs, engine, seed=seed), catalog, engine, seed=seed,
                         run_id=run_id, generation=generation)  # fmt: skip
        except InputError as exc:  # UnsupportedEditError included
            out.failures.append(Failure.from_exception("render", "instruction", job.instruction_id, exc))
            out.add("skipped" if isinstance(exc, UnsupportedEditError) else "failures")
            continue
        out.rows["renders"].append(done.row)
        rendered.append(done)
    out.add("renders", len(rendered))
    return rendered, out
