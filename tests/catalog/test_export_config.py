"""``ExportConfig``: every export option once, with its default, choices, bounds and help; what validation refuses."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from catalog.export import PRESET_COLUMNS, ExportConfig
from catalog.export.config import (
    DECISIONS,
    FORMATS,
    MASK_FORMATS,
    PRESETS,
    PROMPT_FROM,
    SPLIT_BY,
    Decision,
    ExportFormat,
    MaskFormat,
    Preset,
    PromptFrom,
    SplitBy,
)
from catalog.export.select import SPLIT_BY_COLUMN


def _errors(**options) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        ExportConfig(**options)
    return info.value.errors(include_url=False)


def test_choice_lists_are_the_literals_and_the_tables_cover_them() -> None:
    for choices, literal in (
        (FORMATS, ExportFormat),
        (PRESETS, Preset),
        (SPLIT_BY, SplitBy),
        (MASK_FORMATS, MaskFormat),
        (PROMPT_FROM, PromptFrom),
        (DECISIONS, Decision),
    ):
        assert choices == get_args(literal)
    assert tuple(PRESET_COLUMNS) == PRESETS
    assert tuple(SPLIT_BY_COLUMN) == SPLIT_BY


def test_every_option_is_described() -> None:
    for name, field in ExportConfig.model_fields.items():
        assert field.description and field.description.endswith("."), name


def test_defaults() -> None:
    config = ExportConfig(format="parquet")
    assert config.decisions == ["accepted"]  # only accepted pairs leave the factory unless asked
    assert (config.split, config.split_by, config.seed, config.mask_format) == (None, "source", 0, "mp4")
    assert config.shares == {"train": 1.0} and config.shard_bytes == 512 << 20
    assert config.embed_media is True and config.prompt_from == "instruction"
    assert config.overwrite is False  # an export folder that holds an export is refused unless asked


def test_a_preset_implies_csv_and_refuses_another_format() -> None:
    assert ExportConfig(preset="diffsynth-vace").format == "csv"
    assert ExportConfig(preset="diffsynth-control", format="csv").format == "csv"
    [error] = _errors(preset="diffsynth-vace", format="webdataset")
    assert error["loc"] == ("format",) and "drop format 'webdataset'" in error["msg"]
    [error] = _errors()
    assert error["loc"] == ("format",) and "a format (webdataset, parquet, csv) or a preset" in error["msg"]
    [error] = _errors(preset="diffsynth-nope")  # the bad preset is the one error
    assert error["loc"] == ("preset",)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"format": "tar"}, "format"),
        ({"format": "csv", "split_by": "object"}, "split_by"),
        ({"format": "csv", "mask_format": "png"}, "mask_format"),
        ({"format": "csv", "prompt_from": "caption"}, "prompt_from"),
        ({"format": "csv", "decisions": ["accepted", "maybe"]}, "decisions"),
        ({"format": "csv", "decisions": []}, "decisions"),
        ({"format": "csv", "cap": 0}, "cap"),
        ({"format": "csv", "shard_size": 0}, "shard_size"),
        ({"format": "csv", "shard_mb": 0}, "shard_mb"),
        ({"format": "csv", "shard_mb": -1.5}, "shard_mb"),
        ({"format": "csv", "no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_choices_and_ranges_are_refused_naming_the_option(options: dict, field: str) -> None:
    errors = _errors(**options)
    assert {e["loc"][0] for e in errors} == {field}


@pytest.mark.parametrize("spec", ["train=0.9,val=0.2", "train=0.9,val", "train=1.2,val=-0.2", "1x=1", "train=abc"])
def test_bad_split_specs_are_refused(spec: str) -> None:
    [error] = _errors(format="csv", split=spec)
    assert error["loc"] == ("split",) and "split" in error["msg"]


def test_split_as_a_mapping_and_decisions_in_canonical_order() -> None:
    config = ExportConfig(
        format="csv", split={"train": 0.9, "val": 0.1}, decisions=["rejected", "accepted", "rejected"]
    )
    assert config.split == "train=0.9,val=0.1" and config.shares == {"train": 0.9, "val": 0.1}
    assert config.decisions == ["accepted", "rejected"]
    assert ExportConfig(format="csv", balance=[" edit_type ", ""], licenses=[""]).balance == ["edit_type"]
    assert ExportConfig(format="csv", licenses=[""]).licenses is None


def test_the_config_round_trips_through_json() -> None:
    config = ExportConfig(preset="diffsynth-vace", split="train=0.5,val=0.5", decisions=["accepted", "rejected"])
    assert ExportConfig.model_validate_json(config.model_dump_json()) == config
    assert ExportConfig.model_json_schema()["properties"]["decisions"]["default"] == ["accepted"]
