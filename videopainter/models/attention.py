"""Inpainting-region ID resampling: extra keys/values from the masked region (see ``docs/method.md``).

``VideoPainterIDResampleAttnProcessor`` replaces ``CogVideoXAttnProcessor2_0`` on every backbone block. It has no
weights; the trainable part is the LoRA (r=256, alpha=128 on ``to_q``, ``to_k``, ``to_v``, ``to_out.0``) loaded by
the pipeline through diffusers' ``CogVideoXLoraLoaderMixin``. Per call it appends either the current window's masked
tokens (self-resample) or the previous window's (previous-clip mode) to the keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb


# The ID LoRA as trained. The released file stores no alpha, so diffusers' loader rebuilds it with
# alpha = r, i.e. scale 1.0; the published results were produced that way (reference §4).
ID_LORA_RANK = 256
ID_LORA_ALPHA = 128
ID_LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ID_LORA_RELEASE_SCALE = 1.0  # what reproduces the released outputs (the default)
ID_LORA_TRAINING_SCALE = ID_LORA_ALPHA / ID_LORA_RANK  # 0.5, the scale the adapter was trained at


@dataclass
class IDMemory:
    """The previous window's state read by the ID-resample processor .

    Args:
        block_hidden_states (`tuple` of `torch.Tensor`, each `(batch_size, text_seq_length + num_video_tokens,
            inner_dim)`): every backbone block's output at the previous window's last denoising step.
        token_mask (`torch.Tensor` of shape `(batch_size, num_video_tokens)`, bool): the previous window's token
            mask, True = masked.
    """

    block_hidden_states: tuple[torch.Tensor, ...]
    token_mask: torch.Tensor


def _sequence_mask(token_mask: torch.Tensor, text_seq_length: int, dtype: torch.dtype) -> torch.Tensor:
    """``(batch_size, num_video_tokens)`` bool -> ``(batch_size, text_seq_length + num_video_tokens, 1)`` 0/1,
    zero on the text tokens."""
    text = token_mask.new_zeros(token_mask.shape[0], text_seq_length)
    return torch.cat([text, token_mask], dim=1).to(dtype)[:, :, None]


class VideoPainterIDResampleAttnProcessor:
    """Joint text-video attention with masked-region K/V appended. Two modes, chosen per call:

    - **self-resample** (training, and inference with ``prev_clip_weight == 0`` or no memory yet): ``K_id = K * m`` and
      ``V_id = V * m`` over the *whole* sequence, with ``m`` = 0 for text tokens and unmasked video tokens. Zeroed rows
      are kept, not gathered out ("zero-row convention" of the release): ``norm_k`` turns a zero key into the
      LayerNorm bias, and RoPE is applied at the same positions as ``K``. The query attends over ``[K; K_id]`` and
      ``[V; V_id]``.
    - **previous-clip** (``prev_hidden_states`` given): the previous window's block output, already passed through
      this block's ``norm1`` at the current timestep, is projected with ``to_k``/``to_v``, multiplied by the previous
      window's token mask and by ``prev_clip_weight``, normalised with ``norm_k`` and rotated at the current
      positions, then appended. The current window's own masked tokens are not appended in this mode. ``norm_k``
      cancels the weight on keys, so in effect ``prev_clip_weight`` scales only the values.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        token_mask: torch.Tensor | None = None,
        prev_hidden_states: torch.Tensor | None = None,
        prev_token_mask: torch.Tensor | None = None,
        prev_clip_weight: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            attn: the block's `Attention` module (projections possibly wrapped by LoRA layers).
            hidden_states (`torch.Tensor` of shape `(batch_size, num_video_tokens, inner_dim)`): normed video tokens.
            encoder_hidden_states (`torch.Tensor` of shape `(batch_size, text_seq_length, inner_dim)`): normed text.
            attention_mask: not supported (CogVideoX uses none); must be None.
            image_rotary_emb (`tuple` of two `torch.Tensor` of shape `(num_video_tokens, attention_head_dim)`).
            token_mask (`torch.Tensor` of shape `(batch_size, num_video_tokens)`, bool): current masked tokens.
            prev_hidden_states (`torch.Tensor` of shape `(batch_size, text_seq_length + num_video_tokens,
                inner_dim)`, *optional*): the previous window's block output after this block's `norm1`.
            prev_token_mask (`torch.Tensor` of shape `(batch_size, num_video_tokens)`, bool): its token mask.
            prev_clip_weight: multiplies the previous window's projected keys and values.

        Returns:
            `(hidden_states, encoder_hidden_states)` of shapes `(batch_size, num_video_tokens, inner_dim)` and
            `(batch_size, text_seq_length, inner_dim)`.
        """
        if attention_mask is not None:
            raise ValueError("VideoPainterIDResampleAttnProcessor does not take an `attention_mask`.")
        if token_mask is None:
            raise ValueError("VideoPainterIDResampleAttnProcessor needs `token_mask` (True = masked video token).")
        if prev_hidden_states is not None and prev_token_mask is None:
            raise ValueError("`prev_hidden_states` needs `prev_token_mask`.")
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        heads = attn.heads

        def split_heads(tensor: torch.Tensor) -> torch.Tensor:
            # [batch_size, seq, heads * head_dim] -> [batch_size, heads, seq, head_dim]
            return tensor.view(batch_size, -1, heads, tensor.shape[-1] // heads).transpose(1, 2)

        def rotate_video(tensor: torch.Tensor) -> torch.Tensor:
            if image_rotary_emb is None:
                return tensor
            video = apply_rotary_emb(tensor[:, :, text_seq_length:], image_rotary_emb)
            return torch.cat([tensor[:, :, :text_seq_length], video], dim=2)

        fused = getattr(attn, "fused_projections", False)
        if fused:  # one [q; k; v] product (see videopainter.pipelines.acceleration)
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = attn.to_q(hidden_states)
            key = attn.to_k(hidden_states)
            value = attn.to_v(hidden_states)

        if prev_hidden_states is None:
            # self-resample: the current window's masked tokens, zero rows elsewhere
            resample_mask = _sequence_mask(token_mask, text_seq_length, key.dtype)
            extra_key = key * resample_mask
            extra_value = value * resample_mask
        else:
            # previous-clip: the previous window's masked tokens, weighted
            if prev_hidden_states.shape != hidden_states.shape:
                raise ValueError(
                    f"`prev_hidden_states` {tuple(prev_hidden_states.shape)} must match the current sequence "
                    f"{tuple(hidden_states.shape)}."
                )
            resample_mask = _sequence_mask(prev_token_mask, text_seq_length, key.dtype) * prev_clip_weight
            if fused:  # the key and value rows of the fused matrix only
                inner = key.shape[-1]
                bias = None if attn.to_qkv.bias is None else attn.to_qkv.bias[inner:]
                extra_key, extra_value = F.linear(prev_hidden_states, attn.to_qkv.weight[inner:], bias).chunk(2, -1)
            else:
                extra_key, extra_value = attn.to_k(prev_hidden_states), attn.to_v(prev_hidden_states)
            extra_key = extra_key * resample_mask
            extra_value = extra_value * resample_mask

        query, key, value = split_heads(query), split_heads(key), split_heads(value)
        extra_key, extra_value = split_heads(extra_key), split_heads(extra_value)
        # [batch_size, heads, text_seq_length + num_video_tokens, head_dim]

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
            extra_key = attn.norm_k(extra_key)
        query, key, extra_key = rotate_video(query), rotate_video(key), rotate_video(extra_key)

        key = torch.cat([key, extra_key], dim=2)
        value = torch.cat([value, extra_value], dim=2)
        # [batch_size, heads, 2 * sequence_length, head_dim]
        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, sequence_length, -1)
        # [batch_size, sequence_length, heads * head_dim]

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, sequence_length - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states
