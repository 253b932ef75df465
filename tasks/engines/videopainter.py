"""The VideoPainter engine: the factory's generative (GPU) inpainting engine (docs/architecture.md, docs/method.md).

``VideoPainterEngine`` adapts ``videopainter.VideoPainterPipeline`` to the ``InpaintEngine`` interface; the pipeline
is loaded once in ``setup()`` and kept for the whole batch. Its settings default to the released inference (windows
of 49 frames side by side, no dilation unless FLUX Fill makes the first frame). Speed options (``cache``,
``fuse_qkv``, ``compile_blocks``) are off by default; ``bench/gpu_videopainter.py`` measures them.

``version`` names the code and the checkpoints by content: the SHA-256 of every file of the base folder, the
branch and the ID LoRA (hashed once per process and file; a changed size or mtime re-hashes).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine
from tasks.errors import InputError


ENGINE_CODE_VERSION = "2"  # 2: parity with the released inference by default, overlap 0, dilation radius
Dtype = Literal["bfloat16", "float16", "float32"]
Offload = Literal["none", "model", "sequential"]
Cache = Literal["none", "pyramid_attention_broadcast", "taylorseer"]

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, cached per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def checkpoint_hash(path: Path) -> str:
    """SHA-256 over the sorted (relative path, content hash) of every file under ``path`` (or of the file)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"checkpoint {path} holds no files")
    digest = hashlib.sha256()
    for file in files:
        name = file.name if path.is_file() else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


class VideoPainterEngine(InpaintEngine):
    """VideoPainter through the factory's engine interface (see the module docstring).

    Args:
        base: the CogVideoX-5B-I2V folder (diffusers layout), or a folder saved by ``VideoPainterPipeline``;
            a local path or an fsspec URL.
        branch: the released ``branch/`` folder (context encoder); may be None for a saved VideoPainter folder.
        id_lora: the ID-resample LoRA file or folder (optional).
        id_lora_scale: 1.0 reproduces the release, 0.5 is the training scale.
        flux_fill: a local FLUX.1-Fill-dev folder for first frames (optional).
        device, dtype: where and in which precision to run.
        offload: ``"model"`` / ``"sequential"`` CPU offload for small GPUs (memory: ``docs/method.md``, "Memory").
        vae_tiling: tile the VAE (long clips).
        num_inference_steps, guidance_scale, use_dynamic_cfg, replace_gt, conditioning_scale, prev_clip_weight,
            num_frames_per_window, window_overlap: pipeline settings (the release's defaults: 50, 6.0, True, True,
            1.0, 0.0, 49, 0).
        strength: in (0, 1]; below 1 each window starts from its input noised part-way (partial denoising).
        dilation_radius: grow the masks inside the pipeline by this many pixels (square kernel of side
            2 * radius + 1). None = the release's rule: 16 when FLUX Fill makes the first frame, else 0 (the
            factory's masks arrive already dilated).
        cache: a diffusers caching hook on the backbone's attention (``"pyramid_attention_broadcast"`` or
            ``"taylorseer"``), off by default; ``cache_interval``: attention computed every N steps where it acts.
        fuse_qkv: fused query/key/value projections (merges the ID LoRA first).
        compile_blocks: regional ``torch.compile`` of the transformer blocks.
        cache_dir: where fsspec URLs are downloaded.
    """

    engine_id = "videopainter"
    edit_types = frozenset({"remove", "add", "replace", "attribute"})

    def __init__(
        self,
        *,
        base: str | os.PathLike,
        branch: str | os.PathLike | None = None,
        id_lora: str | os.PathLike | None = None,
        id_lora_scale: float = 1.0,
        flux_fill: str | os.PathLike | None = None,
        device: str = "cuda",
        dtype: Dtype = "bfloat16",
        offload: Offload = "none",
        vae_tiling: bool = True,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = True,
        replace_gt: bool = True,
        conditioning_scale: float = 1.0,
        prev_clip_weight: float = 0.0,
        num_frames_per_window: int = 49,
        window_overlap: int = 0,
        strength: float = 1.0,
        dilation_radius: int | None = None,
        cache: Cache = "none",
        cache_interval: int = 2,
        fuse_qkv: bool = False,
        compile_blocks: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ):
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"VideoPainterEngine: dtype must be bfloat16, float16 or float32, got {dtype!r}")
        if offload not in ("none", "model", "sequential"):
            raise ValueError(f"VideoPainterEngine: offload must be none, model or sequential, got {offload!r}")
        if num_inference_steps < 1:
            raise ValueError(f"VideoPainterEngine: num_inference_steps must be >= 1, got {num_inference_steps}")
        if dilation_radius is not None and dilation_radius < 0:
            raise ValueError(f"VideoPainterEngine: dilation_radius must be None or >= 0, got {dilation_radius}")
        if not 0 < strength <= 1:
            raise ValueError(f"VideoPainterEngine: strength must be in (0, 1], got {strength}")
        if window_overlap < 0 or window_overlap >= num_frames_per_window:
            raise ValueError(
                f"VideoPainterEngine: window_overlap must be in [0, {num_frames_per_window}), got {window_overlap}"
            )
        if cache not in ("none", "pyramid_attention_broadcast", "taylorseer"):
            raise ValueError(
                f"VideoPainterEngine: cache must be none, pyramid_attention_broadcast or taylorseer, got {cache!r}"
            )
        if cache_interval < 2:
            raise ValueError(f"VideoPainterEngine: cache_interval must be >= 2, got {cache_interval}")
        self.cache, self.cache_interval = cache, int(cache_interval)
        self.fuse_qkv, self.compile_blocks = bool(fuse_qkv), bool(compile_blocks)
        self.base, self.branch, self.id_lora, self.flux_fill = base, branch, id_lora, flux_fill
        self.id_lora_scale = float(id_lora_scale)
        self.device, self.dtype, self.offload, self.vae_tiling = device, dtype, offload, vae_tiling
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.use_dynamic_cfg = bool(use_dynamic_cfg)
        self.replace_gt = bool(replace_gt)
        self.conditioning_scale = float(conditioning_scale)
        self.prev_clip_weight = float(prev_clip_weight)
        self.num_frames_per_window = int(num_frames_per_window)
        self.window_overlap = int(window_overlap)
        self.strength = float(strength)
        self.dilation_radius = None if dilation_radius is None else int(dilation_radius)
        self.cache_dir = cache_dir
        self.pipe: Any = None
        self._version: str | None = None
        self._fallback: InpaintEngine | None = None

    # ------------------------------------------------------------------ identity

    def _local(self, location: str | os.PathLike) -> Path:
        from videopainter.loaders import resolve_local

        return resolve_local(location, self.cache_dir)

    @property
    def version(self) -> str:
        """``videopainter-<code>+base.<h>+branch.<h>+idlora.<h|none>+flux.<h|none>`` (12 hex digits each)."""
        if self._version is None:
            parts = [f"videopainter-{ENGINE_CODE_VERSION}"]
            for name, location in (
                ("base", self.base),
                ("branch", self.branch),
                ("idlora", self.id_lora),
                ("flux", self.flux_fill),
            ):
                parts.append(f"{name}.{checkpoint_hash(self._local(location))[:12] if location else 'none'}")
            self._version = "+".join(parts)
        return self._version

    def params(self) -> dict:
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "use_dynamic_cfg": self.use_dynamic_cfg,
            "replace_gt": self.replace_gt,
            "conditioning_scale": self.conditioning_scale,
            "prev_clip_weight": self.prev_clip_weight,
            "id_lora_scale": self.id_lora_scale if self.id_lora else None,
            "num_frames_per_window": self.num_frames_per_window,
            "window_overlap": self.window_overlap,
            "strength": self.strength,
            "dilation_radius": self.dilation_radius,
            "cache": self.cache,
            "cache_interval": self.cache_interval if self.cache != "none" else None,
            "fuse_qkv": self.fuse_qkv,
            "compile_blocks": self.compile_blocks,
            "dtype": self.dtype,
            "first_frame_source": "flux_fill" if self.flux_fill else "propagation",
        }

    # ------------------------------------------------------------------ loading

    def setup(self) -> None:
        """Load the pipeline (and FLUX Fill when configured) once; later calls do nothing."""
        if self.pipe is not None:
            return
        import torch

        from videopainter.pipelines.pipeline_videopainter import VideoPainterPipeline

        torch_dtype = getattr(torch, self.dtype)
        pipe = VideoPainterPipeline.from_pretrained(
            self.base,
            branch=self.branch,
            id_lora=self.id_lora,
            id_lora_scale=self.id_lora_scale if self.id_lora else None,
            cache_dir=self.cache_dir,
            torch_dtype=torch_dtype,
        )
        if self.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.vae_tiling:
            pipe.enable_vae_tiling()
        from videopainter.pipelines.acceleration import Acceleration

        acceleration = Acceleration(
            cache=self.cache,
            cache_interval=self.cache_interval,
            fuse_qkv=self.fuse_qkv,
            compile_blocks=self.compile_blocks,
        )
        if acceleration.enabled:
            pipe.enable_acceleration(acceleration)
        pipe.set_progress_bar_config(disable=True)
        if self.flux_fill:
            from videopainter.pipelines.first_frame import FluxFillFirstFrame

            pipe.set_first_frame_inpainter(
                FluxFillFirstFrame(self._local(self.flux_fill), device=self.device, torch_dtype=torch_dtype)
            )
        self.pipe = pipe

    @property
    def geometry(self) -> tuple[int, int]:
        """The model's (height, width) in pixels."""
        self.setup()
        config = self.pipe.transformer.config
        return config.sample_height * self.pipe.vae_scale_factor_spatial, config.sample_width * (
            self.pipe.vae_scale_factor_spatial
        )

    # ------------------------------------------------------------------ rendering

    def _padded_length(self, num_frames: int) -> int:
        stride = self.num_frames_per_window - self.window_overlap
        if num_frames <= self.num_frames_per_window:
            return self.num_frames_per_window
        return self.num_frames_per_window + -(-(num_frames - self.num_frames_per_window) // stride) * stride

    def _first_frame_fallback(self, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Frame 0 inpainted by the CPU propagation engine (removal without FLUX)."""
        if self._fallback is None:
            from tasks.engines.propagation import PropagationEngine

            self._fallback = PropagationEngine()
        return self._fallback.inpaint(frames, masks, edit_type="remove")[0]

    def fill(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str,
        edit_type: str,
        seed: int,
        first_frame: np.ndarray | None,
    ) -> Inpainted:
        """See ``InpaintEngine.fill`` (inputs already checked; the base class pastes the source outside ``masks``).

        Per clip:

        1. checks the first frame (``InputError`` for a bad one, so the batch goes on);
        2. resizes the clip to the model's geometry (480x720 for CogVideoX-5B-I2V, whose learned positional
           embeddings accept no other size) and pads it, by repeating the last frame, to a length the windows cover
           exactly (``num_frames_per_window + n * stride``);
        3. takes the first frame from ``first_frame`` (an edited frame for ``add``/``replace``/``attribute``), else
           from FLUX Fill when ``flux_fill`` is configured, else (removal only) from the CPU propagation engine's
           frame 0;
        4. runs the pipeline with a seeded generator and undoes the padding and resizing.
        """
        if first_frame is not None and (first_frame.dtype != np.uint8 or first_frame.shape != frames.shape[1:]):
            raise InputError("first_frame", "bad_first_frame", f"first_frame must be uint8 {frames.shape[1:]}")
        if first_frame is None and edit_type != "remove" and not self.flux_fill:
            raise InputError(
                "first_frame",
                "missing_first_frame",
                f"a {edit_type!r} edit needs an edited first frame (or a configured flux_fill model)",
            )
        self.setup()
        import torch

        num_frames, height, width = masks.shape
        model_height, model_width = self.geometry

        # 1. Model geometry: resize, then pad the length by repeating the last frame
        def to_model(array: np.ndarray, interpolation: int) -> np.ndarray:
            if (height, width) == (model_height, model_width):
                return array
            return np.stack([cv2.resize(a, (model_width, model_height), interpolation=interpolation) for a in array])

        video = to_model(frames, cv2.INTER_AREA)
        mask = to_model(masks.astype(np.uint8), cv2.INTER_NEAREST) > 0
        pad = self._padded_length(num_frames) - num_frames
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        mask = np.concatenate([mask, np.repeat(mask[-1:], pad, axis=0)])

        # 2. First frame: given, FLUX Fill inside the pipeline, or the propagation engine's frame 0
        if first_frame is not None:
            first = to_model(first_frame[None], cv2.INTER_AREA)[0]
        elif self.flux_fill:
            first = None
        else:
            first = self._first_frame_fallback(video[: self.num_frames_per_window], mask[: self.num_frames_per_window])

        # 3. Generate
        generated = self.pipe(
            video=video,
            mask=mask,
            prompt=prompt,
            first_frame=first,
            num_frames_per_window=self.num_frames_per_window,
            window_overlap=self.window_overlap,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            use_dynamic_cfg=self.use_dynamic_cfg,
            strength=self.strength,
            dilation_radius=self.dilation_radius,
            replace_gt=self.replace_gt,
            conditioning_scale=self.conditioning_scale,
            prev_clip_weight=self.prev_clip_weight,
            generator=torch.Generator("cpu").manual_seed(seed),
            max_sequence_length=self.pipe.transformer.config.max_text_seq_length,
            output_type="np",
        ).frames
        generated = (np.clip(generated[:num_frames], 0, 1) * 255).round().astype(np.uint8)

        # 4. Back to the clip's geometry (InpaintEngine.run keeps the source outside the mask)
        if (height, width) != (model_height, model_width):
            generated = np.stack([cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC) for g in generated])
        return Inpainted(generated)
