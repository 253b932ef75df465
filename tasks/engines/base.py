"""The inpainting engine interface shared by the CPU engine, VideoPainter and the null engine.

An engine is constructed with typed keyword arguments, loads its models once in ``setup()`` (once per batch, never
per clip) and then renders clips with ``run`` (``inpaint``: the frames only). The catalog records ``engine_id`` and ``version`` with every
render; ``version`` must change whenever the output could change (code version, checkpoint hashes). Engines implement
``fill``; the base class validates inputs and keeps the pixels outside the mask (``InpaintEngine.run``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tasks.errors import InputError, UnsupportedEditError


NO_OBSERVED_BACKGROUND = "no_observed_background"
"""Quality flag: some hole pixels were covered in every frame, so no frame showed their background."""


@dataclass
class Inpainted:
    """What an engine returns for one clip.

    ``frames``: `(num_frames, height, width, 3)` uint8, the edited clip; ``flags``: quality flags for
    ``pairs.quality_flags`` (e.g. ``mostly_spatial_fill``); ``report``: engine-specific figures (JSON values);
    ``filled``: `(num_frames, height, width)` bool, the region the engine filled when it grew the given mask itself
    (None: the given mask).
    """

    frames: np.ndarray
    flags: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    filled: np.ndarray | None = None


class InpaintEngine(ABC):
    """The engine contract. ``inpaint``/``run`` validate the inputs (:func:`check_inputs`), call the engine's own
    :meth:`fill` with uint8 frames and bool masks, then paste the source back outside the filled region, so for every
    engine the pixels outside the mask are the input's, bit for bit. Engines implement only :meth:`fill`."""

    engine_id: ClassVar[str]
    edit_types: ClassVar[frozenset[str]]
    device: str = "cpu"
    selection_reason: str = "requested"  # why the registry chose this engine (``auto``)
    exclusive: ClassVar[bool] = True
    """Renders one clip at a time (a device, models with state): ``run`` holds :meth:`device_lock` around ``fill``.
    False for engines whose ``fill`` is a pure function of its input on the CPU: the factory then renders several
    clips at once, one per core."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Identity of code + weights; recorded as ``renders.engine_version``."""

    def device_lock(self) -> threading.RLock:
        """The lock ``run`` holds around :meth:`fill` when the engine is ``exclusive``: it renders one clip at a time,
        so several threads (the render lanes of a run) can share one engine and its device while their CPU work runs
        side by side. Re-entrant: a caller may take it around ``run`` (to time the render without the wait)."""
        lock = self.__dict__.get("_device_lock")
        if lock is None:  # dict.setdefault is atomic: two first callers get the same lock
            lock = self.__dict__.setdefault("_device_lock", threading.RLock())
        return lock

    def __getstate__(self) -> dict[str, Any]:  # picklable (Dask/Ray workers): the lock stays behind
        state = self.__dict__.copy()
        state.pop("_device_lock", None)
        return state

    def setup(self) -> None:
        """Load models. Called once before a batch; must be idempotent."""

    def params(self) -> dict[str, Any]:
        """The parameters that change the output (recorded as ``renders.params_json`` and hashed into the id)."""
        return {}

    def check_edit_type(self, edit_type: str) -> None:
        if edit_type not in self.edit_types:
            raise UnsupportedEditError(
                self.engine_id,
                "unsupported_edit_type",
                f"engine {self.engine_id!r} cannot render {edit_type!r} edits; it renders {sorted(self.edit_types)}",
            )

    def run(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str = "",
        edit_type: str = "remove",
        seed: int = 0,
        first_frame: np.ndarray | None = None,
        name: str = "clip",
    ) -> Inpainted:
        """Fill the masked region and say how.

        Args:
            frames (`np.ndarray` of shape `(num_frames, height, width, 3)`): uint8, or float in [0, 1].
            masks (`np.ndarray` of shape `(num_frames, height, width)`): bool, True = region to fill, already dilated.
            prompt: the target caption (what the clip shows after the edit).
            edit_type: one of ``self.edit_types``; others raise ``UnsupportedEditError``.
            seed: for stochastic engines.
            first_frame (`np.ndarray` of shape `(height, width, 3)`, optional): an edited first frame (insertion,
                replacement) that generative engines propagate.
            name: names the input in error messages.

        Returns:
            ``Inpainted`` whose ``frames`` (uint8) equal the input outside the filled region.

        Raises:
            UnsupportedEditError: ``edit_type`` is not one of ``self.edit_types``.
            InputError: bad arrays (see :func:`check_inputs`).
        """
        self.check_edit_type(edit_type)
        frames, masks = check_inputs(frames, masks, name=name)
        with self.device_lock() if self.exclusive else nullcontext():  # one clip at a time on a device
            result = self.fill(frames, masks, prompt=prompt, edit_type=edit_type, seed=seed, first_frame=first_frame)
        if result.frames.shape != frames.shape or result.frames.dtype != np.uint8:
            raise RuntimeError(
                f"engine {self.engine_id!r} filled {result.frames.dtype} {result.frames.shape}, "
                f"expected uint8 {frames.shape}"
            )
        region = masks if result.filled is None else result.filled | masks
        result.frames = paste_region(frames, result.frames, region)
        return result

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
        """:meth:`run` without the report: `(num_frames, height, width, 3)` uint8."""
        return self.run(frames, masks, prompt=prompt, edit_type=edit_type, seed=seed, first_frame=first_frame).frames

    @abstractmethod
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
        """The engine's own filling of ``masks`` in ``frames``, on validated inputs.

        Args:
            frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
            masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): True = fill; never empty.
            prompt, edit_type, seed, first_frame: as in :meth:`run`; ``edit_type`` is one of ``self.edit_types``.

        Returns:
            ``Inpainted``; its frames outside the mask (or ``filled``) are replaced by the input by :meth:`run`.
        """


def paste_region(frames: np.ndarray, filled: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``frames`` with ``filled`` pasted where ``region`` is True: a new array, inputs untouched.

    Only the region's bounding box is visited, so a small hole in a long clip costs little more than the copy.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`): the original clip.
        filled (`np.ndarray`, broadcastable to ``frames``): the engine's output (a view is fine).
        region (`np.ndarray` of shape `(num_frames, height, width)`): bool, True = take ``filled``.

    Returns:
        `(num_frames, height, width, 3)` array of ``frames``' dtype.
    """
    out = frames.copy()
    if not region.any():
        return out
    box = tuple(
        slice(int(i[0]), int(i[-1]) + 1)
        for i in (np.flatnonzero(region.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    )
    np.copyto(out[box], np.broadcast_to(filled, frames.shape)[box], where=region[box][..., None])
    return out


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
