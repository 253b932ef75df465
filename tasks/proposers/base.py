"""The proposer interface: requests in, instruction proposals (and recorded failures) out.

A proposer turns one segmented object (its label, the clip caption and where the object sits in the frame) into one
editing instruction per requested edit type; the flows call it in batches (usage: :class:`Proposer`). Every outcome
holds at most one ``Proposal`` per requested edit type, in the requested order; an edit type whose every candidate
was rejected is missing from ``proposals`` and explained in ``failures``. Requesting ``("remove", "add")`` yields a
coherent reverse pair (see :meth:`Proposer.propose`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from catalog.ids import instruction_id
from catalog.schema import EDIT_TYPES
from tasks.types import Failure


EditType = Literal["remove", "add", "replace", "attribute"]

MIN_LONG_WORDS = 25  # the long instruction's target length (~40-word instructions train better editing models)
MAX_LONG_WORDS = 120
MAX_SHORT_WORDS = 25
MAX_REGION_WORDS = 20  # VideoPainter's edited-region caption is <= 20 words
MAX_CAPTION_CHARS = 1000

STAGE = "propose"


def word_count(text: str) -> int:
    return len(text.split())


def load_prompt(name: str) -> str:
    """The text of a versioned prompt template in ``tasks/proposers/prompts/`` (e.g. ``"propose_v1.txt"``)."""
    return resources.files("tasks.proposers").joinpath("prompts", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ProposalRequest:
    """One object to write instructions for.

    Args:
        object_id, clip_id: catalog ids (the instruction rows reference them).
        label: the object's class name ("dog"); None or empty when unknown.
        caption: the clip caption; None or empty when unknown.
        bbox: ``(x0, y0, x1, y1)`` pixel box of the object on the first frame, or None.
        frame_size: ``(width, height)`` of the clip, needed to place ``bbox`` ("on the left").
        area_ratio: mean mask area / frame area in [0, 1]; derived from ``bbox`` when None.
        edit_types: the edit types wanted, each one of ``catalog.schema.EDIT_TYPES``.
        seed: picks among phrasings (template) and seeds sampling (models).
    """

    object_id: str
    clip_id: str
    label: str | None
    caption: str | None
    bbox: tuple[int, int, int, int] | None = None
    frame_size: tuple[int, int] | None = None
    area_ratio: float | None = None
    edit_types: tuple[str, ...] = ("remove", "add")
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.edit_types, str):
            raise ValueError(f"ProposalRequest.edit_types: expected a sequence of edit types, got {self.edit_types!r}")
        object.__setattr__(self, "edit_types", tuple(self.edit_types))
        unknown = [e for e in self.edit_types if e not in EDIT_TYPES]
        if unknown or not self.edit_types:
            raise ValueError(
                f"ProposalRequest.edit_types: {list(self.edit_types)!r}; each must be one of {EDIT_TYPES}"
            )
        if len(set(self.edit_types)) != len(self.edit_types):
            raise ValueError(f"ProposalRequest.edit_types: {list(self.edit_types)!r} has duplicates")
        if self.bbox is not None:
            if len(self.bbox) != 4:
                raise ValueError(f"ProposalRequest.bbox: expected (x0, y0, x1, y1), got {self.bbox!r}")
            object.__setattr__(self, "bbox", tuple(int(v) for v in self.bbox))
        if self.frame_size is not None:
            w, h = (int(v) for v in self.frame_size)
            if w <= 0 or h <= 0:
                raise ValueError(
                    f"ProposalRequest.frame_size: expected positive (width, height), got {self.frame_size!r}"
                )
            object.__setattr__(self, "frame_size", (w, h))
        if self.area_ratio is not None and not 0.0 <= float(self.area_ratio) <= 1.0:
            raise ValueError(f"ProposalRequest.area_ratio: expected a value in [0, 1], got {self.area_ratio!r}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Proposal(BaseModel):
    """One editing instruction for one object, ready to become an ``instructions`` row."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    edit_type: EditType
    instruction: str = Field(min_length=3, max_length=300)
    instruction_long: str = Field(min_length=3, max_length=2000)
    source_caption: str = Field(max_length=MAX_CAPTION_CHARS)
    target_caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)
    region_caption: str = Field(min_length=1, max_length=300)
    label: str
    proposer: str
    prompt_version: str

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if isinstance(value, str):
            if _CONTROL.search(value):
                raise ValueError("contains control characters")
            if value != value.strip():
                raise ValueError("has leading or trailing whitespace")
        return value

    @field_validator("instruction")
    @classmethod
    def _short(cls, value: str) -> str:
        if word_count(value) > MAX_SHORT_WORDS:
            raise ValueError(f"has {word_count(value)} words; at most {MAX_SHORT_WORDS}")
        return value

    @field_validator("instruction_long")
    @classmethod
    def _long(cls, value: str) -> str:
        n = word_count(value)
        if not MIN_LONG_WORDS <= n <= MAX_LONG_WORDS:
            raise ValueError(f"has {n} words; needs {MIN_LONG_WORDS} to {MAX_LONG_WORDS}")
        return value

    @field_validator("region_caption")
    @classmethod
    def _region(cls, value: str) -> str:
        if word_count(value) > MAX_REGION_WORDS:
            raise ValueError(f"has {word_count(value)} words; at most {MAX_REGION_WORDS}")
        return value

    def instruction_id(self, object_id: str) -> str:
        return instruction_id(object_id, self.edit_type, self.instruction, self.proposer)

    def to_row(self, object_id: str, clip_id: str, run_id: str | None) -> dict[str, Any]:
        """An ``instructions`` row (catalog/schema.py); ``created_at`` is filled by ``Catalog.append``."""
        return {
            "instruction_id": self.instruction_id(object_id),
            "object_id": object_id,
            "clip_id": clip_id,
            "edit_type": self.edit_type,
            "instruction": self.instruction,
            "instruction_long": self.instruction_long,
            "source_caption": self.source_caption,
            "target_caption": self.target_caption,
            "region_caption": self.region_caption,
            "label": self.label,
            "proposer": self.proposer,
            "prompt_version": self.prompt_version,
            "created_at": None,
            "run_id": run_id,
        }


@dataclass
class ProposalOutcome:
    """The result for one request: proposals in requested order, plus every rejection or fallback as a Failure."""

    request: ProposalRequest
    proposals: list[Proposal] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail(self, reason: str, message: str, error_type: str | None = None) -> None:
        self.failures.append(Failure(STAGE, "object", self.request.object_id, reason, message, error_type))


class Proposer(ABC):
    """Writes instructions for batches of objects. Construct with typed keyword arguments; ``setup()`` loads models.

    How the flows use it::

        from tasks.proposers import ProposalRequest, get_proposer

        proposer = get_proposer("template")  # or "transformers:/models/qwen", "openai:http://host:8000/v1#qwen2.5-7b"
        proposer.setup()  # loads models once per batch; idempotent
        outcomes = proposer.propose([ProposalRequest(object_id=..., clip_id=..., label="dog", caption="...",
                                                     bbox=(x0, y0, x1, y1), frame_size=(width, height),
                                                     edit_types=("remove", "add"), seed=0)])
        for outcome in outcomes:
            rows = [p.to_row(outcome.request.object_id, outcome.request.clip_id, run_id) for p in outcome.proposals]
            failures = outcome.failures  # tasks.types.Failure, stage "propose": rejections and fallbacks
    """

    backend: ClassVar[str]

    @property
    @abstractmethod
    def proposer_id(self) -> str:
        """Recorded as ``instructions.proposer`` and hashed into the instruction id (backend + model)."""

    @property
    @abstractmethod
    def prompt_version(self) -> str:
        """Recorded as ``instructions.prompt_version``."""

    def setup(self) -> None:
        """Load models / open clients. Called once before a batch; idempotent."""

    @abstractmethod
    def propose(self, requests: list[ProposalRequest]) -> list[ProposalOutcome]:
        """One outcome per request, in order. Per-item problems become ``failures``; nothing raises for bad data.

        Requesting ``("remove", "add")`` yields a coherent reverse pair: the ``add`` proposal's ``source_caption`` is
        the ``remove`` proposal's ``target_caption`` and its ``target_caption`` is the original caption (the add pair
        of a removal render goes from the inpainted clip back to the real footage).
        """
