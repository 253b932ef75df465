"""Selection, recorded not deleted: per-clip and per-object quality measures, thresholds and their reasons.

Clips: :func:`clip_measures` (motion, changed pixels, sharpness, brightness, optional aesthetic score) and
:func:`select_clip` (on clips with provided masks, only the thresholds the user set); objects: :func:`track_measures`
and :func:`select_object` (mask QA, track continuity, size, detector score). Thresholds are
``tasks.config.SelectionOptions``; ``None`` turns a check off. Every decision keeps all its reasons
(``selection_reasons``); the first is the object's ``qa_reason``. Each measure and reason is described in
docs/annotation.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from tasks.annotate.loading import under_load_lock
from tasks.config import SelectionOptions
from tasks.masks import qa_masks


FLOW_WIDTH = 160
CHANGE_LEVELS = 10
"""Grey levels (0-255) a pixel must change by between consecutive frames to count as changed in ``frame_diff``:
above the noise of codecs and cameras, so a frozen clip changes no pixel (docs/annotation.md has the figures)."""


# --------------------------------------------------------------------------------------------------------- clips
def _grey(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 → ``(T, H, W)`` uint8 grey."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in frames])


def _downscale(grey: np.ndarray, width: int) -> np.ndarray:
    if grey.shape[2] <= width:
        return grey
    height = max(1, round(grey.shape[1] * width / grey.shape[2]))
    return np.stack([cv2.resize(g, (width, height), interpolation=cv2.INTER_AREA) for g in grey])


def clip_measures(frames: np.ndarray, *, sharpness_frames: int = 8) -> dict[str, float]:
    """``motion``, ``frame_diff``, ``sharpness``, ``brightness`` of ``frames`` ``(T, H, W, 3)`` uint8 (T ≥ 1).

    Motion is DIS optical flow (OpenCV's fast preset) between consecutive frames at ``FLOW_WIDTH`` px wide, scaled
    back to the clip's pixels; ``frame_diff`` is the largest fraction (0-1) of pixels whose grey level changes by more
    than ``CHANGE_LEVELS`` between two consecutive frames (0: nothing moves; a small object moving on a still
    background counts); sharpness is averaged over ``sharpness_frames`` evenly spaced frames.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames: expected uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    grey = _grey(frames)
    small = _downscale(grey, FLOW_WIDTH)
    scale = frames.shape[2] / small.shape[2]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flows = [
        float(np.linalg.norm(dis.calc(a, b, None), axis=-1).mean()) * scale for a, b in zip(small[:-1], small[1:])
    ]
    changed = [np.count_nonzero(cv2.absdiff(a, b) > CHANGE_LEVELS) / a.size for a, b in zip(grey[:-1], grey[1:])]
    picked = np.unique(np.round(np.linspace(0, len(grey) - 1, min(sharpness_frames, len(grey)))).astype(int))
    sharpness = float(np.mean([cv2.Laplacian(grey[i], cv2.CV_32F).var() for i in picked]))
    return {
        "motion": float(np.mean(flows)) if flows else 0.0,
        "frame_diff": float(max(changed, default=0.0)),
        "sharpness": sharpness,
        "brightness": float(grey.mean()),
    }


def select_clip(
    measures: Mapping[str, float | None], options: SelectionOptions, *, asked_only: bool = False
) -> list[str]:
    """The reasons to reject a clip with these measures (empty: selected). An absent measure is never a reason.

    ``asked_only``: only the thresholds the user set (``options.model_fields_set``, e.g. ``--select KEY=VALUE``)
    apply, not the defaults: the rule for clips whose objects the user provided (masks from a manifest or beside the
    video).
    """

    def threshold(name: str) -> Any:
        return None if asked_only and name not in options.model_fields_set else getattr(options, name)

    checks = [
        ("frame_diff", threshold("min_frame_diff"), None, "static_clip", None),
        ("motion", threshold("min_motion"), threshold("max_motion"), "low_motion", "high_motion"),
        ("sharpness", threshold("min_sharpness"), None, "blurry", None),
        ("brightness", threshold("min_brightness"), threshold("max_brightness"), "too_dark", "too_bright"),
        ("aesthetic", threshold("min_aesthetic"), None, "low_aesthetic", None),
    ]
    return _reasons(measures, checks)


def _reasons(measures: Mapping[str, Any], checks: list[tuple[str, Any, Any, str, str | None]]) -> list[str]:
    reasons = []
    for key, lo, hi, below, above in checks:
        value = measures.get(key)
        if value is None:
            continue
        if lo is not None and value < lo:
            reasons.append(below)
        elif hi is not None and above is not None and value > hi:
            reasons.append(above)
    return reasons


# --------------------------------------------------------------------------------------------------------- objects
def track_measures(masks: np.ndarray) -> dict[str, Any]:
    """Continuity and size of one object's ``masks`` ``(T, H, W)`` bool.

    Returns ``track_iou_min`` (lowest IoU between consecutive frames both showing the object; 1.0 with fewer than
    two such pairs), ``track_lost_frames`` (empty frames after the first visible one), ``track_reappearances``
    (empty → visible transitions after the first visible frame), ``first_visible`` (``None`` when never visible)
    and ``min_side_px`` (smallest side of the per-frame box over the visible frames; 0 when never visible).
    """
    masks = np.asarray(masks, dtype=bool)
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (T, H), (T, W)
    visible = rows.any(axis=1)
    if not visible.any():
        return {"track_iou_min": None, "track_lost_frames": 0, "track_reappearances": 0, "first_visible": None,
                "min_side_px": 0}  # fmt: skip
    first = int(np.argmax(visible))
    after = visible[first:]
    lost = int((~after).sum())
    reappear = int(np.sum(~after[:-1] & after[1:]))
    # IoUs inside the box that holds the object on every frame: the rest of the frame is empty in both masks
    ys, xs = np.nonzero(rows.any(axis=0))[0], np.nonzero(cols.any(axis=0))[0]
    crop = masks[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].reshape(len(masks), -1)
    pairs = np.nonzero(visible[:-1] & visible[1:])[0]
    ious = [np.logical_and(crop[t], crop[t + 1]).sum() / np.logical_or(crop[t], crop[t + 1]).sum() for t in pairs]

    def extent(hits: np.ndarray) -> np.ndarray:
        return hits.shape[1] - np.argmax(hits[:, ::-1], axis=1) - np.argmax(hits, axis=1)

    sides = np.minimum(extent(rows[visible]), extent(cols[visible]))
    return {
        "track_iou_min": float(min(ious)) if ious else 1.0,
        "track_lost_frames": lost,
        "track_reappearances": reappear,
        "first_visible": first,
        "min_side_px": int(min(sides)),
    }


def select_object(
    masks: np.ndarray, options: SelectionOptions, *, score: float | None = None
) -> tuple[list[str], dict[str, Any]]:
    """``(reasons, measures)`` of one object's ``masks`` ``(T, H, W)`` bool: the mask QA's reason first (if any),
    then the entry, continuity, size and score reasons. ``measures`` holds :func:`tasks.masks.mask_stats` and
    :func:`track_measures`, plus the QA message under ``qa_message``.

    An object that enters the clip (empty on the frames before ``first_visible``, e.g. found on a later key frame
    and absent before it) is checked by the mask QA from its first visible frame on (the area figures and the box
    are those of the frames from there): the frames before it are absent, not lost; ``max_entry_frame`` bounds how
    late it may enter (``object_enters_late``). An area threshold set to ``None`` turns its check off.
    """
    track = track_measures(masks)
    first = track["first_visible"] or 0
    verdict = qa_masks(
        masks[first:],
        min_area=0.0 if options.min_area is None else options.min_area,
        max_area=1.0 if options.max_area is None else options.max_area,  # a ratio is never above 1
        max_area_change=np.inf if options.max_area_change is None else options.max_area_change,
    )
    measures: dict[str, Any] = {**verdict.stats, **track, "score": score}
    reasons = [] if verdict.ok else [verdict.reason]
    if verdict.message:
        measures["qa_message"] = verdict.message if not first else f"{verdict.message} (counted from frame {first})"
    if options.max_entry_frame is not None and first > options.max_entry_frame:
        reasons.append("object_enters_late")
    iou = measures["track_iou_min"]
    if options.min_track_iou is not None and iou is not None and iou < options.min_track_iou:
        reasons.append("track_discontinuous")
    if options.max_lost_frames is not None and measures["track_lost_frames"] > options.max_lost_frames:
        reasons.append("object_lost")
    if options.max_reappearances is not None and measures["track_reappearances"] > options.max_reappearances:
        reasons.append("object_reappears")
    if options.min_side_px is not None and measures["first_visible"] is not None:
        if measures["min_side_px"] < options.min_side_px:
            reasons.append("object_too_small")
    if options.min_score is not None and score is not None and score < options.min_score:
        reasons.append("low_score")
    return [r for r in reasons if r], measures


# --------------------------------------------------------------------------------------------------------- aesthetic
class AestheticScorer:
    """An aesthetic score from a local CLIP folder (``CLIPModel`` + processor, e.g. a copy of
    ``openai/clip-vit-large-patch14``) and a linear head: a ``torch.save``'d state dict of ``Linear`` layers applied
    in key order to the L2-normalised image embedding (the layout of the LAION aesthetic predictor, whose MLP has no
    activations). The clip's score is the mean over ``num_frames`` evenly sampled frames.
    """

    def __init__(self, clip_path: str, head_path: str, *, num_frames: int = 4, device: str | None = None):
        if num_frames < 1:
            raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
        self.clip_path, self.head_path = str(clip_path), str(head_path)
        self.num_frames = int(num_frames)
        self.device = device
        self.model: Any = None
        self.processor: Any = None
        self.layers: list[tuple[Any, Any]] = []

    @under_load_lock
    def setup(self) -> None:
        if self.model is not None:
            return
        import fsspec
        import torch
        from transformers import AutoProcessor, CLIPModel

        from tasks.annotate.loading import local_model_dir, pick_device

        folder = local_model_dir(self.clip_path)
        device = pick_device(self.device)
        with fsspec.open(self.head_path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
        weights = [k for k in state if k.endswith("weight")]
        if not weights:
            raise ValueError(f"aesthetic head {self.head_path}: no Linear weights in the state dict")
        self.layers = []
        for key in weights:
            bias = state.get(key[: -len("weight")] + "bias")
            self.layers.append((state[key].float().to(device), None if bias is None else bias.float().to(device)))
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.device = device

    def score(self, frames: np.ndarray) -> float:
        """The mean head output over sampled frames of ``frames`` ``(T, H, W, 3)`` uint8."""
        import torch

        self.setup()
        index = np.unique(np.round(np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames)))).astype(int))
        inputs = self.processor(images=list(frames[index]), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            features = getattr(features, "pooler_output", features)
            x = torch.nn.functional.normalize(features.float(), dim=-1)
            for weight, bias in self.layers:
                x = x @ weight.T + (0 if bias is None else bias)
        return float(x.mean())
