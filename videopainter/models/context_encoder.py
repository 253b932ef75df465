"""The VideoPainter context encoder: two CogVideoX blocks that read the masked video and feed the backbone.

See ``docs/method.md``. The encoder is a shallow copy of the backbone's first ``num_layers`` DiT blocks. It reads the
noisy video latent together with the masked-video latent and the latent-resolution mask (``2 * out_channels + 1``
= 33 channels for CogVideoX-5B-I2V) and returns one feature map per block, each passed through a zero-initialised
linear layer so that, before training, the backbone output is unchanged.

The module and parameter names follow the released ``branch/`` checkpoint exactly (the 71 keys are listed in
``tests/videopainter/data/branch_state_dict_keys.txt``), so ``from_pretrained`` loads it with no missing or
unexpected keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNorm
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock, CogVideoXTransformer3DModel
from diffusers.utils import BaseOutput, apply_lora_scale
from torch import nn

from videopainter.models.transformer import hold_pos_embedding_in_model_dtype


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (the ControlNet bridge initialisation)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


@dataclass
class ContextEncoderOutput(BaseOutput):
    """
    Args:
        branch_block_samples (`tuple` of `torch.Tensor`, each of shape `(batch_size, num_video_tokens, inner_dim)`):
            One feature map per encoder block, after its zero-initialised linear layer and multiplied by
            `conditioning_scale`. `num_video_tokens = latent_frames * (latent_height // p) * (latent_width // p)`.
    """

    branch_block_samples: tuple[torch.Tensor, ...]


class VideoPainterContextEncoder(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """The context encoder (the reference calls it ``CogvideoXBranchModel``).

    The configuration is the backbone's, with ``num_layers`` = encoder depth. Notes on the released config:

    - ``in_channels`` is the *backbone's* input width (32 for I2V: noisy + image latent). The encoder's patch
      convolution reads ``2 * out_channels + 1`` channels instead (noisy latent, masked-video latent, mask: 33).
      ``in_channels`` only sets the width of the unused ``branch_x_embedder``.
    - ``wo_text`` (a text-free ablation of the reference) and ``id_pool_resample_learnable`` (a backbone switch
      that the reference branch inherited in its signature) are accepted so the released ``config.json`` loads and
      round-trips. This implementation supports only their released value, ``False``; ``True`` raises.
    - ``branch_x_embedder``, ``norm_final``, ``norm_out`` and ``proj_out`` are never used by ``forward``. They exist
      only because the released checkpoint stores them (10 tensors); declaring them lets the checkpoint load
      strictly, so a renamed or missing tensor is an error rather than silently ignored.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["CogVideoXBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]
    _repeated_blocks = ["CogVideoXBlock"]  # regional torch.compile (`compile_repeated_blocks`)

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 48,
        attention_head_dim: int = 64,
        in_channels: int = 32,
        out_channels: int = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        text_embed_dim: int = 4096,
        num_layers: int = 2,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 49,
        patch_size: int = 2,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = True,
        use_learned_positional_embeddings: bool = True,
        wo_text: bool = False,
        id_pool_resample_learnable: bool = False,
    ):
        super().__init__()
        if wo_text:
            raise ValueError("`wo_text=True` (the reference's text-free ablation) is not supported; use False.")
        if id_pool_resample_learnable:
            raise ValueError(
                "`id_pool_resample_learnable=True` is a backbone setting with no meaning for the context encoder; "
                "the released branch config has False. Enable ID resampling on the pipeline instead."
            )
        if not use_rotary_positional_embeddings and use_learned_positional_embeddings:
            raise ValueError("learned positional embeddings require `use_rotary_positional_embeddings=True`.")
        inner_dim = num_attention_heads * attention_head_dim

        # 1. Patch embedding: [noisy latent | masked-video latent | mask] -> tokens
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            in_channels=2 * out_channels + 1,
            embed_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=True,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_positional_embeddings=not use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings,
        )
        self.embedding_dropout = nn.Dropout(dropout)

        # 2. Time embedding (shared design with the backbone; copied from it by `from_transformer`)
        self.time_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)

        # 3. The DiT blocks and one zero-initialised bridge per block
        self.transformer_blocks = nn.ModuleList(
            [
                CogVideoXBlock(
                    dim=inner_dim,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    time_embed_dim=time_embed_dim,
                    dropout=dropout,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )
        self.branch_blocks = nn.ModuleList([zero_module(nn.Linear(inner_dim, inner_dim)) for _ in range(num_layers)])

        # 4. Unused heads, declared only so the released checkpoint loads strictly (see the class docstring)
        self.branch_x_embedder = zero_module(nn.Linear(in_channels, inner_dim))
        self.norm_final = nn.LayerNorm(inner_dim, norm_eps, norm_elementwise_affine)
        self.norm_out = AdaLayerNorm(
            embedding_dim=time_embed_dim,
            output_dim=2 * inner_dim,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            chunk_dim=1,
        )
        self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * out_channels)

        self.gradient_checkpointing = False
        hold_pos_embedding_in_model_dtype(self)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> VideoPainterContextEncoder:
        """`ModelMixin.from_pretrained`, then the positional table in the model dtype."""
        model = super().from_pretrained(*args, **kwargs)
        hold_pos_embedding_in_model_dtype(model)
        return model

    @classmethod
    def from_transformer(
        cls,
        transformer: CogVideoXTransformer3DModel,
        num_layers: int = 2,
        load_weights_from_transformer: bool = True,
    ) -> VideoPainterContextEncoder:
        """Build an encoder with the backbone's configuration and (optionally) initialise it from its weights.

        What is copied, as in the reference training script, plus one deliberate difference:

        - ``patch_embed.proj.weight``: the backbone's noisy-latent slice ``[:, :out_channels]`` goes into *both*
          the noisy-latent slot ``[:, :C]`` and the masked-video-latent slot ``[:, C:2C]``; the mask channel
          ``[:, 2C]`` is zero. The bias is copied.
        - ``time_embedding`` and the first ``num_layers`` backbone blocks are copied.
        - ``patch_embed.text_proj`` is copied too. The reference leaves it at random initialisation; copying it
          makes the copied blocks see the backbone's own text tokens at step 0.
        - ``patch_embed.pos_embedding`` is not copied: the encoder's buffer is the sin-cos table computed from its
          own config, as in the release. ``branch_blocks`` and ``branch_x_embedder`` stay zero; ``norm_final``,
          ``norm_out`` and ``proj_out`` keep their default initialisation (unused).

        Args:
            transformer: the backbone (a CogVideoX transformer with `patch_size_t=None`).
            num_layers: encoder depth (2 in the release).
            load_weights_from_transformer: copy the weights listed above; False leaves a fresh initialisation.

        Returns:
            The encoder, on the backbone's device and in its dtype.
        """
        config = transformer.config
        if config.patch_size_t is not None:
            raise ValueError("`transformer` must be a CogVideoX 1.0 model (`patch_size_t=None`).")
        if num_layers > config.num_layers:
            raise ValueError(f"`num_layers`={num_layers} exceeds the backbone's {config.num_layers} layers.")
        encoder = cls(
            num_attention_heads=config.num_attention_heads,
            attention_head_dim=config.attention_head_dim,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            flip_sin_to_cos=config.flip_sin_to_cos,
            freq_shift=config.freq_shift,
            time_embed_dim=config.time_embed_dim,
            text_embed_dim=config.text_embed_dim,
            num_layers=num_layers,
            dropout=config.dropout,
            attention_bias=config.attention_bias,
            sample_width=config.sample_width,
            sample_height=config.sample_height,
            sample_frames=config.sample_frames,
            patch_size=config.patch_size,
            temporal_compression_ratio=config.temporal_compression_ratio,
            max_text_seq_length=config.max_text_seq_length,
            activation_fn=config.activation_fn,
            timestep_activation_fn=config.timestep_activation_fn,
            norm_elementwise_affine=config.norm_elementwise_affine,
            norm_eps=config.norm_eps,
            spatial_interpolation_scale=config.spatial_interpolation_scale,
            temporal_interpolation_scale=config.temporal_interpolation_scale,
            use_rotary_positional_embeddings=config.use_rotary_positional_embeddings,
            use_learned_positional_embeddings=config.use_learned_positional_embeddings,
        )
        if load_weights_from_transformer:
            latent_channels = config.out_channels
            with torch.no_grad():
                noisy_slice = transformer.patch_embed.proj.weight[:, :latent_channels]
                weight = encoder.patch_embed.proj.weight
                weight.zero_()
                weight[:, :latent_channels] = noisy_slice
                weight[:, latent_channels : 2 * latent_channels] = noisy_slice
                encoder.patch_embed.proj.bias.copy_(transformer.patch_embed.proj.bias)
            encoder.patch_embed.text_proj.load_state_dict(transformer.patch_embed.text_proj.state_dict())
            encoder.time_embedding.load_state_dict(transformer.time_embedding.state_dict())
            for encoder_block, backbone_block in zip(encoder.transformer_blocks, transformer.transformer_blocks):
                encoder_block.load_state_dict(backbone_block.state_dict())
        encoder = encoder.to(device=transformer.device)
        return encoder if encoder.dtype == transformer.dtype else encoder.to(dtype=transformer.dtype)

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        branch_cond: torch.Tensor,
        timestep: int | float | torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        conditioning_scale: float = 1.0,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> ContextEncoderOutput | tuple[tuple[torch.Tensor, ...]]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, latent_frames, out_channels, latent_height,
                latent_width)`): the noisy video latent only (not the I2V image latent).
            encoder_hidden_states (`torch.Tensor` of shape `(batch_size, text_seq_length, text_embed_dim)`):
                the prompt embeddings.
            branch_cond (`torch.Tensor` of shape `(batch_size, latent_frames, out_channels + 1, latent_height,
                latent_width)`): the masked-video latent followed by the latent-resolution mask (1 = masked).
            timestep (`torch.Tensor` of shape `(batch_size,)`): the denoising timestep.
            timestep_cond (`torch.Tensor`, *optional*): added to the timestep embedding.
            image_rotary_emb (`tuple` of two `torch.Tensor` of shape `(num_video_tokens, attention_head_dim)`):
                the backbone's 3-D RoPE tables (cos, sin).
            conditioning_scale: multiplies every output.
            attention_kwargs: passed to the attention processors (`scale` sets the LoRA scale).
            return_dict: return a `ContextEncoderOutput` instead of a tuple.

        Returns:
            `ContextEncoderOutput`, or `(branch_block_samples,)` when `return_dict=False`.
        """
        if hidden_states.shape[:2] != branch_cond.shape[:2] or hidden_states.shape[3:] != branch_cond.shape[3:]:
            raise ValueError(
                f"`branch_cond` {tuple(branch_cond.shape)} must match `hidden_states` "
                f"{tuple(hidden_states.shape)} in batch, frames, height and width."
            )
        expected_channels = self.patch_embed.proj.in_channels
        if hidden_states.shape[2] + branch_cond.shape[2] != expected_channels:
            raise ValueError(
                f"`hidden_states` ({hidden_states.shape[2]} channels) + `branch_cond` ({branch_cond.shape[2]} "
                f"channels) must give the patch embedding's {expected_channels} input channels."
            )

        # 1. Time embedding (Timesteps returns float32; cast to the model dtype)
        t_emb = self.time_proj(timestep).to(dtype=hidden_states.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)

        # 2. Patch embedding of the joint [text; video] sequence
        branch_input = torch.cat([hidden_states, branch_cond], dim=2)
        # [batch_size, latent_frames, 2 * out_channels + 1, latent_height, latent_width]
        tokens = self.embedding_dropout(self.patch_embed(encoder_hidden_states, branch_input))
        text_seq_length = encoder_hidden_states.shape[1]
        encoder_hidden_states = tokens[:, :text_seq_length].contiguous()  # [batch_size, text_seq_length, inner_dim]
        hidden_states = tokens[:, text_seq_length:].contiguous()  # [batch_size, num_video_tokens, inner_dim]

        # 3. Blocks; each video-token output goes through its zero-initialised bridge
        branch_block_samples = []
        for block, branch_block in zip(self.transformer_blocks, self.branch_blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, emb, image_rotary_emb, attention_kwargs
                )
            else:
                hidden_states, encoder_hidden_states = block(
                    hidden_states=hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    temb=emb,
                    image_rotary_emb=image_rotary_emb,
                    attention_kwargs=attention_kwargs,
                )
            branch_block_samples.append(branch_block(hidden_states) * conditioning_scale)

        branch_block_samples = tuple(branch_block_samples)
        if not return_dict:
            return (branch_block_samples,)
        return ContextEncoderOutput(branch_block_samples=branch_block_samples)
