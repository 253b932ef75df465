"""Ingest a batch of sources: probe, hash, split into scenes, cut model-geometry clips, segment, QA, store media.

:func:`ingest_batch` never raises for a bad item: every exception met while handling one source, clip or row's
object (an ``InputError``, or anything unforeseen: a damaged archive, a decoder crash) becomes a :class:`Failure`
and the batch goes on. Unforeseen ones get reason ``unexpected_error`` with the exception's type and text. Only
problems of the run itself propagate: the catalog cannot be written, the segmenter's model does not load.
Sources are processed one at a time and clips are decoded, encoded and stored one at a time, so memory stays
bounded by one clip (plus one provided label map) whatever the sources' length; a short range (at most
``ONE_PASS_BYTES`` of frames at the clip geometry) is decoded once for both scene detection and its clips, and held
while its clips are cut.

Durability and resume (``record=True``, ``resume=True``): each clip's rows (its source, the clip, its objects, the
failures met so far) are appended to the catalog as soon as the clip is done, so a killed run loses at most the clip
in progress. Before decoding, the clip ids of the planned windows are looked up: a clip whose clip row and every
asked-for object row (matched by the rows' ``row_key``) are in the catalog is neither decoded nor segmented again;
its rows come back from the catalog for the caller to propose from. Clip rows name their plan (source, frame range,
geometry, scene settings: ``plan_id``) and how many clips it cut (``plan_clips``): when all of them are in the
catalog, scene detection is skipped too and the source is only probed and hashed. Rows whose masks failed are
retried on a rerun.

What it returns (:class:`IngestResult`):

- ``rows``: rows for the ``sources``, ``clips`` and ``objects`` tables (matching ``catalog/schema.py``), whose media
  (the normalised clip mp4, the object's undilated mask npz) are already stored with ``catalog.put_media``. The caller
  appends them (and the failures) to the catalog, unless ``record=True`` did it already (appending them again is
  harmless: rows whose ids exist are skipped).
- ``objects``: every object, with ``qa_ok``; rejected objects also get an ``objects`` row with
  ``qa_status="rejected"`` and ``qa_reason`` (decisions are recorded, never deleted) *and* a ``failures`` entry
  (stage ``segment``, item kind ``object``) so they show up with the other failures. Only ``qa_ok`` objects should go
  on to propose/render.
- ``failures``: stage ``ingest`` (item kind ``source``, item id = the source uri) for bad videos, ranges and clips;
  stage ``segment`` for masks that cannot be produced (item kind ``mask``, item id = the mask uri and
  ``#mask_id=N``, for provided masks; item kind ``clip`` for a segmenter's), (item kind ``object``) for QA
  rejections.

Annotation (:class:`Annotation`, optional): a clip without a caption is described by a vision-language model
(``clips.caption``, ``clips.caption_model``); every clip is measured and selected (motion, static, blur, brightness,
aesthetic where configured: ``clips.selection``/``selection_reasons``); a rejected clip is kept as a row with its
reasons and a ``failures`` entry (stage ``select``) and is not segmented (nor decoded again on a rerun). Every object
is selected by :func:`tasks.annotate.selection.select_object` (mask QA, track continuity, size, detector score), its
measures and reasons in its row.

Masks: an item with a ``mask_uri`` always uses its provided masks (:class:`ProvidedSegmenter`); the ``segmenter``
argument serves the items without one. Items that share a video and a frame range (VPData lists one row per object)
share their clips: the video is decoded once and each item's object is segmented on the same clips. What a row
says stays with that row's own object: the object row carries the row's ``caption`` (proposers read it before the
clip's, which is the first row's) and its ``label``, and its id includes the row's key
(:func:`catalog.ids.row_key`), so two rows with the same mask but different captions or labels are two objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from catalog.ids import clip_id as make_clip_id
from catalog.ids import make_id, row_key, sha256_bytes, sha256_stream
from catalog.ids import object_id as make_object_id
from catalog.ids import source_id as make_source_id
from catalog.schema import ID_COLUMNS
from catalog.store import Catalog
from tasks.annotate.selection import SelectionOptions, clip_measures, select_clip, select_object
from tasks.clips import ClipWindow, check_geometry, frame_stride, item_range, iter_clips, plan_windows
from tasks.errors import InputError
from tasks.masks import encode_masks_npz
from tasks.scenes import detect_scenes, scenes_in_frames
from tasks.segment import ProvidedSegmenter, Segmenter
from tasks.timings import span
from tasks.types import Clip, Failure, Geometry, ObjectMask, SourceItem, VideoInfo
from tasks.video_io import STORED_CRF, STORED_PRESET, STORED_TUNE, encode_mp4, fit_frame, iter_frames, probe_video


ONE_PASS_BYTES = 128 << 20
"""A frame range whose frames, fitted to the geometry, take at most this many bytes is decoded once: scenes are found
on the decoded frames and the clips cut from them (holding them all). Longer ranges are decoded twice (scene detection
on its own, then the clips' frames), so memory stays a few frames whatever the video's length."""


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
    skipped_clips: int = 0  # clips already in the catalog with every asked-for object (not decoded again)


class _CatalogWriteError(Exception):
    """Storing media or rows in the catalog failed: a problem of the run (catalog unreachable, disk full), never of
    the item, so :func:`ingest_batch` re-raises its cause instead of recording a failure."""


def _store(catalog: Catalog, data: bytes, ext: str) -> str:
    try:
        return catalog.put_media(data, ext)
    except Exception as exc:
        raise _CatalogWriteError(str(exc)) from exc


def _append_new(catalog: Catalog, table: str, rows: list[dict[str, Any]]) -> None:
    """Append the rows whose ids the catalog does not hold yet (a rerun, or the caller recording them again)."""
    if not rows:
        return
    key = ID_COLUMNS[table]
    unique = {row[key]: row for row in reversed(rows)}  # first row per id wins
    try:
        present = catalog.existing_ids(table, list(unique))
        fresh = [row for row_id, row in reversed(list(unique.items())) if row_id not in present]
        if fresh:
            catalog.append(table, fresh)
    except Exception as exc:
        raise _CatalogWriteError(str(exc)) from exc


class _Recorder:
    """Appends what ``result`` gained since the last :meth:`flush` (referenced tables first), so each finished clip
    is durable at once; a kill loses at most the clip in progress."""

    def __init__(self, catalog: Catalog, result: IngestResult, run_id: str, enabled: bool):
        self.catalog, self.result, self.run_id, self.enabled = catalog, result, run_id, enabled
        self.done = {"sources": 0, "clips": 0, "objects": 0, "failures": 0}

    def flush(self) -> None:
        if not self.enabled:
            return
        for table in ("sources", "clips", "objects"):
            rows = self.result.rows[table]
            _append_new(self.catalog, table, rows[self.done[table] :])
            self.done[table] = len(rows)
        failures = self.result.failures[self.done["failures"] :]
        _append_new(self.catalog, "failures", [f.row(self.run_id) for f in failures])
        self.done["failures"] = len(self.result.failures)


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


def item_row_key(item: SourceItem, segmenter: Segmenter) -> str:
    """:func:`catalog.ids.row_key` of ``item`` segmented by ``segmenter`` (``provided`` when it brings masks)."""
    name = "provided" if item.mask_uri else getattr(segmenter, "name", type(segmenter).__name__)
    return row_key(segmenter=name, mask_id=item.mask_id, label=item.label, caption=item.caption, box=item.box)


def _segment_failure(item: SourceItem, clip: Clip, exc: Exception) -> Failure:
    """A failure to make ``item``'s object on ``clip``, named after the input at fault: the mask file (and its
    ``mask_id``) for provided masks, else the clip. ``exc`` may be anything: unexpected ones say so."""
    if item.mask_uri:
        kind, item_id = "mask", item.mask_uri + (f"#mask_id={item.mask_id}" if item.mask_id is not None else "")
    else:
        kind, item_id = "clip", clip.clip_id
    where = f"clip {clip.clip_id} of {clip.source_uri}"
    if isinstance(exc, InputError):
        failure = Failure.from_exception("segment", kind, item_id, exc)
        failure.message = f"{failure.message} ({where})"
        return failure
    return Failure.unexpected("segment", kind, item_id, exc, f"{item.mask_uri or clip.source_uri} ({where})")


def _done_clips(
    catalog: Catalog, clip_ids: list[str], keys: set[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[dict[str, Any]]]]]:
    """What the catalog already holds of these clips: ``(clip rows by id, {clip id: {row key: object rows}})`` for
    the row ``keys`` asked for. One id lookup when none exists (a first run pays nothing more)."""
    try:
        present = catalog.existing_ids("clips", clip_ids)
        if not present:
            return {}, {}
        wanted = sorted(present)
        clips = catalog.query("SELECT * FROM clips WHERE clip_id IN (SELECT unnest(?))", [wanted]).to_pylist()
        objects = catalog.query(
            "SELECT * FROM objects WHERE clip_id IN (SELECT unnest(?)) AND row_key IN (SELECT unnest(?))",
            [wanted, sorted(keys)],
        ).to_pylist()
    except Exception as exc:
        raise _CatalogWriteError(str(exc)) from exc
    by_clip: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in objects:
        by_clip.setdefault(row["clip_id"], {}).setdefault(row["row_key"], []).append(_plain_row(row))
    return {row["clip_id"]: _plain_row(row) for row in clips}, by_clip


def _planned_windows(catalog: Catalog, plan_id: str) -> list[ClipWindow] | None:
    """The windows of ``plan_id`` when the catalog holds every clip it cut (each clip row says how many), so a
    rerun neither decodes the source for scene detection nor decodes its clips; else None."""
    try:
        if not catalog.existing_ids("clips", [plan_id], column="plan_id"):  # a cheap look before the query
            return None
        rows = catalog.query(
            "SELECT start_frame, end_frame, frame_stride, scene_index, plan_clips FROM clips WHERE plan_id = ? "
            "ORDER BY start_frame",
            [plan_id],
        ).to_pylist()
    except Exception as exc:
        raise _CatalogWriteError(str(exc)) from exc
    if not rows or len(rows) != rows[0]["plan_clips"]:
        return None
    return [ClipWindow(r["start_frame"], r["end_frame"], r["frame_stride"], r["scene_index"]) for r in rows]


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "created_at"}


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
    crf: int = STORED_CRF,
    preset: str = STORED_PRESET,
    tune: str | None = STORED_TUNE,
    storage_options: Mapping[str, Any] | None = None,
    keep_arrays: bool = False,
    record: bool = False,
    resume: bool = True,
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
        crf, preset, tune: libx264 settings of the normalised clip mp4.
        storage_options: fsspec options for reading sources and masks.
        keep_arrays: keep clip frames and object masks in the result (memory grows with the batch).
        record: append the rows and failures to the catalog as each clip is done (ids already there are skipped),
            so a killed run keeps every finished clip.
        resume: skip the clips whose clip row and every asked-for object row (by row key) are in the catalog:
            they are neither decoded nor segmented again, and their rows come back from the catalog.
        annotation: captions, selection thresholds, aesthetic scorer (default: selection with the ``qa`` area
            thresholds and the default clip checks, no captioner).
    """
    check_geometry(geometry)
    if annotation is None:
        qa = qa or MaskQAOptions()
        selection = SelectionOptions(min_area=qa.min_area, max_area=qa.max_area, max_area_change=qa.max_area_change)
        annotation = Annotation(selection=selection)
    result = IngestResult()
    recorder = _Recorder(catalog, result, run_id, record)
    provided = ProvidedSegmenter(storage_options)
    needs_segmenter = any(not item.mask_uri for item in items)
    if needs_segmenter:
        segmenter.setup()  # once per batch: a model that fails to load fails the run, not an item
    if items:
        annotation.setup()

    groups: dict[tuple, list[SourceItem]] = {}
    for item in items:
        groups.setdefault(_group_key(item), []).append(item)

    encoding = {"crf": crf, "preset": preset, "tune": tune}  # of the stored clips
    seen_sources: set[str] = set()
    for group in groups.values():
        try:
            _ingest_group(group, catalog, geometry, segmenter, provided, run_id, annotation, encoding, storage_options,
                          keep_arrays, resume, min_scene_len, scene_threshold, max_clips_per_source, seen_sources,
                          result, recorder)  # fmt: skip
        except _CatalogWriteError as exc:
            raise exc.__cause__ or exc from None
        except InputError as exc:  # the rows of a group share their video: one failure names it
            result.failures.append(Failure.from_exception("ingest", "source", group[0].uri, exc))
        except Exception as exc:  # anything unforeseen in one source fails that source only
            result.failures.append(Failure.unexpected("ingest", "source", group[0].uri, exc, group[0].uri))
        recorder.flush()
    return result


def _ingest_group(
    group: list[SourceItem],
    catalog: Catalog,
    geometry: Geometry,
    segmenter: Segmenter,
    provided: ProvidedSegmenter,
    run_id: str,
    annotation: Annotation,
    encoding: dict[str, Any],
    storage_options: Mapping[str, Any] | None,
    keep_arrays: bool,
    resume: bool,
    min_scene_len: int,
    scene_threshold: float,
    max_clips_per_source: int | None,
    seen_sources: set[str],
    result: IngestResult,
    recorder: _Recorder,
) -> None:
    """Items sharing one video and frame range: probe, split, then per clip window encode, segment, record."""
    lead = group[0]
    info = probe_video(lead.uri, storage_options=storage_options)
    source_id = make_source_id(_hash_source(lead.uri, storage_options))
    if source_id not in seen_sources:  # a readable video is a source, even if no clip fits in it
        seen_sources.add(source_id)
        result.rows["sources"].append(_source_row(info, source_id, lead, run_id))
    start, end = item_range(lead, info)
    plan_id = make_id("plan", source_id, start, end, geometry.as_dict(), scene_threshold, min_scene_len,
                      max_clips_per_source)  # fmt: skip
    windows = _planned_windows(catalog, plan_id) if resume else None
    fitted: dict[int, np.ndarray] | None = None
    if windows is None:  # not every clip of this plan is in the catalog: split the range into scenes
        if (end - start) * geometry.height * geometry.width * 3 <= ONE_PASS_BYTES:
            scenes, fitted = _scan_range(lead.uri, start, end, info, geometry, scene_threshold, min_scene_len,
                                         storage_options)  # fmt: skip
        else:
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
    keys = [item_row_key(item, segmenter) for item in group]
    window_ids = [make_clip_id(source_id, w.start_frame, w.end_frame, geometry.as_dict()) for w in windows]
    done_clips, done_objects = _done_clips(catalog, window_ids, set(keys)) if resume else ({}, {})
    todo = []
    for window, clip_id in zip(windows, window_ids, strict=True):
        have = done_objects.get(clip_id, {})
        if clip_id in done_clips:  # rows for the caller to propose from; the catalog has them already
            result.rows["clips"].append(done_clips[clip_id])
            for key in dict.fromkeys(keys):
                result.rows["objects"].extend(have.get(key, []))
        rejected = clip_id in done_clips and done_clips[clip_id].get("selection") == "rejected"
        if not rejected and (clip_id not in done_clips or not all(key in have for key in keys)):
            todo.append(window)
        else:
            result.skipped_clips += 1
    recorder.flush()
    if not todo:
        return
    for clip in iter_clips(lead, info, todo, geometry, source_id, storage_options=storage_options, fitted=fitted):
        if clip.clip_id not in done_clips:
            video_uri = _store(
                catalog,
                encode_mp4(clip.frames, geometry.fps, **encoding, threads=1),
                "mp4",
            )
            extra = _annotate_clip(clip, group, annotation, result)
            row = {**_clip_row(clip, geometry, video_uri, run_id, plan_id, len(windows)), **extra}
            result.rows["clips"].append(row)
            selected = extra["selection"] == "ok"
        else:  # segmenting rows a previous run left out: that run's caption and decision hold
            clip.caption = clip.caption or done_clips[clip.clip_id].get("caption")
            selected = done_clips[clip.clip_id].get("selection") != "rejected"
        have = done_objects.get(clip.clip_id, {})
        for item, key in zip(group, keys, strict=True):
            if not selected:
                break
            if key in have:
                continue
            item_clip = dataclasses.replace(clip, item=item, caption=item.caption or clip.caption)
            try:
                with span("annotate", items=1):  # masks: segment, QA, store (apart from decoding and normalising)
                    _segment_clip(item_clip, info, provided if item.mask_uri else segmenter, catalog,
                                  annotation.selection, run_id, result, keep_arrays, key)  # fmt: skip
            except _CatalogWriteError:
                raise
            except Exception as exc:  # this item's object only: the clip and the other rows go on
                result.failures.append(_segment_failure(item, clip, exc))
        if not keep_arrays:  # a new empty array: a [:0] view would keep the whole buffer alive
            clip.frames = np.empty((0, *clip.frames.shape[1:]), clip.frames.dtype)
        result.clips.append(clip)
        recorder.flush()  # this clip is durable before the next one is decoded


def _scan_range(
    uri: str,
    start: int,
    end: int,
    info: VideoInfo,
    geometry: Geometry,
    scene_threshold: float,
    min_scene_len: int,
    storage_options: Mapping[str, Any] | None,
) -> tuple[list[tuple[int, int]], dict[int, np.ndarray]]:
    """One decoding pass over native frames ``[start, end)``: their scenes (``scenes_in_frames``, as
    ``detect_scenes`` finds them) and every frame fitted to the geometry, by native index, for ``iter_clips``."""
    fitted: dict[int, np.ndarray] = {}

    def frames() -> Iterator[np.ndarray]:
        for index, image in enumerate(iter_frames(uri, start, end, storage_options=storage_options), start):
            fitted[index] = fit_frame(image, geometry.height, geometry.width, geometry.resize_mode)
            yield image

    scenes = scenes_in_frames(frames(), fps=info.fps, start=start, threshold=scene_threshold,
                              min_scene_len=min_scene_len, uri=uri)  # fmt: skip
    return scenes, fitted


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
        message = f"{clip.source_uri}: clip rejected ({', '.join(reasons)}; {summary})"
        result.failures.append(Failure("select", "clip", clip.clip_id, reasons[0], message, "Selection"))
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
    key: str,
) -> None:
    """Segment one row's object(s) on ``clip`` and select them; raises for a mask that cannot be made (the caller
    records it)."""
    item = clip.item
    try:
        objects = segmenter.segment(clip, video=info)
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
        data = encode_masks_npz(obj.masks)
        obj.object_id = make_object_id(clip.clip_id, sha256_bytes(data), key)  # the row's own object
        mask_uri = _store(catalog, data, "npz")
        caption = item.caption if item is not None else None
        result.rows["objects"].append(_object_row(obj, mask_uri, run_id, caption=caption, key=key))
        if not obj.qa_ok:
            where = item.mask_uri if item is not None and item.mask_uri else clip.source_uri
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


def _clip_row(
    clip: Clip, geometry: Geometry, video_uri: str, run_id: str, plan_id: str, plan_clips: int
) -> dict[str, Any]:
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
        "plan_id": plan_id,
        "plan_clips": plan_clips,
        "run_id": run_id,
    }


def _object_row(obj: ObjectMask, mask_uri: str, run_id: str, *, caption: str | None, key: str) -> dict[str, Any]:
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
        "caption": caption,
        "row_key": key,
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
