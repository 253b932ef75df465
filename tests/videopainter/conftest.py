"""Tiny, seeded CogVideoX components built in code (no files, no network).

Constraints: with RoPE, `attention_head_dim` must be a multiple of 16; latent height/width must match the
learned positional-embedding sample size; the text length equals `max_text_seq_length`.
"""

from __future__ import annotations

import pytest
import torch

from videopainter.models.transformer import VideoPainterTransformer3DModel


TINY_TRANSFORMER = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,  # multiple of 16 for 3-D RoPE
    "in_channels": 8,  # noisy latent (4) + image latent (4)
    "out_channels": 4,
    "time_embed_dim": 8,
    "text_embed_dim": 12,
    "num_layers": 5,  # 5 layers, 2 encoder outputs -> groups {0,1,2}, {3,4}
    "sample_width": 8,  # latent width  (64 px)
    "sample_height": 8,  # latent height (64 px)
    "sample_frames": 9,  # 3 latent frames
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 7,
    "use_rotary_positional_embeddings": True,
    "use_learned_positional_embeddings": True,
}


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread is several times faster than two on a shared 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_transformer() -> VideoPainterTransformer3DModel:
    torch.manual_seed(0)
    return VideoPainterTransformer3DModel(**TINY_TRANSFORMER).eval()


TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("CogVideoXDownBlock3D",) * 4,  # 4 blocks -> 8x spatial compression
    "up_block_types": ("CogVideoXUpBlock3D",) * 4,
    "block_out_channels": (8, 8, 8, 8),
    "latent_channels": 4,  # = TINY_TRANSFORMER out_channels
    "layers_per_block": 1,
    "norm_num_groups": 2,
    "temporal_compression_ratio": 4,
}

HEIGHT = WIDTH = 64  # 8x8 latents = TINY_TRANSFORMER sample size (learned positional embeddings)


def tiny_components(seed: int = 0) -> dict:
    """A stock CogVideoX-I2V component set at tiny size (tokenizer, T5, VAE, transformer, DDIM scheduler)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = ByT5Tokenizer()  # byte-level: no vocabulary file
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=tokenizer.vocab_size, d_model=12, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder.eval(),
        "vae": AutoencoderKLCogVideoX(**TINY_VAE).eval(),
        "transformer": CogVideoXTransformer3DModel(**TINY_TRANSFORMER).eval(),
        "scheduler": CogVideoXDDIMScheduler(),
    }
