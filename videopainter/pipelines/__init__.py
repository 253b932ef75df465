"""The VideoPainter diffusers pipeline, its speed options and its first-frame inpainter."""

from videopainter.pipelines.acceleration import Acceleration
from videopainter.pipelines.first_frame import FluxFillFirstFrame
from videopainter.pipelines.pipeline_videopainter import (
    FIRST_FRAME_MODEL_DILATION_RADIUS,
    OFFICIAL_CONTEXT_FILL,
    RELEASE_SOURCE_FILL,
    TRAINING_STYLE,
    VideoPainterPipeline,
    VideoPainterPipelineOutput,
    dilate_masks,
)


__all__ = [
    "FIRST_FRAME_MODEL_DILATION_RADIUS",
    "OFFICIAL_CONTEXT_FILL",
    "RELEASE_SOURCE_FILL",
    "TRAINING_STYLE",
    "Acceleration",
    "FluxFillFirstFrame",
    "VideoPainterPipeline",
    "VideoPainterPipelineOutput",
    "dilate_masks",
]
