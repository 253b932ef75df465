"""VideoPainter model classes, one per module."""

from videopainter.models.attention import IDMemory, VideoPainterIDResampleAttnProcessor
from videopainter.models.context_encoder import ContextEncoderOutput, VideoPainterContextEncoder
from videopainter.models.transformer import (
    VideoPainterTransformer3DModel,
    VideoPainterTransformerOutput,
    latent_mask_to_token_mask,
)


__all__ = [
    "ContextEncoderOutput",
    "IDMemory",
    "VideoPainterContextEncoder",
    "VideoPainterIDResampleAttnProcessor",
    "VideoPainterTransformer3DModel",
    "VideoPainterTransformerOutput",
    "latent_mask_to_token_mask",
]
