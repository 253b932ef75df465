"""Pair metrics and the accept/reject rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tasks import metrics
from tasks.engines.propagation import PropagationEngine, dilate_masks
from tasks.errors import InputError
from tasks.synthetic import make_scene


def _clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(5, 32, 48, 3), dtype=np.uint8)
    masks = np.zeros((5, 32, 48), bool)
    masks[:, 10:22, 12:30] = True
    return frames, masks


def test_identical_backgrounds_cap_psnr_and_ignore_the_hole() -> None:
    frames, masks = _clip()
    edited = frames.copy()
    edited[masks] = 0  # only the hole changed
    q = metrics.pair_metrics(frames, edited, masks)
    assert q["psnr_bg"] == metrics.PSNR_CAP_DB
    assert q["ssim_bg"] == pytest.approx(1.0)
    assert q["mse_bg"] == 0 and q["mae_bg"] == 0
    assert json.loads(q["metrics_json"])["psnr_bg_capped"] is True


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


def test_learned_metrics_are_absent_with_a_reason() -> None:
    frames, masks = _clip()
    q = metrics.pair_metrics(frames, frames, masks, clip_path="/nonexistent/clip", caption="a cat")
    assert q["lpips"] is None and q["clip_sim"] is None and q["clip_sim_masked"] is None
    absent = json.loads(q["metrics_json"])["absent"]
    assert "no LPIPS weights" in absent["lpips"]
    assert "not found" in absent["clip_sim"]


def test_full_masks_are_flagged() -> None:
    frames, _ = _clip()
    masks = np.ones(frames.shape[:3], bool)
    q = metrics.pair_metrics(frames, frames, masks, flags=["mostly_spatial_fill"])
    assert q["quality_flags"] == ["mostly_spatial_fill", "no_observed_background"]
    assert q["psnr_bg"] is None
    decision, reason = metrics.decide(q)
    assert decision == "rejected" and "no_observed_background" in reason


def test_bad_input() -> None:
    frames, masks = _clip()
    with pytest.raises(InputError) as info:
        metrics.pair_metrics(frames, frames[:3], masks)
    assert info.value.reason == "frame_count_mismatch"
    with pytest.raises(InputError) as info:
        metrics.pair_metrics(frames, np.full(frames.shape, np.nan, np.float32), masks)
    assert info.value.reason == "non_finite"


def test_accept_rule_records_its_reasons() -> None:
    good = {"psnr_bg": 40.0, "temporal_warp_error": 0.01, "mask_area_ratio": 0.1, "quality_flags": []}
    assert metrics.AcceptRule().decide(good) == ("accepted", "all checks passed")
    bad = {**good, "psnr_bg": 21.5, "temporal_warp_error": 0.3}
    decision, reason = metrics.AcceptRule().decide(bad)
    assert decision == "rejected"
    assert "psnr_bg 21.5 < 30" in reason and "temporal_warp_error 0.3 > 0.1" in reason
    rule = metrics.AcceptRule(min_psnr_bg=None, min_judge_quality=3)
    decision, reason = rule.decide(bad | {"temporal_warp_error": 0.0})
    assert decision == "accepted" and "judge_quality absent" in reason
    assert metrics.AcceptRule(min_judge_quality=3, reject_missing=True).decide(good)[0] == "rejected"
    assert metrics.AcceptRule(min_judge_quality=3).decide(good | {"judge_quality": 2})[0] == "rejected"
    assert metrics.AcceptRule(**{"max_warp_error": 0.005}).decide(good)[0] == "rejected"


def _tiny_clip(folder) -> str:
    """A randomly initialised 1-layer CLIP with a character tokenizer, saved as a transformers folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**small, "vocab_size": len(vocab), "max_position_embeddings": 32},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    out = folder / "clip"
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return str(out)


def test_clip_similarity_with_local_weights(tmp_path) -> None:
    frames, masks = _clip()
    path = _tiny_clip(tmp_path)
    q = metrics.pair_metrics(frames, frames, masks, clip_path=path, caption="a cat", region_caption="grass")
    assert q["clip_sim"] is not None and 0 <= q["clip_sim"] <= 100
    assert q["clip_sim_masked"] is not None
    again = metrics.clip_similarity(frames, masks, model_path=path, caption="a cat", region_caption="grass")
    assert again["clip_sim"] == pytest.approx(q["clip_sim"])
    absent = json.loads(q["metrics_json"])["absent"]
    assert "clip_sim" not in absent and "lpips" in absent
