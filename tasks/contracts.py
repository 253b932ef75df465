"""What the steps require of their pluggable parts, as typing protocols.

Engines share one abstract base with behaviour (``tasks.engines.base.InpaintEngine``: input checks and the paste
outside the mask); segmenters, proposers and judges are anything with these methods (``tasks.segment``,
``tasks.proposers``, ``tasks.judge`` hold the implementations). Every step signature names one of these types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tasks.engines.base import InpaintEngine


if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from tasks.annotate.segmenters import Track
    from tasks.judge import JudgeRequest, JudgeVerdict
    from tasks.proposers.base import ProposalOutcome, ProposalRequest
    from tasks.types import Clip, ObjectMask, VideoInfo

__all__ = ["InpaintEngine", "Judge", "PhraseSegmenter", "Proposer", "Segmenter"]


@runtime_checkable
class Segmenter(Protocol):
    """Turns a clip into its objects; ``setup()`` loads models once per batch (idempotent)."""

    def setup(self) -> None: ...

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        """The objects of ``clip`` (masks `(num_frames, height, width)` bool); raises ``InputError`` for bad input."""
        ...


@runtime_checkable
class PhraseSegmenter(Protocol):
    """Finds the instances of given noun phrases in a clip: the core of the open-vocabulary segmenters
    (``tasks.annotate.segmenters``), used by the quality gate to look for a removed object in the edited clip."""

    def setup(self) -> None: ...

    def track(self, frames: np.ndarray, phrases: Sequence[str]) -> list[Track]:
        """Every instance found in ``frames`` `(num_frames, height, width, 3)` uint8, each a ``Track`` whose ``masks``
        are `(num_frames, height, width)` bool; an empty list when nothing is found."""
        ...


@runtime_checkable
class Proposer(Protocol):
    """Writes editing instructions for batches of objects; ``setup()`` loads models or opens clients (idempotent)."""

    @property
    def proposer_id(self) -> str: ...

    def setup(self) -> None: ...

    def propose(self, requests: list[ProposalRequest]) -> list[ProposalOutcome]:
        """One outcome per request, in order; per-item problems are failures in the outcomes, never raised."""
        ...


@runtime_checkable
class Judge(Protocol):
    """Scores pairs (instruction compliance, consistency, quality); ``setup()`` once before the first batch."""

    @property
    def judge_id(self) -> str: ...

    def setup(self) -> None: ...

    def judge(self, requests: list[JudgeRequest]) -> list[JudgeVerdict]:
        """One verdict per request, in order; per-pair problems are failures in the verdicts, never raised."""
        ...
