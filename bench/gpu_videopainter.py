"""VideoPainter at full size on one CUDA GPU: step time, projected clip time, peak memory and speed options.

Builds the real architecture (CogVideoX-5B-I2V transformer and the 2-block context encoder) with random weights in
bf16. Part 1 times single denoising steps of the backbone alone, VideoPainter, and VideoPainter with the ID adapter in
both modes; part 2 denoises one window per speed-option set and reports s/step, projected s/clip, peak memory and
the error of its latents against the plain run (docs/method.md, "Benchmarks of the model code"). Goal: <= 45 s per
49-frame clip on an H100-class GPU with an option set whose error is reported. Without CUDA it exits 2.

Usage: ``python bench/gpu_videopainter.py [--json] [--steps 3] [--window-steps 20] [--no-vae] [--no-id]
[--no-options] [--options-only] [--tiny]``. With ``--json`` the last line is one JSON object of the figures.
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
    parser.add_argument("--steps", type=int, default=3, help="timed steps per part-1 configuration (after 1 warm-up)")
    parser.add_argument("--clip-steps", type=int, default=50, help="steps of a clip for the projection")
    parser.add_argument("--window-steps", type=int, default=20, help="steps of the window each option set denoises")
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE timing")
    parser.add_argument("--no-id", action="store_true", help="skip the ID adapter")
    parser.add_argument("--no-options", action="store_true", help="skip part 2 (speed options)")
    parser.add_argument("--options-only", action="store_true", help="skip part 1 (single steps)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; eager with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a tiny configuration on the CPU, to check the script")
    args = parser.parse_args()

    import torch

    if args.tiny:
        args.compile_backend = args.compile_backend or "eager"
        figures = run(args, torch.device("cpu"), torch.float32, TINY)
    elif not torch.cuda.is_available():
        print("bench/gpu_videopainter.py needs a CUDA GPU; none is available here. Nothing was measured.")
        sys.exit(2)
    else:
        args.compile_backend = args.compile_backend or "inductor"
        torch.backends.cuda.matmul.allow_tf32 = True
        figures = run(args, torch.device("cuda"), torch.bfloat16, COGVIDEOX_5B_I2V)
    if args.json:
        print(json.dumps(figures))


def build_models(device, dtype, config: dict, id_adapter: bool):
    """The backbone (with a random ID LoRA when `id_adapter`) and the 2-block context encoder, random, in `dtype`."""
    import torch

    from videopainter.loaders import ID_LORA_ADAPTER_NAME
    from videopainter.models.context_encoder import VideoPainterContextEncoder
    from videopainter.models.transformer import VideoPainterTransformer3DModel

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
    if id_adapter:
        from peft import LoraConfig

        transformer.add_adapter(
            LoraConfig(r=256, lora_alpha=256, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
            adapter_name=ID_LORA_ADAPTER_NAME,
        )
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:  # a "trained" adapter: non-zero up-projection
                torch.nn.init.normal_(parameter, std=0.002)
        transformer.to(dtype)
    return transformer, encoder


def run(args: argparse.Namespace, device, dtype, config: dict) -> dict:
    import torch

    cuda = device.type == "cuda"
    device_name = torch.cuda.get_device_name() if cuda else "cpu (--tiny)"
    figures: dict = {"device": device_name, "steps": args.steps, "window_steps": args.window_steps}
    rows: dict[str, dict] = {}
    if not args.options_only:
        rows = run_steps(args, device, dtype, config, device_name)
    vae_s = 0.0 if args.no_vae else time_vae(device, dtype, config)
    figures["vae_s"] = round(vae_s, 3)
    if rows:
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
    if not args.no_options:
        figures.update(run_options(args, device, dtype, config, vae_s))
    return figures


def run_steps(args: argparse.Namespace, device, dtype, config: dict, device_name: str) -> dict[str, dict]:
    """Part 1: single denoising steps of each configuration."""
    import torch
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    from videopainter.models.attention import IDMemory
    from videopainter.models.transformer import latent_mask_to_token_mask

    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    started = time.perf_counter()
    transformer, encoder = build_models(device, dtype, config, id_adapter=False)
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
    return rows


def time_vae(device, dtype, config: dict) -> float:
    """Seconds for what a clip needs from the VAE: encode source and masked video, encode the first frame, decode."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    cuda = device.type == "cuda"
    with device:
        vae = AutoencoderKLCogVideoX(**({} if cuda else TINY_VAE)).to(dtype).eval()
    vae.enable_tiling()
    pixels = (config["sample_frames"], 8 * config["sample_height"], 8 * config["sample_width"])
    video = torch.rand(1, 3, *pixels, device=device, dtype=dtype) * 2 - 1
    with torch.no_grad():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        encoded = vae.encode(video).latent_dist.sample()  # source video
        vae.encode(video).latent_dist.sample()  # masked video (the context encoder's input)
        vae.encode(video[:, :, :1])  # first frame
        vae.decode(encoded)
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"  {'VAE 2 encodes + first frame + decode':<34}{seconds:>8.2f} s per clip")
    del vae
    if cuda:
        torch.cuda.empty_cache()
    return seconds


OPTION_SETS = {  # name: Acceleration keywords
    "plain": {},
    "pab/2": {"cache": "pyramid_attention_broadcast", "cache_interval": 2},
    "pab/3": {"cache": "pyramid_attention_broadcast", "cache_interval": 3},
    "taylorseer/2": {"cache": "taylorseer", "cache_interval": 2},
    "taylorseer/3": {"cache": "taylorseer", "cache_interval": 3},
    "fused_qkv": {"fuse_qkv": True},
    "compile": {"compile_blocks": True},
    "fused+compile": {"fuse_qkv": True, "compile_blocks": True},
    "pab/2+fused+compile": {"cache": "pyramid_attention_broadcast", "fuse_qkv": True, "compile_blocks": True},
    "taylorseer/2+fused+compile": {"cache": "taylorseer", "fuse_qkv": True, "compile_blocks": True},
}


def run_options(args: argparse.Namespace, device, dtype, config: dict, vae_s: float) -> dict:
    """Part 2: one window denoised by the pipeline's loop per option set, on copies of the same weights."""
    import copy

    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler

    from videopainter.pipelines.acceleration import Acceleration
    from videopainter.pipelines.pipeline_videopainter import VideoPainterPipeline, _Window

    cuda = device.type == "cuda"
    id_adapter = not args.no_id
    cpu = torch.device("cpu")
    transformer, encoder = build_models(cpu, dtype, config, id_adapter)  # the master copy stays on the CPU
    with cpu:
        vae = AutoencoderKLCogVideoX(**TINY_VAE).eval()  # unused by the loop; the pipeline needs one

    frames = (config["sample_frames"] - 1) // 4 + 1
    height, width, channels = config["sample_height"], config["sample_width"], config["out_channels"]
    text_length, text_dim = config["max_text_seq_length"], config["text_embed_dim"]
    generator = torch.Generator().manual_seed(0)
    shape = (1, frames, channels, height, width)
    mask_latents = torch.zeros(1, frames, 1, height, width)
    mask_latents[:, 1:, :, height // 4 : 2 * height // 3, width // 3 : 2 * width // 3] = 1
    source = torch.randn(shape, generator=generator)
    window = _Window(
        source_latents=source.to(device, dtype),
        masked_video_latents=(source * (1 - mask_latents)).to(device, dtype),
        mask_latents=mask_latents.to(device, dtype),
        image_latents=torch.cat([source[:, :1], torch.zeros_like(source[:, 1:])], dim=1).to(device, dtype),
        noise=torch.randn(shape, generator=generator).to(device, dtype),
    )
    text = torch.randn(2, text_length, text_dim, generator=generator).to(device, dtype)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    results: dict[str, dict] = {}
    reference = None
    print(f"\nspeed options: one window, {args.window_steps} steps, CFG, replace-gt, ID adapter: {id_adapter}")
    for name, options in OPTION_SETS.items():
        acceleration = Acceleration(**options, compile_backend=args.compile_backend)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        pipe = VideoPainterPipeline(
            None,
            None,
            vae,
            copy.deepcopy(transformer).to(device),
            copy.deepcopy(encoder).to(device),
            CogVideoXDPMScheduler(timestep_spacing="trailing", prediction_type="v_prediction"),
        )
        pipe.set_progress_bar_config(disable=True)
        if id_adapter:
            pipe.transformer.set_id_resample(True)
            pipe.id_lora_scale = 1.0
        if acceleration.enabled:
            pipe.enable_acceleration(acceleration)
        rope = pipe._prepare_rotary_positional_embeddings(8 * height, 8 * width, frames, device)

        def denoise(steps: int) -> torch.Tensor:
            pipe.scheduler.set_timesteps(steps, device=device)
            with pipe.progress_bar(total=steps) as bar:
                latents, _ = pipe._denoise_window(
                    window, text, rope, pipe.scheduler.timesteps, 6.0, True, 1.0, True, False, None, 0.0, False,
                    False, torch.Generator(device).manual_seed(1), None, None, ["latents"], bar,
                )  # fmt: skip
            return latents

        with torch.no_grad():
            denoise(2)  # warm-up: compilation and first-call costs stay out of the timing
            sync()
            start = time.perf_counter()
            latents = denoise(args.window_steps).float().cpu()
            sync()
        seconds = (time.perf_counter() - start) / args.window_steps
        if reference is None:
            reference = latents
        diff = latents - reference
        results[name] = {
            "s_per_step": seconds,
            "s_per_clip": args.clip_steps * seconds + vae_s,
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "rel_max": (diff.abs().max() / reference.abs().max()).item(),
            "rel_l2": (diff.norm() / reference.norm()).item(),
        }
        print(f"  {name:<28}{seconds:>8.3f} s/step", flush=True)
        pipe = None  # free this row's models before the next row measures its peak
    plain = results["plain"]
    print(f"\n{'option set':<28}{'s/step':>8}{'s/clip':>9}{'peak GB':>9}{'speed-up':>10}{'rel max':>10}{'rel L2':>10}")
    figures = {}
    for name, row in results.items():
        speedup = plain["s_per_step"] / row["s_per_step"]
        print(
            f"{name:<28}{row['s_per_step']:>8.3f}{row['s_per_clip']:>9.1f}{row['peak_gb']:>9.1f}{speedup:>9.2f}x"
            f"{row['rel_max']:>10.2e}{row['rel_l2']:>10.2e}"
        )
        key = "opt_" + name.replace("/", "_").replace("+", "_")
        figures.update(
            {
                f"{key}_s_per_step": round(row["s_per_step"], 4),
                f"{key}_s_per_clip": round(row["s_per_clip"], 2),
                f"{key}_peak_gb": round(row["peak_gb"], 2),
                f"{key}_speedup": round(speedup, 3),
                f"{key}_rel_max": float(f"{row['rel_max']:.3e}"),
                f"{key}_rel_l2": float(f"{row['rel_l2']:.3e}"),
            }
        )
    print(f"goal: <= 45 s per clip at {args.clip_steps} steps on an H100-class GPU, with the error reported")
    return figures


if __name__ == "__main__":
    main()
