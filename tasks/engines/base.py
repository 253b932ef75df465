"""The inpainting engine interface shared by the CPU engine, VideoPainter and the null engine.

An engine is constructed with typed keyword arguments, loads its models once in ``setup()`` (once per batch, never
per clip) and then renders clips with ``inpaint``. The catalog records ``engine_id`` and ``version`` with every
render; ``version`` must change whenever the output could change (code version, checkpoint hashes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from tasks.errors import InputError, UnsupportedEditError


class InpaintEngine(ABC):
    engine_id: ClassVar[str]
    edit_types: ClassVar[frozenset[str]]

    @property
    @abstractmethod
    def version(self) -> str:
        """Identity of code + weights; recorded as ``renders.engine_version``."""

    def setup(self) -> None:
        """Load models. Called once before a batch; must be idempotent."""

    def params(self) -> dict:
        """The parameters that change the output (recorded as ``renders.params_json`` and hashed into the id)."""
        return {}

    def check_edit_type(self, edit_type: str) -> None:
        if edit_type not in self.edit_types:
            raise UnsupportedEditError(
                self.engine_id,
                "unsupported_edit_type",
                f"engine {self.engine_id!r} cannot render {edit_type!r} edits; it renders {sorted(self.edit_types)}",
            )

    @abstractmethod
    def inpaint(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str = "",
        edit_type: str = "remove",
        seed: int = 0,
        first_frame: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fill the masked region.

        Args:
            frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
            masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): True = region to fill, already dilated.
            prompt: the target caption (what the clip shows after the edit).
            edit_type: one of ``self.edit_types``; others raise ``UnsupportedEditError``.
            seed: for stochastic engines.
            first_frame (`np.ndarray` of shape `(height, width, 3)`, optional): an edited first frame (insertion,
                replacement) that generative engines propagate.

        Returns:
            `np.ndarray` of shape `(num_frames, height, width, 3)`, uint8; pixels outside ``masks`` equal ``frames``.
        """


def check_inputs(frames: np.ndarray, masks: np.ndarray, *, name: str = "clip") -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise an engine's inputs.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`): uint8, or float in [0, 1].
        masks (`np.ndarray` of shape `(num_frames, height, width)`): bool, or numbers where > 0.5 means "fill".
        name: names the input in error messages.

    Returns:
        ``(frames, masks)`` as uint8 and bool arrays.

    Raises:
        InputError: reasons ``bad_shape``, ``shape_mismatch``, ``frame_count_mismatch``, ``non_finite``,
            ``out_of_range``, ``bad_dtype``, ``empty_mask``.
    """
    frames = np.asarray(frames)
    masks = np.asarray(masks)
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise InputError(name, "bad_shape", f"frames must be (frames, height, width, 3), got shape {frames.shape}")
    if masks.ndim != 3:
        raise InputError(name, "bad_shape", f"masks must be (frames, height, width), got shape {masks.shape}")
    if masks.shape[0] != frames.shape[0]:
        raise InputError(
            name, "frame_count_mismatch", f"{frames.shape[0]} frames but {masks.shape[0]} masks: counts must match"
        )
    if masks.shape[1:] != frames.shape[1:3]:
        raise InputError(
            name, "shape_mismatch", f"mask size {masks.shape[1:]} differs from frame size {frames.shape[1:3]}"
        )
    if np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all():
            raise InputError(name, "non_finite", "frames contain NaN or inf")
        lo, hi = float(frames.min()), float(frames.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(name, "out_of_range", f"float frames must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        frames = np.round(frames * 255.0).astype(np.uint8)
    elif frames.dtype != np.uint8:
        raise InputError(name, "bad_dtype", f"frames must be uint8 or float in [0, 1], got {frames.dtype}")
    if masks.dtype != bool:
        if not (np.issubdtype(masks.dtype, np.number)):
            raise InputError(name, "bad_dtype", f"masks must be bool or numeric, got {masks.dtype}")
        if np.issubdtype(masks.dtype, np.floating) and not np.isfinite(masks).all():
            raise InputError(name, "non_finite", "masks contain NaN or inf")
        masks = masks > 0.5
    if not masks.any():
        raise InputError(name, "empty_mask", "the masks are empty in every frame: nothing to inpaint")
    return np.ascontiguousarray(frames), np.ascontiguousarray(masks)
