"""VideoPainterPipeline end to end on tiny components (docs/method.md), offline, seeded."""

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
from videopainter.pipelines.pipeline_videopainter import MASKED_PIXEL_VALUE, VideoPainterPipeline, dilate_masks


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
        "mask_dilation": 8,
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


def test_any_length_three_windows(folders) -> None:
    """25 frames = windows of 9 with a 1-frame overlap (stride 8, 2 latents): output length, overlap averaging,
    image-condition chaining and the per-window ID memory."""
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"], id_lora=folders["id_lora"])
    windows, results = [], []
    prepare, denoise = pipe.prepare_window, pipe._denoise_window

    def record_prepare(*args, **kwargs):
        windows.append(prepare(*args, **kwargs))
        return windows[-1]

    def record_denoise(window, noise, *args):
        latents, memory = denoise(window, noise, *args)
        results.append({"latents": latents, "memory_in": args[7], "memory_out": memory})
        return latents, memory

    pipe.prepare_window, pipe._denoise_window = record_prepare, record_denoise
    frames, masks = _video(25)
    kwargs = {
        "video": frames,
        "mask": masks,
        "first_frame": frames[0],
        "num_frames_per_window": 9,
        "window_overlap": 1,
        "num_inference_steps": 2,
        "mask_dilation": 0,
        "prev_clip_weight": 0.5,
        **_embeds(),
    }
    latents = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert len(windows) == len(results) == 3
    assert latents.shape == (1, 7, 4, 8, 8)  # (25 - 1) / 4 + 1 latent frames
    w = [r["latents"] for r in results]  # each (1, 3, 4, 8, 8)
    torch.testing.assert_close(latents[:, 2], (w[0][:, 2] + w[1][:, 0]) / 2)  # overlap slots averaged
    torch.testing.assert_close(latents[:, 4], (w[1][:, 2] + w[2][:, 0]) / 2)
    for slot, window, index in ((0, 0, 0), (1, 0, 1), (3, 1, 1), (5, 2, 1), (6, 2, 2)):
        torch.testing.assert_close(latents[:, slot], w[window][:, index])
    for k in (1, 2):  # window k is conditioned on window k-1's last latent, which is also its known first frame
        assert torch.equal(windows[k].image_latents[:, 0], w[k - 1][:, -1])
        assert torch.count_nonzero(windows[k].image_latents[:, 1:]) == 0
        assert torch.equal(windows[k].masked_video_latents[:, 0], w[k - 1][:, -1])
        assert torch.count_nonzero(windows[k].mask_latents[:, 0]) == 0
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


def test_replace_gt_keeps_background_latents(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    seen = []
    denoise = pipe._denoise_window

    def record(window, *args):
        latents, memory = denoise(window, *args)
        seen.append((window, latents))
        return latents, memory

    pipe._denoise_window = record
    frames, masks = _video(9)
    common = {"video": frames, "mask": masks, "first_frame": frames[0], "num_frames_per_window": 9}
    common.update(num_inference_steps=3, mask_dilation=8, output_type="latent", **_embeds())
    pipe(**common, generator=torch.Generator().manual_seed(0))
    window, latents = seen[-1]
    background = (window.mask_latents == 0).expand_as(latents)
    assert torch.equal(latents[background], window.masked_video_latents[background])
    assert not torch.equal(latents[~background], window.masked_video_latents[~background])
    pipe(**common, replace_gt=False, generator=torch.Generator().manual_seed(0))
    window, latents = seen[-1]
    assert not torch.allclose(latents[background], window.masked_video_latents[background])


def test_masked_pixels_first_frame_and_mask_latents(folders) -> None:
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
    window = pipe.prepare_window(video, torch.from_numpy(masks), first, None, None, torch.float32)
    masked_video, image = encoded
    assert torch.equal(masked_video[:, :, 0], first[:, :, 0])  # the given first frame, unmasked
    assert torch.equal(image, first)
    hole = torch.from_numpy(masks[1:])[None, None].expand(1, 3, -1, -1, -1)
    assert (masked_video[:, :, 1:][hole] == MASKED_PIXEL_VALUE).all()  # one convention: -1 (black)
    assert torch.equal(masked_video[:, :, 1:][~hole], video[:, :, 1:][~hole])
    # latent frame k covers pixel frames 4k-3..4k; a latent pixel is masked if any pixel of its 8x8 footprint is
    expected = torch.zeros(3, 8, 8)
    for k, frame_range in ((1, range(1, 5)), (2, range(5, 9))):
        for t in frame_range:
            expected[k] = torch.maximum(
                expected[k], torch.nn.functional.max_pool2d(torch.from_numpy(masks[t]).float()[None], 8)[0]
            )
    assert torch.equal(window.mask_latents[0, :, 0], expected)


def test_first_frame_from_a_callable_inpainter(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    frames, masks = _video(9)
    calls = []

    def inpainter(image, mask, prompt):
        calls.append((np.asarray(image), np.asarray(mask) > 0, prompt))
        return image.transpose(0)  # mirrored frame 0 stands in for an inpainted one

    common = {"video": frames, "mask": masks, "num_frames_per_window": 9, "num_inference_steps": 1, **_embeds()}
    with pytest.raises(ValueError, match="first_frame"):
        pipe(**common)
    pipe.set_first_frame_inpainter(inpainter)
    pipe(**common, mask_dilation=8, output_type="latent")
    ((image, mask, prompt),) = calls
    assert np.array_equal(image, frames[0]) and prompt == ""
    assert np.array_equal(mask, dilate_masks(torch.from_numpy(masks[:1]), 8)[0].numpy())


@pytest.mark.parametrize("kernel", [1, 4, 5, 8])
def test_dilate_masks_matches_cv2(kernel: int) -> None:
    rng = np.random.default_rng(kernel)
    masks = rng.random((2, 20, 24)) > 0.97
    want = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((kernel, kernel), np.uint8)) > 0 for m in masks])
    assert np.array_equal(dilate_masks(torch.from_numpy(masks), kernel).numpy(), want)


def test_check_inputs_fail_loudly(folders) -> None:
    pipe = VideoPainterPipeline.from_pretrained(folders["base"], branch=folders["branch"])
    frames, masks = _video(13)
    common = {"first_frame": frames[0], "num_frames_per_window": 9, **_embeds()}
    with pytest.raises(ValueError, match="need 9 \\+ n \\* 8 frames"):
        pipe(frames, masks, **common)
    with pytest.raises(ValueError, match="window_overlap"):
        pipe(frames[:9], masks[:9], **common, window_overlap=2)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        pipe(frames[:9], masks[:8], **common)
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe(frames[:9, :56], masks[:9, :56], **common)
    with pytest.raises(ValueError, match="exactly one of `prompt`"):
        pipe(frames[:9], masks[:9], prompt="x", **common)
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
