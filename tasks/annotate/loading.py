"""Loading annotation models: local folders (or fsspec URLs copied to a local cache), device selection."""

from __future__ import annotations

import functools
import hashlib
import json
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


MODEL_TYPES: dict[str, frozenset[str]] = {
    "detector": frozenset({"grounding-dino", "owlv2", "owlvit"}),
    "sam2 video tracker": frozenset({"sam2_video", "sam2"}),
    "sam3 video": frozenset({"sam3_video", "sam3"}),
    "clip": frozenset({"clip"}),
}
"""The ``config.json`` ``model_type`` values each role accepts (a released SAM2/SAM3 folder may say either)."""


def is_remote(uri: str) -> bool:
    """True for fsspec URLs other than ``file://`` (their folders are copied to the model cache to load)."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def read_model_config(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of the saved model at ``uri`` (a folder or fsspec URL), read without loading weights.
    Raises ``InputError`` (``not_found``) when there is none, ``ValueError`` when it is not a JSON object."""
    uri = str(uri)
    if is_remote(uri):
        fs, remote = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        target = f"{remote.rstrip('/')}/config.json"
        if not fs.exists(target):
            raise InputError(uri, "not_found", "no config.json at this model URL")
        data = fs.cat_file(target)
    else:
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
        if not path.exists():
            raise InputError(uri, "not_found", "no such model folder")
        if not (path / "config.json").is_file():
            raise InputError(uri, "not_found", "not a saved model folder (no config.json)")
        data = (path / "config.json").read_bytes()
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{uri}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{uri}: config.json is not a JSON object")
    return config


def model_role(config: Mapping[str, Any]) -> str | None:
    """The role of :data:`MODEL_TYPES` whose model types hold ``config``'s ``model_type`` (``None``: none)."""
    kind = str(config.get("model_type") or "")
    return next((role for role, kinds in MODEL_TYPES.items() if kind in kinds), None)


def not_a_vlm(config: Mapping[str, Any], where: str) -> str | None:
    """Why the model of ``config`` cannot serve as a vision-language model (caption, tags, judge), naming what it
    is: a detector, tracker or CLIP model (they see images but write no text), or a text-only model; ``None`` when
    it can (its config has a ``vision_config`` and it is none of those)."""
    kind = str(config.get("model_type") or "") or "model without model_type"
    role = model_role(config)
    if role is not None:
        return f"{where} is a {role} model ({kind}), not a vision-language model: it writes no text"
    if "vision_config" not in config:
        return f"{where} is a text-only {kind} model (no vision tower): it cannot see the frames"
    return None


def check_model_type(config: Mapping[str, Any], role: str, uri: str) -> str:
    """``config``'s ``model_type`` when :data:`MODEL_TYPES` accepts it for ``role``; ``ValueError`` naming both."""
    kind = str(config.get("model_type") or "")
    expected = MODEL_TYPES[role]
    if kind not in expected:
        architectures = ", ".join(config.get("architectures") or []) or "none"
        raise ValueError(
            f"{uri} is a {kind or 'model without model_type'} model (architectures: {architectures}), not a {role} "
            f"(model_type {' / '.join(sorted(expected))})"
        )
    return kind


def model_fingerprint(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The content identity of a saved model, cheap to compute: a hash of its ``config.json`` bytes and the name,
    size and modification time of every file at the folder's top level (``save_pretrained`` writes a flat folder).
    Weights are not read: a changed file changes its size or mtime. For a remote URL: the URL and its file listing
    (names and sizes); where that cannot be listed, the URL alone."""
    uri = str(uri)
    digest = hashlib.sha256()
    if is_remote(uri):
        digest.update(uri.encode())
        try:
            fs, remote = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
            for info in sorted(fs.ls(remote.rstrip("/"), detail=True), key=lambda i: i["name"]):
                digest.update(f"{info['name'].rsplit('/', 1)[-1]}\0{info.get('size')}\n".encode())
        except Exception:  # noqa: BLE001  (the URL alone identifies it then)
            pass
        return digest.hexdigest()[:16]
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if path.is_file():  # a single checkpoint file (segment-anything)
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    config = path / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    if path.is_dir():
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                stat = entry.stat()
                digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


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
    role: str | None = None,
    **overrides: Any,
) -> tuple[Any, Any, str]:
    """``(model, processor, device)``: a transformers model of ``model_class`` and its ``AutoProcessor`` from the saved
    folder at ``path`` (local, or an fsspec URL cached by :func:`local_model_dir`; never downloaded), the model in
    eval mode on :func:`pick_device`'s choice. ``overrides`` go to the model's config (``from_pretrained``).

    ``role`` (a key of :data:`MODEL_TYPES`): the folder's ``config.json`` must name one of its model types, checked
    before any weight is read (``ValueError`` otherwise: a wrong folder never loads with only a warning)."""
    from transformers import AutoProcessor

    with MODEL_LOAD_LOCK:
        folder = local_model_dir(path, storage_options)
        if role is not None:
            check_model_type(read_model_config(str(folder)), role, str(path))
        device = pick_device(device)
        model = model_class.from_pretrained(folder, local_files_only=True, dtype=torch_dtype(dtype), **overrides)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return model.to(device).eval(), processor, device
