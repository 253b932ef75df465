"""VideoPainter at full size on one CUDA GPU: step time, projected clip time and peak memory (random bf16 weights).

Builds the real architecture: the CogVideoX-5B-I2V transformer (42 layers, 48 x 64 heads, 480x720, 49 frames ->
13 x 30 x 45 = 17,550 video + 226 text tokens) and the 2-block context encoder, with random weights in bf16, and
times denoising steps of one window with CFG (batch 2), as the pipeline runs them:

1. backbone alone (the plain CogVideoX-I2V step);
2. VideoPainter: context encoder + backbone with the token-selective injection;
3. + ID adapter, self-resample (LoRA r=256 on to_q/to_k/to_v/to_out.0 of all 42 blocks, K/V length doubled);
4. + ID adapter, previous-clip mode (the previous window's 42 per-block outputs held in memory).

Projected s/clip = 50 steps x s/step + one VAE encode of the masked video and first frame + one VAE decode (the
VAE, also random, is timed once). Target: <= 60 s/clip at 50 steps on an H100 (model card: ~90 s for the plain
backbone). One run takes a few minutes (< 8 min on an H100). Without CUDA it prints a message and exits 2.

Usage: ``python bench/gpu_videopainter.py [--json] [--steps 3] [--no-vae] [--no-id] [--tiny]`` (``--tiny``: a
tiny configuration on the CPU that only checks the script runs). With ``--json`` the last line
is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COGVIDEOX_5B_I2V = {
    "num_attention_heads": 48,
    "attention_head_dim": 64,
    "in_channels": 32,
    "out_channels": 16,
    "time_embed_dim": 512,
    "text_embed_dim": 4096,
    "num_layers": 42,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "max_text_seq_length": 226,
    "use_rotary_positional_embeddings": True,
    "use_learned_positional_embeddings": True,
}

TINY = {
    **COGVIDEOX_5B_I2V,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "time_embed_dim": 16,
    "text_embed_dim": 32,
    "num_layers": 4,
    "sample_width": 8,
    "sample_height": 8,
    "sample_frames": 9,
    "max_text_seq_length": 8,
}
TINY_VAE = {
    "down_block_types": ("CogVideoXDownBlock3D",) * 4,
    "up_block_types": ("CogVideoXUpBlock3D",) * 4,
    "block_out_channels": (8, 8, 8, 8),
    "norm_num_groups": 2,
    "layers_per_block": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after 1 warm-up)")
    parser.add_argument("--clip-steps", type=int, default=50, help="steps of a clip for the projection")
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE timing")
    parser.add_argument("--no-id", action="store_true", help="skip the ID-adapter configurations")
    parser.add_argument("--tiny", action="store_true", help="a tiny configuration on the CPU, to check the script")
    args = parser.parse_args()

    import torch

    if args.tiny:
        run(args, torch.device("cpu"), torch.float32, TINY)
        return
    if not torch.cuda.is_available():
        print("bench/gpu_videopainter.py needs a CUDA GPU; none is available here. Nothing was measured.")
        sys.exit(2)

    torch.backends.cuda.matmul.allow_tf32 = True
    run(args, torch.device("cuda"), torch.bfloat16, COGVIDEOX_5B_I2V)


def run(args: argparse.Namespace, device, dtype, config: dict) -> None:
    import torch
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    from videopainter.models.attention import IDMemory
    from videopainter.models.context_encoder import VideoPainterContextEncoder
    from videopainter.models.transformer import VideoPainterTransformer3DModel, latent_mask_to_token_mask

    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    started = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with device:
        transformer = VideoPainterTransformer3DModel(**config).eval()
        encoder = VideoPainterContextEncoder.from_transformer(transformer, num_layers=2).eval()
    torch.set_default_dtype(torch.float32)
    transformer.to(dtype)
    encoder.to(dtype)
    for linear in encoder.branch_blocks:
        torch.nn.init.normal_(linear.weight, std=0.02)
    build_s = time.perf_counter() - started

    batch, height, width = 2, config["sample_height"], config["sample_width"]
    frames = (config["sample_frames"] - 1) // 4 + 1
    channels, heads_dim = config["out_channels"], config["attention_head_dim"]
    text_length, text_dim = config["max_text_seq_length"], config["text_embed_dim"]
    latents = torch.randn(batch, frames, channels, height, width, device=device, dtype=dtype)
    image_latents = torch.randn_like(latents)
    mask_latents = torch.zeros(batch, frames, 1, height, width, device=device, dtype=dtype)
    mask_latents[:, :, :, height // 4 : 2 * height // 3, width // 3 : 2 * width // 3] = 1
    branch_cond = torch.cat([torch.randn_like(latents), mask_latents], dim=2)
    text = torch.randn(batch, text_length, text_dim, device=device, dtype=dtype)
    timestep = torch.full((batch,), 500, device=device)
    grid = (height // 2, width // 2)
    crops = get_resize_crop_region_for_grid(grid, grid[1], grid[0])
    rope = get_3d_rotary_pos_embed(heads_dim, crops, grid, frames, device=device)
    token_mask = latent_mask_to_token_mask(mask_latents, 2)
    state: dict = {}

    def backbone_step() -> None:
        transformer(torch.cat([latents, image_latents], 2), text, timestep, image_rotary_emb=rope, return_dict=False)

    def videopainter_step(prev_clip_weight: float = 0.0, keep_memory: bool = False) -> None:
        samples = encoder(latents, text, branch_cond, timestep, image_rotary_emb=rope, return_dict=False)[0]
        _, blocks = transformer(
            torch.cat([latents, image_latents], 2),
            text,
            timestep,
            image_rotary_emb=rope,
            branch_block_samples=samples,
            branch_token_mask=token_mask,
            id_memory=state.get("memory"),
            prev_clip_weight=prev_clip_weight,
            return_block_hidden_states=keep_memory,
            return_dict=False,
        )
        if keep_memory:
            state["memory"] = IDMemory(block_hidden_states=blocks, token_mask=token_mask)

    def measure(name: str, step, **kwargs) -> dict:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            step(**kwargs)  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(**kwargs)
            sync()
        seconds = (time.perf_counter() - start) / args.steps
        row = {"s_per_step": seconds, "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}
        print(f"  {name:<34}{seconds:>8.3f} s/step{row['peak_gb']:>8.1f} GB peak", flush=True)
        return row

    device_name = torch.cuda.get_device_name() if cuda else "cpu (--tiny)"
    tokens = text_length + frames * grid[0] * grid[1]
    print(f"{device_name}: built in {build_s:.0f} s; CFG batch 2, {tokens:,} tokens per sample")
    rows = {
        "backbone": measure("backbone alone", backbone_step),
        "videopainter": measure("VideoPainter (encoder + injection)", videopainter_step),
    }
    if not args.no_id:
        from peft import LoraConfig

        transformer.add_adapter(
            LoraConfig(
                r=256, lora_alpha=256, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=True
            ),
            adapter_name="id_resample",
        )
        transformer.to(dtype)
        transformer.set_id_resample(True)
        rows["id_self"] = measure("+ ID adapter, self-resample", videopainter_step)
        with torch.no_grad():
            videopainter_step(keep_memory=True)  # the previous window's per-block memory
        rows["id_prev"] = measure("+ ID adapter, previous clip", videopainter_step, prev_clip_weight=0.5)
        state.clear()

    vae_s = 0.0
    if not args.no_vae:
        from diffusers import AutoencoderKLCogVideoX

        del transformer, encoder
        if cuda:
            torch.cuda.empty_cache()
        with device:
            vae = AutoencoderKLCogVideoX(**({} if cuda else TINY_VAE)).to(dtype).eval()
        vae.enable_tiling()
        pixels = (config["sample_frames"], 8 * height, 8 * width)
        video = torch.rand(1, 3, *pixels, device=device, dtype=dtype) * 2 - 1
        with torch.no_grad():
            sync()
            start = time.perf_counter()
            encoded = vae.encode(video).latent_dist.sample()  # masked video
            vae.encode(video[:, :, :1])  # first frame
            vae.decode(encoded)
            sync()
        vae_s = time.perf_counter() - start
        print(f"  {'VAE encode + first frame + decode':<34}{vae_s:>8.2f} s per clip")

    figures: dict[str, float] = {"device": device_name, "steps": args.steps, "vae_s": vae_s}
    backbone = rows["backbone"]["s_per_step"]
    print(f"\n{'configuration':<24}{'s/step':>8}{'s/clip':>9}{'peak GB':>9}{'vs backbone':>13}")
    for name, row in rows.items():
        clip = args.clip_steps * row["s_per_step"] + vae_s
        ratio = row["s_per_step"] / backbone
        print(f"{name:<24}{row['s_per_step']:>8.3f}{clip:>9.1f}{row['peak_gb']:>9.1f}{ratio:>12.3f}x")
        figures.update(
            {
                f"{name}_s_per_step": round(row["s_per_step"], 4),
                f"{name}_s_per_clip": round(clip, 2),
                f"{name}_peak_gb": round(row["peak_gb"], 2),
                f"{name}_ratio": round(ratio, 4),
            }
        )
    print(f"target: videopainter <= 60 s per clip at {args.clip_steps} steps with CFG on an H100")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
