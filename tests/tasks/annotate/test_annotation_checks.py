"""The up-front check of a run's annotation options (``check_annotation``: specs, ranges, model folders and their
types, the vocabulary file; no weight loaded) and the identity an open-vocabulary segmenter's objects are keyed by."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tasks.annotate.loading import load_pretrained, model_fingerprint
from tasks.annotate.specs import (
    AnnotationSpecError,
    annotation_identity,
    build_segmenter,
    check_annotation,
    make_vocabulary,
)
from tasks.config import RunConfig
from tasks.ingest import item_row_key
from tasks.types import SourceItem


def _config(tmp_path: Path, **settings) -> RunConfig:
    return RunConfig(source=str(tmp_path), **settings)


def _dt(detector: Path, tracker: Path, options: str = "") -> str:
    return f"detect+track:{detector}#tracker=sam2:{tracker}{options}"


def _refused(config: RunConfig, option: str, *words: str) -> str:
    with pytest.raises(AnnotationSpecError) as err:
        check_annotation(config)
    message = str(err.value)
    assert err.value.option == option and message.startswith(f"{option}: "), message
    assert "\n" not in message and all(w in message for w in words), message
    return message


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("horse\nred ball  # a comment\n\n")
    return path


def test_good_options_pass_without_loading_a_model(tmp_path, grounding_dino, owlv2, sam2_video, sam3_video, vocab):
    started = time.perf_counter()
    for spec in (_dt(grounding_dino, sam2_video, "&threshold=0&max_objects=2&dtype=bfloat16&device=cuda:1"),
                 _dt(owlv2, sam2_video), f"sam3:{sam3_video}#threshold=0.5", "provided"):  # fmt: skip
        check_annotation(_config(tmp_path, segmenter=spec, annotate={"vocab": str(vocab)}))
    assert time.perf_counter() - started < 2  # config.json files only


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("&threshold=2", ["threshold=2", "[0, 1]"]),
        ("&nms_iou=-0.1", ["nms_iou=-0.1"]),
        ("&max_objects=0", ["max_objects=0", ">= 1"]),
        ("&keyframe_every=-1", ["keyframe_every=-1"]),
        ("&dtype=float64", ["dtype='float64'", "float32"]),
        ("&device=gpu0", ["device='gpu0'"]),
    ],
)
def test_option_ranges_are_refused_when_the_config_is_built(tmp_path, grounding_dino, sam2_video, options, words):
    """Out-of-range options fail the spec's own validation (``vpf run``: a usage error naming --segmenter)."""
    from pydantic import ValidationError

    spec = _dt(grounding_dino, sam2_video, options)
    with pytest.raises(ValidationError) as err:
        _config(tmp_path, segmenter=spec)
    assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(AnnotationSpecError, match="--segmenter: "):  # a config built without validation
        check_annotation(_config(tmp_path).model_copy(update={"segmenter": spec}))


def test_model_folders_must_exist_hold_a_config_and_fit_their_role(
    tmp_path, grounding_dino, sam2_video, sam3_video
) -> None:
    missing, empty = tmp_path / "nope", tmp_path / "empty"
    empty.mkdir()
    _refused(_config(tmp_path, segmenter=_dt(missing, sam2_video)), "--segmenter", "detector", "no such model folder")
    _refused(_config(tmp_path, segmenter=_dt(empty, sam2_video)), "--segmenter", "no config.json")
    _refused(_config(tmp_path, segmenter=_dt(grounding_dino, missing)), "--segmenter", "tracker=sam2:")
    # a folder of another model type never loads "with a warning"
    _refused(_config(tmp_path, segmenter=_dt(grounding_dino, grounding_dino)), "--segmenter", "grounding-dino",
             "not a sam2 video tracker")  # fmt: skip
    _refused(_config(tmp_path, segmenter=_dt(grounding_dino, sam3_video)), "--segmenter", "sam3_video",
             "sam2 video tracker")  # fmt: skip
    _refused(_config(tmp_path, segmenter=_dt(sam2_video, sam2_video)), "--segmenter", "not a detector")
    _refused(_config(tmp_path, segmenter=f"sam3:{grounding_dino}"), "--segmenter", "not a sam3 video")
    _refused(_config(tmp_path, segmenter=f"detect+track:{grounding_dino}#tracker=sam:{missing}.pth"),
             "--segmenter", "tracker=sam:", "no such file")  # fmt: skip
    _refused(_config(tmp_path, segmenter=f"sam:{missing}/sam_vit_b.pth"), "--segmenter", "no such file")
    # the gate's own segmenter, when it is not the run's
    _refused(_config(tmp_path, score={"reseg_segmenter": f"sam3:{sam2_video}"}), "--reseg-segmenter", "sam2_video")
    # and the one asked for side effects by name, when it is neither
    _refused(_config(tmp_path, render={"effect_segmenter": f"sam3:{missing}"}), "--effect-segmenter", "no such")
    check_annotation(
        _config(tmp_path, segmenter=f"sam3:{sam3_video}", render={"effect_segmenter": f"sam3:{sam3_video}"})
    )


def test_vlm_and_clip_folders_are_checked(tmp_path, grounding_dino) -> None:
    text_only = tmp_path / "llama"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    _refused(_config(tmp_path, annotate={"tagger": f"transformers:{text_only}"}), "--tagger", "vision tower")
    _refused(_config(tmp_path, annotate={"captioner": f"transformers:{tmp_path / 'x'}"}), "--captioner", "no such")
    _refused(_config(tmp_path, score={"judge": f"transformers:{text_only}"}), "--judge", "llama")
    check_annotation(_config(tmp_path, annotate={"tagger": "openai:http://localhost:1/v1#m"}))  # not inspected
    head = tmp_path / "head.pt"
    head.write_bytes(b"x")
    _refused(_config(tmp_path, annotate={"aesthetic_clip": str(grounding_dino), "aesthetic_head": str(head)}),
             "--aesthetic-clip", "not a clip")  # fmt: skip
    _refused(_config(tmp_path, score={"clip_weights": str(text_only)}), "--clip-weights", "llama")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    _refused(_config(tmp_path, score={"clip_weights": str(broken)}), "--clip-weights", "not valid JSON")


def test_vocabulary_files_are_readable_utf8_phrases_within_the_label_rule(tmp_path) -> None:
    missing = tmp_path / "missing.txt"
    _refused(_config(tmp_path, annotate={"vocab": str(missing)}), "--vocab", "cannot be read")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    _refused(_config(tmp_path, annotate={"vocab": str(latin1)}), "--vocab", "cannot be read")
    blank = tmp_path / "blank.txt"
    blank.write_text("# only a comment\n\n")
    _refused(_config(tmp_path, annotate={"vocab": str(blank)}), "--vocab", "no phrase")
    bad = tmp_path / "bad.txt"
    bad.write_text("horse\n<b>ball</b>\na very long phrase of far too many words for any label\n")
    message = _refused(_config(tmp_path, annotate={"vocab": str(bad)}), "--vocab", "'<b>ball</b>'", "far too many")
    assert "'horse'" not in message


def test_remote_models_are_checked_through_fsspec(tmp_path, grounding_dino, sam2_video) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/checks/gdino/config.json", (grounding_dino / "config.json").read_bytes())
    check_annotation(_config(tmp_path, segmenter=_dt("memory://checks/gdino", sam2_video)))  # type: ignore[arg-type]
    _refused(_config(tmp_path, segmenter=_dt("memory://checks/none", sam2_video)), "--segmenter",  # type: ignore[arg-type]
             "no config.json at this model URL")  # fmt: skip
    _refused(_config(tmp_path, segmenter="sam3:memory://checks/gdino"), "--segmenter", "grounding-dino")


def test_load_refuses_a_folder_of_another_model_type_before_reading_weights(grounding_dino) -> None:
    from transformers import Sam2VideoModel

    with pytest.raises(ValueError, match="not a sam2 video tracker"):
        load_pretrained(Sam2VideoModel, str(grounding_dino), role="sam2 video tracker", device="cpu")


def test_identity_follows_models_options_and_vocabulary(tmp_path, grounding_dino, owlv2, sam2_video, vocab):
    vocabulary = make_vocabulary(str(vocab), from_caption=False)
    base = _dt(grounding_dino, sam2_video, "&threshold=0.3")
    first = annotation_identity(base, vocabulary)
    assert first == annotation_identity(base, make_vocabulary(str(vocab), from_caption=False))  # stable
    assert first == annotation_identity(base + "&device=cpu&batch_size=2", vocabulary)  # where it runs: same
    other_vocab = tmp_path / "other.txt"
    other_vocab.write_text("star\n")
    changed = {
        annotation_identity(_dt(owlv2, sam2_video, "&threshold=0.3"), vocabulary),  # another detector
        annotation_identity(_dt(grounding_dino, sam2_video, "&threshold=0.4"), vocabulary),  # another option
        annotation_identity(base, make_vocabulary(str(other_vocab), from_caption=False)),  # another vocabulary
        annotation_identity(base, make_vocabulary(str(vocab), from_caption=True)),  # caption nouns on
        annotation_identity(base, make_vocabulary(None, from_caption=False)),  # the built-in vocabulary
    }
    assert first not in changed and len(changed) == 5
    moved = tmp_path / "moved-gdino"
    shutil.copytree(grounding_dino, moved)  # copy2: same names, sizes and mtimes
    assert annotation_identity(_dt(moved, sam2_video, "&threshold=0.3"), vocabulary) == first
    retrained = tmp_path / "retrained"
    shutil.copytree(grounding_dino, retrained)
    weights = next(p for p in retrained.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert model_fingerprint(str(retrained)) != model_fingerprint(str(grounding_dino))
    assert annotation_identity(_dt(retrained, sam2_video, "&threshold=0.3"), vocabulary) != first


def test_row_keys_carry_the_identity_and_provided_masks_do_not(tmp_path, grounding_dino, owlv2, sam2_video, vocab):
    vocabulary = make_vocabulary(str(vocab), from_caption=False)
    a = build_segmenter(_dt(grounding_dino, sam2_video), vocabulary)
    b = build_segmenter(_dt(owlv2, sam2_video), vocabulary)
    item = SourceItem(uri="/v.mp4")
    assert a.identity == annotation_identity(_dt(grounding_dino, sam2_video), vocabulary)
    assert item_row_key(item, a) != item_row_key(item, b)
    assert item_row_key(item, a) == item_row_key(item, build_segmenter(_dt(grounding_dino, sam2_video), vocabulary))
    provided = SourceItem(uri="/v.mp4", mask_uri="/m.npz")
    assert item_row_key(provided, a) == item_row_key(provided, b)  # masks that came with the source
