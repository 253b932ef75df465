"""``--segmenter sam:CHECKPOINT#options``: parsed into SamSegmenter arguments, bad options named."""

from __future__ import annotations

import pytest

from catalog.store import Catalog
from tasks.annotate.specs import parse_sam_spec
from tasks.config import RunConfig
from tasks.steps.ingest import make_annotators


def test_model_type_comes_from_released_file_names_and_options_parse() -> None:
    assert parse_sam_spec("sam:/models/sam_vit_h_4b8939.pth") == {
        "checkpoint": "/models/sam_vit_h_4b8939.pth",
        "model_type": "vit_h",
    }
    options = parse_sam_spec("sam:s3://bucket/sam.pth#model_type=vit_l&auto=1&labels=car, dog&min_iou=0.3")
    assert options == {
        "checkpoint": "s3://bucket/sam.pth",
        "model_type": "vit_l",
        "auto": True,
        "labels": ["car", "dog"],
        "min_iou": 0.3,
    }
    config = RunConfig(source="clips/", segmenter="sam:/models/sam_vit_b_01ec64.pth#auto=yes&max_auto_objects=2")
    segmenter = make_annotators(config, Catalog("memory://segmenter-spec")).segmenter
    assert (segmenter.model_type, segmenter.checkpoint) == ("vit_b", "/models/sam_vit_b_01ec64.pth")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sam:", "expected 'provided'"),
        ("sam:#auto=1", "checkpoint path or URL is empty"),
        ("sam:/m.pth#colour=red", "unknown option 'colour=red'"),
        ("sam:/m.pth#auto=maybe", "auto='maybe' is not a valid bool"),
        ("sam:/m.pth#min_iou=high", "min_iou='high' is not a valid float"),
    ],
)
def test_bad_specs_are_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_sam_spec(spec)
    assert spec in str(info.value)
