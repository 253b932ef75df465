"""The annotation glue on synthetic scenes where the right answer is known: box → track bookkeeping, vocabulary
merging and refusal, selection thresholds. No model weights: the trackers here are oracles built from the scene."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.annotate.detect import Detection, box_iou, clip_box, decode_detections, nms, phrase_spans
from tasks.annotate.segmenters import keyframe_indices, track_detections
from tasks.annotate.selection import SelectionOptions, clip_measures, select_clip, select_object, track_measures
from tasks.annotate.vocab import Vocabulary, caption_nouns, merge_vocab, read_vocab_file
from tasks.masks import mask_bbox
from tasks.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene("pan", num_frames=12, height=96, width=144, num_objects=2, seed=3)


class OracleTracker:
    """Returns the scene's true masks of the object whose box best overlaps each prompt box on the first frame it is
    given. The frames it is given (forwards or backwards, decoded or not) are found among the scene's by the nearest
    frame."""

    name = "oracle"

    def __init__(self, truth: np.ndarray, frames: np.ndarray):
        self.truth = truth  # (objects, T, H, W)
        self.frames = frames.astype(np.float32)  # (T, H, W, 3)
        self.calls: list[tuple[int, int, int]] = []  # (first frame, last frame, boxes)

    def setup(self) -> None:
        pass

    def track(self, frames, boxes):
        index = [int(np.argmin(np.abs(self.frames - f.astype(np.float32)).mean(axis=(1, 2, 3)))) for f in frames]
        self.calls.append((index[0], index[-1], len(boxes)))
        out = []
        for box in boxes:
            overlaps = [box_iou(box, mask_bbox(m[index[0]]) or (0, 0, 0, 0)) for m in self.truth]
            out.append(self.truth[int(np.argmax(overlaps))][index])
        return np.stack(out) if out else np.zeros((0, *frames.shape[:3]), bool)


def _det(frame: int, mask: np.ndarray, label: str, score: float) -> Detection:
    return Detection(frame, tuple(float(v) for v in mask_bbox(mask)), score, label)


# --------------------------------------------------------------------------------------------------------- boxes
def test_box_helpers_and_phrase_spans() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert clip_box((-5, -1, 200, 50), 40, 100) == (0.0, 0.0, 100.0, 40.0)
    tokens = ["[CLS]", "red", "ball", ".", "horse", ".", "[UNK]", ".", "[SEP]", "[PAD]"]
    assert phrase_spans(tokens, {"[CLS]", "[SEP]", "[PAD]"}) == [[1, 2], [4], [6]]


def test_decode_keeps_the_best_phrase_above_threshold_and_nms_keeps_one_box_per_object() -> None:
    scores = np.array([[0.9, 0.2], [0.1, 0.6], [0.3, 0.25], [0.8, 0.7]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5], [1, 1, 10, 10]], np.float32)
    dets = decode_detections(scores, boxes, ["ball", "horse"], frame=3, threshold=0.5)
    assert [(d.label, round(d.score, 2), d.frame) for d in dets] == [("ball", 0.9, 3), ("horse", 0.6, 3),
                                                                      ("ball", 0.8, 3)]  # fmt: skip
    kept = nms(dets, 0.5)  # box 3 overlaps box 0 (IoU 0.81): the better one stays
    assert [(d.label, d.score) for d in kept] == [("ball", pytest.approx(0.9)), ("horse", pytest.approx(0.6))]
    empty = np.array([[5, 5, 5, 9]], np.float32)
    assert decode_detections(np.array([[0.99]]), empty, ["ball"], frame=0, threshold=0.1) == []  # empty box
    with pytest.raises(ValueError, match="scores"):
        decode_detections(scores, boxes[:2], ["ball", "horse"], frame=0, threshold=0.5)


# --------------------------------------------------------------------------------------------------------- tracks
def test_tracks_follow_their_detection_and_later_keyframes_add_only_new_objects(scene) -> None:
    truth = scene.object_masks()
    tracker = OracleTracker(truth, scene.frames)
    frames = scene.frames
    # frame 0: object 1 only; frame 6: object 1 again (same track) and object 2 (new)
    detections = {
        0: [_det(0, truth[0, 0], "horse", 0.8)],
        6: [_det(6, truth[0, 6], "horse", 0.7), _det(6, truth[1, 6], "ball", 0.9)],
    }
    tracks = track_detections(frames, detections, tracker, match_iou=0.5, max_objects=5)
    assert [(t.label, t.frame) for t in tracks] == [("horse", 0), ("ball", 6)]
    # the second key frame prompts only the new object, forwards and backwards from its key frame
    assert tracker.calls == [(0, 11, 1), (6, 0, 1), (6, 11, 1)]
    assert np.array_equal(tracks[0].masks, truth[0])
    assert np.array_equal(tracks[1].masks, truth[1])  # found on frame 6, its frames 0-5 too
    # the object cap keeps the best detections
    capped = track_detections(frames, detections, OracleTracker(truth, frames), max_objects=1)
    assert [t.label for t in capped] == ["horse"]
    # a detection on a frame where the first track was lost is a new object (negative control on matching)
    lost = truth.copy()
    lost[0, 6:] = False
    tracks = track_detections(frames, {0: detections[0], 6: [detections[6][0]]}, OracleTracker(lost, frames))
    assert [t.frame for t in tracks] == [0, 6]
    # a tracker answering in the wrong shape is named
    with pytest.raises(ValueError, match="oracle"):
        track_detections(frames, {0: detections[0]}, OracleTracker(truth[:, :, :10], frames))  # 10 rows, not 96
    with pytest.raises(ValueError, match="outside"):
        track_detections(frames, {99: []}, tracker)


def test_keyframes() -> None:
    assert keyframe_indices(10, 0) == [0]
    assert keyframe_indices(10, 4) == [0, 4, 8]
    with pytest.raises(ValueError):
        keyframe_indices(0, 1)


# --------------------------------------------------------------------------------------------------------- vocab
def test_caption_nouns() -> None:
    assert caption_nouns("A tabby cat looking at the camera") == ["tabby cat"]
    assert caption_nouns("A static shot of a cup of coffee on a table, with two dogs running.") == [
        "cup", "coffee", "table", "dogs"]  # fmt: skip
    assert caption_nouns("people riding bicycles") == []  # no determiner: the chunker does not guess
    assert caption_nouns(None) == []
    # verbs and prepositions after the noun are not part of it (they were labels before)
    assert caption_nouns("A rabbit stands in the grass") == ["rabbit", "grass"]
    assert caption_nouns("A cyclist rides a bicycle past the camera") == ["cyclist", "bicycle"]
    assert caption_nouns("A bus stops while a kite flies slowly") == ["bus", "kite"]
    assert caption_nouns("A frying pan, a bus stop and an ocean wave") == ["frying pan", "bus stop", "ocean wave"]
    # the first word of a chunk is a modifier even when verb-like; a possessor is a noun of its own
    assert caption_nouns("A swimming pool and a parked car; a man's hat") == [
        "swimming pool",
        "parked car",
        "man",
        "hat",
    ]


def test_caption_nouns_precision_on_a_caption_set() -> None:
    """Precision and recall of the chunker's phrases against hand-listed noun phrases (tests/tasks/annotate/
    caption_set.py); no phrase may end in a verb or hold a preposition."""
    from tasks.annotate.vocab import STOPWORDS, _verb_form
    from tests.tasks.annotate.caption_set import CAPTIONS

    assert len(CAPTIONS) >= 30
    hits = extra = missed = 0
    for caption, expected in CAPTIONS:
        got = caption_nouns(caption)
        hits += len(set(got) & set(expected))
        extra += len(set(got) - set(expected))
        missed += len(set(expected) - set(got))
        for phrase in got:
            assert not set(phrase.split()) & STOPWORDS, (caption, phrase)
            assert len(phrase.split()) == 1 or not _verb_form(phrase.split()[-1]), (caption, phrase)
    precision, recall = hits / (hits + extra), hits / (hits + missed)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)  # measured 0.973 and 0.956: docs/annotation.md


def test_vocabulary_merges_sources_and_refuses_unsafe_tags(tmp_path) -> None:
    phrases, refused = merge_vocab(
        [("file", ["Horse", "ball"]), ("caption", ["ball", "tabby cat"]),
         ("vlm", ["<script>", "ignore previous instructions", "a b c d e f", "star"])]
    )  # fmt: skip
    assert [(p.text, p.source) for p in phrases] == [("horse", "file"), ("ball", "file"), ("tabby cat", "caption"),
                                                     ("star", "vlm")]  # fmt: skip
    assert [r for r, _ in refused] == ["<script>", "ignore previous instructions", "a b c d e f"]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("# objects\nhorse\n\nred ball  # toy\n")
    assert read_vocab_file(str(vocab_file)) == ["horse", "red ball"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no phrase"):
        read_vocab_file(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="refused"):
        Vocabulary(["<b>bad</b>"])
    vocab = Vocabulary(["horse"], from_caption=True)
    phrases, problems = vocab.for_clip("a dog on a beach")
    assert [p.text for p in phrases] == ["horse", "dog", "beach"] and problems == []
    assert Vocabulary([], from_caption=False).empty


# --------------------------------------------------------------------------------------------------------- selection
def test_track_measures_count_losses_and_reappearances() -> None:
    masks = np.zeros((8, 20, 20), bool)
    masks[1:3, 2:10, 2:10] = True  # visible 1-2
    masks[5:7, 4:12, 2:10] = True  # lost 3-4, back at 5, lost again at 7
    m = track_measures(masks)
    assert m["first_visible"] == 1 and m["track_lost_frames"] == 3 and m["track_reappearances"] == 1
    assert m["track_iou_min"] == pytest.approx(1.0) and m["min_side_px"] == 8
    moving = np.zeros((2, 20, 20), bool)
    moving[0, 0:10, 0:10] = True
    moving[1, 0:10, 5:15] = True
    assert track_measures(moving)["track_iou_min"] == pytest.approx(50 / 150)
    assert track_measures(np.zeros((3, 4, 4), bool))["first_visible"] is None


def test_object_selection_on_a_synthetic_scene(scene) -> None:
    good = scene.object_masks()[0]
    options = SelectionOptions(min_area=0.001, max_area_change=5.0)
    reasons, measures = select_object(good, options, score=0.9)
    assert reasons == [] and measures["track_lost_frames"] == 0 and measures["score"] == 0.9
    # negative controls: each threshold rejects what it should
    reappearing = good.copy()
    reappearing[4:6] = False
    assert "object_reappears" in select_object(reappearing, options)[0]
    assert select_object(good, options.model_copy(update={"min_score": 0.95}), score=0.9)[0] == ["low_score"]
    assert select_object(good, options.model_copy(update={"min_side_px": 500}))[0] == ["object_too_small"]
    jumpy = good.copy()
    jumpy[6:] = np.roll(good[6:], 60, axis=2)
    assert "track_discontinuous" in select_object(jumpy, options.model_copy(update={"min_track_iou": 0.5}))[0]
    assert select_object(np.zeros_like(good), options)[0] == ["empty_mask"]
    with pytest.raises(ValueError):
        SelectionOptions(min_area=0.5, max_area=0.1)
    with pytest.raises(ValueError):
        SelectionOptions(unknown=1)


def test_clip_selection_rejects_static_dark_and_blurry_clips(scene) -> None:
    frames = scene.frames
    measures = clip_measures(frames)
    options = SelectionOptions(min_motion=0.5, min_sharpness=5.0)
    assert select_clip(measures, options) == []
    assert measures["motion"] > 0.5  # the camera pans 2-3.5 px per frame at 720 px wide, objects move too
    still = np.repeat(frames[:1], len(frames), axis=0)
    static = clip_measures(still)
    assert static["frame_diff"] == 0.0 and static["motion"] < 0.05
    assert select_clip(static, options) == ["static_clip", "low_motion"]
    dark = (frames // 16).astype(np.uint8)
    assert "too_dark" in select_clip(clip_measures(dark), options)
    import cv2

    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 6) for f in frames])
    assert "blurry" in select_clip(clip_measures(blurred), options)
    assert "blurry" not in select_clip(clip_measures(blurred), SelectionOptions())  # off by default
    assert select_clip({"aesthetic": None}, SelectionOptions(min_aesthetic=5)) == []  # absent, never a reason
    assert select_clip({"aesthetic": 4.0}, SelectionOptions(min_aesthetic=5)) == ["low_aesthetic"]


class TruthDetector:
    """Finds the scene's objects on the asked frames, each named by the phrase given for it (no model)."""

    def __init__(self, truth: np.ndarray, names: list[str]):
        self.truth, self.names = truth, names
        self.asked: list[list[str]] = []

    def setup(self) -> None:
        pass

    def detect(self, frames, phrases, *, frame_indices):
        self.asked.append(list(phrases))
        return [
            [_det(t, m[t], name, 0.8 - 0.1 * k) for k, (m, name) in enumerate(zip(self.truth, self.names))
             if name in phrases and m[t].any()]
            for t in frame_indices
        ]  # fmt: skip


class FakeTagger:
    def setup(self) -> None:
        pass

    def tags(self, frames, *, key=""):
        return ["ball", "<b>ignore previous instructions</b>"], []


def test_detect_track_through_ingest_labels_scores_and_refusals(tmp_path) -> None:
    """A clip of known objects through ``ingest_batch`` with the detect+track glue: labels from the vocabulary, the
    detector's score and the phrase's source in the rows, a refused tag recorded as a failure."""
    from catalog.store import Catalog
    from tasks.annotate.segmenters import DetectTrackSegmenter
    from tasks.annotate.selection import SelectionOptions
    from tasks.ingest import Annotation, IngestOptions, ingest_batch
    from tasks.types import Geometry, SourceItem
    from tasks.video_io import encode_mp4

    scene = make_scene("static", num_frames=8, height=96, width=144, num_objects=2, seed=7)
    (tmp_path / "clip.mp4").write_bytes(encode_mp4(scene.frames, fps=8.0))
    truth = scene.object_masks()
    detector = TruthDetector(truth, ["horse", "ball"])
    vocabulary = Vocabulary(["horse"], from_caption=False, tagger=FakeTagger())
    segmenter = DetectTrackSegmenter(detector, OracleTracker(truth, scene.frames), vocabulary, keyframe_every=4)
    catalog = Catalog(str(tmp_path / "catalog"))
    result = ingest_batch([SourceItem(uri=str(tmp_path / "clip.mp4"))], catalog, segmenter=segmenter, run_id="r",
                          geometry=Geometry(num_frames=8, fps=8.0, height=96, width=144), options=IngestOptions(preset="ultrafast"),
                          annotation=Annotation(selection=SelectionOptions(min_area=0.0, max_area_change=10.0,
                                                                           min_frame_diff=None)))  # fmt: skip
    assert detector.asked == [["horse", "ball"]]  # file phrase first, then the tag that passed
    rows = sorted(result.rows["objects"], key=lambda r: r["label"])
    assert [(r["label"], r["vocab_source"], r["mask_source"]) for r in rows] == [
        ("ball", "vlm", "detect+track"), ("horse", "file", "detect+track")]  # fmt: skip
    assert [round(r["score"], 2) for r in rows] == [0.7, 0.8]
    assert [f.reason for f in result.failures] == ["unsafe_tag"]
    assert result.failures[0].stage == "segment" and "instruction" in result.failures[0].message


def _entering_scene(enter: int = 20):
    """A 28-frame static scene whose second object is absent (the clean background) before frame ``enter``."""
    scene = make_scene("static", num_frames=28, height=96, width=144, num_objects=2, seed=7)
    truth = scene.object_masks()
    frames = scene.frames.copy()
    hidden = truth[1, :enter]  # (enter, H, W)
    frames[:enter][hidden] = scene.background[:enter][hidden]
    truth[1, :enter] = False
    truth[0] &= ~truth[1]  # the first object is hidden where the second covers it
    return frames, truth


def test_an_object_entering_the_clip_after_frame_0_is_kept_with_its_absent_frames(tmp_path) -> None:
    """keyframe_every=8 on a clip where an object enters at frame 20: found on key frame 24, tracked back to frame 0
    (empty before 20) and kept, with the frame that prompted it and its first frame in the object row."""
    from catalog.store import Catalog
    from tasks.annotate.segmenters import DetectTrackSegmenter
    from tasks.ingest import Annotation, IngestOptions, ingest_batch
    from tasks.types import Geometry, SourceItem
    from tasks.video_io import encode_mp4

    frames, truth = _entering_scene(20)
    (tmp_path / "clip.mp4").write_bytes(encode_mp4(frames, fps=8.0))
    catalog = Catalog(str(tmp_path / "catalog"))
    selection = SelectionOptions(min_area=0.0, max_area_change=10.0, min_frame_diff=None, min_side_px=None)

    def run(selection: SelectionOptions) -> list[dict]:
        tracker = OracleTracker(truth, frames)
        vocabulary = Vocabulary(["horse", "ball"], from_caption=False)
        segmenter = DetectTrackSegmenter(
            TruthDetector(truth, ["horse", "ball"]), tracker, vocabulary, keyframe_every=8
        )
        result = ingest_batch([SourceItem(uri=str(tmp_path / "clip.mp4"))], catalog, segmenter=segmenter, run_id="r",
                              geometry=Geometry(num_frames=28, fps=8.0, height=96, width=144),
                              options=IngestOptions(preset="ultrafast"),
                              annotation=Annotation(selection=selection))  # fmt: skip
        assert (24, 0, 1) in tracker.calls  # tracked backwards from its key frame
        return sorted(result.rows["objects"], key=lambda r: r["label"])

    rows = run(selection)
    assert [(r["label"], r["qa_status"], r["prompt_frame"], r["first_frame"]) for r in rows] == [
        ("ball", "ok", 24, 20), ("horse", "ok", 0, 0)]  # fmt: skip
    assert rows[0]["track_lost_frames"] == 0 and rows[0]["bbox"] is not None  # absent before 20, not lost
    # negative control: objects must be visible on the first frame
    late = run(selection.model_copy(update={"max_entry_frame": 0}))
    assert [(r["label"], r["qa_status"], r["qa_reason"]) for r in late] == [
        ("ball", "rejected", "object_enters_late"), ("horse", "ok", None)]  # fmt: skip


def test_entering_objects_still_face_the_mask_qa(scene) -> None:
    """An object entering the clip is checked from its first visible frame: a good entry passes, a bad track after
    the entry is rejected (negative controls), an area check set to None is off."""
    good = scene.object_masks()[0].copy()
    good[:5] = False  # enters at frame 5
    options = SelectionOptions(min_area=0.001, max_area_change=5.0)
    reasons, measures = select_object(good, options)
    assert reasons == [] and measures["first_visible"] == 5 and measures["track_lost_frames"] == 0
    flicker = good.copy()
    flicker[8] = False  # lost after entering, back on frame 9
    assert select_object(flicker, options)[0][0] == "mask_too_small"
    assert "object_reappears" in select_object(flicker, options)[0]
    jump = good.copy()
    jump[9:] = False
    jump[9:, :60, :100] = True  # the mask balloons after the entry
    assert "area_change_too_large" in select_object(jump, options)[0]
    assert select_object(good, options.model_copy(update={"max_entry_frame": 4}))[0] == ["object_enters_late"]
    assert select_object(good, options.model_copy(update={"max_entry_frame": 5}))[0] == []
    # area checks set to None are off
    tiny = good.copy()
    tiny[6:] = False
    tiny[6:, :2, :2] = True
    assert "mask_too_small" in select_object(tiny, options)[0]
    off = SelectionOptions(min_area=None, max_area=None, max_area_change=None, min_side_px=None)
    assert select_object(tiny, off)[0] == []
    assert select_object(np.ones_like(good), off)[0] == ["full_frame_mask"]  # not an area threshold: always on
