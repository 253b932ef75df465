"""The CogVideoX backbone with VideoPainter's context injection and ID memory.

See ``docs/method.md``. ``VideoPainterTransformer3DModel`` is diffusers' ``CogVideoXTransformer3DModel`` (same
configuration, same weights and state-dict keys; the stock CogVideoX-5B-I2V ``transformer/`` folder loads
unchanged) whose ``forward`` additionally takes

- ``branch_block_samples``: the context encoder's outputs. Output ``i // ceil(num_layers / N)`` is added after
  block ``i``, only on video tokens whose 2x2 latent patch holds no masked pixel; text tokens never change.
- ``id_memory``: the previous window's per-block outputs, read by the ID-resample attention processor
  (``videopainter.models.attention``) when it is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from diffusers.utils import BaseOutput, apply_lora_scale

from videopainter.models.attention import IDMemory, VideoPainterIDResampleAttnProcessor


def latent_mask_to_token_mask(mask_latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Mark the video tokens whose ``patch_size x patch_size`` latent patch contains any masked latent pixel.

    A token is masked when the average-pooled mask is ``> 0`` (a ``> 0.5`` threshold would shrink the mask and leave
    artefacts). The flattening order is frame-major ``(t, h, w)``, as in ``CogVideoXPatchEmbed``.

    Args:
        mask_latents (`torch.Tensor` of shape `(batch_size, latent_frames, 1, latent_height, latent_width)`):
            the latent-resolution mask, 1 (or > 0) = masked.
        patch_size: the transformer's spatial patch size.

    Returns:
        `torch.Tensor` of shape `(batch_size, latent_frames * (latent_height // p) * (latent_width // p))`, bool,
        True = masked token.
    """
    if mask_latents.ndim != 5 or mask_latents.shape[2] != 1:
        raise ValueError(f"`mask_latents` must have shape (B, F, 1, H, W), got {tuple(mask_latents.shape)}.")
    batch_size, latent_frames, _, height, width = mask_latents.shape
    pooled = F.avg_pool2d(mask_latents.reshape(-1, 1, height, width).float(), kernel_size=patch_size)
    # [batch_size * latent_frames, 1, height // p, width // p]
    return (pooled > 0).reshape(batch_size, latent_frames * pooled.shape[-2] * pooled.shape[-1])


@dataclass
class VideoPainterTransformerOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, latent_frames, out_channels, latent_height, latent_width)`):
            the backbone prediction.
        block_hidden_states (`tuple` of `torch.Tensor`, each `(batch_size, text_seq_length + num_video_tokens,
            inner_dim)`, *optional*): every block's output ([text; video], after injection), returned when
            `return_block_hidden_states=True`; the next window's ID memory.
    """

    sample: torch.Tensor
    block_hidden_states: tuple[torch.Tensor, ...] | None = None


def hold_pos_embedding_in_model_dtype(model: torch.nn.Module) -> None:
    """Cast ``model.patch_embed.pos_embedding`` to the dtype of the model's parameters, in place.

    diffusers builds the sin-cos table in float64 and a load without a dtype cast keeps it so, at 8 bytes per value
    (its full-size footprint: ``docs/method.md``, "Memory").
    """
    patch_embed = getattr(model, "patch_embed", None)
    table = getattr(patch_embed, "pos_embedding", None)
    if table is None:
        return
    dtype = next(model.parameters()).dtype
    if table.dtype != dtype:
        patch_embed.pos_embedding = table.to(dtype)


class VideoPainterTransformer3DModel(CogVideoXTransformer3DModel):
    """CogVideoX with explicit context injection (see the module docstring). The config is the parent's."""

    _repeated_blocks = ["CogVideoXBlock"]  # regional torch.compile (`compile_repeated_blocks`)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> VideoPainterTransformer3DModel:
        """`ModelMixin.from_pretrained`, then the positional table in the model dtype."""
        model = super().from_pretrained(*args, **kwargs)
        hold_pos_embedding_in_model_dtype(model)
        return model

    def set_id_resample(self, enabled: bool = True) -> None:
        """Install the ID-resample attention processor on every block (or restore the stock one)."""
        if enabled:
            self.set_attn_processor(VideoPainterIDResampleAttnProcessor())
        else:
            self.set_default_attn_processor()

    def set_default_attn_processor(self) -> None:
        from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

        self.set_attn_processor(CogVideoXAttnProcessor2_0())

    @property
    def id_resample_enabled(self) -> bool:
        return all(isinstance(p, VideoPainterIDResampleAttnProcessor) for p in self.attn_processors.values())

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: int | float | torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
        ofs: int | float | torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        branch_block_samples: tuple[torch.Tensor, ...] | list[torch.Tensor] | None = None,
        branch_token_mask: torch.Tensor | None = None,
        id_memory: IDMemory | None = None,
        prev_clip_weight: float = 0.0,
        return_block_hidden_states: bool = False,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> VideoPainterTransformerOutput | tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, latent_frames, in_channels, latent_height,
                latent_width)`): noisy latent concatenated with the image latent on channels.
            encoder_hidden_states (`torch.Tensor` of shape `(batch_size, text_seq_length, text_embed_dim)`).
            timestep (`torch.Tensor` of shape `(batch_size,)`).
            timestep_cond, ofs, image_rotary_emb: as in `CogVideoXTransformer3DModel`.
            branch_block_samples (`tuple` of N `torch.Tensor` of shape `(batch_size, num_video_tokens, inner_dim)`):
                the context encoder's outputs; N must divide into the layers as `ceil(num_layers / N)` groups.
            branch_token_mask (`torch.Tensor` of shape `(batch_size, num_video_tokens)`, bool): True = masked
                token (see `latent_mask_to_token_mask`). The branch is added only where it is False; None adds it
                to every video token (the reference's `mask_add=False`). Also the ID processor's resample mask.
            id_memory (`IDMemory`, *optional*): the previous window's block outputs and token mask; used by the
                ID-resample processor when `prev_clip_weight > 0`.
            prev_clip_weight: weight of the previous window's masked tokens; 0 = self-resample.
            return_block_hidden_states: also return every block's output (the next window's ID memory).
            attention_kwargs: passed to the processors; `scale` sets the LoRA scale.
            return_dict: return a `VideoPainterTransformerOutput` instead of `(sample, block_hidden_states)`.
        """
        batch_size, num_frames, _, height, width = hidden_states.shape
        p = self.config.patch_size
        num_video_tokens = num_frames * (height // p) * (width // p)
        if self.config.patch_size_t is not None:
            raise ValueError("VideoPainter supports CogVideoX 1.0 transformers (`patch_size_t=None`) only.")
        if branch_block_samples is not None:
            for k, sample in enumerate(branch_block_samples):
                if sample.shape[:2] != (batch_size, num_video_tokens):
                    raise ValueError(
                        f"`branch_block_samples[{k}]` has shape {tuple(sample.shape)}; expected "
                        f"({batch_size}, {num_video_tokens}, inner_dim)."
                    )
            interval = math.ceil(len(self.transformer_blocks) / len(branch_block_samples))
        if branch_token_mask is not None and branch_token_mask.shape != (batch_size, num_video_tokens):
            raise ValueError(
                f"`branch_token_mask` has shape {tuple(branch_token_mask.shape)}; expected "
                f"({batch_size}, {num_video_tokens})."
            )
        id_resample = self.id_resample_enabled
        if id_resample and branch_token_mask is None:
            raise ValueError("the ID-resample processor needs `branch_token_mask` (its resample mask).")
        use_memory = id_resample and id_memory is not None and prev_clip_weight > 0
        if use_memory and len(id_memory.block_hidden_states) != len(self.transformer_blocks):
            raise ValueError(
                f"`id_memory` holds {len(id_memory.block_hidden_states)} blocks; the model has "
                f"{len(self.transformer_blocks)}."
            )

        # 1. Time embedding
        t_emb = self.time_proj(timestep).to(dtype=hidden_states.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        if self.ofs_embedding is not None:
            emb = emb + self.ofs_embedding(self.ofs_proj(ofs).to(dtype=hidden_states.dtype))

        # 2. Patch embedding
        tokens = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
        text_seq_length = encoder_hidden_states.shape[1]
        # contiguous, like every later block's input: one memory layout for all blocks (regional compile reuses
        # one graph for all of them only when their inputs agree in strides)
        encoder_hidden_states = tokens[:, :text_seq_length].contiguous()  # [batch_size, text_seq_length, inner_dim]
        hidden_states = tokens[:, text_seq_length:].contiguous()  # [batch_size, num_video_tokens, inner_dim]
        if branch_block_samples is not None and branch_token_mask is not None:
            # zero the encoder outputs on masked tokens once per group instead of selecting after every block
            background = (~branch_token_mask)[:, :, None].to(hidden_states.dtype)  # [batch_size, num_video_tokens, 1]
            branch_block_samples = [sample * background for sample in branch_block_samples]

        # 3. Transformer blocks
        block_hidden_states = []
        for i, block in enumerate(self.transformer_blocks):
            block_attention_kwargs = dict(attention_kwargs or {})
            if id_resample:
                block_attention_kwargs["token_mask"] = branch_token_mask
                if use_memory:
                    block_attention_kwargs.update(self._prev_clip_kwargs(block, id_memory, i, emb, prev_clip_weight))
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, emb, image_rotary_emb, block_attention_kwargs
                )
            else:
                hidden_states, encoder_hidden_states = block(
                    hidden_states=hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    temb=emb,
                    image_rotary_emb=image_rotary_emb,
                    attention_kwargs=block_attention_kwargs,
                )

            # Context injection: block i takes encoder output i // interval (group-wise); the outputs were zeroed
            # on masked tokens above, so only background tokens change. Text tokens are never touched.
            if branch_block_samples is not None:
                hidden_states = hidden_states + branch_block_samples[i // interval]

            if return_block_hidden_states:
                block_hidden_states.append(torch.cat([encoder_hidden_states, hidden_states], dim=1))

        hidden_states = self.norm_final(hidden_states)

        # 4. Output head
        hidden_states = self.norm_out(hidden_states, temb=emb)
        hidden_states = self.proj_out(hidden_states)  # [batch_size, num_video_tokens, p * p * out_channels]

        # 5. Unpatchify
        output = hidden_states.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
        # [batch_size, num_frames, height // p, width // p, out_channels, p, p]
        output = output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        # [batch_size, num_frames, out_channels, height, width]

        block_hidden_states = tuple(block_hidden_states) if return_block_hidden_states else None
        if not return_dict:
            return (output, block_hidden_states)
        return VideoPainterTransformerOutput(sample=output, block_hidden_states=block_hidden_states)

    @staticmethod
    def _prev_clip_kwargs(
        block: torch.nn.Module, id_memory: IDMemory, index: int, emb: torch.Tensor, prev_clip_weight: float
    ) -> dict[str, Any]:
        """The previous window's block ``index`` output, through this block's ``norm1`` at the current timestep."""
        prev = id_memory.block_hidden_states[index]  # [batch_size, text_seq_length + num_video_tokens, inner_dim]
        text_seq_length = prev.shape[1] - id_memory.token_mask.shape[1]
        norm_prev_video, norm_prev_text, _, _ = block.norm1(prev[:, text_seq_length:], prev[:, :text_seq_length], emb)
        return {
            "prev_hidden_states": torch.cat([norm_prev_text, norm_prev_video], dim=1),
            "prev_token_mask": id_memory.token_mask,
            "prev_clip_weight": prev_clip_weight,
        }
