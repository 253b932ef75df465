"""The annotation models, loaded from saved folders by the same code a real checkpoint takes (tiny random
configurations of the real transformers classes; outputs are random, so only their form and the glue's guarantees
are asserted: labels come from the vocabulary, masks have the clip's shape, ids follow the prompts)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.annotate.caption import VLMAnnotator, make_vlm
from tasks.annotate.detect import ZeroShotDetector
from tasks.annotate.segmenters import DetectTrackSegmenter, Sam3Segmenter
from tasks.annotate.track import Sam2VideoTracker, SamFrameTracker
from tasks.annotate.vocab import Vocabulary
from tasks.errors import InputError
from tasks.synthetic import make_scene
from tasks.types import Clip
from tests.tasks.proposers.conftest import build_tiny_vlm
from tests.tasks.proposers.llm_server import ForceText


@pytest.fixture(scope="module")
def scene():
    return make_scene("static", num_frames=5, height=48, width=80, num_objects=1, seed=1)


def _clip(scene, caption: str | None = None) -> Clip:
    return Clip("clip_x", "src_x", "mem://x.mp4", 0, len(scene.frames), 1, 8.0, scene.frames, caption=caption)


@pytest.mark.parametrize("family", ["grounding_dino", "owlv2"])
def test_detectors_label_boxes_with_vocabulary_phrases(family, request, scene) -> None:
    path = request.getfixturevalue(family)
    detector = ZeroShotDetector(str(path), threshold=0.0, max_detections=3, batch_size=2)
    phrases = ["horse", "red ball", "star"]
    found = detector.detect(scene.frames[[0, 2, 4]], phrases, frame_indices=[0, 2, 4])
    assert detector.family == ("grounding-dino" if family == "grounding_dino" else "owl")
    assert [len(f) for f in found] == [3, 3, 3]  # threshold 0: the cap applies
    for index, dets in zip([0, 2, 4], found):
        for det in dets:
            assert det.label in phrases and det.frame == index and 0.0 <= det.score <= 1.0
            x0, y0, x1, y1 = det.box
            assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 48
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    # the same folder through a second instance, alone in its batch, gives the same detections
    again = ZeroShotDetector(str(path), threshold=0.0, max_detections=3).detect(scene.frames[[0]], phrases)
    assert [d.label for d in again[0]] == [d.label for d in found[0]]
    assert [d.score for d in again[0]] == pytest.approx([d.score for d in found[0]], abs=1e-5)
    # a threshold above every score keeps nothing (negative control)
    assert ZeroShotDetector(str(path), threshold=1.0).detect(scene.frames[:1], phrases) == [[]]


def test_detector_refuses_what_is_not_a_detector(tmp_path, sam2_video) -> None:
    with pytest.raises(InputError, match="config.json"):
        ZeroShotDetector(str(tmp_path)).setup()
    with pytest.raises(ValueError):
        ZeroShotDetector(str(sam2_video)).setup()  # a SAM2 folder is not a zero-shot detector


def test_sam2_video_tracks_each_box_through_the_clip(sam2_video, scene) -> None:
    tracker = Sam2VideoTracker(str(sam2_video))
    masks = tracker.track(scene.frames, [(5, 5, 30, 30), (40, 10, 75, 40)])
    assert masks.shape == (2, 5, 48, 80) and masks.dtype == bool
    single = Sam2VideoTracker(str(sam2_video)).track(scene.frames, [(5, 5, 30, 30)])
    assert np.array_equal(single[0, 0], masks[0, 0])  # object order follows the prompts on the prompted frame
    assert tracker.track(scene.frames, []).shape == (0, 5, 48, 80)


def test_sam2_video_tracks_a_later_detection_both_ways(sam2_video, scene) -> None:
    from tasks.annotate.detect import Detection
    from tasks.annotate.segmenters import track_detections

    tracker = Sam2VideoTracker(str(sam2_video))
    box = (40.0, 10.0, 75.0, 40.0)
    tracks = track_detections(scene.frames, {0: [], 3: [Detection(3, box, 0.9, "star")]}, tracker)
    assert [(t.label, t.frame) for t in tracks] == [("star", 3)]
    backwards = tracker.track(np.ascontiguousarray(scene.frames[3::-1]), [box])[0, ::-1]  # frames 0..3
    forwards = tracker.track(scene.frames[3:], [box])[0]  # frames 3..4
    assert np.array_equal(tracks[0].masks[:3], backwards[:3]) and np.array_equal(tracks[0].masks[3:], forwards)


def test_detect_track_segmenter_with_sam2_and_with_segment_anything(grounding_dino, sam2_video, scene) -> None:
    from tasks.segment import SamSegmenter
    from tests.tasks.conftest import build_tiny_sam

    vocab = Vocabulary(["horse", "star"], from_caption=True)
    for tracker in (Sam2VideoTracker(str(sam2_video)), SamFrameTracker(SamSegmenter(sam=build_tiny_sam(0)))):
        segmenter = DetectTrackSegmenter(
            ZeroShotDetector(str(grounding_dino), threshold=0.0), tracker, vocab, max_objects=2
        )
        objects = segmenter.segment(_clip(scene, caption="a red ball on a table"))
        assert len(objects) == 2
        for obj in objects:
            assert obj.label in {"horse", "star", "red ball", "table"} and obj.mask_source == "detect+track"
            assert obj.masks.shape == (5, 48, 80) and obj.stats["vocab_source"] in {"file", "caption"}
            assert 0.0 <= obj.stats["score"] <= 1.0
        assert len({o.object_id for o in objects}) == 2
    with pytest.raises(ValueError, match="vocabulary"):
        DetectTrackSegmenter(ZeroShotDetector(str(grounding_dino)), Sam2VideoTracker(str(sam2_video)),
                             Vocabulary([], from_caption=False))  # fmt: skip
    none = DetectTrackSegmenter(ZeroShotDetector(str(grounding_dino), threshold=1.0),
                                Sam2VideoTracker(str(sam2_video)), vocab)  # fmt: skip
    with pytest.raises(InputError, match="found none"):
        none.segment(_clip(scene))
    no_vocab = DetectTrackSegmenter(ZeroShotDetector(str(grounding_dino)), Sam2VideoTracker(str(sam2_video)),
                                    Vocabulary([], from_caption=True))  # fmt: skip
    with pytest.raises(InputError) as err:
        no_vocab.segment(_clip(scene, caption=None))
    assert err.value.reason == "no_vocabulary"


def test_sam3_segments_the_vocabulary(sam3_video, scene) -> None:
    segmenter = Sam3Segmenter(str(sam3_video), Vocabulary(["horse", "star"], from_caption=False), max_objects=3)
    objects = segmenter.segment(_clip(scene))
    assert 1 <= len(objects) <= 3
    for obj in objects:
        assert obj.label in {"horse", "star"} and obj.mask_source == "sam3" and obj.masks.shape == (5, 48, 80)
        assert obj.masks.any() and obj.stats["vocab_source"] == "file"
    scores = [o.stats["score"] for o in objects]
    assert scores == sorted(scores, reverse=True)


def test_sam3_tracks_at_most_max_objects_and_stops_between_frames(tmp_path, scene) -> None:
    """A clip with many instances (16 queries x 3 phrases, every detection kept at threshold 0; the saved config caps
    at 1000): the cap reaches the model, so it never tracks more than ``max_objects`` at once; a larger cap lets more
    through (negative control); a stop request ends the tracking at the next frame."""
    from tasks.annotate.stop import RunInterrupted, clear_stop, request_stop
    from tests.tasks.annotate.tiny_models import build_sam3_video

    folder = build_sam3_video(tmp_path / "sam3-many", max_objects=1000, num_queries=16)
    phrases = ["horse", "star", "ball"]
    capped = Sam3Segmenter(str(folder), Vocabulary(phrases, from_caption=False), max_objects=2)
    tracks = capped.track(scene.frames, phrases)
    assert capped.model.config.max_num_objects == 2
    assert capped.frame_objects and max(capped.frame_objects) <= 2 and len(tracks) <= 2
    wider = Sam3Segmenter(str(folder), Vocabulary(phrases, from_caption=False), max_objects=12)
    wider.track(scene.frames, phrases)
    assert max(wider.frame_objects) > 2  # the model does find more instances than the cap of 2
    request_stop()
    try:
        with pytest.raises(RunInterrupted, match="sam3 tracking, frame 0"):
            capped.track(scene.frames, phrases)
    finally:
        clear_stop()
    assert len(capped.track(scene.frames, phrases)) <= 2  # cleared: tracks again


def test_vlm_tags_and_captions_are_validated_cached_and_refused_when_unsafe(tmp_path, scene) -> None:
    folder = build_tiny_vlm(tmp_path / "vlm")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    forced = ForceText(tokenizer, '{"objects": ["horse", "<img src=x>", "red ball"]}')
    tagger = make_vlm(f"transformers:{folder}", cache_url=str(tmp_path / "catalog"), num_frames=2, image_size=32,
                      max_tokens=64, generate_kwargs={"prefix_allowed_tokens_fn": forced})  # fmt: skip
    tags, problems = tagger.tags(scene.frames, key="clip_x")
    assert tags == ["horse", "<img src=x>", "red ball"] and problems == []
    assert tagger.requests_sent == 1
    assert tagger.tags(scene.frames)[0] == tags and tagger.requests_sent == 1  # cached
    vocab = Vocabulary(["star"], from_caption=False, tagger=tagger)
    phrases, problems = vocab.for_clip(None, scene.frames, clip_id="clip_x")
    assert [(p.text, p.source) for p in phrases] == [("star", "file"), ("horse", "vlm"), ("red ball", "vlm")]
    assert [reason for reason, _ in problems] == ["unsafe_tag"]
    # a model that does not answer with the document is a failure, not a tag (negative control)
    caption = 'A horse in a field. {"objects": "not a list"}'
    plain = make_vlm(f"transformers:{folder}", num_frames=1, image_size=32, max_tokens=64,
                     generate_kwargs={"prefix_allowed_tokens_fn": ForceText(tokenizer, caption)})  # fmt: skip
    tags, problems = plain.tags(scene.frames)
    assert tags == [] and problems[0][0] == "tags_invalid_output"
    text, problems = plain.caption(scene.frames)
    assert text.startswith("A horse in a field.") and problems == []
    assert plain.model_id == "transformers:vlm"
    with pytest.raises(ValueError, match="text-only"):
        from tests.tasks.proposers.conftest import build_tiny_lm

        make_vlm(f"transformers:{build_tiny_lm(tmp_path / 'lm')}")
    with pytest.raises(ValueError):
        VLMAnnotator(tagger.model, num_frames=0)


def test_aesthetic_score_is_the_head_on_normalised_clip_embeddings(tmp_path, scene) -> None:
    import torch
    from transformers import AutoProcessor, CLIPModel

    from tasks.annotate.selection import AestheticScorer, SelectionOptions, select_clip
    from tests.tasks.annotate.tiny_models import build_clip

    folder = build_clip(tmp_path / "clip")
    torch.manual_seed(1)
    head = {"layers.0.weight": torch.randn(4, 8), "layers.0.bias": torch.randn(4),
            "layers.1.weight": torch.randn(1, 4), "layers.1.bias": torch.tensor([5.0])}  # fmt: skip
    torch.save(head, tmp_path / "head.pth")
    scorer = AestheticScorer(str(folder), str(tmp_path / "head.pth"), num_frames=2)
    score = scorer.score(scene.frames)
    # the same computation by hand, on the first and last frames
    model, processor = CLIPModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        features = model.get_image_features(**processor(images=list(scene.frames[[0, 4]]), return_tensors="pt"))
        features = getattr(features, "pooler_output", features)
        x = torch.nn.functional.normalize(features, dim=-1)
        x = x @ head["layers.0.weight"].T + head["layers.0.bias"]
        expected = float((x @ head["layers.1.weight"].T + head["layers.1.bias"]).mean())
    assert score == pytest.approx(expected, abs=1e-5)
    assert select_clip({"aesthetic": score}, SelectionOptions(min_aesthetic=score - 1)) == []
    assert select_clip({"aesthetic": score}, SelectionOptions(min_aesthetic=score + 1)) == ["low_aesthetic"]
    torch.save({"bias_only": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no Linear weights"):
        AestheticScorer(str(folder), str(tmp_path / "bad.pth")).setup()


def test_models_load_from_an_fsspec_url_through_a_local_cache(owlv2, tmp_path, monkeypatch, scene) -> None:
    import fsspec

    from tasks.annotate.loading import local_model_dir

    fs = fsspec.filesystem("memory")
    for file in owlv2.iterdir():
        fs.pipe(f"/vpf-models/owl/{file.name}", file.read_bytes())
    monkeypatch.setenv("VPF_MODEL_CACHE", str(tmp_path / "cache"))
    local = local_model_dir("memory://vpf-models/owl")
    assert local.parent == tmp_path / "cache" and sorted(p.name for p in local.iterdir()) == sorted(
        p.name for p in owlv2.iterdir()
    )
    assert local_model_dir("memory://vpf-models/owl") == local  # copied once
    found = ZeroShotDetector("memory://vpf-models/owl", threshold=0.0, max_detections=2).detect(
        scene.frames[:1], ["horse"]
    )
    assert len(found[0]) == 2 and found[0][0].label == "horse"
    with pytest.raises(InputError, match="no config.json"):
        local_model_dir("memory://vpf-models/nothing")


def test_half_precision_inputs_follow_the_model(grounding_dino, owlv2, sam2_video, scene) -> None:
    """bfloat16 models (the GPU default of bench/annotate.py) get their pixels in bfloat16."""
    for path in (grounding_dino, owlv2):
        found = ZeroShotDetector(str(path), threshold=0.0, dtype="bfloat16").detect(scene.frames[:2], ["horse"])
        assert all(d.label == "horse" for dets in found for d in dets) and found[0]
    masks = Sam2VideoTracker(str(sam2_video), dtype="bfloat16").track(scene.frames, [(5, 5, 30, 30)])
    assert masks.shape == (1, 5, 48, 80)
