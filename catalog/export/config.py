"""Every export option, once: ``ExportConfig`` holds each option's type, default, choices, bounds and help text.

The library (``catalog.export.export``), the Prefect ``export`` flow (its ``config`` parameter, whose schema the UI
renders) and ``vpf export`` (options derived from the fields by ``flows.model_options``) all take this model, so a
default, a choice or a help text is changed here and nowhere else. The choice tuples below are read from the
``Literal`` types the model uses. Checks that need the catalog or the output folder (``balance`` columns, an unknown
``since``, the SQL guard on ``where``, a folder that already holds something) happen when the export runs;
everything else is refused here, by validation.

Adding an option: add a field (with its description and bounds), read it in ``catalog.export``, test it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


ExportFormat = Literal["webdataset", "parquet", "csv"]
Preset = Literal["diffsynth-vace", "diffsynth-control"]
SplitBy = Literal["source", "clip"]
MaskFormat = Literal["mp4", "npy"]
PromptFrom = Literal["instruction", "target_caption"]
Decision = Literal["accepted", "rejected"]

FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
PRESETS: tuple[Preset, ...] = get_args(Preset)
SPLIT_BY: tuple[SplitBy, ...] = get_args(SplitBy)
MASK_FORMATS: tuple[MaskFormat, ...] = get_args(MaskFormat)
PROMPT_FROM: tuple[PromptFrom, ...] = get_args(PromptFrom)
DECISIONS: tuple[Decision, ...] = get_args(Decision)
PRESET_FORMAT: ExportFormat = "csv"  # what every preset writes
DEFAULT_SPLIT = "train"

_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_split(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"train=0.9,val=0.05,test=0.05"`` → ``{"train": 0.9, "val": 0.05, "test": 0.05}``; None → ``{"train": 1}``.

    Shares must be positive and add up to 1 (within 1e-6); names are identifiers (they name files). Raises
    ``ValueError`` naming ``split``.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return {DEFAULT_SPLIT: 1.0}
    if isinstance(spec, str):
        shares: dict[str, float] = {}
        for part in spec.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep:
                raise ValueError(f"split: {part.strip()!r} is not NAME=SHARE (e.g. train=0.9,val=0.05,test=0.05)")
            try:
                shares[name] = float(value)
            except ValueError:
                raise ValueError(f"split: share of {name!r} is not a number: {value.strip()!r}") from None
    else:
        shares = {str(k): float(v) for k, v in spec.items()}
    for name, share in shares.items():
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"split: name {name!r} must start with a letter and hold only letters, digits and _")
        if not (share > 0 and math.isfinite(share)):
            raise ValueError(f"split: share of {name!r} must be > 0, got {share}")
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split: shares must add up to 1, got {total:g} ({spec})")
    return shares


def format_split(shares: Mapping[str, float]) -> str:
    """The ``split`` string of ``shares`` (``parse_split``'s inverse)."""
    return ",".join(f"{name}={share:g}" for name, share in shares.items())


class ExportConfig(BaseModel):
    """What to export and how: the options of ``vpf export``, of the ``export`` flow and of
    ``catalog.export.export``. ``format`` is always set once validated (a ``preset`` sets it to ``csv``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Preset | None = Field(
        None,
        description="DiffSynth-Studio metadata: diffsynth-vace (video, vace_video, vace_video_mask, prompt) or "
        "diffsynth-control (video, control_video, prompt). Implies the csv format.",
    )
    format: ExportFormat | None = Field(
        None,
        validate_default=True,
        description="Output format: webdataset shards, parquet (Hugging Face datasets) or csv (media files and "
        "metadata.csv). Required unless a preset is given.",
    )
    where: str | None = Field(
        None,
        description="SQL predicate over pairs_full plus license and attribution (read-only, as in vpf sql), "
        "e.g. \"edit_type = 'remove'\".",
    )
    decisions: list[Decision] = Field(
        ["accepted"],
        min_length=1,
        description="Only pairs with these quality-gate decisions: accepted, rejected or both. Rejected pairs are "
        "exported only when listed; pairs without a decision never are.",
    )
    include_reviewed_good: bool = Field(
        False,
        description="Also export pairs a reviewer accepted (vpf review) whatever their gate decision. A pair whose "
        "latest review rejected it is never exported.",
    )
    licenses: list[str] | None = Field(
        None,
        description="Only pairs whose source is under one of these licences ('unknown' = none recorded).",
    )
    since: str | None = Field(
        None,
        description="Only pairs added after this earlier export (its export id, or the URL of its folder).",
    )
    split: str | None = Field(
        None,
        description="Shares of each split, e.g. train=0.9,val=0.05,test=0.05 (default: all train).",
    )
    split_by: SplitBy = Field(
        "source",
        description="Keep every pair of one source (or of one clip) in one split.",
    )
    seed: int = Field(0, description="Seed of the split assignment.")
    balance: list[str] | None = Field(
        None,
        description="Group by these pairs_full columns (label = object_label): with cap at most cap pairs per "
        "group, without it every group cut to the smallest. Best quality first.",
    )
    cap: int | None = Field(
        None,
        ge=1,
        description="At most this many pairs per balance group (without balance: overall), best quality first.",
    )
    shard_mb: float = Field(
        512.0,
        gt=0,
        description="WebDataset/Parquet with embedded media: close a shard before it passes this many MiB.",
    )
    shard_size: int | None = Field(
        None,
        ge=1,
        description="WebDataset/Parquet with embedded media: at most this many samples per shard.",
    )
    embed_media: bool = Field(
        True,
        description="Parquet: the mp4 bytes inside the files, or copies beside one metadata file per split that "
        "names them by paths datasets resolves against that file's folder.",
    )
    mask_format: MaskFormat = Field(
        "mp4",
        description="WebDataset: <key>.mask.mp4 (lossless video, white = edited) or <key>.mask.npy (uint8 T, H, W).",
    )
    prompt_from: PromptFrom = Field(
        "instruction",
        description="CSV/DiffSynth: the prompt is the pair's instruction or the target clip's caption.",
    )
    overwrite: bool = Field(
        False,
        description="Replace the export already in the output folder (its files as its manifest lists them, and only "
        "those). Without it, a folder that holds anything is refused.",
    )

    @field_validator("format")
    @classmethod
    def _format_or_preset(cls, value: ExportFormat | None, info: ValidationInfo) -> ExportFormat | None:
        if "preset" not in info.data:  # the preset itself was refused; that error says enough
            return value
        preset = info.data["preset"]
        if preset is None:
            if value is None:
                raise ValueError(f"a format ({', '.join(FORMATS)}) or a preset ({', '.join(PRESETS)}) is required")
            return value
        if value not in (None, PRESET_FORMAT):
            raise ValueError(f"preset {preset!r} writes DiffSynth-Studio's CSV files; drop format {value!r}")
        return PRESET_FORMAT

    @field_validator("decisions")
    @classmethod
    def _canonical_decisions(cls, value: list[Decision]) -> list[Decision]:
        return [d for d in DECISIONS if d in value]

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return format_split(parse_split(value))
        if isinstance(value, str):
            parse_split(value)
        return value

    @field_validator("licenses", "balance")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [name.strip() for name in value if name.strip()] or None

    @property
    def shard_bytes(self) -> int:
        """``shard_mb`` in bytes (at least 1)."""
        return max(1, int(self.shard_mb * (1 << 20)))

    @property
    def shares(self) -> dict[str, float]:
        """``split`` parsed: split name → share, in the order given."""
        return parse_split(self.split)


__all__ = [
    "DECISIONS",
    "FORMATS",
    "MASK_FORMATS",
    "PRESETS",
    "PROMPT_FROM",
    "SPLIT_BY",
    "Decision",
    "ExportConfig",
    "ExportFormat",
    "MaskFormat",
    "Preset",
    "PromptFrom",
    "SplitBy",
    "format_split",
    "parse_split",
]
