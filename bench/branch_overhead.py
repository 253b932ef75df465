"""Context-encoder overhead: one denoising step with and without VideoPainter's encoder (CPU, reduced width).

The depth ratio is the paper's (2 encoder blocks next to a 42-block backbone); width, tokens and text length are
reduced so a step (one CFG batch of 2) runs on a CPU. "without" = the backbone alone; "with" = the encoder forward
plus the backbone with the token-selective add. Steps are interleaved, timed in process CPU time (one intra-op
thread) and the median of ``--repeats`` is taken. Target: ratio <= 1.06.

Usage: ``python bench/branch_overhead.py [--json] [--heads 6] [--head-dim 64] [--latent 16] [--frames 4]``. With
``--json`` the last line is ``{"ratio": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64, help="multiple of 16 (3-D RoPE)")
    parser.add_argument("--latent", type=int, default=16, help="latent height = width")
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--text", type=int, default=32, help="text tokens")
    parser.add_argument("--layers", type=int, default=42)
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    from videopainter.models.context_encoder import VideoPainterContextEncoder
    from videopainter.models.transformer import VideoPainterTransformer3DModel, latent_mask_to_token_mask

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    latent_channels = 16
    transformer = VideoPainterTransformer3DModel(
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        in_channels=2 * latent_channels,
        out_channels=latent_channels,
        time_embed_dim=128,
        text_embed_dim=128,
        num_layers=args.layers,
        sample_width=args.latent,
        sample_height=args.latent,
        sample_frames=4 * (args.frames - 1) + 1,
        max_text_seq_length=args.text,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ).eval()
    encoder = VideoPainterContextEncoder.from_transformer(transformer, num_layers=args.encoder_layers).eval()
    for linear in encoder.branch_blocks:  # a trained encoder: non-zero bridges (cost is the same either way)
        torch.nn.init.normal_(linear.weight, std=0.02)

    batch, grid = 2, args.latent // 2
    latents = torch.randn(batch, args.frames, latent_channels, args.latent, args.latent)
    image_latents = torch.randn_like(latents)
    branch_cond = torch.cat(
        [torch.randn_like(latents), torch.zeros(batch, args.frames, 1, args.latent, args.latent)], 2
    )
    branch_cond[:, :, -1, 4:10, 4:10] = 1
    text = torch.randn(batch, args.text, 128)
    timestep = torch.tensor([500, 500])
    rope = get_3d_rotary_pos_embed(args.head_dim, ((0, 0), (grid, grid)), (grid, grid), args.frames)
    token_mask = latent_mask_to_token_mask(branch_cond[:, :, -1:], 2)

    def backbone_step() -> None:
        transformer(torch.cat([latents, image_latents], 2), text, timestep, image_rotary_emb=rope, return_dict=False)

    def videopainter_step() -> None:
        samples = encoder(latents, text, branch_cond, timestep, image_rotary_emb=rope, return_dict=False)[0]
        transformer(
            torch.cat([latents, image_latents], 2),
            text,
            timestep,
            image_rotary_emb=rope,
            branch_block_samples=samples,
            branch_token_mask=token_mask,
            return_dict=False,
        )

    cpu: dict[str, list[float]] = {"backbone": [], "videopainter": []}
    wall: dict[str, list[float]] = {"backbone": [], "videopainter": []}
    with torch.no_grad():
        backbone_step(), videopainter_step()  # warm-up
        for _ in range(args.repeats):
            for name, step in (("backbone", backbone_step), ("videopainter", videopainter_step)):
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                step()
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
    backbone = statistics.median(cpu["backbone"])
    videopainter = statistics.median(cpu["videopainter"])
    ratio = videopainter / backbone
    params = {
        "backbone_params": sum(p.numel() for p in transformer.parameters()),
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
    }
    print(f"{'step (CFG batch 2)':<28}{'cpu s':>10}{'wall s':>10}")
    print(f"{'backbone alone':<28}{backbone:>10.4f}{statistics.median(wall['backbone']):>10.4f}")
    print(f"{'backbone + context encoder':<28}{videopainter:>10.4f}{statistics.median(wall['videopainter']):>10.4f}")
    print(
        f"ratio {ratio:.3f} (target <= 1.06); depth {args.encoder_layers}:{args.layers}, width "
        f"{args.heads * args.head_dim}, {args.frames * grid * grid} video + {args.text} text tokens; encoder has "
        f"{params['encoder_params'] / params['backbone_params']:.1%} of the backbone's parameters"
    )
    if args.json:
        print(json.dumps({"ratio": round(ratio, 4), "backbone_s": backbone, "videopainter_s": videopainter, **params}))


if __name__ == "__main__":
    main()
