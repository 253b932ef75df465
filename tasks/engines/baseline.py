"""The ``cv2-inpaint`` engine: per-frame spatial inpainting with ``cv2.inpaint``, the baseline of the benchmarks.

Each frame is filled on its own from its own pixels (Telea's fast marching method by default), with no use of the
other frames: what the ``propagation`` engine must beat on quality.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine


Method = Literal["telea", "ns"]
_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
ALGORITHM_VERSION = "cv2-1"


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
            raise ValueError(f"Cv2InpaintEngine: method must be one of {sorted(_METHODS)}, got {method!r}")
        if radius < 1:
            raise ValueError(f"Cv2InpaintEngine: radius must be >= 1, got {radius}")
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
