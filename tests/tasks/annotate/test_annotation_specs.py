"""Segmenter specs of the annotation stage, parsed and built (models are not loaded until setup)."""

from __future__ import annotations

import pytest

from tasks.annotate.segmenters import DetectTrackSegmenter, Sam3Segmenter
from tasks.annotate.specs import build_segmenter, is_vocab_segmenter, make_vocabulary, parse_segmenter_spec
from tasks.annotate.track import Sam2VideoTracker, SamFrameTracker
from tasks.annotate.vocab import DEFAULT_VOCABULARY, Vocabulary


def test_specs_parse_and_build(tmp_path) -> None:
    kind, path, options = parse_segmenter_spec(
        "detect+track:/m/gdino#tracker=sam2:/m/sam2&threshold=0.35&keyframe_every=8&max_objects=3"
    )
    assert (kind, path) == ("detect+track", "/m/gdino")
    assert options == {"tracker": "sam2:/m/sam2", "threshold": 0.35, "keyframe_every": 8, "max_objects": 3}
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("horse\nred ball\n")
    vocab = make_vocabulary(str(vocab_file), from_caption=False)
    seg = build_segmenter("detect+track:/m/gdino#tracker=sam2:/m/sam2&threshold=0.35&keyframe_every=8", vocab)
    assert isinstance(seg, DetectTrackSegmenter) and isinstance(seg.tracker, Sam2VideoTracker)
    assert seg.detector.threshold == 0.35 and seg.keyframe_every == 8 and seg.tracker.path == "/m/sam2"
    assert [p.text for p in seg.vocabulary.fixed] == ["horse", "red ball"]
    seg = build_segmenter("detect+track:/m/owl#tracker=sam:/m/sam_vit_h_4b8939.pth", vocab)
    assert isinstance(seg.tracker, SamFrameTracker) and seg.tracker.segmenter.model_type == "vit_h"
    seg = build_segmenter("sam3:s3://models/sam3#threshold=0.4&max_objects=2", vocab)
    assert isinstance(seg, Sam3Segmenter) and seg.threshold == 0.4 and seg.max_objects == 2
    assert is_vocab_segmenter("sam3:/x") and not is_vocab_segmenter("sam:/x") and not is_vocab_segmenter("provided")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("detect+track:/m/gdino", "tracker=sam2"),
        ("detect+track:/m/gdino#tracker=sam3:/x", "tracker=sam2"),
        ("detect+track:#tracker=sam2:/x", "empty"),
        ("sam3:/m#threshold=high", "not a valid float"),
        ("sam3:/m#colour=red", "unknown option"),
        ("segformer:/m", "expected provided"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_segmenter_spec(spec)


def test_vocabulary_options(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        make_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="vocabulary has no source"):
        build_segmenter("sam3:/m", Vocabulary([], from_caption=False))
    builtin = make_vocabulary(None, from_caption=False)  # no file, no tagger: the built-in vocabulary
    assert [p.text for p in builtin.fixed] == list(DEFAULT_VOCABULARY)
    assert {p.source for p in builtin.for_clip(None)[0]} == {"builtin"}
    assert make_vocabulary(None, tagger=object()).fixed == []  # a tagger names the objects instead


def test_models_load_one_at_a_time_across_threads() -> None:
    """transformers' lazy module is not safe to import from several threads at once: every model ``setup`` that
    imports from it runs under one process-wide lock, so two threads never load at the same time."""
    import threading
    import time

    from tasks.annotate.detect import ZeroShotDetector
    from tasks.annotate.loading import MODEL_LOAD_LOCK, under_load_lock
    from tasks.annotate.segmenters import Sam3Segmenter
    from tasks.annotate.selection import AestheticScorer
    from tasks.annotate.track import Sam2VideoTracker
    from tasks.gate import ClipScorer
    from tasks.proposers.hf import TransformersBackend, TransformersVisionBackend

    loaders = (ZeroShotDetector, Sam2VideoTracker, Sam3Segmenter, AestheticScorer, ClipScorer, TransformersBackend,
               TransformersVisionBackend)  # fmt: skip
    for cls in loaders:
        assert getattr(cls.setup, "__wrapped__", None) is not None, cls  # decorated with under_load_lock
    inside, peak = [0], [0]
    lock = threading.Lock()

    @under_load_lock
    def load() -> None:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.02)
        with lock:
            inside[0] -= 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1
    with MODEL_LOAD_LOCK:  # re-entrant: a setup may load another model inside its own
        load()
