"""``--segmenter sam:CHECKPOINT#options``: parsed into SamSegmenter arguments, bad options named; the smaller usage
points of the annotation options (every spec kind named, a detector is not a captioner, unknown --select keys, null
area checks, --vocab for sam:, the spec syntax in --help)."""

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
        ("sam:", "unknown kind; expected provided"),
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


def _run(*args: str):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, ["run", "clips/", *args])


def _one_line_error(result) -> str:
    """The usage error's text with the box drawing removed, as one line."""
    return " ".join(result.stderr.replace("│", " ").replace("╭", " ").replace("╰", " ").replace("─", " ").split())


def test_an_unknown_spec_kind_lists_every_kind() -> None:
    from tasks.annotate.specs import parse_segmenter_spec

    for parse in (parse_sam_spec, parse_segmenter_spec):
        with pytest.raises(ValueError) as info:
            parse("segformer:/m")
        for kind in ("provided", "sam:CHECKPOINT", "detect+track:DETECTOR", "sam3:PATH"):
            assert kind in str(info.value), (parse, str(info.value))
    result = _run("--segmenter", "segformer:/m")
    assert result.exit_code == 2 and "detect+track:DETECTOR" in _one_line_error(result)
    assert "sam3:PATH" in _one_line_error(result)


def test_an_unknown_select_key_is_named_with_the_known_ones() -> None:
    result = _run("--select", "bogus=1")
    text = _one_line_error(result)
    assert result.exit_code == 2 and "bogus" in text and "known keys: max_area, max_area_change" in text, text
    assert "min_track_iou" in text
    ok = _run("--select", "min_area=0.5", "--select", "bogus=1")  # a known key next to it is not named as unknown
    assert "min_area:" not in _one_line_error(ok).split("known keys")[0]


def test_area_checks_can_be_turned_off_with_null_from_options_and_config_files(tmp_path) -> None:
    from flows.cli_factory import build_config

    config = build_config({"source": "clips/"}, [("annotate.select.min_area", None),
                                                 ("annotate.select.max_area_change", None)])  # fmt: skip
    assert (config.annotate.select.min_area, config.annotate.select.max_area_change) == (None, None)
    from_file = RunConfig.model_validate({"source": "x", "annotate": {"select": {"max_area": None}}})
    assert from_file.annotate.select.max_area is None and from_file.annotate.select.min_area == 0.01
    from tasks.annotate.selection import SelectionOptions

    with pytest.raises(ValueError, match="min_area 0.5 > max_area 0.1"):  # both set: still ordered
        SelectionOptions(min_area=0.5, max_area=0.1)
    SelectionOptions(min_area=0.5, max_area=None)  # one off: no order to keep
    result = _run("--select", "min_area=-1")
    assert result.exit_code == 2 and "--select" in _one_line_error(result)  # a negative value is still refused


def test_a_detector_given_as_a_vlm_is_named_a_detector(tmp_path) -> None:
    import json

    from tasks.annotate.caption import make_vlm
    from tasks.annotate.specs import AnnotationSpecError, check_annotation

    for model_type, role in (
        ("grounding-dino", "detector"),
        ("owlv2", "detector"),
        ("sam2_video", "sam2 video tracker"),
    ):
        folder = tmp_path / model_type
        folder.mkdir()
        config = (
            {"model_type": model_type, "vision_config": {}} if model_type == "owlv2" else {"model_type": model_type}
        )
        (folder / "config.json").write_text(json.dumps(config))
        for option in ("captioner", "tagger"):
            with pytest.raises(AnnotationSpecError) as info:
                check_annotation(RunConfig(source="x", annotate={option: f"transformers:{folder}"}))
            assert f"is a {role} model ({model_type}), not a vision-language model" in str(info.value)
            assert "text-only" not in str(info.value) and info.value.option == f"--{option}"
        with pytest.raises(ValueError, match=f"{role} model"):
            make_vlm(f"transformers:{folder}")
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(AnnotationSpecError, match="text-only llama model"):  # negative control: text-only is named so
        check_annotation(RunConfig(source="x", annotate={"captioner": f"transformers:{llama}"}))


def test_sam_reads_the_vocabulary_for_its_automatic_objects(tmp_path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("car\nperson\n")
    spec = "sam:/models/sam_vit_b_01ec64.pth#auto=1"
    with_vocab = RunConfig(source="clips/", segmenter=spec, annotate={"vocab": str(vocab)})
    assert make_annotators(with_vocab, Catalog("memory://sam-vocab")).segmenter.labels == ["car", "person"]
    given = RunConfig(source="clips/", segmenter=spec + "&labels=dog", annotate={"vocab": str(vocab)})
    assert make_annotators(given, Catalog("memory://sam-vocab")).segmenter.labels == ["dog"]  # the spec's wins
    without = RunConfig(source="clips/", segmenter=spec)
    assert make_annotators(without, Catalog("memory://sam-vocab")).segmenter.labels == []
    # the labels are part of what annotated: another vocabulary is another identity (a rerun annotates again)
    identities = [make_annotators(c, Catalog("memory://sam-vocab")).segmenter.identity for c in (with_vocab, given)]
    vocab.write_text("bicycle\n")
    identities.append(make_annotators(with_vocab, Catalog("memory://sam-vocab")).segmenter.identity)
    assert len(set(identities)) == 3
    again = make_annotators(with_vocab, Catalog("memory://sam-vocab")).segmenter.identity
    assert again == identities[-1]  # the same options and labels: the same identity (a rerun resumes)


def test_run_help_keeps_the_spec_syntax() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "sam:CHECKPOINT[#model_type=vit_h&auto=1]" in text, text
    assert "sam3:PATH[#threshold=0.5]" in text and "[&threshold=0.3&keyframe_every=8]" in text
