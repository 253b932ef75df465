"""Ingest a batch of sources: probe, hash, split into scenes, cut model-geometry clips, segment, QA, store media.

:func:`ingest_batch` never raises for a bad item: every ``InputError`` becomes a :class:`Failure` and the batch goes
on. Sources are processed one at a time and clips are decoded, encoded and stored one at a time, so memory stays
bounded by one clip (plus one provided label map) whatever the sources' length.

What it returns (:class:`IngestResult`):

- ``rows``: rows for the ``sources``, ``clips`` and ``objects`` tables (matching ``catalog/schema.py``), whose media
  (the normalised clip mp4, the object's undilated mask npz) are already stored with ``catalog.put_media``. The caller
  appends them (and the failures) to the catalog.
- ``objects``: every object, with ``qa_ok``; rejected objects also get an ``objects`` row with
  ``qa_status="rejected"`` and ``qa_reason`` (decisions are recorded, never deleted) *and* a ``failures`` entry
  (stage ``segment``, item kind ``object``) so they show up with the other failures. Only ``qa_ok`` objects should go
  on to propose/render.
- ``failures``: stage ``ingest`` (item kind ``source``, item id = the source uri) for bad videos, ranges and clips;
  stage ``segment`` (item kind ``clip``) for masks that cannot be produced, (item kind ``object``) for QA rejections.

Annotation (:class:`Annotation`, optional): a clip without a caption is described by a vision-language model
(``clips.caption``, ``clips.caption_model``); every clip is measured and selected (motion, static, blur, brightness,
aesthetic where configured: ``clips.selection``/``selection_reasons``); a rejected clip is kept as a row with its
reasons and a ``failures`` entry (stage ``select``) and is not segmented. Every object is selected by
:func:`tasks.annotate.selection.select_object` (mask QA, track continuity, size, detector score), its measures and
reasons in its row.

Masks: an item with a ``mask_uri`` always uses its provided masks (:class:`ProvidedSegmenter`); the ``segmenter``
argument serves the items without one. Items that share a video and a frame range (VPData lists one row per object)
share their clips: the video is decoded once and each item's object is segmented on the same clips.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from catalog.ids import sha256_stream
from catalog.ids import source_id as make_source_id
from catalog.store import Catalog
from tasks.annotate.selection import SelectionOptions, clip_measures, select_clip, select_object
from tasks.clips import check_geometry, frame_stride, item_range, iter_clips, plan_windows
from tasks.errors import InputError
from tasks.masks import encode_masks_npz
from tasks.scenes import detect_scenes
from tasks.segment import ProvidedSegmenter, Segmenter
from tasks.types import Clip, Failure, Geometry, ObjectMask, SourceItem, VideoInfo
from tasks.video_io import encode_mp4, probe_video


@dataclass
class MaskQAOptions:
    """Thresholds of :func:`tasks.masks.qa_masks` (the paper's defaults)."""

    min_area: float = 0.01
    max_area: float = 0.90
    max_area_change: float = 0.20


@dataclass
class Annotation:
    """What ingest does besides cutting and segmenting: captions for clips without one, selection thresholds, an
    optional aesthetic scorer (``tasks.annotate.selection.AestheticScorer``)."""

    captioner: Any = None  # tasks.annotate.caption.VLMAnnotator
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    aesthetic: Any = None

    def setup(self) -> None:
        for part in (self.captioner, self.aesthetic):
            if part is not None:
                part.setup()


@dataclass
class IngestResult:
    """What a batch produced. ``clips``/``objects`` have their arrays released (zero-length first axis) unless
    ``keep_arrays=True``; their media is in the catalog at the rows' ``video_uri``/``mask_uri``."""

    clips: list[Clip] = field(default_factory=list)
    objects: list[ObjectMask] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"sources": [], "clips": [], "objects": []})
    failures: list[Failure] = field(default_factory=list)


def _hash_source(uri: str, storage_options: Mapping[str, Any] | None) -> str:
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            return sha256_stream(f)
    except FileNotFoundError:
        raise InputError(uri, "not_found", "no such file or object") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(uri, "unreadable", f"cannot be read ({exc.strerror or exc})") from None


def _group_key(item: SourceItem) -> tuple:
    return (item.uri, item.start_frame, item.end_frame, item.start_s, item.end_s)


def ingest_batch(
    items: list[SourceItem],
    catalog: Catalog,
    *,
    geometry: Geometry,
    segmenter: Segmenter,
    run_id: str,
    min_scene_len: int = 15,
    scene_threshold: float = 27.0,
    max_clips_per_source: int | None = None,
    qa: MaskQAOptions | None = None,
    crf: int = 18,
    preset: str = "medium",
    storage_options: Mapping[str, Any] | None = None,
    keep_arrays: bool = False,
    annotation: Annotation | None = None,
) -> IngestResult:
    """Ingest ``items`` into clips and objects (see the module docstring).

    Args:
        items: work items from :func:`tasks.sources.discover_sources`.
        catalog: where media is stored (``put_media``) before the rows naming it are returned.
        geometry: the clip geometry (even height and width).
        segmenter: masks for items without a ``mask_uri``; set up once per batch.
        run_id: written into every row.
        min_scene_len, scene_threshold: PySceneDetect ContentDetector settings (native frames, HSV score).
        max_clips_per_source: at most this many windows per item (per group of items sharing a video and range).
        qa: mask QA thresholds (ignored when ``annotation`` is given: its ``selection`` holds them).
        crf, preset: libx264 settings of the normalised clip mp4.
        storage_options: fsspec options for reading sources and masks.
        keep_arrays: keep clip frames and object masks in the result (memory grows with the batch).
        annotation: captions, selection thresholds, aesthetic scorer (default: selection with the ``qa`` area
            thresholds and the default clip checks, no captioner).
    """
    check_geometry(geometry)
    if annotation is None:
        qa = qa or MaskQAOptions()
        selection = SelectionOptions(min_area=qa.min_area, max_area=qa.max_area, max_area_change=qa.max_area_change)
        annotation = Annotation(selection=selection)
    result = IngestResult()
    provided = ProvidedSegmenter(storage_options)
    needs_segmenter = any(not item.mask_uri for item in items)
    if needs_segmenter:
        segmenter.setup()  # once per batch
    if items:
        annotation.setup()

    groups: dict[tuple, list[SourceItem]] = {}
    for item in items:
        groups.setdefault(_group_key(item), []).append(item)

    seen_sources: set[str] = set()
    for group in groups.values():
        lead = group[0]
        try:
            info = probe_video(lead.uri, storage_options=storage_options)
            source_id = make_source_id(_hash_source(lead.uri, storage_options))
        except InputError as exc:
            result.failures.extend(Failure.from_exception("ingest", "source", it.uri, exc) for it in group)
            continue
        if source_id not in seen_sources:  # a readable video is a source, even if no clip fits in it
            seen_sources.add(source_id)
            result.rows["sources"].append(_source_row(info, source_id, lead, run_id))
        try:
            start, end = item_range(lead, info)
            scenes = detect_scenes(
                lead.uri,
                start=start,
                end=end,
                threshold=scene_threshold,
                min_scene_len=min_scene_len,
                storage_options=storage_options,
            )
            stride = frame_stride(info.fps, geometry)
            windows = plan_windows(scenes, start, end, stride, geometry, uri=lead.uri, max_clips=max_clips_per_source)
            for clip in iter_clips(lead, info, windows, geometry, source_id, storage_options=storage_options):
                video_uri = catalog.put_media(encode_mp4(clip.frames, geometry.fps, crf=crf, preset=preset), "mp4")
                extra = _annotate_clip(clip, group, annotation, result)
                result.rows["clips"].append({**_clip_row(clip, geometry, video_uri, run_id), **extra})
                if extra["selection"] == "ok":
                    for item in group:
                        _segment_clip(
                            dataclasses.replace(clip, item=item, caption=item.caption or clip.caption),
                            info,
                            provided if item.mask_uri else segmenter,
                            catalog,
                            annotation.selection,
                            run_id,
                            result,
                            keep_arrays,
                        )
                if not keep_arrays:  # a new empty array: a [:0] view would keep the whole buffer alive
                    clip.frames = np.empty((0, *clip.frames.shape[1:]), clip.frames.dtype)
                result.clips.append(clip)
        except InputError as exc:
            result.failures.extend(Failure.from_exception("ingest", "source", it.uri, exc) for it in group)
    return result


def _annotate_clip(
    clip: Clip, group: list[SourceItem], annotation: Annotation, result: IngestResult
) -> dict[str, Any]:
    """Caption (when nothing gave one) and clip selection; returns the clip row's annotation columns."""
    extra: dict[str, Any] = {"caption_model": None}
    if annotation.captioner is not None and not clip.caption and not any(it.caption for it in group):
        caption, problems = annotation.captioner.caption(clip.frames)
        for reason, message in problems:
            result.failures.append(Failure("caption", "clip", clip.clip_id, reason, message))
        if caption:
            clip.caption = caption
            extra["caption_model"] = annotation.captioner.model_id
    measures: dict[str, Any] = clip_measures(clip.frames)
    measures["aesthetic"] = annotation.aesthetic.score(clip.frames) if annotation.aesthetic is not None else None
    reasons = select_clip(measures, annotation.selection)
    if reasons:
        summary = ", ".join(f"{k}={v:.3g}" for k, v in measures.items() if v is not None)
        result.failures.append(
            Failure(
                "select",
                "clip",
                clip.clip_id,
                reasons[0],
                f"{clip.source_uri}: clip rejected ({', '.join(reasons)}; {summary})",
                "Selection",
            )  # fmt: skip
        )
    return {
        **extra,
        "caption": clip.caption,
        **measures,
        "selection": "rejected" if reasons else "ok",
        "selection_reasons": reasons,
    }


def _segment_clip(
    clip: Clip,
    info: VideoInfo,
    segmenter: Segmenter,
    catalog: Catalog,
    selection: SelectionOptions,
    run_id: str,
    result: IngestResult,
    keep_arrays: bool,
) -> None:
    try:
        objects = segmenter.segment(clip, video=info)
    except InputError as exc:
        result.failures.append(Failure.from_exception("segment", "clip", clip.clip_id, exc))
        return
    finally:  # problems that are not the clip's failure (refused vocabulary tags, …); optional for segmenters
        drain = getattr(segmenter, "drain_failures", None)
        if drain is not None:
            result.failures.extend(drain())
    for obj in objects:
        reasons, measures = select_object(obj.masks, selection, score=obj.stats.get("score"))
        message = measures.pop("qa_message", None)
        obj.stats = {**measures, **obj.stats}
        if not obj.qa_ok:  # the segmenter's own verdict (a track lost by segment-anything) comes first
            reasons = [obj.qa_reason or "rejected", *reasons]
            message = f"object lost at clip frame {obj.stats.get('lost_frame')}"
        elif reasons:
            obj.qa_ok, obj.qa_reason = False, reasons[0]
        obj.stats["selection_reasons"] = list(dict.fromkeys(reasons))
        mask_uri = catalog.put_media(encode_masks_npz(obj.masks), "npz")
        result.rows["objects"].append(_object_row(obj, mask_uri, run_id))
        if not obj.qa_ok:
            where = clip.item.mask_uri if clip.item is not None and clip.item.mask_uri else clip.source_uri
            detail = message or f"rejected by selection ({', '.join(obj.stats['selection_reasons'])})"
            result.failures.append(
                Failure(
                    stage="segment",
                    item_kind="object",
                    item_id=obj.object_id,
                    reason=obj.qa_reason or "rejected",
                    message=f"{where} (clip {clip.clip_id}): {detail}",
                    error_type="MaskQA",
                )
            )
        if not keep_arrays:
            obj.masks = np.empty((0, *obj.masks.shape[1:]), bool)
        result.objects.append(obj)


def _source_row(info: VideoInfo, source_id: str, item: SourceItem, run_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "uri": info.uri,
        "size_bytes": info.size_bytes,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "num_frames": info.num_frames,
        "duration_s": info.duration_s,
        "rotation": info.rotation,
        "manifest_uri": item.manifest_uri,
        "caption": item.caption,
        "license": item.license,
        "attribution": item.attribution,
        "run_id": run_id,
    }


def _clip_row(clip: Clip, geometry: Geometry, video_uri: str, run_id: str) -> dict[str, Any]:
    return {
        "clip_id": clip.clip_id,
        "source_id": clip.source_id,
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "frame_stride": clip.frame_stride,
        "num_frames": int(len(clip.frames)),
        "fps": float(clip.fps),
        "width": geometry.width,
        "height": geometry.height,
        "resize_mode": clip.resize_mode,
        "scene_index": clip.scene_index,
        "caption": clip.caption,
        "video_uri": video_uri,
        "run_id": run_id,
    }


def _object_row(obj: ObjectMask, mask_uri: str, run_id: str) -> dict[str, Any]:
    stats = obj.stats
    return {
        "object_id": obj.object_id,
        "clip_id": obj.clip_id,
        "label": obj.label,
        "mask_source": obj.mask_source,
        "mask_id": obj.mask_id,
        "mask_uri": mask_uri,
        "dilation_radius": 0,
        "area_ratio_mean": stats.get("area_ratio_mean"),
        "area_ratio_min": stats.get("area_ratio_min"),
        "area_ratio_max": stats.get("area_ratio_max"),
        "max_area_change": _finite(stats.get("max_area_change")),
        "bbox": stats.get("bbox"),
        "qa_status": "ok" if obj.qa_ok else "rejected",
        "qa_reason": obj.qa_reason,
        "selection_reasons": stats.get("selection_reasons", []),
        "score": stats.get("score"),
        "vocab_source": stats.get("vocab_source"),
        "track_iou_min": stats.get("track_iou_min"),
        "track_lost_frames": stats.get("track_lost_frames"),
        "track_reappearances": stats.get("track_reappearances"),
        "min_side_px": stats.get("min_side_px"),
        "run_id": run_id,
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
