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


@pytest.fixture
def tiny_transformer() -> VideoPainterTransformer3DModel:
    torch.manual_seed(0)
    return VideoPainterTransformer3DModel(**TINY_TRANSFORMER).eval()
