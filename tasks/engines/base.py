"""The inpainting engine interface shared by the CPU engine, VideoPainter and the null engine.

An engine is constructed with typed keyword arguments, loads its models once in ``setup()`` (once per batch, never
per clip) and then renders clips with ``inpaint``. The catalog records ``engine_id`` and ``version`` with every
render; ``version`` must change whenever the output could change (code version, checkpoint hashes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from tasks.errors import UnsupportedEditError


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
