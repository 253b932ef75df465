"""The ``null`` engine: fills the hole with each frame's mean background colour.

It does no real inpainting. It exists so orchestration (benchmarks, flow tests) can run the whole factory at
almost no cost per clip, with outputs that still respect the engine contract (pixels outside the mask unchanged).
"""

from __future__ import annotations

import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine


class NullEngine(InpaintEngine):
    """Fill each frame's hole with the mean colour of its unmasked pixels (the clip's mean when a frame is fully
    masked, grey when every frame is). Removal only."""

    engine_id = "null"
    edit_types = frozenset({"remove"})

    @property
    def version(self) -> str:
        return "null-1"

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
        """The masked pixels set to a flat colour per frame."""
        keep = (~masks)[..., None].astype(np.float64)
        sums = (frames * keep).sum(axis=(1, 2))  # [num_frames, 3]
        counts = keep.sum(axis=(1, 2))  # [num_frames, 1]
        clip_mean = sums.sum(0) / counts.sum() if counts.sum() else np.full(3, 128.0)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), clip_mean)
        fill = np.rint(means).astype(np.uint8)[:, None, None, :]
        return Inpainted(np.broadcast_to(fill, frames.shape))
