"""Any-length chaining cost: per-frame time and peak memory of 4 windows against 1 (CPU, small random model).

``VideoPainterPipeline`` with windows of ``--window`` frames overlapping by ``--overlap`` frames; each configuration
runs in its own child process after a one-window warm-up and reports process CPU time per output frame and the peak
resident memory of the call above the memory just before it, with and without the ID adapter. Targets: per-frame
time ratio <= 1.10 and memory ratio <= 1.25 (docs/method.md, "Benchmarks of the model code").

Usage: ``python bench/any_length.py [--json] [--window 17] [--overlap 0] [--size 128] [--steps 3]``. With ``--json``
the last line is ``{"time_ratio": ..., "mem_ratio": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import psutil
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler

    from videopainter.models.context_encoder import VideoPainterContextEncoder
    from videopainter.models.transformer import VideoPainterTransformer3DModel
    from videopainter.pipelines.pipeline_videopainter import VideoPainterPipeline

    torch.set_num_threads(1)
    torch.manual_seed(0)
    latent, text_length = args.size // 8, 16
    transformer = VideoPainterTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=8,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=32,
        num_layers=6,
        sample_width=latent,
        sample_height=latent,
        sample_frames=args.window,
        max_text_seq_length=text_length,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ).eval()
    encoder = VideoPainterContextEncoder.from_transformer(transformer, num_layers=2).eval()
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
    ).eval()
    scheduler = CogVideoXDPMScheduler(timestep_spacing="trailing")
    pipe = VideoPainterPipeline(None, None, vae, transformer, encoder, scheduler)
    pipe.set_progress_bar_config(disable=True)
    prev_clip_weight = 0.0
    if args.id:
        lora = {}
        for i in range(6):
            for name in ("to_q", "to_k", "to_v", "to_out.0"):
                prefix = f"transformer.transformer_blocks.{i}.attn1.{name}"
                lora[f"{prefix}.lora_A.weight"] = torch.randn(8, 64) * 0.02
                lora[f"{prefix}.lora_B.weight"] = torch.randn(64, 8) * 0.02
        pipe.load_id_lora(lora)
        prev_clip_weight = 0.5

    num_frames = args.window + (args.windows - 1) * (args.window - args.overlap)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(num_frames, args.size, args.size, 3), dtype=np.uint8)
    mask = np.zeros(video.shape[:3], dtype=bool)
    mask[:, args.size // 4 : args.size // 2, args.size // 4 : args.size // 2] = True
    embeds = torch.randn(1, text_length, 32)
    kwargs = {
        "video": video,
        "mask": mask,
        "first_frame": video[0],
        "prompt_embeds": embeds,
        "negative_prompt_embeds": torch.zeros_like(embeds),
        "num_frames_per_window": args.window,
        "num_inference_steps": args.steps,
        "window_overlap": args.overlap,
        "dilation_radius": 4,
        "prev_clip_weight": prev_clip_weight,
        "generator": torch.Generator().manual_seed(0),
    }
    warm_up = dict(kwargs, video=video[: args.window], mask=mask[: args.window], num_inference_steps=1)
    pipe(**warm_up)  # one-time costs (lazy imports, kernel set-up) stay out of the measurement
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peaks = {"now": 0}
    done = threading.Event()

    def sample() -> None:  # resident memory every 2 ms (ru_maxrss would also count the warm-up)
        while not done.is_set():
            peaks["now"] = max(peaks["now"], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.process_time()
    with torch.no_grad():
        latents = pipe(**kwargs, output_type="latent").frames  # windows, accumulator, ID memory
        denoise_peak = (peaks["now"] - rss_before) / 2**20
        offsets, _ = pipe.latent_layout(num_frames, args.window, args.overlap)
        if args.overlap == 0:  # windows side by side: each decoded on its own, as the pipeline does
            size = (args.window - 1) // 4 + 1
            decoded = torch.cat([pipe.decode_latents(latents[:, o : o + size]) for o in offsets], dim=2)
        else:
            decoded = pipe.decode_latents(latents)
        frames = pipe.video_processor.postprocess_video(decoded, output_type="np")[0]
    cpu = time.process_time() - start
    done.set()
    sampler.join()
    assert frames.shape[0] == num_frames
    peak = (peaks["now"] - rss_before) / 2**20
    print(json.dumps({"frames": num_frames, "cpu_s": cpu, "denoise_peak_mb": denoise_peak, "peak_mb": peak}))


def run_child(args: argparse.Namespace, windows: int, id_adapter: bool) -> dict:
    command = [sys.executable, __file__, "--child", "--windows", str(windows), "--window", str(args.window)]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--overlap", str(args.overlap)]
    command += ["--id"] if id_adapter else []
    # glibc: serve tensors >= 64 KiB with mmap so freed memory leaves the resident set at once
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--window", type=int, default=17, help="frames per window, 4k + 1")
    parser.add_argument("--overlap", type=int, default=0, help="frames shared by windows: 0 or 4m + 1")
    parser.add_argument("--size", type=int, default=128, help="frame height = width, multiple of 16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-id", action="store_true", help="skip the ID-adapter rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--windows", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--id", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    figures: dict[str, float] = {}
    print(f"{'configuration':<22}{'frames':>8}{'cpu s':>9}{'s/frame':>10}{'denoise MB':>12}{'total MB':>10}")
    for label, id_adapter in (("", False),) + (() if args.no_id else (("id_", True),)):
        one, four = run_child(args, 1, id_adapter), run_child(args, 4, id_adapter)
        for windows, row in ((1, one), (4, four)):
            name = f"{windows} window{'s' if windows > 1 else ''}{' + ID' if id_adapter else ''}"
            per_frame = row["cpu_s"] / row["frames"]
            print(
                f"{name:<22}{row['frames']:>8}{row['cpu_s']:>9.2f}{per_frame:>10.4f}"
                f"{row['denoise_peak_mb']:>12.1f}{row['peak_mb']:>10.1f}"
            )
        figures[f"{label}time_ratio"] = (four["cpu_s"] / four["frames"]) / (one["cpu_s"] / one["frames"])
        figures[f"{label}mem_ratio"] = four["peak_mb"] / one["peak_mb"]
        figures[f"{label}denoise_mem_ratio"] = four["denoise_peak_mb"] / one["denoise_peak_mb"]
    print(
        f"time_ratio {figures['time_ratio']:.3f} (target <= 1.10), mem_ratio {figures['mem_ratio']:.3f} (target "
        f"<= 1.25; denoising only {figures['denoise_mem_ratio']:.3f})"
        + ("" if args.no_id else f"; with ID: {figures['id_time_ratio']:.3f}, {figures['id_mem_ratio']:.3f}")
    )
    if args.json:
        print(json.dumps({key: round(value, 4) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
