"""Speed options for ``VideoPainterPipeline`` on GPU workers, all off by default (see ``docs/method.md``).

Each option changes how the models compute, not what the pipeline does. The caches (``pyramid_attention_broadcast``,
``taylorseer``) reuse or extrapolate attention outputs between steps and so change the output; fused QKV projections
and regional compilation only regroup arithmetic. Caching hooks keep per-step state; the pipeline clears it at the
start of every window. First-block cache and FasterCache are not offered: ``docs/method.md`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from diffusers.hooks import PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig
from diffusers.models.attention_processor import Attention, FusedCogVideoXAttnProcessor2_0

from videopainter.loaders import ID_LORA_ADAPTER_NAME
from videopainter.models.attention import VideoPainterIDResampleAttnProcessor


if TYPE_CHECKING:
    from videopainter.pipelines.pipeline_videopainter import VideoPainterPipeline

CacheMethod = Literal["none", "pyramid_attention_broadcast", "taylorseer"]
CACHE_METHODS: tuple[str, ...] = ("none", "pyramid_attention_broadcast", "taylorseer")
PAB_TIMESTEP_RANGE = (100, 800)
TAYLORSEER_WARMUP_STEPS = 3
TAYLORSEER_ATTENTION_PATTERN = r"transformer_blocks\.\d+\.attn1"


@dataclass(frozen=True)
class Acceleration:
    """Which speed options to apply (see the module docstring).

    Args:
        cache: the caching hook on the backbone's attention layers. ``"pyramid_attention_broadcast"``: inside the
            timestep range ``PAB_TIMESTEP_RANGE`` an attention output is recomputed only every `cache_interval` steps
            and reused in between. ``"taylorseer"``: after ``TAYLORSEER_WARMUP_STEPS`` full steps, attention outputs
            are computed every `cache_interval` steps and extrapolated (first-order Taylor) in between.
        cache_interval: attention is computed every `cache_interval` steps where the cache is active (>= 2).
        fuse_qkv: one `to_qkv` matrix product instead of three per attention layer, in the backbone and the context
            encoder. A loaded ID LoRA is merged into the base weights first (its scale is then fixed) and the separate
            projections are dropped, so the pipeline is then for inference only (not saved, not trained).
        compile_blocks: regional `torch.compile` of every `CogVideoXBlock` (one compiled graph reused by all blocks).
        compile_backend: the `torch.compile` backend (`"inductor"` on GPUs; `"eager"` only traces, for tests).
    """

    cache: CacheMethod = "none"
    cache_interval: int = 2
    fuse_qkv: bool = False
    compile_blocks: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.cache not in CACHE_METHODS:
            raise ValueError(f"`cache` must be one of {CACHE_METHODS}, got {self.cache!r}.")
        if self.cache_interval < 2:
            raise ValueError(f"`cache_interval` must be >= 2 (1 would cache nothing), got {self.cache_interval}.")

    @property
    def enabled(self) -> bool:
        return self.cache != "none" or self.fuse_qkv or self.compile_blocks

    def describe(self) -> str:
        """A short name, e.g. ``"pab/2+fused_qkv"`` (``"plain"`` when nothing is on)."""
        parts = []
        if self.cache != "none":
            parts.append(
                f"{'pab' if self.cache == 'pyramid_attention_broadcast' else 'taylorseer'}/{self.cache_interval}"
            )
        if self.fuse_qkv:
            parts.append("fused_qkv")
        if self.compile_blocks:
            parts.append(f"compiled[{self.compile_backend}]")
        return "+".join(parts) or "plain"


def _fuse_attention(model: torch.nn.Module, keep_processor: type | None) -> int:
    """Fuse the projections of every self-attention layer; set diffusers' fused CogVideoX processor unless the
    layer's processor is a `keep_processor` (which reads `to_qkv` itself). Returns the number of layers fused."""
    fused = 0
    for module in model.modules():
        if isinstance(module, Attention) and not module.is_cross_attention and not module.fused_projections:
            module.fuse_projections()
            # the separate projections are no longer read: drop them to free their memory (inference only)
            module.to_q = module.to_k = module.to_v = None
            if keep_processor is None or not isinstance(module.processor, keep_processor):
                module.set_processor(FusedCogVideoXAttnProcessor2_0())
            fused += 1
    return fused


def apply_acceleration(pipe: VideoPainterPipeline, acceleration: Acceleration) -> None:
    """Apply `acceleration` to `pipe`'s models, in place. Call once, after loading and moving the pipeline."""
    if getattr(pipe, "acceleration", None) is not None and pipe.acceleration.enabled:
        raise ValueError(f"this pipeline is already accelerated ({pipe.acceleration.describe()}); load a fresh one.")
    transformer, encoder = pipe.transformer, pipe.context_encoder
    if acceleration.fuse_qkv:
        if pipe.id_lora_scale is not None:
            transformer.fuse_lora(lora_scale=1.0, adapter_names=[ID_LORA_ADAPTER_NAME])
        _fuse_attention(transformer, VideoPainterIDResampleAttnProcessor)
        _fuse_attention(encoder, None)
    if acceleration.cache == "pyramid_attention_broadcast":
        transformer.enable_cache(
            PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=acceleration.cache_interval,
                spatial_attention_timestep_skip_range=PAB_TIMESTEP_RANGE,
                current_timestep_callback=lambda: pipe.current_timestep,
            )
        )
    elif acceleration.cache == "taylorseer":
        transformer.enable_cache(
            TaylorSeerCacheConfig(
                cache_interval=acceleration.cache_interval,
                disable_cache_before_step=TAYLORSEER_WARMUP_STEPS,
                taylor_factors_dtype=transformer.dtype,
                # diffusers' default patterns full-match names ending in "attn"; CogVideoX names them "attn1"
                cache_identifiers=[TAYLORSEER_ATTENTION_PATTERN],
            )
        )
    if acceleration.compile_blocks:
        for model in (transformer, encoder):
            model.compile_repeated_blocks(backend=acceleration.compile_backend)
    pipe.acceleration = acceleration
