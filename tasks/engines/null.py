"""The ``null`` engine: fills the hole with each frame's mean background colour.

It does no real inpainting. It exists so orchestration (benchmarks, flow tests) can run the whole factory at
almost no cost per clip, with outputs that still respect the engine contract (pixels outside the mask unchanged).
"""

from __future__ import annotations

import cv2
import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine


class NullEngine(InpaintEngine):
    """Fill each frame's hole with the mean colour of its unmasked pixels (the clip's mean when a frame is fully
    masked, grey when every frame is). Removal only."""

    engine_id = "null"
    edit_types = frozenset({"remove"})
    exclusive = False  # a pure function of its input on the CPU: several clips render at once

    @property
    def version(self) -> str:
        return "null-2"  # 2: means from cv2.mean (may round a tie the other way)

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
        """The masked pixels set to a flat colour per frame.

        Means come from ``cv2.mean`` over each frame's unmasked pixels (no full-resolution float copy of the clip), and
        the fill is a broadcast view: the base class pastes it into the mask, so the whole engine costs about one
        pass over the clip.
        """
        keep = np.logical_not(masks).view(np.uint8)  # 1 = background, the mask cv2.mean averages over
        counts = np.count_nonzero(keep.reshape(len(keep), -1), axis=1).astype(np.float64)  # [num_frames]
        means = np.array([cv2.mean(frames[t], mask=keep[t])[:3] for t in range(len(frames))])  # [num_frames, 3]
        total = counts.sum()
        clip_mean = (means * counts[:, None]).sum(0) / total if total else np.full(3, 128.0)
        means = np.where(counts[:, None] > 0, means, clip_mean)
        fill = np.rint(means).astype(np.uint8)[:, None, None, :]
        return Inpainted(np.broadcast_to(fill, frames.shape))
