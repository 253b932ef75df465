"""First-frame inpainting with FLUX.1-Fill-dev, loaded only when its weights are configured."""

from __future__ import annotations

import os

import PIL.Image
import torch


class FluxFillFirstFrame:
    """`FluxFillPipeline` with the reference settings: guidance 30, 50 steps, max_sequence_length 512, seed 0.

    Args:
        path: a local FLUX.1-Fill-dev folder (diffusers layout).
        device, torch_dtype: where and how to run it.
        enable_model_cpu_offload: offload its components between calls (it shares the GPU with VideoPainter).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cuda",
        torch_dtype: torch.dtype = torch.bfloat16,
        guidance_scale: float = 30.0,
        num_inference_steps: int = 50,
        max_sequence_length: int = 512,
        seed: int = 0,
        enable_model_cpu_offload: bool = True,
    ):
        from diffusers import FluxFillPipeline

        self.pipe = FluxFillPipeline.from_pretrained(path, torch_dtype=torch_dtype)
        if enable_model_cpu_offload:
            self.pipe.enable_model_cpu_offload(device=device)
        else:
            self.pipe.to(device)
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.max_sequence_length = max_sequence_length
        self.seed = seed

    def __call__(self, image: PIL.Image.Image, mask: PIL.Image.Image, prompt: str) -> PIL.Image.Image:
        """Fill `mask` (white = fill) of `image` guided by `prompt`; returns an image of the same size."""
        return self.pipe(
            prompt=prompt,
            image=image,
            mask_image=mask,
            height=image.height,
            width=image.width,
            guidance_scale=self.guidance_scale,
            num_inference_steps=self.num_inference_steps,
            max_sequence_length=self.max_sequence_length,
            generator=torch.Generator("cpu").manual_seed(self.seed),
        ).images[0]
