"""Value objects passed between the steps of the factory.

Arrays follow one convention everywhere:
- frames: ``np.ndarray`` of shape ``(num_frames, height, width, 3)``, ``uint8`` RGB;
- masks:  ``np.ndarray`` of shape ``(num_frames, height, width)``, ``bool``, True = the region to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from catalog.ids import failure_id


EditType = Literal["remove", "add", "replace", "attribute"]
ResizeMode = Literal["resize", "crop"]


@dataclass(frozen=True)
class Geometry:
    """A clip geometry: frames, frames per second, pixels. Defaults live in ``tasks.config.GeometryConfig``."""

    num_frames: int
    fps: float
    height: int
    width: int
    resize_mode: ResizeMode = "resize"

    def as_dict(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "resize_mode": self.resize_mode,
        }


@dataclass
class VideoInfo:
    uri: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    rotation: int = 0
    size_bytes: int | None = None


@dataclass
class SourceItem:
    """One row of work: a video (or a range of it) with optional caption, mask and prompts."""

    uri: str
    start_frame: int | None = None
    end_frame: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    caption: str | None = None
    mask_uri: str | None = None
    mask_id: int | None = None
    label: str | None = None
    box: tuple[int, int, int, int] | None = None
    manifest_uri: str | None = None
    row_index: int | None = None
    license: str | None = None
    attribution: str | None = None
    roots: tuple[str, ...] | None = None
    """The allowed roots of the run that found this item (``tasks.sources.discover_sources``): every file opened for
    it (video, mask file, each PNG of a mask folder) is resolved and checked against them when it is opened."""


@dataclass
class Clip:
    """A normalised clip window. ``frames``: ``(num_frames, height, width, 3)`` uint8."""

    clip_id: str
    source_id: str
    source_uri: str
    start_frame: int
    end_frame: int
    frame_stride: int
    fps: float
    frames: np.ndarray
    caption: str | None = None
    scene_index: int | None = None
    resize_mode: str = "resize"
    item: SourceItem | None = None


@dataclass
class ObjectMask:
    """An object in a clip. ``masks``: ``(num_frames, height, width)`` bool, before dilation."""

    object_id: str
    clip_id: str
    masks: np.ndarray
    label: str | None
    mask_source: str
    mask_id: int | None = None
    qa_ok: bool = True
    qa_reason: str | None = None
    stats: dict = field(default_factory=dict)


@dataclass
class Failure:
    """A recorded per-item failure or rejection (becomes a ``failures`` row; see catalog/schema.py)."""

    stage: str
    item_kind: str
    item_id: str
    reason: str
    message: str
    error_type: str | None = None

    @classmethod
    def from_exception(cls, stage: str, item_kind: str, item_id: str, exc: BaseException) -> "Failure":
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return cls(stage, item_kind, item_id, reason, str(exc), type(exc).__name__)

    @classmethod
    def unexpected(cls, stage: str, item_kind: str, item_id: str, exc: BaseException, where: str) -> "Failure":
        """An exception nobody anticipated while handling one item (``where`` names the input): recorded with reason
        ``unexpected_error`` and the exception's type and text, so one bad item never stops the others."""
        text = str(exc).strip() or repr(exc)
        return cls(stage, item_kind, item_id, "unexpected_error", f"{where}: {type(exc).__name__}: {text}",
                   type(exc).__name__)  # fmt: skip

    def row(self, run_id: str | None) -> dict:
        """The ``failures`` row, with a deterministic id (stage + item + reason): a rerun never duplicates it."""
        return {
            "failure_id": failure_id(self.stage, self.item_id, self.reason),
            "stage": self.stage,
            "item_kind": self.item_kind,
            "item_id": self.item_id,
            "reason": self.reason,
            "error_type": self.error_type,
            "message": self.message,
            "run_id": run_id,
        }
