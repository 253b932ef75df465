"""tasks/segment.py: a tiny, randomly initialised SAM through the real SamPredictor path, checkpoint loading,
propagation and the continuity check; provided masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.errors import InputError
from tasks.segment import ProvidedSegmenter, SamSegmenter, load_sam, mask_iou
from tasks.types import Clip, SourceItem, VideoInfo
from tests.corpus import OBJECT_ID, synth_clip
from tests.tasks.conftest import TINY, build_tiny_sam


@pytest.fixture(autouse=True)
def one_thread():
    """The CI box has 2 shared cores: a tiny model is fastest single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pt"
    torch.save(build_tiny_sam(seed=0).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synth_clip(5, 64, 96, seed=3)[0]


def test_checkpoint_loads_from_a_file_into_config_or_prebuilt_model(checkpoint: Path) -> None:
    reference = build_tiny_sam(seed=0).state_dict()
    from_config = load_sam(str(checkpoint), config=TINY)
    into_prebuilt = load_sam(str(checkpoint), sam=build_tiny_sam(seed=1))  # other random weights, replaced
    for model in (from_config, into_prebuilt):
        state = model.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
        assert not model.training


def test_checkpoint_from_an_fsspec_url(checkpoint: Path) -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/vpf-sam/tiny.pt", checkpoint.read_bytes())
    model = load_sam("memory://vpf-sam/tiny.pt", config=TINY)
    assert torch.equal(model.mask_decoder.iou_token.weight, build_tiny_sam(0).mask_decoder.iou_token.weight)


def test_bad_checkpoints(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(InputError) as err:
        load_sam(str(tmp_path / "none.pt"), config=TINY)
    assert err.value.reason == "not_found"
    wrong = tmp_path / "wrong.pt"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, wrong)
    with pytest.raises(InputError) as err:
        load_sam(str(wrong), config=TINY)
    assert err.value.reason == "bad_checkpoint" and str(wrong) in str(err.value)
    with pytest.raises(ValueError, match="model_type"):
        load_sam(str(checkpoint), model_type="vit_tiny")
    with pytest.raises(ValueError, match="checkpoint"):
        SamSegmenter()


def test_track_runs_the_real_predictor_with_loaded_weights(checkpoint: Path, frames: np.ndarray) -> None:
    loaded = SamSegmenter(str(checkpoint), config=TINY, min_iou=0.0)
    in_memory = SamSegmenter(sam=build_tiny_sam(seed=0), min_iou=0.0)
    masks, lost = loaded.track(frames, box=(10, 10, 50, 40))
    assert masks.shape == (5, 64, 96) and masks.dtype == bool
    assert lost is None and all(m.any() for m in masks)
    np.testing.assert_array_equal(masks, in_memory.track(frames, box=(10, 10, 50, 40))[0])
    other = SamSegmenter(sam=build_tiny_sam(seed=5), min_iou=0.0).track(frames, box=(10, 10, 50, 40))[0]
    assert not np.array_equal(masks, other), "different weights must give different masks"
    points = loaded.track(frames, points=np.array([[30, 25]]), point_labels=np.array([1]))[0]
    assert points.shape == masks.shape


def test_continuity_check_flags_lost_objects(checkpoint: Path, frames: np.ndarray) -> None:
    masks, _ = SamSegmenter(str(checkpoint), config=TINY, min_iou=0.0).track(frames, box=(10, 10, 50, 40))
    ious = [mask_iou(masks[t - 1], masks[t]) for t in range(1, len(masks))]
    strict = min(1.0, min(ious) + 1e-6)  # just above the worst frame-to-frame IoU: that frame is "lost"
    lost_masks, lost = SamSegmenter(str(checkpoint), config=TINY, min_iou=strict).track(frames, box=(10, 10, 50, 40))
    assert lost == 1 + int(np.argmin(ious))
    assert not lost_masks[lost:].any() and np.array_equal(lost_masks[:lost], masks[:lost])
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def _clip(frames: np.ndarray, item: SourceItem) -> Clip:
    return Clip("clip_t", "source_t", item.uri, 0, 5, 1, 8.0, frames, item=item)


VIDEO = VideoInfo(uri="v.mp4", codec="h264", width=192, height=128, fps=8.0, num_frames=5, duration_s=0.6)


def test_segment_with_box_auto_and_no_prompt(checkpoint: Path, frames: np.ndarray) -> None:
    segmenter = SamSegmenter(str(checkpoint), config=TINY, min_iou=0.0)
    item = SourceItem(uri="v.mp4", box=(20, 20, 100, 80), label="square")  # in 192x128 source pixels
    (obj,) = segmenter.segment(_clip(frames, item), video=VIDEO)
    assert (obj.mask_source, obj.label, obj.clip_id, obj.qa_ok) == ("sam", "square", "clip_t", True)
    assert obj.object_id.startswith("object_") and obj.masks.shape == (5, 64, 96)
    expected, _ = segmenter.track(frames, box=(10, 10, 50, 40))  # the box mapped to the 96x64 clip
    np.testing.assert_array_equal(obj.masks, expected)
    with pytest.raises(InputError) as err:
        segmenter.segment(_clip(frames, SourceItem(uri="v.mp4")), video=VIDEO)
    assert err.value.reason == "no_prompt"
    auto = SamSegmenter(
        str(checkpoint), config=TINY, min_iou=0.0, auto=True, max_auto_objects=2, labels=["thing"],
        auto_options={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
    )  # fmt: skip
    objects = auto.segment(_clip(frames, SourceItem(uri="v.mp4")), video=VIDEO)
    assert 1 <= len(objects) <= 2 and all(o.mask_source == "sam-auto" for o in objects)
    assert [o.label for o in objects] == ["thing", "object"][: len(objects)]


def test_provided_segmenter_resamples_the_label_map(good_clips: dict) -> None:
    frames, labels = synth_clip(40, 64, 96, seed=0)
    item = SourceItem(uri=good_clips["videos"][0], mask_uri=good_clips["masks"][0], mask_id=OBJECT_ID, label="sq")
    clip = Clip("clip_p", "source_p", item.uri, 4, 37, 2, 8.0, np.zeros((17, 32, 48, 3), np.uint8), item=item)
    video = VideoInfo(uri=item.uri, codec="h264", width=96, height=64, fps=16.0, num_frames=40, duration_s=2.5)
    (obj,) = ProvidedSegmenter().segment(clip, video=video)
    assert (obj.mask_source, obj.mask_id, obj.label) == ("provided", OBJECT_ID, "sq")
    np.testing.assert_array_equal(obj.masks, (labels[4:37:2] == OBJECT_ID)[:, ::2, ::2])
    with pytest.raises(InputError) as err:
        ProvidedSegmenter().segment(_clip(frames[:5], SourceItem(uri="v.mp4")))
    assert err.value.reason == "no_mask"
