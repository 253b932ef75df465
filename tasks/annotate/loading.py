"""Loading annotation models: local folders (or fsspec URLs copied to a local cache), device selection."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, TypeVar

import fsspec

from tasks.errors import InputError


MODEL_LOAD_LOCK = threading.RLock()
"""Held while a model is imported and loaded from its folder. transformers' lazily imported module is not safe to
import from several threads at once (a class can come out missing: ``cannot import name … from transformers``), and
a run loads models on several threads (ingest batches, render lanes, the gate's scorers): they take turns here."""


F = TypeVar("F", bound=Callable[..., Any])


def under_load_lock(method: F) -> F:
    """Run a model's ``setup`` under :data:`MODEL_LOAD_LOCK` (see there)."""

    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with MODEL_LOAD_LOCK:
            return method(*args, **kwargs)

    return locked  # type: ignore[return-value]


def local_model_dir(uri: str, storage_options: Mapping[str, Any] | None = None) -> Path:
    """A local folder holding the model saved at ``uri`` (``save_pretrained`` layout).

    A local path is used as it is; any other fsspec URL (``s3://models/grounding-dino-base``) is copied once to
    ``$VPF_MODEL_CACHE`` (default ``~/.cache/vpf/models``) under a name derived from the URL. Raises ``InputError``
    (``not_found``) when there is no ``config.json`` there.
    """
    uri = str(uri)
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    else:
        cache = Path(os.environ.get("VPF_MODEL_CACHE", "~/.cache/vpf/models")).expanduser()
        path = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
        if not (path / "config.json").is_file():
            fs, remote = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
            if not fs.exists(f"{remote.rstrip('/')}/config.json"):
                raise InputError(uri, "not_found", "no config.json at this model URL")
            tmp = path.with_name(path.name + ".part")
            fs.get(remote.rstrip("/") + "/", str(tmp), recursive=True)
            tmp.rename(path)
    if not (path / "config.json").is_file():
        raise InputError(uri, "not_found", "not a saved model folder (no config.json)")
    return path


def pick_device(device: str | None) -> str:
    """``device`` as given, else ``cuda`` when available, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    """``float32`` | ``bfloat16`` | ``float16`` → the torch dtype (ValueError naming the argument otherwise)."""
    import torch

    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {name!r}")
    return getattr(torch, name)


def load_pretrained(
    model_class: Any,
    path: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    device: str | None = None,
    dtype: str = "float32",
    **overrides: Any,
) -> tuple[Any, Any, str]:
    """``(model, processor, device)``: a transformers model of ``model_class`` and its ``AutoProcessor`` from the saved
    folder at ``path`` (local, or an fsspec URL cached by :func:`local_model_dir`; never downloaded), the model in
    eval mode on :func:`pick_device`'s choice. ``overrides`` go to the model's config (``from_pretrained``)."""
    from transformers import AutoProcessor

    with MODEL_LOAD_LOCK:
        folder = local_model_dir(path, storage_options)
        device = pick_device(device)
        model = model_class.from_pretrained(folder, local_files_only=True, dtype=torch_dtype(dtype), **overrides)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return model.to(device).eval(), processor, device
