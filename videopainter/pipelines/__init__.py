"""The VideoPainter diffusers pipeline and its first-frame inpainter."""

from videopainter.pipelines.acceleration import Acceleration
from videopainter.pipelines.first_frame import FluxFillFirstFrame
from videopainter.pipelines.pipeline_videopainter import (
    MASKED_PIXEL_VALUE,
    VideoPainterPipeline,
    VideoPainterPipelineOutput,
    dilate_masks,
)


__all__ = [
    "Acceleration",
    "MASKED_PIXEL_VALUE",
    "FluxFillFirstFrame",
    "VideoPainterPipeline",
    "VideoPainterPipelineOutput",
    "dilate_masks",
]
