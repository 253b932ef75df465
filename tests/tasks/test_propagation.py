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


def _still_with_noise_and_a_passer_by(seed: int, passer_by: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A still camera over a textured background with sensor noise (sigma 2 levels), 32x96x144; a grey box crosses
    it (the hole) and, with ``passer_by``, a red disc moves the other way, twice as fast, just above the box's path
    (part of the truth). Returns ``(frames, truth, hole)``: `(T, H, W, 3)` uint8 twice and `(T, H, W)` bool."""
    import cv2

    rng = np.random.default_rng(seed)
    num_frames, height, width = 32, 96, 144
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), 2.0)
    texture = (texture - texture.mean()) * 3 + 128
    truth = np.clip(texture[None] + rng.normal(0, 2, (num_frames, height, width, 3)), 0, 255).astype(np.uint8)
    frames, hole = truth.copy(), np.zeros((num_frames, height, width), bool)
    for t in range(num_frames):
        if passer_by:
            cv2.circle(truth[t], (int(136 - 2 * t * 128 / num_frames), 24), 8, (220, 40, 40), -1)
        frames[t] = truth[t]
        x = int(6 + t * 108 / num_frames)
        frames[t, 32:64, x : x + 24] = 90
        hole[t, 32:64, x : x + 24] = True
    return frames, truth, dilate_masks(hole, 2)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("passer_by", [False, True])
def test_a_still_camera_is_at_least_as_good_as_copying_the_nearest_frame(seed: int, passer_by: bool) -> None:
    """On a still camera every hole pixel is seen in some frame: copying it from the nearest one (the
    ``nearest-frame`` baseline) is all but exact. The engine must not do worse: flow noise must not become a drift
    of the camera, nor things moving on their own (the passer-by) a motion of the background in the hole. (Engine
    version prop-2 fell 2.4 dB short with seed 0 and the passer-by: 31.0 dB against 33.4.)"""
    from tasks.engines.baseline import nearest_frame_fill

    frames, truth, hole = _still_with_noise_and_a_passer_by(seed, passer_by)
    ours = region_metrics(propagate_inpaint(frames, hole).frames, truth, hole)["psnr"]
    nearest = region_metrics(nearest_frame_fill(frames, hole)[0], truth, hole)["psnr"]
    assert ours >= nearest - 0.1, f"{ours:.2f} dB vs nearest frame {nearest:.2f} dB"
    # negative control: the spatial baseline is far below both (the comparison is not trivially met)
    assert region_metrics(inpaint_frames(frames, hole), truth, hole)["psnr"] < nearest - 5


def test_camera_motion_fit_keeps_a_still_camera_still_under_flow_noise() -> None:
    """Flow noise of 0.1-0.2 px (DIS on a still camera) is no motion; a real translation of 1 px is one."""
    from tasks.engines.propagation import _fit_affine

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.15, (64, 96, 2)).astype(np.float32)
    usable = np.ones((64, 96), bool)
    assert np.array_equal(_fit_affine(noise, usable), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    moved = _fit_affine(noise + np.array([1.0, -0.5], np.float32), usable)
    assert moved is not None and abs(moved[0, 2] - 1.0) < 0.05 and abs(moved[1, 2] + 0.5) < 0.05


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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_seen_pixels_are_filled_better_than_telea(seed: int) -> None:
    """A hole that covers the same pixels in every frame: nothing to propagate, all spatial. The harmonic fill (the
    default) beats ``cv2.inpaint`` (``spatial_telea=True``, the negative control) on a blurred-noise texture."""
    import cv2

    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (64, 96, 3)).astype(np.float32), (0, 0), 4.0)
    truth = np.repeat(np.clip((texture - texture.mean()) * 4 + 128, 0, 255).astype(np.uint8)[None], 4, axis=0)
    masks = np.zeros(truth.shape[:3], bool)
    masks[:, 20:44, 30:60] = True
    frames = truth.copy()
    frames[masks] = 0
    errors = {}
    for telea in (False, True):
        result = PropagationEngine(spatial_telea=telea).run(frames, masks)
        assert "mostly_spatial_fill" in result.flags
        errors[telea] = region_metrics(result.frames, truth, masks)["mse"]
    assert errors[False] < errors[True], errors


def test_version_and_params() -> None:
    engine = PropagationEngine(flow_scale=0.25)
    assert engine.version.startswith("prop-")
    assert engine.params()["flow_scale"] == 0.25
    assert PropagationEngine().params() != engine.params()
    assert PropagationEngine().params()["spatial_telea"] is False
    assert PropagationEngine(spatial_telea=True).params() != PropagationEngine().params()


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
