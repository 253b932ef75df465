"""The propagation engine: quality on ground-truth scenes, the pixel contract, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.engines.baseline import inpaint_frames
from tasks.engines.propagation import (
    NO_OBSERVED_BACKGROUND,
    PropagationEngine,
    dilate_masks,
    harmonic_fill,
    propagate_inpaint,
)
from tasks.errors import InputError, UnsupportedEditError
from tasks.metrics import region_metrics
from tasks.synthetic import make_scene


def _scene(camera: str, frames: int = 17, height: int = 96, width: int = 160, seed: int = 0):
    scene = make_scene(camera, num_frames=frames, height=height, width=width, seed=seed)
    return scene, dilate_masks(scene.masks, 2)


@pytest.mark.parametrize("camera, min_psnr", [("static", 30.0), ("pan", 25.0)])
def test_quality_inside_the_hole_on_ground_truth_scenes(camera: str, min_psnr: float) -> None:
    # The targets (static >= 30 dB, pan >= 25 dB at 49x480x720) on a 33x192x288 scene, same dilation ratio
    # (8 px at 720 px); bench `vpf bench quality` checks the full size.
    scene, _ = _scene(camera, frames=33, height=192, width=288)
    masks = dilate_masks(scene.masks, 3)
    result = propagate_inpaint(scene.frames, masks)
    ours = region_metrics(result.frames, scene.background, masks)["psnr"]
    baseline = region_metrics(inpaint_frames(scene.frames, masks), scene.background, masks)["psnr"]
    assert ours >= min_psnr, f"{camera}: {ours:.2f} dB inside the hole"
    assert ours >= baseline + 3.0, f"{camera}: {ours:.2f} dB vs per-frame cv2.inpaint {baseline:.2f} dB"
    assert result.report.propagated_ratio > 0.5
    assert result.report.flags == []


def test_static_camera_background_is_recovered_exactly_where_it_was_seen() -> None:
    scene, masks = _scene("static", frames=25)
    result = propagate_inpaint(scene.frames, masks)
    seen_somewhere = ~masks.all(axis=0)  # static camera: a pixel seen in any frame is the same in all
    region = masks & seen_somewhere[None]
    diff = np.abs(result.frames[region].astype(int) - scene.background[region].astype(int))
    assert np.percentile(diff, 99) <= 2


@pytest.mark.parametrize("dilation_radius", [0, 3])
def test_pixels_outside_the_dilated_mask_are_bit_identical(dilation_radius: int) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(9, 48, 64, 3), dtype=np.uint8)
    masks = np.zeros((9, 48, 64), bool)
    for t in range(9):
        y, x = rng.integers(5, 30), rng.integers(5, 40)
        masks[t, y : y + 12, x : x + 16] = True
    engine = PropagationEngine(dilation_radius=dilation_radius)
    out = engine.inpaint(frames, masks)
    outside = ~dilate_masks(masks, dilation_radius)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out[outside], frames[outside])
    assert not np.array_equal(out[masks], frames[masks])  # the hole did change


def test_deterministic_and_reports() -> None:
    scene, masks = _scene("pan")
    engine = PropagationEngine()
    a = engine.run(scene.frames, masks)
    b = engine.run(scene.frames, masks)
    assert np.array_equal(a.frames, b.frames)
    report = a.report
    assert report["hole_pixels"] == int(masks.sum())
    assert report["propagated_pixels"] + report["spatial_pixels"] == report["hole_pixels"]
    assert 0 < report["observed_fraction"] < 1
    assert a.flags == report["flags"]


def test_full_frame_masks_everywhere_are_filled_and_flagged() -> None:
    frames = np.random.default_rng(1).integers(0, 256, size=(5, 32, 48, 3), dtype=np.uint8)
    result = propagate_inpaint(frames, np.ones((5, 32, 48), bool))
    assert NO_OBSERVED_BACKGROUND in result.report.flags
    assert result.report.spatial_pixels == 5 * 32 * 48
    assert (result.frames == 128).all()


def test_one_fully_masked_frame_is_filled_from_its_neighbours() -> None:
    scene, masks = _scene("static", frames=9)
    masks = masks.copy()
    masks[4] = True
    result = propagate_inpaint(scene.frames, masks)
    err = np.abs(result.frames[4].astype(int) - scene.background[4].astype(int)).mean()
    assert err < 3.0
    assert NO_OBSERVED_BACKGROUND not in result.report.flags


def test_float_frames_in_unit_range_are_accepted() -> None:
    scene, masks = _scene("static", frames=5)
    out = PropagationEngine().inpaint(scene.frames.astype(np.float32) / 255.0, masks)
    assert out.dtype == np.uint8
    assert np.array_equal(out[~masks], scene.frames[~masks])


@pytest.mark.parametrize(
    "frames, masks, reason",
    [
        (np.zeros((3, 16, 16, 3), np.uint8), np.zeros((3, 16, 16), bool), "empty_mask"),
        (np.full((3, 16, 16, 3), np.nan, np.float32), np.ones((3, 16, 16), bool), "non_finite"),
        (np.full((3, 16, 16, 3), np.inf, np.float32), np.ones((3, 16, 16), bool), "non_finite"),
        (np.zeros((3, 16, 16, 3), np.float32), np.full((3, 16, 16), np.nan), "non_finite"),
        (np.full((3, 16, 16, 3), 2.0, np.float32), np.ones((3, 16, 16), bool), "out_of_range"),
        (np.zeros((3, 16, 16, 3), np.uint8), np.ones((4, 16, 16), bool), "frame_count_mismatch"),
        (np.zeros((3, 16, 16, 3), np.uint8), np.ones((3, 16, 17), bool), "shape_mismatch"),
        (np.zeros((3, 16, 16), np.uint8), np.ones((3, 16, 16), bool), "bad_shape"),
        (np.zeros((3, 16, 16, 3), np.int64), np.ones((3, 16, 16), bool), "bad_dtype"),
    ],
)
def test_bad_input_is_an_input_error_with_a_reason(frames, masks, reason) -> None:
    with pytest.raises(InputError) as info:
        PropagationEngine().inpaint(frames, masks)
    assert info.value.reason == reason


def test_only_removal_is_supported() -> None:
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    masks = np.ones((2, 16, 16), bool)
    with pytest.raises(UnsupportedEditError):
        PropagationEngine().inpaint(frames, masks, edit_type="replace")


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="flow_scale"):
        PropagationEngine(flow_scale=0)
    with pytest.raises(ValueError, match="flow_preset"):
        PropagationEngine(flow_preset="slow")


def test_harmonic_fill_reproduces_an_affine_field() -> None:
    # harmonic interpolation is exact for linear functions: the flow of a zooming or panning camera
    ys, xs = np.mgrid[0:40, 0:60].astype(np.float32)
    field = np.stack([0.02 * xs - 0.01 * ys + 1.5, 0.015 * ys + 0.3], axis=-1)
    hole = np.zeros((40, 60), bool)
    hole[10:30, 15:45] = True
    filled = harmonic_fill(np.where(hole[..., None], 0, field), hole, iterations=400)
    assert np.abs(filled - field)[hole].max() < 0.02
    assert np.array_equal(filled[~hole], field[~hole])


def test_version_and_params() -> None:
    engine = PropagationEngine(flow_scale=0.25)
    assert engine.version.startswith("prop-")
    assert engine.params()["flow_scale"] == 0.25
    assert PropagationEngine().params() != engine.params()


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 8, 8), (4, 12, 200), (3, 200, 12), (3, 9, 13)])
def test_small_and_thin_clips(shape: tuple[int, int, int]) -> None:
    # OpenCV's DIS segfaults on e.g. 16x100 images; flow is computed at a safe size instead
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    masks = np.zeros(shape, bool)
    masks[:, 2:5, 2:6] = True
    result = propagate_inpaint(frames, masks)
    assert np.array_equal(result.frames[~masks], frames[~masks])
    assert result.report.propagated_pixels + result.report.spatial_pixels == int(masks.sum())


@pytest.mark.parametrize(
    "shape, box",
    [((240, 360), (100, 130, 200, 260)), ((240, 360), (0, 3, 0, 2)), ((240, 360), (230, 240, 350, 360)),
     ((32, 40), (10, 12, 30, 31)), ((240, 360), (0, 240, 0, 360))],
)  # fmt: skip
def test_the_flow_window_holds_the_holes_with_a_margin_and_room_for_dis(shape, box) -> None:
    from tasks.engines.propagation import _FLOW_MARGIN, _MIN_FLOW_SIDE, _crop_box

    hole = np.zeros(shape, bool)
    hole[box[0] : box[1], box[2] : box[3]] = True
    y0, y1, x0, x1 = _crop_box(hole, _FLOW_MARGIN)
    assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
    assert not hole[:y0].any() and not hole[y1:].any() and not hole[:, :x0].any() and not hole[:, x1:].any()
    assert y1 - y0 >= min(_MIN_FLOW_SIDE, shape[0]) and x1 - x0 >= min(_MIN_FLOW_SIDE, shape[1])
    # the margin is there wherever the frame has room for it
    assert y0 == max(box[0] - _FLOW_MARGIN, 0) or y1 - y0 == _MIN_FLOW_SIDE
    assert x1 == min(box[3] + _FLOW_MARGIN, shape[1]) or x1 - x0 == _MIN_FLOW_SIDE
