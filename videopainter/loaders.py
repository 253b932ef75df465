"""Checkpoint locations (local folders or fsspec URLs) and the ID-resample LoRA.

Everything loads offline: a URL (``s3://…``, ``memory://…``, ``https://…``) is first copied with fsspec into a
local cache folder, then read with the ordinary diffusers loaders from that folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec
import torch
from diffusers.loaders import CogVideoXLoraLoaderMixin

from videopainter.models.attention import ID_LORA_RELEASE_SCALE
from videopainter.models.transformer import VideoPainterTransformer3DModel


ID_LORA_ADAPTER_NAME = "id_resample"
ID_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def default_cache_dir() -> Path:
    """``$VPF_MODEL_CACHE``, else ``~/.cache/videopainter``."""
    return Path(os.environ.get("VPF_MODEL_CACHE", Path.home() / ".cache" / "videopainter"))


def resolve_local(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a local path for ``location``: itself when local, else a cached copy of the fsspec URL.

    A URL is copied (recursively for a folder) into ``cache_dir / <sha256(url)[:16]>`` once; a finished copy is
    marked by a ``.complete`` file so an interrupted download is redone rather than half-used.
    """
    text = os.fspath(location)
    if "://" not in text or text.startswith("file://"):
        path = Path(text.removeprefix("file://")).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"checkpoint location {text!r} does not exist")
        return path
    fs, remote = fsspec.core.url_to_fs(text)
    if not fs.exists(remote):
        raise FileNotFoundError(f"checkpoint location {text!r} does not exist")
    target = Path(cache_dir or default_cache_dir()) / hashlib.sha256(text.encode()).hexdigest()[:16]
    name = Path(remote.rstrip("/")).name
    local = target / name
    if (target / ".complete").exists():
        return local
    target.mkdir(parents=True, exist_ok=True)
    if fs.isdir(remote):
        for path in fs.find(remote):
            destination = local / Path(path).relative_to(Path(remote))
            destination.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(destination))
    else:
        fs.get_file(remote, str(local))
    (target / ".complete").write_text(text)
    return local


def lora_file(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ID LoRA safetensors file: ``location`` itself, or ``location/pytorch_lora_weights.safetensors``."""
    path = resolve_local(location, cache_dir)
    if path.is_dir():
        path = path / ID_LORA_WEIGHT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"ID LoRA {os.fspath(location)!r}: no {ID_LORA_WEIGHT_NAME} found")
    return path


def load_id_lora(
    transformer: VideoPainterTransformer3DModel,
    location: str | os.PathLike | dict[str, torch.Tensor],
    scale: float = ID_LORA_RELEASE_SCALE,
    adapter_name: str = ID_LORA_ADAPTER_NAME,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Load the ID-resample LoRA into ``transformer`` and install the ID-resample attention processor.

    The released file (``transformer.transformer_blocks.{i}.attn1.{to_q,to_k,to_v,to_out.0}.lora_{A,B}.weight``)
    stores no alpha, so diffusers rebuilds the adapter at alpha = r, scale 1.0. ``scale`` is the adapter weight
    on top of that: 1.0 (default) reproduces the released results; ``ID_LORA_TRAINING_SCALE`` (0.5 = alpha / r)
    is the scale the adapter was trained at.
    """
    source = location if isinstance(location, dict) else str(lora_file(location, cache_dir))
    state_dict, metadata = CogVideoXLoraLoaderMixin.lora_state_dict(source, return_lora_metadata=True)
    if not state_dict or not all(key.startswith("transformer.") and "lora_" in key for key in state_dict):
        raise ValueError(f"ID LoRA {location!r}: expected only `transformer.*.lora_A/B` keys")
    CogVideoXLoraLoaderMixin.load_lora_into_transformer(
        state_dict, transformer=transformer, adapter_name=adapter_name, metadata=metadata
    )
    transformer.set_adapters([adapter_name], weights=[scale])
    transformer.set_id_resample(True)
