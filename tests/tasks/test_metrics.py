"""Pixel metrics shared by the gate, `vpf eval` and the benchmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks import metrics
from tasks.engines.propagation import PropagationEngine, dilate_masks
from tasks.synthetic import make_scene


def _clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(5, 32, 48, 3), dtype=np.uint8)
    masks = np.zeros((5, 32, 48), bool)
    masks[:, 10:22, 12:30] = True
    return frames, masks


def test_identical_regions_cap_psnr() -> None:
    frames, masks = _clip()
    m = metrics.region_metrics(frames, frames, masks)
    assert m["psnr"] == metrics.PSNR_CAP_DB and m["ssim"] == pytest.approx(1.0) and m["mse"] == m["mae"] == 0


def test_background_metrics_match_their_definitions() -> None:
    frames, masks = _clip()
    noise = np.random.default_rng(3).integers(-10, 11, size=frames.shape)
    edited = np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)
    edited[masks] = 255 - frames[masks]  # whatever happens in the hole must not count
    q = metrics.background_metrics(frames, edited, masks)
    diff = (edited[~masks].astype(float) - frames[~masks]) / 255.0
    assert q["mse_bg"] == pytest.approx(np.mean(diff**2), rel=1e-5)
    assert q["mae_bg"] == pytest.approx(np.mean(np.abs(diff)), rel=1e-5)
    assert q["psnr_bg"] == pytest.approx(-10 * math.log10(np.mean(diff**2)), rel=1e-5)
    assert 0 < q["ssim_bg"] < 1


def test_ssim_map_agrees_with_skimage() -> None:
    from skimage.metrics import structural_similarity

    frames, _ = _clip()
    other = np.clip(frames.astype(int) + 20, 0, 255).astype(np.uint8)
    ours = metrics.ssim_map(frames[:1], other[:1]).mean()
    ref = structural_similarity(
        frames[0],
        other[0],
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ours == pytest.approx(ref, abs=0.02)


def test_warp_error_separates_consistent_and_flickering_fills() -> None:
    scene = make_scene("pan", num_frames=9, height=96, width=160, seed=0)
    masks = dilate_masks(scene.masks, 2)
    good = PropagationEngine().inpaint(scene.frames, masks)
    flicker = good.copy()
    rng = np.random.default_rng(0)
    for t in range(len(flicker)):
        flicker[t][masks[t]] = rng.integers(0, 256, size=3, dtype=np.uint8)
    e_good = metrics.temporal_warp_error(good, masks)
    e_bad = metrics.temporal_warp_error(flicker, masks)
    assert e_good is not None and e_bad is not None
    assert e_good < 0.05 < e_bad


def test_mask_statistics() -> None:
    masks = np.zeros((4, 10, 10), bool)
    masks[1, :5] = True
    masks[2] = True
    s = metrics.mask_statistics(masks)
    assert s["mask_area_ratio"] == pytest.approx(0.375)
    assert s["mask_area_ratio_min"] == 0 and s["mask_area_ratio_max"] == 1
    assert s["mask_max_area_change"] == pytest.approx(1.0)
    assert s["mask_empty_frames"] == 2 and s["mask_full_frames"] == 1
