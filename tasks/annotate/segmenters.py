"""Open-vocabulary segmenters: a clip in, labelled tracked objects out (``--segmenter detect+track:…`` / ``sam3:…``).

:class:`DetectTrackSegmenter` prompts an open-vocabulary detector with the clip's vocabulary on key frames and a
video tracker with each new detection's box (:func:`track_detections`); :class:`Sam3Segmenter` hands the vocabulary
to SAM3's video model, which detects, segments and tracks in one model. Both also answer ``track(frames, phrases)``
for phrases given directly, which the quality gate uses to look for a removed object again (``tasks.gate``).

Each object's label is the phrase that found it; its score and the phrase's source are recorded in
``ObjectMask.stats`` (``score``, ``vocab_source``). Refused vocabulary tags and tagger failures are collected as
failures (stage ``segment``, item kind ``clip``), see :meth:`BaseSegmenter.drain_failures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.annotate.detect import Detection, ZeroShotDetector, box_iou
from tasks.annotate.loading import load_pretrained, torch_dtype, under_load_lock
from tasks.annotate.stop import check_stop
from tasks.annotate.track import VideoTracker
from tasks.annotate.vocab import Phrase, Vocabulary
from tasks.errors import InputError
from tasks.masks import mask_bbox
from tasks.segment import BaseSegmenter, make_object
from tasks.types import Clip, Failure, ObjectMask, VideoInfo


@dataclass
class Track:
    """One tracked object: ``masks`` ``(T, H, W)`` bool over the whole clip; ``frame`` is the frame whose detection
    started the track (the tracker was prompted there and ran both ways from it)."""

    label: str
    score: float
    frame: int
    box: tuple[float, float, float, float]
    masks: np.ndarray


def keyframe_indices(num_frames: int, every: int) -> list[int]:
    """Frames the detector looks at: 0, then every ``every`` frames (only 0 when ``every`` is 0)."""
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    if every < 0:
        raise ValueError(f"every: expected >= 0, got {every}")
    return [0] if every == 0 else list(range(0, num_frames, every))


def track_detections(
    frames: np.ndarray,
    detections: Mapping[int, Sequence[Detection]],
    tracker: VideoTracker,
    *,
    match_iou: float = 0.5,
    max_objects: int = 5,
) -> list[Track]:
    """Tracks for the detections found on key frames (the VPData pipeline's chain).

    Key frames are visited in order; a detection whose box overlaps the box of an existing track's mask on that frame
    by more than ``match_iou`` is the same object; the others, best score first, start new tracks (at most
    ``max_objects`` per clip), prompting ``tracker`` on their key frame and tracking from there to the end of the
    clip and, for a key frame after the first, backwards to frame 0 (the tracker is given the frames up to the key
    frame in reverse order, so any :class:`VideoTracker` tracks both ways). An object first found on a later key
    frame thus gets its earlier frames too, and stays empty on those where the tracker does not find it (an object
    that enters the clip).

    Args:
        frames (`np.ndarray` of shape `(T, H, W, 3)`, uint8): the clip.
        detections: key frame index → its detections, best first.
        tracker: turns first-frame boxes into masks through the frames it is given.
        match_iou: a detection overlapping a track's box on its key frame by more than this is that track.
        max_objects: most tracks per clip.
    """
    num_frames = len(frames)
    tracks: list[Track] = []
    for frame in sorted(detections):
        if not 0 <= frame < num_frames:
            raise ValueError(f"detections: key frame {frame} is outside the clip's {num_frames} frames")
        room = max_objects - len(tracks)
        if room <= 0:
            break
        current = [mask_bbox(t.masks[frame]) for t in tracks]
        new = [
            d for d in sorted(detections[frame], key=lambda d: -d.score)
            if all(box is None or box_iou(d.box, box) <= match_iou for box in current)
        ][:room]  # fmt: skip
        if not new:
            continue
        boxes = [d.box for d in new]
        full = np.zeros((len(new), *frames.shape[:3]), bool)  # (objects, T, H, W)
        if frame:  # backwards: frames frame, frame - 1, …, 0, prompted on the first of them
            back = _checked(
                tracker,
                tracker.track(np.ascontiguousarray(frames[frame::-1]), boxes),
                len(new),
                frames[: frame + 1].shape,
            )
            full[:, : frame + 1] = back[:, ::-1]
        full[:, frame:] = _checked(tracker, tracker.track(frames[frame:], boxes), len(new), frames[frame:].shape)
        for det, mask in zip(new, full):
            tracks.append(Track(det.label, det.score, frame, det.box, mask))
    return tracks


def _checked(tracker: VideoTracker, masks: np.ndarray, objects: int, frames: tuple[int, ...]) -> np.ndarray:
    """``masks`` after checking they are ``(objects, T, H, W)`` for frames of shape ``frames`` ``(T, H, W, 3)``."""
    if masks.shape != (objects, *frames[:3]):
        raise ValueError(f"tracker {tracker.name}: masks of shape {masks.shape} for {objects} boxes on {frames[:3]}")
    return masks


class _VocabSegmenter(BaseSegmenter):
    """Shared parts: the vocabulary per clip, failures to drain, the identity objects are keyed by."""

    spec: str | None = None
    """The ``--segmenter`` spec it was built from (:func:`tasks.annotate.specs.build_segmenter` sets it)."""
    identity: str | None = None
    """:func:`tasks.annotate.specs.annotation_identity` of :attr:`spec` and the vocabulary, set with it (None without
    a spec); ``tasks.ingest.item_row_key`` puts it in each object's row key."""

    def __init__(self, vocabulary: Vocabulary):
        if vocabulary.empty:
            raise ValueError(f"{self.name}: the vocabulary has no source (give --vocab FILE, captions or a tagger)")
        self.vocabulary = vocabulary
        self._failures: list[Failure] = []

    def drain_failures(self) -> list[Failure]:
        out, self._failures = self._failures, []
        return out

    def _phrases(self, clip: Clip) -> list[Phrase]:
        phrases, problems = self.vocabulary.for_clip(clip.caption, clip.frames, clip_id=clip.clip_id)
        for reason, message in problems:
            self._failures.append(Failure("segment", "clip", clip.clip_id, reason, message))
        if not phrases:
            raise InputError(
                clip.clip_id, "no_vocabulary", "no phrase to search for (no --vocab file, caption nouns or VLM tags)"
            )
        return phrases


class DetectTrackSegmenter(_VocabSegmenter):
    """Open-vocabulary detector on key frames + video tracker (see :func:`track_detections`).

    Args:
        detector: Grounding DINO / OWLv2.
        tracker: :class:`tasks.annotate.track.Sam2VideoTracker` or ``SamFrameTracker``.
        vocabulary: the clip's phrases.
        keyframe_every: detect every N frames (0: the first frame only).
        match_iou, max_objects: see :func:`track_detections`.
    """

    name = "detect+track"

    def __init__(
        self,
        detector: ZeroShotDetector,
        tracker: VideoTracker,
        vocabulary: Vocabulary,
        *,
        keyframe_every: int = 0,
        match_iou: float = 0.5,
        max_objects: int = 5,
    ):
        super().__init__(vocabulary)
        if max_objects < 1 or keyframe_every < 0 or not 0 <= match_iou <= 1:
            raise ValueError(
                f"detect+track: max_objects >= 1, keyframe_every >= 0 and match_iou in [0, 1] expected, got "
                f"{max_objects}, {keyframe_every}, {match_iou}"
            )
        self.detector = detector
        self.tracker = tracker
        self.keyframe_every = int(keyframe_every)
        self.match_iou = float(match_iou)
        self.max_objects = int(max_objects)

    def setup(self) -> None:
        self.detector.setup()
        self.tracker.setup()
        self.vocabulary.setup()

    def track(self, frames: np.ndarray, phrases: Sequence[str]) -> list[Track]:
        """Every object the detector finds for ``phrases`` on the key frames of ``frames`` ``(T, H, W, 3)`` uint8,
        tracked to the end of the clip (empty when nothing is found)."""
        self.setup()
        keyframes = keyframe_indices(len(frames), self.keyframe_every)
        found = self.detector.detect(frames[keyframes], list(phrases), frame_indices=keyframes)
        if not any(found):
            return []
        return track_detections(
            frames, dict(zip(keyframes, found)), self.tracker, match_iou=self.match_iou, max_objects=self.max_objects
        )

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        self.setup()
        phrases = self._phrases(clip)
        source = {p.text: p.source for p in phrases}
        tracks = self.track(clip.frames, [p.text for p in phrases])
        if not tracks:
            raise InputError(clip.clip_id, "no_objects", f"the detector found none of {[p.text for p in phrases]}")
        return [
            make_object(
                clip,
                t.masks,
                label=t.label,
                mask_source="detect+track",
                stats={"score": t.score, "vocab_source": source.get(t.label), "prompt_frame": t.frame},
            )
            for t in tracks
        ]


class Sam3Segmenter(_VocabSegmenter):
    """SAM3 video: the vocabulary's phrases in, tracked instance masks out, from a local checkpoint folder (e.g. a
    copy of ``facebook/sam3``).

    Args:
        path: the folder (``Sam3VideoModel`` + ``Sam3VideoProcessor``) or an fsspec URL of one.
        vocabulary: the clip's phrases.
        threshold: detection score threshold (``score_threshold_detection`` and ``new_det_thresh`` of the model's
            config); ``None`` keeps the checkpoint's.
        max_objects: most objects per clip: passed to the model as ``max_num_objects`` (the most it tracks at once:
            its detections beyond the cap are dropped, lowest score first, before they are tracked, so the cost per
            frame is bounded), and at most this many are kept (highest score first).
        device, dtype: where and in which precision the model runs.
    """

    name = "sam3"

    def __init__(
        self,
        path: str,
        vocabulary: Vocabulary,
        *,
        threshold: float | None = None,
        max_objects: int = 5,
        device: str | None = None,
        dtype: str = "float32",
        storage_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(vocabulary)
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"sam3: threshold must be in [0, 1], got {threshold}")
        if max_objects < 1:
            raise ValueError(f"sam3: max_objects must be >= 1, got {max_objects}")
        torch_dtype(dtype)
        self.path = str(path)
        self.threshold = threshold
        self.max_objects = int(max_objects)
        self.device = device
        self.dtype = dtype
        self.storage_options = dict(storage_options or {})
        self.model: Any = None
        self.processor: Any = None
        self.frame_objects: list[int] = []
        """How many objects the model held on each frame of the last :meth:`track` (at most ``max_objects``)."""

    @property
    def model_id(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @under_load_lock
    def setup(self) -> None:
        self.vocabulary.setup()
        if self.model is not None:
            return
        from transformers import Sam3VideoModel

        overrides: dict[str, Any] = {"max_num_objects": self.max_objects}
        if self.threshold is not None:
            overrides |= {"score_threshold_detection": self.threshold, "new_det_thresh": self.threshold}
        self.model, self.processor, self.device = load_pretrained(
            Sam3VideoModel, self.path, storage_options=self.storage_options, device=self.device, dtype=self.dtype,
            role="sam3 video", **overrides,
        )  # fmt: skip

    def track(self, frames: np.ndarray, phrases: Sequence[str]) -> list[Track]:
        """Every instance SAM3 finds for ``phrases`` in ``frames`` ``(T, H, W, 3)`` uint8, best score first."""
        import torch

        self.setup()
        num_frames, height, width = frames.shape[:3]
        session = self.processor.init_video_session(
            video=frames, inference_device=self.device, dtype=torch_dtype(self.dtype)
        )
        self.processor.add_text_prompt(session, list(phrases))
        masks: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        labels: dict[int, str] = {}
        first: dict[int, int] = {}
        self.frame_objects = []
        with torch.inference_mode():
            for out in self.model.propagate_in_video_iterator(session):
                check_stop(f"sam3 tracking, frame {out.frame_idx}")
                result = self.processor.postprocess_outputs(session, out, original_sizes=[[height, width]])
                for phrase, ids in result["prompt_to_obj_ids"].items():
                    for obj in ids:
                        labels.setdefault(int(obj), phrase)
                ids = [int(v) for v in result["object_ids"].tolist()]
                self.frame_objects.append(len(session.obj_ids))
                frame_masks = result["masks"].cpu().numpy().astype(bool)
                frame_scores = result["scores"].float().cpu().numpy()
                for k, obj in enumerate(ids):
                    if obj not in masks:
                        masks[obj] = np.zeros((num_frames, height, width), bool)
                        first[obj] = out.frame_idx
                    masks[obj][out.frame_idx] = frame_masks[k]
                    scores[obj] = max(scores.get(obj, 0.0), float(frame_scores[k]))
        tracks = [
            Track(labels[obj], scores[obj], first[obj], _box_or_zero(masks[obj][first[obj]]), masks[obj])
            for obj in masks
            if obj in labels
        ]
        return sorted(tracks, key=lambda t: -t.score)

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        phrases = self._phrases(clip)
        source = {p.text: p.source for p in phrases}
        tracks = [t for t in self.track(clip.frames, [p.text for p in phrases]) if t.masks.any()]
        if not tracks:
            raise InputError(clip.clip_id, "no_objects", f"SAM3 found none of {[p.text for p in phrases]}")
        return [
            make_object(
                clip,
                t.masks,
                label=t.label,
                mask_source="sam3",
                stats={"score": t.score, "vocab_source": source.get(t.label), "prompt_frame": t.frame},
            )
            for t in tracks[: self.max_objects]
        ]


def _box_or_zero(mask: np.ndarray) -> tuple[float, float, float, float]:
    box = mask_bbox(mask)
    return (0.0, 0.0, 0.0, 0.0) if box is None else tuple(float(v) for v in box)  # type: ignore[return-value]
