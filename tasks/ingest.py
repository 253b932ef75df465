"""Ingest a batch of sources: probe, hash, split into scenes, cut clips of the run's geometry, segment, select, store.

:func:`ingest_batch` never raises for a bad item: every exception met while handling one source, clip or row's
object becomes a :class:`Failure` and the batch goes on; only problems of the run itself propagate (the catalog
cannot be written, a model does not load); a row on a clip that selection rejects still has its masks checked and
gets its own ``select`` failure. Sources are handled one at a time and clips decoded, encoded and stored one at a
time, so memory stays bounded by one clip. With ``record``, each clip's rows are recorded as soon as the
clip is done (``tasks.steps.record``); with ``resume``, clips already recorded are neither decoded nor segmented
again. docs/architecture.md describes the rows, the resume rules and how provided masks are matched to rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from catalog.ids import clip_id as make_clip_id
from catalog.ids import failure_id, make_id, row_key, sha256_bytes, sha256_stream
from catalog.ids import object_id as make_object_id
from catalog.ids import source_id as make_source_id
from catalog.store import Catalog
from tasks.annotate.selection import clip_measures, select_clip, select_object
from tasks.annotate.stop import check_stop
from tasks.clips import ClipWindow, check_geometry, frame_stride, item_range, iter_clips, plan_windows
from tasks.config import SelectionOptions
from tasks.contracts import Segmenter
from tasks.errors import InputError
from tasks.masks import encode_masks_npz
from tasks.scenes import detect_scenes, scenes_in_frames
from tasks.segment import ProvidedSegmenter
from tasks.sources import resolve_within_roots
from tasks.steps.record import failure_rows, record_rows
from tasks.timings import span
from tasks.types import Clip, Failure, Geometry, ObjectMask, SourceItem, VideoInfo
from tasks.video_io import STORED_CRF, STORED_PRESET, STORED_TUNE, encode_mp4, fit_frame, iter_frames, probe_video


ONE_PASS_BYTES = 128 << 20
"""A frame range whose frames, fitted to the geometry, take at most this many bytes is decoded once: scenes are found
on the decoded frames and the clips cut from them (holding them all). Longer ranges are decoded twice (scene detection
on its own, then the clips' frames), so memory stays a few frames whatever the video's length."""


@dataclass(frozen=True)
class IngestOptions:
    """How a batch is ingested besides its geometry and annotators.

    ``min_scene_len``/``scene_threshold``: PySceneDetect ContentDetector settings (native frames, HSV score);
    ``max_clips_per_source``: at most this many windows per item (per group of items sharing a video and range);
    ``crf``/``preset``/``tune``: libx264 settings of the stored clip mp4; ``storage_options``: fsspec options for
    reading sources and masks; ``keep_arrays``: keep clip frames and object masks in the result (memory grows with
    the batch); ``record``: record each clip's rows as soon as the clip is done; ``resume``: skip clips whose rows
    (clip and every asked-for object, by row key) are in the catalog.
    """

    min_scene_len: int = 15
    scene_threshold: float = 27.0
    max_clips_per_source: int | None = None
    crf: int = STORED_CRF
    preset: str = STORED_PRESET
    tune: str | None = STORED_TUNE
    storage_options: Mapping[str, Any] | None = None
    keep_arrays: bool = False
    record: bool = False
    resume: bool = True


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
    ``keep_arrays=True``; their media is in the catalog at the rows' ``video_uri``/``mask_uri``. ``failures`` holds
    one entry per ``failures`` row (add them with :meth:`fail`), so what ingest returns is what it records."""

    clips: list[Clip] = field(default_factory=list)
    objects: list[ObjectMask] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"sources": [], "clips": [], "objects": []})
    failures: list[Failure] = field(default_factory=list)
    skipped_clips: int = 0  # clips already in the catalog with every asked-for object (not decoded again)
    _failure_ids: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self._failure_ids = {failure_id(f.stage, f.item_id, f.reason) for f in self.failures}

    def fail(self, *failures: Failure) -> None:
        """Add ``failures``, skipping any whose ``failures`` row id (stage + item + reason) is already here: one bad
        mask met on two clips of a video, or named by two rows, is one row, and is counted once."""
        for failure in failures:
            key = failure_id(failure.stage, failure.item_id, failure.reason)
            if key not in self._failure_ids:
                self._failure_ids.add(key)
                self.failures.append(failure)


class _CatalogWriteError(Exception):
    """Storing media or rows in the catalog failed: a problem of the run (catalog unreachable, disk full), never of
    the item, so :func:`ingest_batch` re-raises its cause instead of recording a failure."""


def _store(catalog: Catalog, data: bytes, ext: str) -> str:
    try:
        return catalog.put_media(data, ext)
    except Exception as exc:
        raise _CatalogWriteError(str(exc)) from exc


def _record(catalog: Catalog, table: str, rows: list[dict[str, Any]]) -> None:
    try:
        record_rows(catalog, table, rows)
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
            _record(self.catalog, table, rows[self.done[table] :])
            self.done[table] = len(rows)
        failures = self.result.failures[self.done["failures"] :]
        _record(self.catalog, "failures", failure_rows(failures, self.run_id))
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
    """:func:`catalog.ids.row_key` of ``item`` segmented by ``segmenter`` (``provided`` when it brings masks).

    A segmenter with an ``identity`` (the open-vocabulary ones: ``tasks.annotate.specs.annotation_identity`` of its
    options, model folders and vocabulary) is keyed by ``name@identity``: another model or vocabulary annotates
    again (new row keys, new object ids), the same ones resume."""
    name = "provided" if item.mask_uri else getattr(segmenter, "name", type(segmenter).__name__)
    identity = None if item.mask_uri else getattr(segmenter, "identity", None)
    if identity:
        name = f"{name}@{identity}"
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
    annotation: Annotation | None = None,
    options: IngestOptions | None = None,
) -> IngestResult:
    """Ingest ``items`` into clips and objects (see the module docstring).

    Args:
        items: work items from :func:`tasks.sources.discover_sources`.
        catalog: where media is stored (``put_media``) before the rows naming it are returned.
        geometry: the clip geometry (even height and width).
        segmenter: masks for items without a ``mask_uri``; set up once per batch.
        run_id: written into every row.
        annotation: captions, selection thresholds, aesthetic scorer (default: the default selection, no captioner).
        options: scene split, encoding, storage, recording and resume settings (:class:`IngestOptions`).
    """
    check_geometry(geometry)
    batch = _Batch(
        catalog, geometry, segmenter, ProvidedSegmenter((options or IngestOptions()).storage_options), run_id,
        annotation or Annotation(), options or IngestOptions(),
    )  # fmt: skip
    if any(not item.mask_uri for item in items):
        segmenter.setup()  # once per batch: a model that fails to load fails the run, not an item
    if items:
        batch.annotation.setup()

    groups: dict[tuple, list[SourceItem]] = {}
    for item in items:
        groups.setdefault(_group_key(item), []).append(item)
    for group in groups.values():
        try:
            _ingest_group(group, batch)
        except _CatalogWriteError as exc:
            raise exc.__cause__ or exc from None
        except InputError as exc:  # the rows of a group share their video: one failure names it
            batch.result.fail(Failure.from_exception("ingest", "source", group[0].uri, exc))
        except Exception as exc:  # anything unforeseen in one source fails that source only
            batch.result.fail(Failure.unexpected("ingest", "source", group[0].uri, exc, group[0].uri))
        batch.recorder.flush()
    return batch.result


@dataclass
class _Batch:
    """What every group of one batch shares: its inputs, settings, the result so far and its recorder."""

    catalog: Catalog
    geometry: Geometry
    segmenter: Segmenter
    provided: ProvidedSegmenter
    run_id: str
    annotation: Annotation
    options: IngestOptions
    result: IngestResult = field(default_factory=IngestResult)
    seen_sources: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.recorder = _Recorder(self.catalog, self.result, self.run_id, self.options.record)


def _ingest_group(group: list[SourceItem], batch: _Batch) -> None:
    """Items sharing one video and frame range: probe, split, then per clip window encode, segment, record."""
    catalog, geometry, segmenter, run_id, annotation = (
        batch.catalog, batch.geometry, batch.segmenter, batch.run_id, batch.annotation,
    )  # fmt: skip
    opts, result, recorder = batch.options, batch.result, batch.recorder
    storage_options, resume = opts.storage_options, opts.resume
    scene_threshold, min_scene_len, max_clips_per_source = (
        opts.scene_threshold, opts.min_scene_len, opts.max_clips_per_source,
    )  # fmt: skip
    encoding = {"crf": opts.crf, "preset": opts.preset, "tune": opts.tune}
    seen_sources = batch.seen_sources
    lead = group[0]
    resolve_within_roots(lead.uri, lead.roots)  # checked again as it is opened: discovery may be long past
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
        check_stop(f"ingest of {clip.source_uri}")  # a stop request ends the batch between clips (not a failure)
        if clip.clip_id not in done_clips:
            video_uri = _store(
                catalog,
                encode_mp4(clip.frames, geometry.fps, **encoding, threads=1),
                "mp4",
            )
            extra, rejections = _annotate_clip(clip, group, annotation, result)
            row = {**_clip_row(clip, geometry, video_uri, run_id, plan_id, len(windows)), **extra}
            result.rows["clips"].append(row)
        else:  # rows a previous run left out, on a clip it selected (rejected clips are not in `todo`)
            clip.caption = clip.caption or done_clips[clip.clip_id].get("caption")
            rejections = {False: [], True: []}
        have = done_objects.get(clip.clip_id, {})
        for item, key in zip(group, keys, strict=True):
            if key in have:
                continue
            item_clip = dataclasses.replace(clip, item=item, caption=item.caption or clip.caption)
            try:
                with span("annotate", items=1):  # masks: segment, QA, store (apart from decoding and normalising)
                    if rejection := rejections[bool(item.mask_uri)]:  # provided masks: the asked filters only
                        _reject_row(item_clip, info, batch, key, rejection)
                    else:
                        _segment_clip(item_clip, info, batch.provided if item.mask_uri else segmenter, batch, key)
            except _CatalogWriteError:
                raise
            except Exception as exc:  # this item's object only: the clip and the other rows go on
                result.fail(_segment_failure(item, clip, exc))
        if not opts.keep_arrays:  # a new empty array: a [:0] view would keep the whole buffer alive
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
) -> tuple[dict[str, Any], dict[bool, list[str]]]:
    """Caption (when nothing gave one) and clip selection. Returns the clip row's annotation columns and the reasons
    to reject the clip for a row, by whether the row brings masks: every threshold applies to segmenter rows, only
    the thresholds the user set to rows with provided masks (``select_clip(asked_only=True)``). The clip row records
    the decision for its segmenter rows, or for its provided rows when it has no other; its measures either way."""
    extra: dict[str, Any] = {"caption_model": None}
    if annotation.captioner is not None and not clip.caption and not any(it.caption for it in group):
        caption, problems = annotation.captioner.caption(clip.frames)
        for reason, message in problems:
            result.fail(Failure("caption", "clip", clip.clip_id, reason, message))
        if caption:
            clip.caption = caption
            captioner = annotation.captioner  # its identity (name@content hash) where it has one, else its name
            extra["caption_model"] = getattr(captioner, "identity", None) or captioner.model_id
    measures: dict[str, Any] = clip_measures(clip.frames)
    measures["aesthetic"] = annotation.aesthetic.score(clip.frames) if annotation.aesthetic is not None else None
    rejections = {
        False: select_clip(measures, annotation.selection),
        True: select_clip(measures, annotation.selection, asked_only=True),
    }
    reasons = rejections[all(item.mask_uri for item in group)]
    if reasons:
        summary = ", ".join(f"{k}={v:.3g}" for k, v in measures.items() if v is not None)
        message = f"{clip.source_uri}: clip rejected ({', '.join(reasons)}; {summary})"
        result.fail(Failure("select", "clip", clip.clip_id, reasons[0], message, "Selection"))
    columns = {
        **extra,
        "caption": clip.caption,
        **measures,
        "selection": "rejected" if reasons else "ok",
        "selection_reasons": reasons,
    }
    return columns, rejections


def _reject_row(clip: Clip, info: VideoInfo, batch: _Batch, key: str, reasons: list[str]) -> None:
    """One row on a clip that selection rejected still gets its outcome: its provided masks are read and checked as
    on a selected clip (a mask that cannot be made raises, and the caller records that failure), then each of its
    objects gets a ``select`` failure (item kind ``object``, the id the object would have had) with the clip's first
    reason. A row without masks is not segmented (no model runs on a rejected clip): one failure names the row's
    object on this clip. No object row nor mask media is written."""
    item = clip.item
    if item is not None and item.mask_uri:
        objects = batch.provided.segment(clip, video=info)
        ids = [make_object_id(clip.clip_id, sha256_bytes(encode_masks_npz(obj.masks)), key) for obj in objects]
        where = item.mask_uri + (f"#mask_id={item.mask_id}" if item.mask_id is not None else "")
    else:
        ids, where = [make_id("object", clip.clip_id, key)], clip.source_uri
    message = f"{where} (clip {clip.clip_id}): the clip was rejected ({', '.join(reasons)}); no object is made"
    batch.result.fail(*(Failure("select", "object", object_id, reasons[0], message, "Selection") for object_id in ids))


def _segment_clip(clip: Clip, info: VideoInfo, segmenter: Segmenter, batch: _Batch, key: str) -> None:
    """Segment one row's object(s) on ``clip`` and select them; raises for a mask that cannot be made (the caller
    records it)."""
    item, result, run_id = clip.item, batch.result, batch.run_id
    selection, keep_arrays = batch.annotation.selection, batch.options.keep_arrays
    try:
        objects = segmenter.segment(clip, video=info)
    finally:  # problems that are not the clip's failure (refused vocabulary tags, …); optional for segmenters
        drain = getattr(segmenter, "drain_failures", None)
        if drain is not None:
            result.fail(*drain())
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
        mask_uri = _store(batch.catalog, data, "npz")
        caption = item.caption if item is not None else None
        result.rows["objects"].append(_object_row(obj, mask_uri, run_id, caption=caption, key=key))
        if not obj.qa_ok:
            where = item.mask_uri if item is not None and item.mask_uri else clip.source_uri
            detail = message or f"rejected by selection ({', '.join(obj.stats['selection_reasons'])})"
            result.fail(
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
        "prompt_frame": stats.get("prompt_frame"),
        "first_frame": stats.get("first_visible"),
        "run_id": run_id,
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
