"""VideoPainterPipeline end to end on tiny components, offline, seeded (parity with the release: test_parity.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline
from safetensors.torch import save_file

from tests.videopainter.conftest import HEIGHT, TINY_TRANSFORMER, WIDTH, tiny_components
from videopainter.models.attention import IDMemory
from videopainter.models.context_encoder import VideoPainterContextEncoder
from videopainter.pipelines.pipeline_videopainter import (
    FIRST_FRAME_MODEL_DILATION_RADIUS,
    TRAINING_STYLE,
    VideoPainterPipeline,
    dilate_masks,
)


TEXT_LENGTH = TINY_TRANSFORMER["max_text_seq_length"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A stock CogVideoX-I2V base folder, a branch folder and an ID LoRA file in the released layouts."""
    root = tmp_path_factory.mktemp("checkpoints")
    components = tiny_components(seed=0)
    CogVideoXImageToVideoPipeline(**components).save_pretrained(root / "base")
    torch.manual_seed(1)
    encoder = VideoPainterContextEncoder.from_transformer(components["transformer"], num_layers=2)
    for linear in encoder.branch_blocks:  # a "trained" encoder: non-zero bridges
        torch.nn.init.normal_(linear.weight, std=0.05)
    encoder.save_pretrained(root / "branch")
    dim, rank = 32, 4
    lora = {}
    for i in range(TINY_TRANSFORMER["num_layers"]):
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            prefix = f"transformer.transformer_blocks.{i}.attn1.{name}"
            lora[f"{prefix}.lora_A.weight"] = torch.randn(rank, dim) * 0.1
            lora[f"{prefix}.lora_B.weight"] = torch.randn(dim, rank) * 0.1
    (root / "id_lora").mkdir()
    save_file(lora, str(root / "id_lora" / "pytorch_lora_weights.safetensors"), metadata={"format": "pt"})
    return {"base": root / "base", "branch": root / "branch", "id_lora": root / "id_lora"}


def _video(num_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, HEIGHT, WIDTH), dtype=bool)
    for t in range(num_frames):
        masks[t, 16 + t % 4 : 40 + t % 4, 20:44] = True  # a moving box
    return frames, masks


def _embeds(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(1, TEXT_LENGTH, 12, generator=generator),
        "negative_prompt_embeds": torch.randn(1, TEXT_LENGTH, 12, generator=generator),
    }


def test_end_to_end_from_released_layout_folders_offline(folders, tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"], id_lora=folders["id_lora"])
    assert pipe.transformer.id_resample_enabled and pipe.id_lora_scale == 1.0
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    frames, masks = _video(9)
    kwargs = {
        "video": frames,
        "mask": masks,
        "prompt": "a quiet street",
        "first_frame": frames[0],
        "num_frames_per_window": 9,
        "num_inference_steps": 2,
        "dilation_radius": 4,
        "max_sequence_length": TEXT_LENGTH,
    }
    out = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (9, HEIGHT, WIDTH, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1

    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["context_encoder"][1] == "VideoPainterContextEncoder"
    assert index["transformer"][1] == "VideoPainterTransformer3DModel"
    again = VideoPainterPipeline.from_pretrained(tmp_path / "saved")
    assert again.transformer.id_resample_enabled and again.id_lora_scale == 1.0
    for name in ("transformer", "context_encoder", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    out_again = again(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(out_again, out, atol=1e-5)

    half = VideoPainterPipeline.from_pretrained(tmp_path / "saved", id_lora_scale=0.5)
    to_q = half.transformer.transformer_blocks[0].attn1.to_q
    assert to_q.scaling["id_resample"] == 0.5
    assert not np.allclose(half(**kwargs, generator=torch.Generator().manual_seed(0)).frames, out, atol=1e-4)


def _recording(pipe: VideoPainterPipeline) -> tuple[list, list]:
    """Record every window's conditioning and its denoised latents / ID memory."""
    windows, results = [], []
    prepare, denoise = pipe.prepare_window, pipe._denoise_window

    def record_prepare(*args, **kwargs):
        windows.append(prepare(*args, **kwargs))
        return windows[-1]

    def record_denoise(window, *args):
        latents, memory = denoise(window, *args)
        results.append({"latents": latents, "memory_in": args[8], "memory_out": memory})
        return latents, memory

    pipe.prepare_window, pipe._denoise_window = record_prepare, record_denoise
    return windows, results


@pytest.mark.parametrize("style", ["release", "training"])
def test_any_length_three_windows(folders, style: str) -> None:
    """25 frames = windows of 9 with a 1-frame overlap (stride 8, 2 latents), a moving mask: output length, overlap
    averaging, image-condition chaining, per-window noise and the per-window ID memory."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"], id_lora=folders["id_lora"])
    windows, results = _recording(pipe)
    frames, masks = _video(25)
    kwargs = {
        "video": frames,
        "mask": masks,
        "first_frame": frames[0],
        "num_frames_per_window": 9,
        "window_overlap": 1,
        "num_inference_steps": 2,
        "prev_clip_weight": 0.5,
        **_embeds(),
        **(TRAINING_STYLE if style == "training" else {}),
    }
    latents = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert len(windows) == len(results) == 3
    assert latents.shape == (1, 7, 4, 8, 8)  # (25 - 1) / 4 + 1 latent frames
    w = [r["latents"] for r in results]  # each (1, 3, 4, 8, 8)
    torch.testing.assert_close(latents[:, 2], (w[0][:, 2] + w[1][:, 0]) / 2)  # overlap slots averaged
    torch.testing.assert_close(latents[:, 4], (w[1][:, 2] + w[2][:, 0]) / 2)
    for slot, window, index in ((0, 0, 0), (1, 0, 1), (3, 1, 1), (5, 2, 1), (6, 2, 2)):
        torch.testing.assert_close(latents[:, slot], w[window][:, index])
    assert not torch.equal(windows[0].noise, windows[1].noise)  # noise drawn per window
    for k in (1, 2):  # window k is conditioned on window k-1's last latent
        assert torch.equal(windows[k].image_latents[:, 0], w[k - 1][:, -1])
        assert torch.count_nonzero(windows[k].image_latents[:, 1:]) == 0
        if style == "training":  # ... which also stands for its known, unmasked first latent
            assert torch.equal(windows[k].masked_video_latents[:, 0], w[k - 1][:, -1])
            assert torch.equal(windows[k].source_latents[:, 0], w[k - 1][:, -1])
            assert torch.count_nonzero(windows[k].mask_latents[:, 0]) == 0
        else:  # release: the window's own frames, own mask (nearest: pixel frame 8k at (8y, 8x))
            assert not torch.equal(windows[k].masked_video_latents[:, 0], w[k - 1][:, -1])
            own = torch.from_numpy(masks[8 * k, ::8, ::8]).float()
            assert torch.equal(windows[k].mask_latents[0, 0, 0], own) and own.any()
    assert torch.count_nonzero(windows[0].mask_latents[:, 0]) == 0 and windows[0].mask_latents[:, 1:].any()
    # ID memory: none for window 0; window k reads window k-1's memory; the last window keeps none
    assert results[0]["memory_in"] is None and results[2]["memory_out"] is None
    for k in (1, 2):
        memory = results[k]["memory_in"]
        assert isinstance(memory, IDMemory) and memory is results[k - 1]["memory_out"]
        assert len(memory.block_hidden_states) == TINY_TRANSFORMER["num_layers"]
        assert all(h.shape == (2, TEXT_LENGTH + 48, 32) for h in memory.block_hidden_states)  # CFG batch of 2

    video = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (25, HEIGHT, WIDTH, 3)


def test_overlap_zero_windows_side_by_side(folders) -> None:
    """The released setting: stride = window length. 27 frames = 3 windows of 9; disjoint latent slots, each window
    decoded alone (output frame i is input frame i), chained on the previous window's last latent."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    windows, results = _recording(pipe)
    frames, masks = _video(27)
    kwargs = {"video": frames, "mask": masks, "first_frame": frames[0], "num_frames_per_window": 9}
    kwargs.update(num_inference_steps=2, **_embeds())
    latents = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert latents.shape == (1, 9, 4, 8, 8) and len(results) == 3
    assert torch.equal(latents, torch.cat([r["latents"] for r in results], dim=1))
    for k in (1, 2):
        assert torch.equal(windows[k].image_latents[:, 0], results[k - 1]["latents"][:, -1])
        own = torch.from_numpy(masks[9 * k, ::8, ::8]).float()  # window k starts at pixel frame 9k
        assert torch.equal(windows[k].mask_latents[0, 0, 0], own)
    decoded = pipe(**kwargs, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    assert decoded.shape == (27, 3, HEIGHT, WIDTH)
    # each 9-frame block is the decode of its own window's latents
    window2 = pipe.decode_latents(latents[:, 6:9])
    want = pipe.video_processor.postprocess_video(window2, output_type="pt")[0]
    torch.testing.assert_close(decoded[18:], want)
    with pytest.raises(ValueError, match="need 9 \\+ n \\* 9 frames"):
        pipe(**{**kwargs, "video": frames[:25], "mask": masks[:25]})


def test_overlap_of_five_frames_shares_two_latents(folders) -> None:
    """Windows of 9 overlapping by 5 (stride 4): window k starts at latent slot k, shares 2 slots with window k - 1
    (averaged) and is chained on window k - 1's latent before the overlap (index -2)."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    assert pipe.latent_layout(17, 9, 5) == ([0, 1, 2], 5)
    assert pipe.latent_layout(18, 9, 0) == ([0, 3], 6)
    assert pipe.latent_layout(17, 9, 1) == ([0, 2], 5)
    windows, results = _recording(pipe)
    frames, masks = _video(13)
    kwargs = {"video": frames, "mask": masks, "first_frame": frames[0], "num_frames_per_window": 9, **_embeds()}
    latents = pipe(**kwargs, window_overlap=5, num_inference_steps=1, output_type="latent").frames
    w = [r["latents"] for r in results]
    assert latents.shape == (1, 4, 4, 8, 8) and len(w) == 2
    torch.testing.assert_close(latents[:, 1], (w[0][:, 1] + w[1][:, 0]) / 2)
    torch.testing.assert_close(latents[:, 2], (w[0][:, 2] + w[1][:, 1]) / 2)
    torch.testing.assert_close(latents[:, 3], w[1][:, 2])
    assert torch.equal(windows[1].image_latents[:, 0], w[0][:, -2])


def test_strength_starts_from_the_noised_source(folders) -> None:
    """strength 0.5 of 4 steps runs the last 2 steps, starting from the source latent noised to the first of them."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    windows, _ = _recording(pipe)
    timesteps, starts = [], []
    step = pipe.scheduler.step

    def record_step(model_output, old, t, prev_t, sample, **kwargs):
        timesteps.append(int(t))
        if prev_t is None:
            starts.append(sample.clone())
        return step(model_output, old, t, prev_t, sample, **kwargs)

    pipe.scheduler.step = record_step
    frames, masks = _video(9)
    kwargs = {"video": frames, "mask": masks, "first_frame": frames[0], "num_frames_per_window": 9, **_embeds()}
    pipe(
        **kwargs, num_inference_steps=4, strength=0.5, output_type="latent", generator=torch.Generator().manual_seed(0)
    )
    pipe.scheduler.set_timesteps(4)
    full = [int(t) for t in pipe.scheduler.timesteps]
    assert timesteps == full[2:]
    window = windows[-1]
    expected = pipe.scheduler.add_noise(window.source_latents, window.noise, torch.tensor([full[2]]))
    torch.testing.assert_close(starts[-1], expected)
    with pytest.raises(ValueError, match="strength"):
        pipe(**kwargs, num_inference_steps=4, strength=0.1)
    with pytest.raises(ValueError, match="strength"):
        pipe(**kwargs, strength=1.5)


def test_replace_gt_keeps_background_latents(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    windows, results = _recording(pipe)
    frames, masks = _video(9)
    common = {"video": frames, "mask": masks, "first_frame": frames[0], "num_frames_per_window": 9}
    common.update(num_inference_steps=3, dilation_radius=4, output_type="latent", **_embeds())
    pipe(**common, generator=torch.Generator().manual_seed(0))
    window, latents = windows[-1], results[-1]["latents"]
    background = (window.mask_latents == 0).expand_as(latents)
    assert torch.equal(latents[background], window.source_latents[background])
    assert not torch.equal(latents[~background], window.source_latents[~background])
    pipe(**common, replace_gt=False, generator=torch.Generator().manual_seed(0))
    window, latents = windows[-1], results[-1]["latents"]
    assert not torch.allclose(latents[background], window.source_latents[background])


def test_masked_pixels_first_frame_and_mask_latents(folders) -> None:
    """Release: the context encoder reads 0 in the hole, the source -1; masks reach latent size by nearest
    interpolation. Training style: -1 for the encoder and max-pooled masks."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    encoded = []
    encode = pipe._encode_video

    def record(pixels, generator):
        encoded.append(pixels)
        return encode(pixels, generator)

    pipe._encode_video = record
    frames, masks = _video(9)
    video = pipe._to_video_tensor(frames, torch.device("cpu"))
    first = torch.rand(1, 3, 1, HEIGHT, WIDTH) * 2 - 1
    hole = torch.from_numpy(masks[1:])[None, None].expand(1, 3, -1, -1, -1)
    window = pipe.prepare_window(video, torch.from_numpy(masks), first, None, None, None, torch.float32)
    image, source, masked_video = encoded  # the released order: first frame, source, (noise), masked video
    assert torch.equal(image, first)
    for pixels, fill in ((source, -1.0), (masked_video, 0.0)):
        assert torch.equal(pixels[:, :, 0], first[:, :, 0])  # the given first frame, unmasked
        assert (pixels[:, :, 1:][hole] == fill).all()
        assert torch.equal(pixels[:, :, 1:][~hole], video[:, :, 1:][~hole])
    # nearest: latent frame k reads pixel frame floor(9 k / 3) = 3 k at (8 y, 8 x); frame 0's mask is cleared
    nearest = torch.stack([torch.zeros(8, 8), *(torch.from_numpy(masks[3 * k, ::8, ::8]).float() for k in (1, 2))])
    assert torch.equal(window.mask_latents[0, :, 0], nearest)

    encoded.clear()
    training = {k: v for k, v in TRAINING_STYLE.items() if k != "chaining"}
    window = pipe.prepare_window(video, torch.from_numpy(masks), first, None, None, None, torch.float32, **training)
    assert (encoded[2][:, :, 1:][hole] == -1.0).all()
    # max-pool: latent frame k covers pixel frames 4k-3..4k; masked if any pixel of its 8x8 footprint is
    expected = torch.zeros(3, 8, 8)
    for k, frame_range in ((1, range(1, 5)), (2, range(5, 9))):
        for t in frame_range:
            expected[k] = torch.maximum(
                expected[k], torch.nn.functional.max_pool2d(torch.from_numpy(masks[t]).float()[None], 8)[0]
            )
    assert torch.equal(window.mask_latents[0, :, 0], expected)
    assert not torch.equal(expected, nearest)  # the moving, unaligned box tells the two apart


def test_dilation_only_with_a_first_frame_model(folders) -> None:
    """Default (None): no dilation for a given first frame; FIRST_FRAME_MODEL_DILATION_RADIUS when the first-frame
    inpainter makes it (the released script's rule); an explicit radius always applies."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    windows, _ = _recording(pipe)
    frames, masks = _video(9)
    calls = []

    def inpainter(image, mask, prompt):
        calls.append((np.asarray(image), np.asarray(mask) > 0, prompt))
        return image.transpose(0)  # mirrored frame 0 stands in for an inpainted one

    common = {"video": frames, "mask": masks, "num_frames_per_window": 9, "num_inference_steps": 1, **_embeds()}
    common["output_type"] = "latent"
    with pytest.raises(ValueError, match="first_frame"):
        pipe(**common)
    nearest = pipe._mask_latents
    seen = []
    pipe._mask_latents = lambda mask, mode: seen.append(mask.clone()) or nearest(mask, mode)

    pipe(**common, first_frame=frames[0])
    assert torch.equal(seen[-1][1:], torch.from_numpy(masks[1:]))  # not dilated
    pipe(**common, first_frame=frames[0], dilation_radius=2)
    assert torch.equal(seen[-1][1:], dilate_masks(torch.from_numpy(masks[1:]), 2))

    pipe.set_first_frame_inpainter(inpainter)
    pipe(**common)
    ((image, mask, prompt),) = calls
    assert np.array_equal(image, frames[0]) and prompt == ""
    radius = FIRST_FRAME_MODEL_DILATION_RADIUS
    assert np.array_equal(mask, dilate_masks(torch.from_numpy(masks[:1]), radius)[0].numpy())
    assert torch.equal(seen[-1][1:], dilate_masks(torch.from_numpy(masks[1:]), radius))


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_dilate_masks_is_a_radius(radius: int) -> None:
    """Radius r = cv2.dilate with a (2r + 1)-sided square of ones."""
    rng = np.random.default_rng(radius)
    masks = rng.random((2, 20, 24)) > 0.97
    side = 2 * radius + 1
    want = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((side, side), np.uint8)) > 0 for m in masks])
    assert np.array_equal(dilate_masks(torch.from_numpy(masks), radius).numpy(), want)
    single = np.zeros((1, 20, 24), dtype=bool)
    single[0, 10, 12] = True
    grown = dilate_masks(torch.from_numpy(single), radius)[0].numpy()
    rows, cols = np.nonzero(grown)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10 - radius, 10 + radius, 12 - radius, 12 + radius)
    with pytest.raises(ValueError, match="dilation_radius"):
        dilate_masks(torch.from_numpy(single), -1)


def test_check_inputs_fail_loudly(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    frames, masks = _video(13)
    common = {"first_frame": frames[0], "num_frames_per_window": 9, **_embeds()}
    with pytest.raises(ValueError, match="need 9 \\+ n \\* 9 frames"):
        pipe(frames, masks, **common)
    with pytest.raises(ValueError, match="need 9 \\+ n \\* 8 frames"):
        pipe(frames, masks, **common, window_overlap=1)
    for overlap in (2, -1, 9):
        with pytest.raises(ValueError, match="window_overlap"):
            pipe(frames[:9], masks[:9], **common, window_overlap=overlap)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        pipe(frames[:9], masks[:8], **common)
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe(frames[:9, :56], masks[:9, :56], **common)
    with pytest.raises(ValueError, match="exactly one of `prompt`"):
        pipe(frames[:9], masks[:9], prompt="x", **common)
    with pytest.raises(ValueError, match="dilation_radius"):
        pipe(frames[:9], masks[:9], **common, dilation_radius=-2)
    with pytest.raises(ValueError, match="mask_downsample"):
        pipe(frames[:9], masks[:9], **common, mask_downsample="bilinear")
    with pytest.raises(ValueError, match="chaining"):
        pipe(frames[:9], masks[:9], **common, chaining="none")
    with pytest.raises(ValueError, match="context_fill"):
        pipe(frames[:9], masks[:9], **common, context_fill=2.0)
    with pytest.raises(ValueError, match="no context_encoder: pass `branch=`"):
        VideoPainterPipeline.from_pretrained(folders["base"])


def test_base_and_branch_from_fsspec_urls(folders, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    for name in ("base", "branch"):
        for path in folders[name].rglob("*"):
            if path.is_file():
                fs.pipe(f"/vp-test/{name}/{path.relative_to(folders[name]).as_posix()}", path.read_bytes())
    pipe = VideoPainterPipeline.from_pretrained(
        "memory://vp-test/base", branch="memory://vp-test/branch", cache_dir=tmp_path / "cache"
    )
    local = VideoPainterContextEncoder.from_pretrained(folders["branch"]).state_dict()
    remote = pipe.context_encoder.state_dict()
    assert all(torch.equal(local[k], remote[k]) for k in local)
    assert len(list((tmp_path / "cache").glob("*/.complete"))) == 2
    base_vae = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"]).vae.state_dict()
    assert all(torch.equal(base_vae[k], pipe.vae.state_dict()[k]) for k in base_vae)


def test_without_guidance_runs_a_single_batch(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    batches = []
    forward = pipe.transformer.forward

    def record(*args, **kwargs):
        batches.append(kwargs["hidden_states"].shape[0])
        return forward(*args, **kwargs)

    pipe.transformer.forward = record
    frames, masks = _video(9)
    embeds = _embeds()["prompt_embeds"]
    out = pipe(
        frames,
        masks,
        prompt_embeds=embeds,
        first_frame=frames[0],
        num_frames_per_window=9,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="pt",
    ).frames
    assert batches == [1, 1] and out.shape == (9, 3, HEIGHT, WIDTH)
