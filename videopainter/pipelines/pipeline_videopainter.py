"""``VideoPainterPipeline``: CogVideoX-I2V + context encoder + optional ID adapter, over any-length videos.

One call inpaints one video: the first frame is given or made by ``first_frame_inpainter``; the video is cut into
windows of ``num_frames_per_window`` (4k + 1) frames, window 0 conditioned on the first frame and window k > 0 on the
previous window's last latent before the overlap; each window is denoised with dynamic CFG, the context encoder and,
with ``replace_gt``, the noised source latent re-imposed outside the mask after every step. Output frame i is input
frame i. The defaults compute what the authors' released inference computes (parity mode); ``TRAINING_STYLE`` holds
the alternatives that follow the training script. ``docs/method.md`` explains the method and every setting.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import CogVideoXLoraLoaderMixin
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, T5EncoderModel

from videopainter.loaders import ID_LORA_ADAPTER_NAME, ID_LORA_WEIGHT_NAME, load_id_lora, resolve_local
from videopainter.models.attention import ID_LORA_RELEASE_SCALE, IDMemory
from videopainter.models.context_encoder import VideoPainterContextEncoder
from videopainter.models.transformer import (
    VideoPainterTransformer3DModel,
    hold_pos_embedding_in_model_dtype,
    latent_mask_to_token_mask,
)
from videopainter.pipelines.acceleration import Acceleration, apply_acceleration


# Masked-pixel values, in [-1, 1]. The released pipeline multiplies the window by "not masked", so the context
# encoder sees 0 (mid-grey) in the hole; the released script fills the hole with black before the call, so the
# replace-gt source (and the strength < 1 start) sees -1. The encoder was trained with -1.
OFFICIAL_CONTEXT_FILL = 0.0
RELEASE_SOURCE_FILL = -1.0
TRAINING_FILL = -1.0
# The released script dilates the masks (kernel side 32) only when a first-frame inpainting model makes frame 0;
# radius 16 (side 33) is the nearest symmetric kernel.
FIRST_FRAME_MODEL_DILATION_RADIUS = 16
ID_LORA_FOLDER = "id_lora"  # where save_pretrained puts the ID LoRA
ID_LORA_CONFIG = "id_lora_config.json"

MaskDownsample = Literal["nearest", "max_pool"]
Chaining = Literal["image", "image_and_first"]

# The choices of the training script, as one set of `__call__` keywords (see docs/method.md): black in the hole for
# the context encoder, max-pooled latent masks (a latent pixel is masked when any pixel it covers is), and a chained
# window whose first masked-video/source latent is the chained latent with its mask cleared.
TRAINING_STYLE: dict[str, Any] = {
    "context_fill": TRAINING_FILL,
    "mask_downsample": "max_pool",
    "chaining": "image_and_first",
}

FirstFrameInpainter = Callable[[PIL.Image.Image, PIL.Image.Image, str], PIL.Image.Image]


@dataclass
class VideoPainterPipelineOutput(BaseOutput):
    """
    Args:
        frames: the inpainted video. `output_type="np"`: `np.ndarray` of shape `(num_frames, height, width, 3)`,
            float in [0, 1]; `"pt"`: `torch.Tensor` of shape `(num_frames, 3, height, width)` in [0, 1]; `"pil"`:
            a list of `num_frames` images; `"latent"`: `torch.Tensor` of shape `(1, latent_slots, 16,
            latent_height, latent_width)` (see `VideoPainterPipeline.latent_layout`).
    """

    frames: np.ndarray | torch.Tensor | list[PIL.Image.Image]


@dataclass
class _Window:
    """The conditioning of one window (all latents scaled by the VAE scaling factor).

    source_latents: `(1, F, C, h, w)`, the window's video (hole at `source_fill`), re-imposed by replace-gt;
    masked_video_latents: `(1, F, C, h, w)`, what the context encoder reads (hole at `context_fill`);
    mask_latents: `(1, F, 1, h, w)`, 1 = masked; image_latents: `(1, F, C, h, w)`, the first-frame (or chained)
    latent in slot 0 and zeros elsewhere; noise: `(1, F, C, h, w)`, the window's noise.
    """

    source_latents: torch.Tensor
    masked_video_latents: torch.Tensor
    mask_latents: torch.Tensor
    image_latents: torch.Tensor
    noise: torch.Tensor


def dilate_masks(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate by ``radius`` pixels: a square kernel of side ``2 * radius + 1`` centred on each pixel.

    Equals ``cv2.dilate(mask, np.ones((2 * radius + 1,) * 2))``. ``radius=0`` returns the masks unchanged.

    Args:
        masks (`torch.Tensor` of shape `(num_frames, height, width)`, bool).

    Returns:
        `torch.Tensor` of the same shape, bool.
    """
    if radius < 0:
        raise ValueError(f"`dilation_radius` must be >= 0, got {radius}.")
    if radius == 0:
        return masks.bool()
    side = 2 * radius + 1
    return F.max_pool2d(masks.float()[:, None], side, stride=1, padding=radius)[:, 0] > 0


def _load_component(folder: Path, library: str, class_name: str, torch_dtype: torch.dtype | None) -> Any:
    """Load one saved component by the ``[library, class]`` entry of ``model_index.json``."""
    component_cls = getattr(importlib.import_module(library), class_name)
    if issubclass(component_cls, (ModelMixin, PreTrainedModel)) and torch_dtype is not None:
        key = "torch_dtype" if issubclass(component_cls, ModelMixin) else "dtype"
        return component_cls.from_pretrained(folder, **{key: torch_dtype})
    return component_cls.from_pretrained(folder)


def _video_geometry(video: np.ndarray | torch.Tensor) -> tuple[int, int, int]:
    """`(num_frames, height, width)` of a uint8 `(T, H, W, 3)` array or a float `(T, 3, H, W)` tensor."""
    if isinstance(video, np.ndarray) and video.ndim == 4 and video.shape[-1] == 3:
        return video.shape[0], video.shape[1], video.shape[2]
    if isinstance(video, torch.Tensor) and video.ndim == 4 and video.shape[1] == 3:
        return video.shape[0], video.shape[2], video.shape[3]
    raise ValueError(
        "`video` must be a uint8 np.ndarray (num_frames, height, width, 3) or a float torch.Tensor "
        f"(num_frames, 3, height, width); got {type(video).__name__} of shape {tuple(video.shape)}."
    )


class VideoPainterPipeline(DiffusionPipeline, CogVideoXLoraLoaderMixin):
    r"""Video inpainting and editing with VideoPainter (see the module docstring).

    Args:
        tokenizer: the T5 tokenizer (optional when `prompt_embeds` are passed).
        text_encoder: the T5 encoder (optional when `prompt_embeds` are passed).
        vae (`AutoencoderKLCogVideoX`).
        transformer (`VideoPainterTransformer3DModel`): the CogVideoX-I2V backbone.
        context_encoder (`VideoPainterContextEncoder`).
        scheduler (`CogVideoXDPMScheduler`): with `timestep_spacing="trailing"` as in the recipe.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"  # the small context encoder stays on the device
    _optional_components = ["tokenizer", "text_encoder"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        text_encoder: T5EncoderModel | None,
        vae: AutoencoderKLCogVideoX,
        transformer: VideoPainterTransformer3DModel,
        context_encoder: VideoPainterContextEncoder,
        scheduler: CogVideoXDPMScheduler,
    ):
        super().__init__()
        if not isinstance(transformer, VideoPainterTransformer3DModel):
            raise ValueError(
                f"`transformer` must be a VideoPainterTransformer3DModel (got {type(transformer).__name__}); load the "
                "stock weights with `VideoPainterTransformer3DModel.from_pretrained(base, subfolder='transformer')`."
            )
        if not isinstance(scheduler, CogVideoXDPMScheduler):
            raise ValueError(f"`scheduler` must be a CogVideoXDPMScheduler, got {type(scheduler).__name__}.")
        for model in (transformer, context_encoder):  # models built in code keep diffusers' float64 table
            hold_pos_embedding_in_model_dtype(model)
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            context_encoder=context_encoder,
            scheduler=scheduler,
        )
        self.vae_scale_factor_spatial = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale_factor_temporal = self.vae.config.temporal_compression_ratio
        self.vae_scaling_factor_image = self.vae.config.scaling_factor
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self.first_frame_inpainter: FirstFrameInpainter | None = None
        self.id_lora_scale: float | None = None
        self.acceleration: Acceleration | None = None
        self._current_timestep: torch.Tensor | None = None

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        branch: str | os.PathLike | None = None,
        id_lora: str | os.PathLike | None = None,
        id_lora_scale: float | None = None,
        cache_dir: str | os.PathLike | None = None,
        torch_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> VideoPainterPipeline:
        """Load from a base folder (a CogVideoX-5B-I2V pipeline, or a folder saved by this class) plus the branch.

        Args:
            pretrained_model_name_or_path: the base folder, local or an fsspec URL (copied to `cache_dir` first).
            branch: the released `branch/` folder (config.json + safetensors). Required unless the base folder
                already holds a `context_encoder`.
            id_lora: the ID LoRA (`pytorch_lora_weights.safetensors` or its folder). A folder saved by this class
                with an ID LoRA brings it back automatically from its `id_lora/` subfolder.
            id_lora_scale: the adapter weight; default 1.0 reproduces the release, 0.5 is the training scale.
            cache_dir: where URLs are downloaded (default `$VPF_MODEL_CACHE` or `~/.cache/videopainter`).
            torch_dtype: dtype of the models (the scheduler and tokenizer have none).
            kwargs: components to use instead of the saved ones (`vae=...`, `text_encoder=None`, ...).
        """
        base = resolve_local(pretrained_model_name_or_path, cache_dir)
        index_path = base / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{os.fspath(pretrained_model_name_or_path)!r} has no model_index.json")
        index = json.loads(index_path.read_text())
        # A stock CogVideoX-I2V folder names diffusers' transformer and DDIM scheduler: load ours instead.
        classes = {name: entry for name, entry in index.items() if not name.startswith("_")}
        stock = index.get("_class_name") != cls.__name__
        if stock:
            classes["transformer"] = ["videopainter.models.transformer", "VideoPainterTransformer3DModel"]
        components = {}
        for name in ("tokenizer", "text_encoder", "vae", "transformer", "context_encoder", "scheduler"):
            if name in kwargs:
                components[name] = kwargs.pop(name)
            elif name == "scheduler" and stock:  # the recipe's sampler (the release's sampler)
                components[name] = CogVideoXDPMScheduler.from_pretrained(base / name, timestep_spacing="trailing")
            elif name == "context_encoder" and branch is not None:
                components[name] = VideoPainterContextEncoder.from_pretrained(
                    resolve_local(branch, cache_dir), torch_dtype=torch_dtype
                )
            elif name in classes and classes[name][0] is not None:
                components[name] = _load_component(base / name, *classes[name], torch_dtype)
            elif name in cls._optional_components:
                components[name] = None
            else:
                raise ValueError(
                    f"{os.fspath(pretrained_model_name_or_path)!r} has no {name}"
                    + (": pass `branch=`." if name == "context_encoder" else ".")
                )
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        pipe = cls(**components)

        saved_lora = base / ID_LORA_FOLDER
        if id_lora is None and (saved_lora / ID_LORA_WEIGHT_NAME).is_file():
            id_lora = saved_lora
            if id_lora_scale is None:
                id_lora_scale = json.loads((saved_lora / ID_LORA_CONFIG).read_text())["scale"]
        if id_lora is not None:
            pipe.load_id_lora(id_lora, ID_LORA_RELEASE_SCALE if id_lora_scale is None else id_lora_scale, cache_dir)
        return pipe

    def load_id_lora(
        self,
        location: str | os.PathLike | dict[str, torch.Tensor],
        scale: float = ID_LORA_RELEASE_SCALE,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        """Load the ID-resample LoRA and switch the backbone to the ID-resample processor (see `load_id_lora`)."""
        load_id_lora(self.transformer, location, scale=scale, cache_dir=cache_dir)
        self.id_lora_scale = scale

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save every component; an ID LoRA goes to `id_lora/` in the released key layout (no alpha), with its
        scale in `id_lora/id_lora_config.json`. The transformer is saved without the adapter."""
        if self.acceleration is not None and self.acceleration.fuse_qkv:
            raise ValueError("a pipeline with fused QKV projections cannot be saved; save it before accelerating.")
        if self.id_lora_scale is None:
            super().save_pretrained(save_directory, **kwargs)
            return
        from peft.utils import get_peft_model_state_dict

        lora_layers = get_peft_model_state_dict(self.transformer, adapter_name=ID_LORA_ADAPTER_NAME)
        lora_layers = {key: tensor.detach().clone() for key, tensor in lora_layers.items()}
        scale = self.id_lora_scale
        self.transformer.unload_lora()
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.load_id_lora({f"transformer.{key}": tensor for key, tensor in lora_layers.items()}, scale)
        folder = Path(save_directory) / ID_LORA_FOLDER
        self.save_lora_weights(folder, transformer_lora_layers=lora_layers)
        (folder / ID_LORA_CONFIG).write_text(json.dumps({"scale": scale}))

    def enable_acceleration(self, acceleration: Acceleration) -> None:
        """Apply speed options (caching hooks, fused QKV, regional compile); see `videopainter.pipelines.acceleration`.
        Call once, after loading and moving the pipeline to its device."""
        apply_acceleration(self, acceleration)

    def set_first_frame_inpainter(self, inpainter: FirstFrameInpainter | None) -> None:
        """`inpainter(image, mask, prompt) -> image` makes the first frame when `__call__` gets none."""
        self.first_frame_inpainter = inpainter

    def enable_vae_tiling(self) -> None:
        """Decode/encode in spatial tiles (long or large videos)."""
        self.vae.enable_tiling()

    def enable_vae_slicing(self) -> None:
        self.vae.enable_slicing()

    # ------------------------------------------------------------------ steps of __call__

    def check_inputs(
        self,
        video: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor,
        prompt: str | None,
        negative_prompt: str | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        num_frames_per_window: int,
        window_overlap: int,
        max_sequence_length: int,
        callback_on_step_end_tensor_inputs: list[str] | None,
        strength: float = 1.0,
        dilation_radius: int | None = None,
        mask_downsample: str = "nearest",
        chaining: str = "image",
        context_fill: float = OFFICIAL_CONTEXT_FILL,
        source_fill: float = RELEASE_SOURCE_FILL,
    ) -> None:
        num_frames, height, width = _video_geometry(video)
        if tuple(mask.shape) != (num_frames, height, width):
            raise ValueError(f"`mask` must have shape {(num_frames, height, width)}, got {tuple(mask.shape)}.")
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(f"`video` height and width must be multiples of {multiple}; got {height}x{width}.")
        if (num_frames_per_window - 1) % self.vae_scale_factor_temporal:
            raise ValueError(f"`num_frames_per_window` must be 4k + 1 (e.g. 49); got {num_frames_per_window}.")
        stride = num_frames_per_window - window_overlap
        if window_overlap < 0 or stride <= 0 or (window_overlap > 0 and stride % self.vae_scale_factor_temporal):
            raise ValueError(
                f"`window_overlap` ({window_overlap}) must be 0 (windows side by side, the released setting) or "
                f"leave a stride that is a positive multiple of {self.vae_scale_factor_temporal} (e.g. 1 for windows "
                "of 49 frames: stride 48)."
            )
        if not 0 < strength <= 1:
            raise ValueError(f"`strength` must be in (0, 1], got {strength}.")
        if dilation_radius is not None and dilation_radius < 0:
            raise ValueError(f"`dilation_radius` must be None or >= 0, got {dilation_radius}.")
        if mask_downsample not in ("nearest", "max_pool"):
            raise ValueError(f"`mask_downsample` must be 'nearest' or 'max_pool', got {mask_downsample!r}.")
        if chaining not in ("image", "image_and_first"):
            raise ValueError(f"`chaining` must be 'image' or 'image_and_first', got {chaining!r}.")
        for name, value in (("context_fill", context_fill), ("source_fill", source_fill)):
            if not -1 <= value <= 1:
                raise ValueError(f"`{name}` is a pixel value in [-1, 1], got {value}.")
        if num_frames < num_frames_per_window or (num_frames - num_frames_per_window) % stride:
            raise ValueError(
                f"`video` has {num_frames} frames; windows of {num_frames_per_window} frames with stride {stride} "
                f"need {num_frames_per_window} + n * {stride} frames (pad or trim the video)."
            )
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass at most one of `negative_prompt` and `negative_prompt_embeds`.")
        text_length = self.transformer.config.max_text_seq_length
        if prompt is not None and max_sequence_length != text_length:
            raise ValueError(f"`max_sequence_length` must equal the transformer's {text_length}.")
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if embeds is not None and (embeds.ndim != 3 or embeds.shape[:2] != (1, text_length)):
                raise ValueError(f"`{name}` must have shape (1, {text_length}, text_embed_dim); got {embeds.shape}.")
        if callback_on_step_end_tensor_inputs is not None and not set(callback_on_step_end_tensor_inputs) <= set(
            self._callback_tensor_inputs
        ):
            raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}.")

    def encode_prompt(
        self,
        prompt: str | None,
        negative_prompt: str | None = None,
        do_classifier_free_guidance: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = 226,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """T5-encode the prompt (and the negative prompt, `""` by default, when guiding).

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, each `(1, max_sequence_length, text_embed_dim)`;
            the second is None without classifier-free guidance.
        """
        device = device or self._execution_device

        def encode(text: str) -> torch.Tensor:
            if self.tokenizer is None or self.text_encoder is None:
                raise ValueError("this pipeline has no text encoder: pass `prompt_embeds`/`negative_prompt_embeds`.")
            ids = self.tokenizer(
                [text],
                padding="max_length",
                max_length=max_sequence_length,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            ).input_ids
            return self.text_encoder(ids.to(device))[0]  # [1, max_sequence_length, text_embed_dim]

        if prompt_embeds is None:
            prompt_embeds = encode(prompt)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt_embeds = encode(negative_prompt or "")
        dtype = dtype or self.transformer.dtype
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        if not do_classifier_free_guidance:
            return prompt_embeds, None
        return prompt_embeds, negative_prompt_embeds.to(device=device, dtype=dtype)

    def _prepare_rotary_positional_embeddings(
        self, height: int, width: int, latent_frames: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """3-D RoPE tables (cos, sin), each `(latent_frames * grid_height * grid_width, attention_head_dim)`."""
        p = self.transformer.config.patch_size
        grid_height = height // (self.vae_scale_factor_spatial * p)
        grid_width = width // (self.vae_scale_factor_spatial * p)
        crops = get_resize_crop_region_for_grid(
            (grid_height, grid_width),
            self.transformer.config.sample_width // p,
            self.transformer.config.sample_height // p,
        )
        return get_3d_rotary_pos_embed(
            embed_dim=self.transformer.config.attention_head_dim,
            crops_coords=crops,
            grid_size=(grid_height, grid_width),
            temporal_size=latent_frames,
            device=device,
        )

    def _to_video_tensor(self, video: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 `(T, H, W, 3)` or float `(T, 3, H, W)` in [0, 1] -> `(1, 3, T, H, W)` float32 in [-1, 1]."""
        if isinstance(video, np.ndarray):
            if video.dtype != np.uint8:
                raise ValueError(f"a numpy `video` must be uint8 (num_frames, height, width, 3); got {video.dtype}")
            tensor = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
        else:
            tensor = video.float()
        return (tensor * 2 - 1).permute(1, 0, 2, 3)[None].to(device)  # [1, 3, T, H, W]

    def _first_frame(
        self,
        first_frame: np.ndarray | PIL.Image.Image | torch.Tensor | None,
        video: torch.Tensor,
        mask: torch.Tensor,
        prompt: str | None,
    ) -> torch.Tensor:
        """The first frame as `(1, 3, 1, H, W)` in [-1, 1]: given, or made by `first_frame_inpainter`."""
        height, width = video.shape[-2:]
        if first_frame is None:
            if self.first_frame_inpainter is None:
                raise ValueError("pass `first_frame` or configure `set_first_frame_inpainter(...)`.")
            frame0 = ((video[0, :, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().cpu().numpy()
            mask0 = PIL.Image.fromarray(mask[0].cpu().numpy().astype(np.uint8) * 255)
            first_frame = self.first_frame_inpainter(PIL.Image.fromarray(frame0), mask0, prompt or "")
        if isinstance(first_frame, PIL.Image.Image):
            first_frame = np.asarray(first_frame.convert("RGB"))
        if isinstance(first_frame, np.ndarray):
            if first_frame.dtype != np.uint8 or first_frame.shape != (height, width, 3):
                raise ValueError(
                    f"`first_frame` must be uint8 {(height, width, 3)}; got {first_frame.dtype} {first_frame.shape}"
                )
            first_frame = torch.from_numpy(first_frame.copy()).permute(2, 0, 1).float() / 255.0
        if tuple(first_frame.shape) != (3, height, width):
            raise ValueError(f"`first_frame` must be (3, {height}, {width}) in [0, 1]; got {tuple(first_frame.shape)}")
        return (first_frame.float().to(video.device) * 2 - 1)[None, :, None]

    def _encode_video(self, pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """`(1, 3, T, H, W)` in [-1, 1] -> scaled latents `(1, latent_frames, C, h, w)`."""
        latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.sample(generator)
        return (latents * self.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)  # [1, F, C, h, w]

    def _mask_latents(self, mask: torch.Tensor, mode: MaskDownsample) -> torch.Tensor:
        """`(T, H, W)` bool, T = 4k + 1 -> `(1, latent_frames, 1, h, w)` float, 1 = masked.

        ``"nearest"`` (the released pipeline): nearest-neighbour interpolation of the pixel mask to
        `(latent_frames, h, w)`, i.e. latent pixel (k, y, x) reads pixel frame `floor(k * T / latent_frames)` at
        `(8 y, 8 x)`. ``"max_pool"`` (training): latent frame k covers pixel frames 4k-3..4k (frame 0 alone for
        k = 0) and a latent pixel is masked when any pixel of its 8x8 footprint in any of those frames is.
        """
        s, r = self.vae_scale_factor_spatial, self.vae_scale_factor_temporal
        num_frames, height, width = mask.shape
        latent_frames = (num_frames - 1) // r + 1
        if mode == "nearest":
            resized = F.interpolate(mask.float()[None, None], size=(latent_frames, height // s, width // s))
            return resized.permute(0, 2, 1, 3, 4)  # [1, F, 1, h, w]
        spatial = F.max_pool2d(mask.float()[:, None], s)[:, 0]  # [T, h, w]
        rest = spatial[1:].reshape(-1, r, *spatial.shape[1:]).amax(dim=1)  # latent k >= 1 <- frames 4k-3..4k
        return torch.cat([spatial[:1], rest])[None, :, None]

    def prepare_window(
        self,
        video: torch.Tensor,
        mask: torch.Tensor,
        image: torch.Tensor | None,
        chained_latent: torch.Tensor | None,
        noise: torch.Tensor | None,
        generator: torch.Generator | None,
        dtype: torch.dtype,
        context_fill: float = OFFICIAL_CONTEXT_FILL,
        source_fill: float = RELEASE_SOURCE_FILL,
        mask_downsample: MaskDownsample = "nearest",
        chaining: Chaining = "image",
    ) -> _Window:
        """Conditioning latents and noise of one window.

        Encodes in the released pipeline's order, so a seeded generator is consumed identically: first frame
        (window 0), source video, noise, masked video.

        Args:
            video (`torch.Tensor` of shape `(1, 3, T, H, W)`, [-1, 1]): the window's frames.
            mask (`torch.Tensor` of shape `(T, H, W)`, bool): the window's (dilated) masks.
            image (`torch.Tensor` of shape `(1, 3, 1, H, W)`): the first frame (window 0, whose frame 0 it replaces
                and whose frame-0 mask is cleared), or None.
            chained_latent (`torch.Tensor` of shape `(1, 1, C, h, w)`): the previous window's latent (window > 0).
            noise (`torch.Tensor` of shape `(1, F, C, h, w)`): the window's noise; None draws it from `generator`.
            context_fill, source_fill, mask_downsample, chaining: see `__call__`.
        """
        mask = mask.clone()
        if image is not None:
            video = torch.cat([image, video[:, :, 1:]], dim=2)
            mask[0] = False
        hole = mask[None, None]  # [1, 1, T, H, W]
        if image is not None:
            image_latent = self._encode_video(image, generator).to(dtype)  # [1, 1, C, h, w]
        elif chained_latent is not None:
            image_latent = chained_latent.to(dtype)
        else:
            raise ValueError("a window needs the first frame (`image`) or the previous window's latent.")
        source_latents = self._encode_video(torch.where(hole, source_fill, video), generator).to(dtype)
        if noise is None:
            noise = randn_tensor(tuple(source_latents.shape), generator=generator, device=video.device, dtype=dtype)
        masked_video_latents = self._encode_video(torch.where(hole, context_fill, video), generator).to(dtype)
        mask_latents = self._mask_latents(mask, mask_downsample).to(dtype)
        if image is None and chaining == "image_and_first":
            # the chained latent stands for the window's known first frame: re-imposed and not masked
            masked_video_latents[:, :1] = image_latent
            source_latents[:, :1] = image_latent
            mask_latents[:, :1] = 0
        image_latents = torch.cat([image_latent, torch.zeros_like(masked_video_latents[:, 1:])], dim=1)
        return _Window(source_latents, masked_video_latents, mask_latents, image_latents, noise.to(dtype))

    def _denoise_window(
        self,
        window: _Window,
        prompt_embeds: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        timesteps: torch.Tensor,
        guidance_scale: float,
        use_dynamic_cfg: bool,
        conditioning_scale: float,
        replace_gt: bool,
        from_source: bool,
        id_memory: IDMemory | None,
        prev_clip_weight: float,
        id_prev_mask_quirk: bool,
        keep_memory: bool,
        generator: torch.Generator | None,
        attention_kwargs: dict[str, Any] | None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None,
        callback_on_step_end_tensor_inputs: list[str],
        progress_bar: Any,
    ) -> tuple[torch.Tensor, IDMemory | None]:
        """Denoise one window; returns its latents `(1, F, C, h, w)` and, when `keep_memory`, its ID memory.

        `from_source` (strength < 1) starts from the source latent noised to `timesteps[0]` instead of pure noise.
        """
        do_cfg = prompt_embeds.shape[0] == 2
        copies = 2 if do_cfg else 1
        num_steps = len(timesteps)
        noise = window.noise
        if from_source:
            latents = self.scheduler.add_noise(window.source_latents, noise, timesteps[:1])
        else:
            latents = noise * self.scheduler.init_noise_sigma
        branch_cond = torch.cat([window.masked_video_latents, window.mask_latents], dim=2).repeat(copies, 1, 1, 1, 1)
        # [copies, F, C + 1, h, w]
        image_latents = window.image_latents.repeat(copies, 1, 1, 1, 1)
        token_mask = latent_mask_to_token_mask(window.mask_latents, self.transformer.config.patch_size)
        token_mask = token_mask.repeat(copies, 1)  # [copies, num_video_tokens]
        keep_background = 1 - window.mask_latents  # [1, F, 1, h, w]
        old_pred_original_sample = None
        new_memory = None
        self._reset_caches()  # step-indexed caches start afresh in every window
        for i, t in enumerate(timesteps):
            self._current_timestep = t
            latent_model_input = self.scheduler.scale_model_input(latents.repeat(copies, 1, 1, 1, 1), t)
            timestep = t.expand(copies)
            branch_block_samples = self.context_encoder(
                hidden_states=latent_model_input,
                encoder_hidden_states=prompt_embeds,
                branch_cond=branch_cond,
                timestep=timestep,
                image_rotary_emb=image_rotary_emb,
                conditioning_scale=conditioning_scale,
                return_dict=False,
            )[0]
            last_step = i == num_steps - 1
            if id_memory is not None and id_prev_mask_quirk and i > 0:
                # the released pipeline reads the previous clip through the *current* window's token mask from the
                # second step on (it reassigns its `prev_resample_mask` after every transformer call)
                id_memory = IDMemory(block_hidden_states=id_memory.block_hidden_states, token_mask=token_mask)
            with self._cache_context():
                noise_pred, block_hidden_states = self.transformer(
                    hidden_states=torch.cat([latent_model_input, image_latents], dim=2),
                    encoder_hidden_states=prompt_embeds,
                    timestep=timestep,
                    image_rotary_emb=image_rotary_emb,
                    branch_block_samples=branch_block_samples,
                    branch_token_mask=token_mask,
                    id_memory=id_memory,
                    prev_clip_weight=prev_clip_weight,
                    return_block_hidden_states=keep_memory and last_step,
                    attention_kwargs=attention_kwargs,
                    return_dict=False,
                )
            if block_hidden_states is not None:
                new_memory = IDMemory(block_hidden_states=block_hidden_states, token_mask=token_mask)
            noise_pred = noise_pred.float()

            if do_cfg:
                scale = guidance_scale
                if use_dynamic_cfg:  # upstream CogVideoX's cosine ramp, evaluated at the timestep value as there
                    scale = (
                        1 + guidance_scale * (1 - math.cos(math.pi * ((num_steps - t.item()) / num_steps) ** 5)) / 2
                    )
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + scale * (cond - uncond)

            latents, old_pred_original_sample = self.scheduler.step(
                noise_pred,
                old_pred_original_sample,
                t,
                timesteps[i - 1] if i > 0 else None,
                latents,
                generator=generator,
                return_dict=False,
            )
            latents = latents.to(prompt_embeds.dtype)

            if replace_gt:  # re-impose the known background, noised to the next step's level
                if last_step:
                    source = window.source_latents
                else:
                    source = self.scheduler.add_noise(window.source_latents, noise, timesteps[i + 1 : i + 2])
                latents = keep_background * source + (1 - keep_background) * latents

            if callback_on_step_end is not None:
                values = {"latents": latents, "prompt_embeds": prompt_embeds}
                callback_kwargs = {k: values.get(k) for k in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = outputs.pop("latents", latents)
            progress_bar.update()
        self._current_timestep = None
        return latents, new_memory

    def _cache_context(self) -> contextlib.AbstractContextManager:
        """The cache context stateful diffusers hooks require around a denoiser call (CFG is one batch here)."""
        if getattr(self.transformer, "is_cache_enabled", False):
            return self.transformer.cache_context("cfg_batch")
        return contextlib.nullcontext()

    def _reset_caches(self) -> None:
        """Clear the state of diffusers caching hooks (see `videopainter.pipelines.acceleration`), if any."""
        for model in (self.transformer, self.context_encoder):
            if getattr(model, "is_cache_enabled", False):
                model._reset_stateful_cache()

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """The timestep being denoised (None outside the loop); read by timestep-gated caching hooks."""
        return getattr(self, "_current_timestep", None)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`(1, F, C, h, w)` scaled latents -> `(1, 3, 4 (F - 1) + 1, H, W)` in [-1, 1]."""
        latents = latents.permute(0, 2, 1, 3, 4) / self.vae_scaling_factor_image  # [1, C, F, h, w]
        return self.vae.decode(latents.to(self.vae.dtype)).sample

    def latent_layout(self, num_frames: int, num_frames_per_window: int, window_overlap: int) -> tuple[list[int], int]:
        """Where each window's latents go: `(offsets, latent_slots)`.

        With an overlap of 4m + 1 frames window k starts at latent slot `k * stride / 4` and shares m + 1 slots
        with window k - 1 (averaged); the slots form one latent video of `(num_frames - 1) / 4 + 1` frames, decoded
        at once. With overlap 0 the windows get disjoint slots (`k * latent_frames_per_window`) and each window is
        decoded on its own, so output frame i is input frame i. (The released pipeline instead lets consecutive
        windows share one slot, which yields 48 n + 1 frames for n windows of 49: it drops a frame at every
        boundary. Each window's own latents are the same either way.)
        """
        r = self.vae_scale_factor_temporal
        window_latents = (num_frames_per_window - 1) // r + 1
        stride = num_frames_per_window - window_overlap
        num_windows = (num_frames - num_frames_per_window) // stride + 1
        step = window_latents if window_overlap == 0 else stride // r
        offsets = [k * step for k in range(num_windows)]
        return offsets, offsets[-1] + window_latents

    @torch.no_grad()
    def __call__(
        self,
        video: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        first_frame: np.ndarray | PIL.Image.Image | torch.Tensor | None = None,
        num_frames_per_window: int = 49,
        window_overlap: int = 0,
        num_inference_steps: int = 50,
        strength: float = 1.0,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = True,
        dilation_radius: int | None = None,
        replace_gt: bool = True,
        conditioning_scale: float = 1.0,
        prev_clip_weight: float = 0.0,
        context_fill: float = OFFICIAL_CONTEXT_FILL,
        source_fill: float = RELEASE_SOURCE_FILL,
        mask_downsample: MaskDownsample = "nearest",
        chaining: Chaining = "image",
        id_prev_mask_quirk: bool = False,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 226,
    ) -> VideoPainterPipelineOutput | tuple:
        """Inpaint (or edit) the masked region of one video. The defaults reproduce the released inference.

        Args:
            video: `np.ndarray` of shape `(num_frames, height, width, 3)` uint8, or `torch.Tensor` of shape
                `(num_frames, 3, height, width)` in [0, 1]. `num_frames = num_frames_per_window + n * stride`.
            mask: `(num_frames, height, width)`, True (or 1) = region to fill.
            prompt: the target caption (removal: the caption without the object; insertion/replacement: the edited
                caption). Or pass `prompt_embeds`.
            negative_prompt: default `""`.
            first_frame: the inpainted/edited first frame, `(height, width, 3)` uint8, a PIL image or `(3, H, W)` in
                [0, 1]; None uses `first_frame_inpainter`.
            num_frames_per_window: 4k + 1 frames per window (49 for CogVideoX-5B-I2V).
            window_overlap: frames shared by consecutive windows: 0 (released: stride = window length) or 4m + 1
                (stride a multiple of 4). See `latent_layout`.
            num_inference_steps, guidance_scale, use_dynamic_cfg: sampler settings (release: 50, 6.0, True).
            strength: in (0, 1]; below 1 every window starts from its source latent noised to the timestep
                `int(num_inference_steps * strength)` steps before the end and runs only those steps.
            dilation_radius: grow the masks by this many pixels (square kernel of side `2 * radius + 1`). None = the
                release's rule: `FIRST_FRAME_MODEL_DILATION_RADIUS` when `first_frame_inpainter` makes the first
                frame, else 0.
            replace_gt: latent hard blend of the source latent outside the mask after every step.
            conditioning_scale: multiplies the context encoder's outputs.
            prev_clip_weight: with the ID adapter, weight of the previous window's masked tokens (0 = each window
                resamples its own masked tokens).
            context_fill: value in [-1, 1] of masked pixels in the context encoder's input (release 0.0; training
                -1.0).
            source_fill: value in [-1, 1] of masked pixels in the source video that `replace_gt` and `strength < 1`
                encode (release script -1.0).
            mask_downsample: `"nearest"` (release) or `"max_pool"` (training); see `_mask_latents`.
            chaining: `"image"` (release: a later window gets only the chained image latent) or
                `"image_and_first"` (training: the chained latent also replaces its first masked-video and source
                latent, whose mask is cleared).
            id_prev_mask_quirk: reproduce the released pipeline's previous-clip ID resampling exactly, which from a
                later window's second step masks the previous clip with the current window's token mask. Off: the
                previous clip is always read through its own token mask (the intended behaviour).
            generator: seeds the noise, the VAE sampling and the sampler's step noise.
            latents: initial noise `(1, latent_slots, C, h, w)` in the `latent_layout` of the call, sliced per
                window; None draws each window's noise from `generator` in turn.
            prompt_embeds, negative_prompt_embeds: `(1, max_text_seq_length, text_embed_dim)`.
            output_type: "np", "pt", "pil" or "latent" (see `VideoPainterPipelineOutput`).
            return_dict: False returns `(frames,)`.
            attention_kwargs: passed to the processors; `scale` overrides the LoRA scale for this call.
            callback_on_step_end: `callback(pipe, step, timestep, callback_kwargs) -> dict`, every step of every
                window.
            max_sequence_length: T5 length; must equal the transformer's `max_text_seq_length`.
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs
        self.check_inputs(
            video,
            mask,
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            num_frames_per_window,
            window_overlap,
            max_sequence_length,
            callback_on_step_end_tensor_inputs,
            strength,
            dilation_radius,
            mask_downsample,
            chaining,
            context_fill,
            source_fill,
        )
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 2. Encode the prompt ([negative; positive] when guiding)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, do_cfg, prompt_embeds, negative_prompt_embeds, max_sequence_length, device
        )
        if do_cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
        dtype = prompt_embeds.dtype

        # 3. Timesteps (the same schedule for every window); strength keeps the last steps only
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        kept = min(int(num_inference_steps * strength), num_inference_steps)
        if kept < 1:
            raise ValueError(
                f"`strength` {strength} keeps no step of {num_inference_steps}; raise `strength` or the step count."
            )
        timesteps = self.scheduler.timesteps[(num_inference_steps - kept) * self.scheduler.order :]

        # 4. Pixels: video in [-1, 1], dilated masks, first frame
        pixels = self._to_video_tensor(video, device)  # [1, 3, T, H, W]
        masks = torch.from_numpy(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
        if dilation_radius is None:
            from_model = first_frame is None and self.first_frame_inpainter is not None
            dilation_radius = FIRST_FRAME_MODEL_DILATION_RADIUS if from_model else 0
        masks = dilate_masks(masks.bool(), dilation_radius).to(device)  # [T, H, W]
        num_frames, height, width = masks.shape
        image = self._first_frame(first_frame, pixels, masks, prompt)  # [1, 3, 1, H, W]

        # 5. Windows and the latent slots
        stride = num_frames_per_window - window_overlap
        offsets, latent_slots = self.latent_layout(num_frames, num_frames_per_window, window_overlap)
        r = self.vae_scale_factor_temporal
        window_latent_frames = (num_frames_per_window - 1) // r + 1
        latent_shape = (
            1,
            latent_slots,
            self.transformer.config.out_channels,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        if latents is not None:
            if tuple(latents.shape) != latent_shape:
                raise ValueError(f"`latents` must have shape {latent_shape}; got {tuple(latents.shape)}.")
            latents = latents.to(device=device, dtype=dtype)
        accumulator = torch.zeros(latent_shape, device=device, dtype=torch.float32)
        counts = torch.zeros(latent_slots, device=device, dtype=torch.float32)
        image_rotary_emb = self._prepare_rotary_positional_embeddings(height, width, window_latent_frames, device)
        num_windows = len(offsets)
        keep_memory = self.transformer.id_resample_enabled and prev_clip_weight > 0 and num_windows > 1
        # the chained latent: the previous window's last latent before the overlap (its last one without overlap)
        chain_index = -1 if window_overlap == 0 else -((window_overlap - 1) // r) - 1
        chained_latent = id_memory = None

        # 6. Denoise window by window
        with self.progress_bar(total=num_windows * len(timesteps)) as progress_bar:
            for k, offset in enumerate(offsets):
                start = k * stride
                window = self.prepare_window(
                    pixels[:, :, start : start + num_frames_per_window],
                    masks[start : start + num_frames_per_window],
                    image if k == 0 else None,
                    chained_latent,
                    None if latents is None else latents[:, offset : offset + window_latent_frames],
                    generator,
                    dtype,
                    context_fill=context_fill,
                    source_fill=source_fill,
                    mask_downsample=mask_downsample,
                    chaining=chaining,
                )
                window_latents, id_memory = self._denoise_window(
                    window,
                    prompt_embeds,
                    image_rotary_emb,
                    timesteps,
                    guidance_scale,
                    use_dynamic_cfg,
                    conditioning_scale,
                    replace_gt,
                    strength < 1,
                    id_memory,
                    prev_clip_weight,
                    id_prev_mask_quirk,
                    keep_memory and k < num_windows - 1,
                    generator,
                    attention_kwargs,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    progress_bar,
                )
                accumulator[:, offset : offset + window_latent_frames] += window_latents.float()
                counts[offset : offset + window_latent_frames] += 1
                chained_latent = window_latents[:, chain_index][:, None]

        # 7. Average shared slots and decode (once, or window by window without overlap)
        latents = (accumulator / counts[None, :, None, None, None]).to(dtype)
        if output_type == "latent":
            frames = latents
        else:
            if window_overlap == 0:
                decoded = torch.cat(
                    [self.decode_latents(latents[:, o : o + window_latent_frames]) for o in offsets], dim=2
                )
            else:
                decoded = self.decode_latents(latents)  # [1, 3, T, H, W]
            frames = self.video_processor.postprocess_video(decoded, output_type=output_type)[0]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return VideoPainterPipelineOutput(frames=frames)
