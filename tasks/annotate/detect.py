"""Open-vocabulary detection on key frames: noun phrases in, labelled boxes with scores out.

:class:`ZeroShotDetector` loads a Grounding DINO or OWLv2 checkpoint through ``AutoModelForZeroShotObjectDetection``
and ``AutoProcessor`` from a local folder. Both families are scored the same way: every query box gets one score
per phrase and keeps the best phrase, so a box's label is always one of the vocabulary's phrases.

Boxes are ``(x0, y0, x1, y1)`` floats in the frame's pixels, clipped to the frame.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.annotate.loading import load_pretrained, torch_dtype, under_load_lock


@dataclass(frozen=True)
class Detection:
    """One detected box on one frame: ``box`` ``(x0, y0, x1, y1)`` pixels, ``label`` the phrase that found it."""

    frame: int
    box: tuple[float, float, float, float]
    score: float
    label: str


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 0.0 if union <= 0 else float(inter / union)


def nms(detections: Sequence[Detection], iou_threshold: float) -> list[Detection]:
    """Greedy non-maximum suppression across labels (one object, one box): highest score first, a box overlapping a
    kept one by more than ``iou_threshold`` is dropped. Ties keep input order."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(box_iou(det.box, k.box) <= iou_threshold for k in kept):
            kept.append(det)
    return kept


def clip_box(box: Sequence[float], height: int, width: int) -> tuple[float, float, float, float]:
    """``box`` clipped to a ``height`` × ``width`` frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def phrase_spans(tokens: Sequence[str], special: Collection[str], separator: str = ".") -> list[list[int]]:
    """Token positions of each phrase in a tokenised ``"a . b c ."`` text: runs of tokens between separators,
    the ``special`` tokens (``[CLS]``, ``[SEP]``, ``[PAD]``; not the unknown token) excluded."""
    spans: list[list[int]] = []
    current: list[int] = []
    for i, token in enumerate(tokens):
        if token == separator or token in special:
            if current:
                spans.append(current)
            current = []
            continue
        current.append(i)
    if current:
        spans.append(current)
    return spans


def decode_detections(
    scores: np.ndarray, boxes: np.ndarray, phrases: Sequence[str], *, frame: int, threshold: float
) -> list[Detection]:
    """Per-box phrase scores → detections.

    Args:
        scores (`np.ndarray` of shape `(num_boxes, num_phrases)`): probability of each phrase for each box.
        boxes (`np.ndarray` of shape `(num_boxes, 4)`): ``(x0, y0, x1, y1)`` pixels, already clipped.
        phrases: the phrase of each score column.
        frame: the frame index recorded on each detection.
        threshold: boxes whose best phrase scores below it are dropped, and so are empty boxes.
    """
    if scores.shape != (len(boxes), len(phrases)):
        raise ValueError(f"scores: expected shape {(len(boxes), len(phrases))}, got {scores.shape}")
    out = []
    if not len(phrases):
        return out
    best = scores.argmax(axis=1)
    for i, (box, p) in enumerate(zip(boxes, best)):
        score = float(scores[i, p])
        if score < threshold or box[2] <= box[0] or box[3] <= box[1]:
            continue
        out.append(Detection(frame, tuple(float(v) for v in box), score, phrases[p]))  # type: ignore[arg-type]
    return out


class ZeroShotDetector:
    """Grounding DINO / OWLv2 from a local folder (or fsspec URL), batched over frames.

    Grounding DINO reads one text of ``"phrase . phrase ."``; a phrase's score for a box is the highest token
    probability over the phrase's tokens (found between the ``.`` separators of the tokenised text). Vocabularies
    longer than the text encoder's ``max_text_len`` are split over several passes. OWLv2 scores each phrase as its
    own text query; its boxes are relative to the padded square image.

    Args:
        path: the checkpoint folder (``save_pretrained`` layout with its processor), e.g. a local copy of
            ``IDEA-Research/grounding-dino-base`` or ``google/owlv2-base-patch16-ensemble``.
        threshold: minimum phrase score of a kept box.
        nms_iou: boxes overlapping a better one by more than this are dropped.
        max_detections: at most this many boxes per frame (best first).
        batch_size: frames per forward pass.
        device, dtype: where and in which precision the model runs.
    """

    def __init__(
        self,
        path: str,
        *,
        threshold: float = 0.3,
        nms_iou: float = 0.5,
        max_detections: int = 10,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "float32",
        storage_options: Mapping[str, Any] | None = None,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a score in [0, 1], got {threshold}")
        if max_detections < 1 or batch_size < 1:
            raise ValueError(f"max_detections and batch_size must be >= 1, got {max_detections}, {batch_size}")
        torch_dtype(dtype)
        self.path = str(path)
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.storage_options = dict(storage_options or {})
        self.model: Any = None
        self.processor: Any = None
        self.family: str | None = None

    @property
    def model_id(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @under_load_lock
    def setup(self) -> None:
        """Load model and processor once (idempotent)."""
        if self.model is not None:
            return
        from transformers import AutoModelForZeroShotObjectDetection

        model, processor, device = load_pretrained(
            AutoModelForZeroShotObjectDetection, self.path, storage_options=self.storage_options,
            device=self.device, dtype=self.dtype, role="detector",
        )  # fmt: skip
        kind = model.config.model_type
        if kind == "grounding-dino":
            self.family = "grounding-dino"
        elif kind in ("owlv2", "owlvit"):
            self.family = "owl"
        else:
            raise ValueError(f"detector {self.path}: model type {kind!r} is neither Grounding DINO nor OWLv2/OWL-ViT")
        self.model, self.processor, self.device = model, processor, device

    def detect(self, frames: np.ndarray, phrases: Sequence[str], *, frame_indices: Sequence[int] | None = None
               ) -> list[list[Detection]]:  # fmt: skip
        """Detections on each of ``frames`` ``(N, H, W, 3)`` uint8, for ``phrases``; one list per frame, best first,
        after NMS and the ``max_detections`` cap. ``frame_indices`` label the detections (default ``0..N-1``)."""
        self.setup()
        phrases = list(dict.fromkeys(p for p in phrases if p))
        indices = list(frame_indices) if frame_indices is not None else list(range(len(frames)))
        if len(indices) != len(frames):
            raise ValueError(f"frame_indices: expected {len(frames)} indices, got {len(indices)}")
        results: list[list[Detection]] = [[] for _ in frames]
        if not phrases or not len(frames):
            return results
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            found = self._grounding(batch, phrases) if self.family == "grounding-dino" else self._owl(batch, phrases)
            for offset, (scores, boxes, names) in enumerate(found):
                dets = decode_detections(scores, boxes, names, frame=indices[start + offset], threshold=self.threshold)
                results[start + offset] = nms(dets, self.nms_iou)[: self.max_detections]
        return results

    def _to_model(self, inputs: Any) -> Any:
        """Processor outputs on the model's device, floating tensors (pixels) in the model's dtype."""
        import torch

        dtype = torch_dtype(self.dtype)
        return {
            k: v.to(self.device, dtype) if torch.is_floating_point(v) else v.to(self.device) for k, v in inputs.items()
        }

    # ------------------------------------------------------------------ families
    def _grounding(self, frames: np.ndarray, phrases: list[str]) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
        import torch

        height, width = frames.shape[1:3]
        per_frame: list[list[tuple[np.ndarray, np.ndarray, list[str]]]] = [[] for _ in frames]
        for group in self._text_groups(phrases):
            text = " . ".join(group) + " ."
            inputs = self._to_model(
                self.processor(images=list(frames), text=[text] * len(frames), return_tensors="pt")
            )
            with torch.inference_mode():
                out = self.model(**inputs)
            tokenizer = self.processor.tokenizer
            tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
            spans = phrase_spans(tokens, set(tokenizer.all_special_tokens) - {tokenizer.unk_token})
            if len(spans) != len(group):
                raise ValueError(f"detector {self.path}: {len(group)} phrases tokenised into {len(spans)} spans")
            probs = out.logits.float().sigmoid().cpu().numpy()  # (N, queries, max_text_len)
            boxes = _cxcywh_to_xyxy(out.pred_boxes.float().cpu().numpy(), width, height)  # (N, queries, 4)
            for i in range(len(frames)):
                scores = np.stack([probs[i][:, span].max(axis=1) for span in spans], axis=1)
                clipped = np.array([clip_box(b, height, width) for b in boxes[i]], np.float32).reshape(-1, 4)
                per_frame[i].append((scores, clipped, list(group)))
        return [_concat(parts) for parts in per_frame]

    def _text_groups(self, phrases: list[str]) -> list[list[str]]:
        """Split phrases so each group's text fits the text encoder (``max_text_len`` tokens)."""
        limit = int(getattr(self.model.config, "max_text_len", 256)) - 2
        groups: list[list[str]] = [[]]
        used = 0
        for phrase in phrases:
            cost = len(self.processor.tokenizer.tokenize(phrase)) + 1
            if groups[-1] and used + cost > limit:
                groups.append([])
                used = 0
            groups[-1].append(phrase)
            used += cost
        return groups

    def _owl(self, frames: np.ndarray, phrases: list[str]) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
        import torch

        height, width = frames.shape[1:3]
        inputs = self._to_model(self.processor(images=list(frames), text=[phrases] * len(frames), return_tensors="pt"))
        with torch.inference_mode():
            out = self.model(**inputs)
        probs = out.logits.float().sigmoid().cpu().numpy()  # (N, queries, phrases)
        side = max(height, width)  # OWLv2 pads to a square: boxes are relative to it
        boxes = _cxcywh_to_xyxy(out.pred_boxes.float().cpu().numpy(), side, side)
        found = []
        for i in range(len(frames)):
            clipped = np.array([clip_box(b, height, width) for b in boxes[i]], np.float32).reshape(-1, 4)
            found.append((probs[i], clipped, phrases))
        return found


def _cxcywh_to_xyxy(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(..., 4)`` relative centre/size boxes → pixel corners."""
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def _concat(parts: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Several text groups' scores of the same boxes → one score matrix over all phrases."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts], axis=1), parts[0][1], [n for p in parts for n in p[2]]
