"""VideoPainter on diffusers: context encoder, injected CogVideoX backbone, ID resampling, any-length pipeline.

Names are imported lazily so ``import videopainter`` stays cheap; diffusers' pipeline loader resolves saved
components (``["videopainter", "VideoPainterContextEncoder"]`` in ``model_index.json``) through this module.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "ContextEncoderOutput": "videopainter.models.context_encoder",
    "VideoPainterContextEncoder": "videopainter.models.context_encoder",
    "VideoPainterTransformer3DModel": "videopainter.models.transformer",
    "VideoPainterTransformerOutput": "videopainter.models.transformer",
    "IDMemory": "videopainter.models.attention",
    "VideoPainterIDResampleAttnProcessor": "videopainter.models.attention",
    "VideoPainterPipeline": "videopainter.pipelines.pipeline_videopainter",
    "VideoPainterPipelineOutput": "videopainter.pipelines.pipeline_videopainter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videopainter' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
