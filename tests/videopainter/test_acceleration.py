"""Speed options on CPU: each runs, keeps shapes and determinism, and skips the work it claims (counted with forward
hooks on the attention layers). Tiny released-layout checkpoints with the ID LoRA, two windows, 6 steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videopainter.pipelines.acceleration import PAB_TIMESTEP_RANGE, TAYLORSEER_WARMUP_STEPS, Acceleration
from videopainter.pipelines.pipeline_videopainter import VideoPainterPipeline


CKPT = Path(__file__).resolve().parents[1] / "data" / "parity" / "ckpt"
STEPS = 6


def _pipe() -> VideoPainterPipeline:
    pipe = VideoPainterPipeline.from_pretrained(
        CKPT / "base", branch=CKPT / "branch", id_lora=CKPT / "id_lora", text_encoder=None, tokenizer=None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inputs() -> dict:
    data = torch.load(CKPT.parent / "inputs_two_windows.pt")
    return {
        "video": data["video"],
        "mask": data["mask"],
        "first_frame": data["first"],
        "prompt_embeds": data["prompt_embeds"],
        "negative_prompt_embeds": data["negative_prompt_embeds"],
        "num_frames_per_window": 9,
        "window_overlap": 1,
        "num_inference_steps": STEPS,
        "prev_clip_weight": 0.5,
        "output_type": "latent",
    }


def _run(pipe: VideoPainterPipeline, inputs: dict) -> torch.Tensor:
    return pipe(**inputs, generator=torch.Generator().manual_seed(0)).frames


def _count_attention(model: torch.nn.Module) -> list[int]:
    """Forward hooks on every block's attention output projection: how often each attention really runs."""
    counts = [0] * len(model.transformer_blocks)
    for index, block in enumerate(model.transformer_blocks):

        def hook(module, args, output, index=index):
            counts[index] += 1

        block.attn1.to_out[0].register_forward_hook(hook)
    return counts


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def plain(inputs) -> torch.Tensor:
    return _run(_pipe(), inputs)


def _schedule() -> list[int]:
    pipe = _pipe()
    pipe.scheduler.set_timesteps(STEPS)
    return [int(t) for t in pipe.scheduler.timesteps]


def test_plain_runs_every_attention_every_step(inputs, plain) -> None:
    pipe = _pipe()
    counts = _count_attention(pipe.transformer)
    out = _run(pipe, inputs)
    assert torch.equal(out, plain)
    assert counts == [2 * STEPS] * len(counts)  # 2 windows x 6 steps, CFG batched in one call


@pytest.mark.parametrize("interval", [2, 3])
def test_pyramid_attention_broadcast_skips_mid_range_steps(inputs, plain, interval: int) -> None:
    """Within (100, 800) an attention output is recomputed every `interval` steps; outside, every step."""
    pipe = _pipe()
    pipe.enable_acceleration(Acceleration(cache="pyramid_attention_broadcast", cache_interval=interval))
    counts = _count_attention(pipe.transformer)
    out = _run(pipe, inputs)
    low, high = PAB_TIMESTEP_RANGE
    computed = sum(1 for i, t in enumerate(_schedule()) if i == 0 or not low < t < high or i % interval == 0)
    assert 0 < computed < STEPS
    assert counts == [2 * computed] * len(counts)  # per window: the cache restarts with every window
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert torch.equal(out, _run(pipe, inputs))  # deterministic, no state carried over between calls
    assert 0 < _relative(out, plain) < 1.0


def test_taylorseer_extrapolates_between_computed_steps(inputs, plain) -> None:
    pipe = _pipe()
    pipe.enable_acceleration(Acceleration(cache="taylorseer", cache_interval=2))
    counts = _count_attention(pipe.transformer)
    out = _run(pipe, inputs)
    warm = TAYLORSEER_WARMUP_STEPS
    computed = sum(1 for i in range(STEPS) if i < warm or (i - warm - 1) % 2 == 0)
    assert 0 < computed < STEPS
    assert counts == [2 * computed] * len(counts)
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert torch.equal(out, _run(pipe, inputs))
    assert 0 < _relative(out, plain) < 1.0


def test_fused_qkv_is_one_product_with_the_lora_merged(inputs, plain) -> None:
    pipe = _pipe()
    pipe.enable_acceleration(Acceleration(fuse_qkv=True))
    for model in (pipe.transformer, pipe.context_encoder):
        for block in model.transformer_blocks:
            assert block.attn1.fused_projections and block.attn1.to_q is None and block.attn1.to_k is None
    calls = []
    for block in pipe.transformer.transformer_blocks:
        block.attn1.to_qkv.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    out = _run(pipe, inputs)
    # backbone: one fused product per block and step (plus none for the ID memory, read by a slice of its weights)
    assert len(calls) == 2 * STEPS * len(pipe.transformer.transformer_blocks)
    assert out.shape == plain.shape
    assert _relative(out, plain) < 1e-5  # the same arithmetic, regrouped
    with pytest.raises(ValueError, match="cannot be saved"):
        pipe.save_pretrained("/nonexistent")
    with pytest.raises(ValueError, match="already accelerated"):
        pipe.enable_acceleration(Acceleration(cache="taylorseer"))


def test_regional_compile_wraps_every_block(inputs, plain) -> None:
    pipe = _pipe()
    pipe.enable_acceleration(Acceleration(compile_blocks=True, compile_backend="eager"))
    for model in (pipe.transformer, pipe.context_encoder):
        assert all(block._compiled_call_impl is not None for block in model.transformer_blocks)
    out = _run(pipe, inputs)
    assert out.shape == plain.shape and _relative(out, plain) < 1e-5


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="cache"):
        Acceleration(cache="first_block")
    with pytest.raises(ValueError, match="cache_interval"):
        Acceleration(cache="taylorseer", cache_interval=1)
    assert Acceleration().describe() == "plain" and not Acceleration().enabled
    assert Acceleration(cache="pyramid_attention_broadcast", fuse_qkv=True).describe() == "pab/2+fused_qkv"
