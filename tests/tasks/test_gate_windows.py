"""The gate's fast paths: the effect and reference-texture checks compute only the windows they need, and must
give what the whole-frame definition gives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tasks import gate
from tasks.camera_motion import aligned, box_of, camera_maps, clear_at, grow
from tasks.masks import dilate_masks
from tasks.synthetic import make_scene


def _affines(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    out = []
    for _ in range(count):
        angle, scale = rng.normal(0, 0.03), 1 + rng.normal(0, 0.03)
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        out.append(np.array([[c, -s, rng.normal(0, 6)], [s, c, rng.normal(0, 6)]]))
    return out


def test_window_warps_equal_the_whole_frame_warp_cut_to_the_window() -> None:
    rng = np.random.default_rng(0)
    frame = rng.uniform(0, 255, (40, 56)).astype(np.float32)
    busy = rng.random((40, 56)) < 0.3
    for affine in _affines(rng, 20):
        y0, x0 = int(rng.integers(0, 20)), int(rng.integers(0, 30))
        box = (y0, y0 + int(rng.integers(5, 20)), x0, x0 + int(rng.integers(5, 26)))
        cut = np.s_[box[0] : box[1], box[2] : box[3]]
        assert np.array_equal(clear_at(busy, affine, box), clear_at(busy, affine)[cut])
        np.testing.assert_allclose(aligned(frame, affine, box), aligned(frame, affine)[cut], atol=1e-3)
        # control: the same window one pixel to the right is another part of the frame
        shifted = (box[0], box[1], box[2] + 1, box[3] + 1)
        assert np.abs(aligned(frame, affine, shifted) - aligned(frame, affine)[cut]).max() > 1.0


def test_box_is_the_bounding_box_and_empty_for_an_empty_mask() -> None:
    mask = np.zeros((10, 12), bool)
    assert box_of(mask)[0] == box_of(mask)[1]
    mask[2, 3] = mask[6, 9] = True
    assert box_of(mask) == (2, 7, 3, 10)
    assert box_of(mask[:, ::-1]) == (2, 7, 2, 9)  # a strided view is read as it looks


# ----------------------------------------------------------------------------------------------- whole-frame forms
def _reference_texture_whole(luma, energy, hole, core, to_first):
    """``gate._reference_texture`` as defined: every view aligned and band-passed over the whole frame."""
    num_frames, h, w = luma.shape
    busy = grow(hole, 1)
    ratios, pixels = np.full(num_frames, np.nan), np.zeros(num_frames, int)
    for t in range(0, num_frames, gate.REFERENCE_STEP):
        missing = core[t].copy()
        if missing.sum() < gate._MIN_PIXELS:
            continue
        ref = np.full((h, w), np.nan, np.float32)
        for lag in range(1, num_frames):
            if (t - lag < 0 and t + lag >= num_frames) or not missing.any():
                break
            for r in (t - lag, t + lag):
                if not 0 <= r < num_frames:
                    continue
                affine = (np.linalg.inv(to_first[r]) @ to_first[t])[:2]
                fresh = missing & clear_at(busy[r], affine)
                if fresh.any():
                    view = aligned(luma[r], affine)
                    band = cv2.GaussianBlur(view, (0, 0), 0.5) - cv2.GaussianBlur(view, (0, 0), 2.0)
                    ref[fresh] = np.abs(band)[fresh]
                    missing &= ~fresh
        found = np.isfinite(ref)
        pixels[t] = int(found.sum())
        if pixels[t] >= gate._MIN_PIXELS:
            ratios[t] = (energy[t][found].mean() + gate.REFERENCE_FLOOR) / (ref[found].mean() + gate.REFERENCE_FLOOR)
    return ratios, pixels


def _effect_residual_whole(luma, hole, obj, to_first):
    """``gate._effect_residual`` as defined: every difference over the whole frame."""
    num_frames, h, w = luma.shape
    near, busy = grow(hole, gate.RING_PX) & ~grow(obj, 2), grow(hole, 1)
    total, total_sq = np.zeros((2, 2 * h, 2 * w)), np.zeros((2, 2 * h, 2 * w))
    count = np.zeros((2, 2 * h, 2 * w), int)
    frames = 0
    for t in range(0, num_frames, gate.EFFECT_STEP):
        n_near = int(near[t].sum())
        ys, xs = np.nonzero(obj[t])
        if n_near < gate._MIN_PIXELS or not len(ys):
            continue

        def onto_t(r: int, t: int = t) -> np.ndarray:
            return (np.linalg.inv(to_first[r]) @ to_first[t])[:2]

        sides = []
        for direction in (-1, 1):
            found, missing = np.full((h, w), np.nan, np.float32), near[t].copy()
            for r in range(t + direction, -1 if direction < 0 else num_frames, direction):
                clear = clear_at(busy[r], onto_t(r))
                fresh = missing & clear
                if not fresh.any():
                    continue
                view = aligned(luma[r], onto_t(r))
                both = clear & ~busy[t]
                shift = float(np.mean((luma[t] - view)[both])) if both.sum() >= gate._MIN_PIXELS else 0.0
                diff = cv2.GaussianBlur(luma[t] - view - shift, (0, 0), 1.5)
                r2 = min(max(2 * r - t, 0), num_frames - 1)
                if r2 != r:
                    clear2, view2 = clear_at(busy[r2], onto_t(r2)), aligned(luma[r2], onto_t(r2))
                    both2 = clear2 & clear
                    shift2 = float(np.mean((view - view2)[both2])) if both2.sum() >= gate._MIN_PIXELS else 0.0
                    own = np.where(clear2, np.abs(cv2.GaussianBlur(view - view2 - shift2, (0, 0), 1.5)), 0.0)
                    diff = np.sign(diff) * np.maximum(np.abs(diff) - own, 0.0)
                found[fresh] = diff[fresh]
                missing &= ~fresh
                if missing.sum() < 0.05 * n_near:
                    break
            sides.append(found)
        before, after = sides
        closer = np.where(np.abs(before) <= np.abs(after), before, after)
        residual = np.where(np.isnan(before), after, np.where(np.isnan(after), before,
                            np.where(before * after < 0, 0.0, closer)))  # fmt: skip
        oy, ox = h - int(round(ys.mean())), w - int(round(xs.mean()))
        used = False
        for part, where in enumerate((near[t] & hole[t], near[t] & ~hole[t])):
            py, px = np.nonzero(where & np.isfinite(residual))
            values = residual[py, px]
            total[part][py + oy, px + ox] += values
            total_sq[part][py + oy, px + ox] += values**2
            count[part][py + oy, px + ox] += 1
            used |= part == 0 and len(py) >= gate._MIN_PIXELS
        frames += used
    levels = []
    for part in range(2):
        seen = count[part] >= max(2, frames // 2)
        n = count[part][seen]
        mean = total[part][seen] / n
        spread = np.sqrt(np.maximum(total_sq[part][seen] / n - mean**2, 0.0) / n)
        levels.append(float(np.quantile(np.maximum(np.abs(mean) - gate.EFFECT_SIGMAS * spread, 0.0), 0.95)))
    return max(0.0, levels[0] - levels[1]), frames, levels


def _working_inputs(camera: str, shadow: float):
    """A scene's removal with the true background, plus a shadow under the object (``shadow`` grey levels), as
    ``removal_checks`` sees it at working resolution."""
    scene = make_scene(camera, num_frames=17, height=120, width=180, num_objects=1, seed=0)
    obj_full = scene.label_map == 1
    hole_full = dilate_masks(obj_full, 5)
    target = scene.frames.copy()
    target[hole_full] = scene.background[hole_full]
    under = np.roll(dilate_masks(obj_full, 3), 4, axis=1) & hole_full & ~obj_full
    target[under] = np.clip(target[under].astype(np.float32) - shadow, 0, 255).astype(np.uint8)
    region = gate.working_region(hole_full, work_side=90)
    tgt = gate._crop_frames(target, region)
    hole = gate._crop_cover(hole_full, region) > 0.5
    obj_cover = gate._crop_cover(obj_full & hole_full, region)
    luma = gate._luma(tgt)
    return luma, hole, obj_cover, camera_maps(luma, hole)


@pytest.mark.parametrize("camera", ["static", "pan", "zoom", "handheld"])
def test_windowed_checks_equal_their_whole_frame_definition(camera: str) -> None:
    luma, hole, obj_cover, to_first = _working_inputs(camera, shadow=60.0)
    value, frames, details = gate._effect_residual(luma, hole, obj_cover > 0, to_first)
    whole, whole_frames, (inside, outside) = _effect_residual_whole(luma, hole, obj_cover > 0, to_first)
    assert frames == whole_frames >= 2
    assert details["effect_inside"] > 1.0  # the shadow is measured: the comparison is not of zeros
    assert value == pytest.approx(whole, rel=1e-6, abs=1e-6)  # grey levels; equal here, bit for bit
    assert details["effect_inside"] == pytest.approx(inside, rel=1e-6, abs=1e-6)
    assert details["effect_outside"] == pytest.approx(outside, rel=1e-6, abs=1e-6)

    core = obj_cover > 0.5  # the whole object: at this size its eroded core is seldom uncovered
    energy = np.abs(gate._band_pass(luma))
    ratios, pixels = gate._reference_texture(luma, energy, hole, core, to_first)
    whole_ratios, whole_pixels = _reference_texture_whole(luma, energy, hole, core, to_first)
    assert np.array_equal(pixels, whole_pixels) and pixels.sum() > 0
    np.testing.assert_allclose(ratios, whole_ratios, rtol=1e-6)


def test_whole_frame_form_tells_a_shadow_from_none() -> None:
    # control for the comparison above: the definition it checks against does see the shadow
    levels = {}
    for shadow in (0.0, 60.0):
        luma, hole, obj_cover, to_first = _working_inputs("pan", shadow=shadow)
        levels[shadow] = _effect_residual_whole(luma, hole, obj_cover > 0, to_first)[2][0]
    assert levels[60.0] > levels[0.0] + 1.0
