"""The baselines of the benchmarks, what the ``propagation`` engine must beat on quality.

- ``cv2-inpaint``: each frame filled on its own from its own pixels with ``cv2.inpaint`` (Telea's fast marching
  method by default), with no use of the other frames.
- ``nearest-frame``: each hole pixel copies its value from the nearest frame (in time) in which the same pixel is
  uncovered, with no motion compensation; pixels uncovered in no frame are filled by ``cv2.inpaint``. Exact for a
  static camera over a static background, wrong wherever the camera or the background moves.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine


Method = Literal["telea", "ns"]
_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
ALGORITHM_VERSION = "cv2-1"
NEAREST_VERSION = "nearest-1"


def inpaint_frames(frames: np.ndarray, masks: np.ndarray, *, radius: int = 5, method: Method = "telea") -> np.ndarray:
    """Per-frame ``cv2.inpaint``.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): True = fill.

    Returns:
        `(num_frames, height, width, 3)` uint8; only masked pixels differ from ``frames``. A frame whose mask covers
        it entirely is filled with neutral grey (nothing to inpaint from).
    """
    out = frames.copy()
    for t, (frame, mask) in enumerate(zip(frames, masks)):
        if not mask.any():
            continue
        if mask.all():
            out[t] = 128
            continue
        filled = cv2.inpaint(np.ascontiguousarray(frame), mask.astype(np.uint8), radius, _METHODS[method])
        out[t][mask] = filled[mask]
    return out


class Cv2InpaintEngine(InpaintEngine):
    """Per-frame ``cv2.inpaint`` (removal only).

    Args:
        radius: neighbourhood radius of the inpainting method, in pixels.
        method: ``telea`` (Telea 2004) or ``ns`` (Navier-Stokes).
    """

    engine_id = "cv2-inpaint"
    edit_types = frozenset({"remove"})
    exclusive = False  # a pure function of its input on the CPU: several clips render at once

    def __init__(self, *, radius: int = 5, method: Method = "telea"):
        if method not in _METHODS:
            raise ValueError(f"{type(self).__name__}: method must be one of {sorted(_METHODS)}, got {method!r}")
        if radius < 1:
            raise ValueError(f"{type(self).__name__}: radius must be >= 1, got {radius}")
        self.radius = int(radius)
        self.method = method

    @property
    def version(self) -> str:
        return f"{ALGORITHM_VERSION}+opencv-{cv2.__version__}"

    def params(self) -> dict:
        return {"radius": self.radius, "method": self.method}

    def fill(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str,
        edit_type: str,
        seed: int,
        first_frame: np.ndarray | None,
    ) -> Inpainted:
        """Fill the masked region frame by frame; deterministic (``prompt``, ``seed``, ``first_frame`` do not apply)."""
        return Inpainted(inpaint_frames(frames, masks, radius=self.radius, method=self.method))


def nearest_uncovered_frames(masks: np.ndarray) -> np.ndarray:
    """For every pixel of every frame, the index of the nearest frame in which that pixel is uncovered.

    Args:
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): True = covered.

    Returns:
        `(num_frames, height, width)` int32: a frame index, the earlier one on a tie; -1 where the pixel is covered
        in every frame. An uncovered pixel's own frame is its nearest.
    """
    num_frames = masks.shape[0]
    before = np.empty(masks.shape, np.int32)  # last uncovered frame <= t
    after = np.empty(masks.shape, np.int32)  # first uncovered frame >= t
    last = np.full(masks.shape[1:], -1, np.int32)
    for t in range(num_frames):
        last = np.where(masks[t], last, t)
        before[t] = last
    last = np.full(masks.shape[1:], -1, np.int32)
    for t in range(num_frames - 1, -1, -1):
        last = np.where(masks[t], last, t)
        after[t] = last
    times = np.arange(num_frames, dtype=np.int32)[:, None, None]
    far = 2 * num_frames + 1
    gap_before = np.where(before >= 0, times - before, far)
    gap_after = np.where(after >= 0, after - times, far)
    return np.where(gap_before <= gap_after, before, after)


def nearest_frame_fill(
    frames: np.ndarray, masks: np.ndarray, *, radius: int = 5, method: Method = "telea"
) -> tuple[np.ndarray, int]:
    """Copy each hole pixel from the nearest frame in which it is uncovered (no motion compensation).

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): True = fill.
        radius, method: of the ``cv2.inpaint`` fill of pixels covered in every frame.

    Returns:
        ``(filled frames, number of hole pixels filled spatially)``; only masked pixels differ from ``frames``.
    """
    source = nearest_uncovered_frames(masks)
    out = frames.copy()
    ts, ys, xs = np.nonzero(masks & (source >= 0))
    out[ts, ys, xs] = frames[source[ts, ys, xs], ys, xs]
    never = masks & (source < 0)
    if never.any():
        out = inpaint_frames(out, never, radius=radius, method=method)
    return out, int(never.sum())


class NearestFrameEngine(Cv2InpaintEngine):
    """Each hole pixel copied from the nearest frame showing it, ``cv2.inpaint`` elsewhere (removal only).

    Args:
        radius: ``cv2.inpaint`` radius for pixels covered in every frame, in pixels.
        method: ``telea`` or ``ns``, for those pixels.

    ``run`` reports ``spatial_pixels``: the hole pixels no frame showed.
    """

    engine_id = "nearest-frame"

    @property
    def version(self) -> str:
        return f"{NEAREST_VERSION}+opencv-{cv2.__version__}"

    def fill(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str,
        edit_type: str,
        seed: int,
        first_frame: np.ndarray | None,
    ) -> Inpainted:
        """Deterministic (``prompt``, ``seed``, ``first_frame`` do not apply)."""
        filled, spatial = nearest_frame_fill(frames, masks, radius=self.radius, method=self.method)
        return Inpainted(filled, report={"spatial_pixels": spatial, "hole_pixels": int(masks.sum())})
