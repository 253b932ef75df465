"""Engines by name: ``get_engine(name, **kwargs)``, ``name`` one of ``ENGINE_NAMES``: ``auto``, ``propagation``,
``cv2-inpaint``, ``nearest-frame`` (the baselines: tasks/engines/baseline.py), ``null``, ``videopainter``, ``sleep``.

``sleep`` stands in for an accelerator (waits ``seconds`` per clip, holds no CPU): dry runs of a fleet, benchmarks.

``auto`` picks VideoPainter when its weights are configured (a ``base`` keyword argument, or the environment
variable ``VPF_VIDEOPAINTER_BASE``) and a CUDA device is present, otherwise the CPU ``propagation`` engine.
``resolve_engine`` says which one and why; the returned engine also carries it as ``selection_reason``.

VideoPainter settings may come from the environment when not given as keyword arguments:
``VPF_VIDEOPAINTER_BASE``, ``VPF_VIDEOPAINTER_BRANCH``, ``VPF_VIDEOPAINTER_ID_LORA``, ``VPF_VIDEOPAINTER_FLUX_FILL``.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

from tasks.engines.base import InpaintEngine


logger = logging.getLogger(__name__)

ENGINE_NAMES = ("auto", "propagation", "cv2-inpaint", "nearest-frame", "null", "videopainter", "sleep")
VIDEOPAINTER_ENV = {
    "base": "VPF_VIDEOPAINTER_BASE",
    "branch": "VPF_VIDEOPAINTER_BRANCH",
    "id_lora": "VPF_VIDEOPAINTER_ID_LORA",
    "flux_fill": "VPF_VIDEOPAINTER_FLUX_FILL",
}


@dataclass(frozen=True)
class EngineSelection:
    """The engine ``name`` resolves to, and why."""

    requested: str
    engine: str
    reason: str


def engine_class(name: str) -> type[InpaintEngine]:
    if name == "propagation":
        from tasks.engines.propagation import PropagationEngine

        return PropagationEngine
    if name == "cv2-inpaint":
        from tasks.engines.baseline import Cv2InpaintEngine

        return Cv2InpaintEngine
    if name == "nearest-frame":
        from tasks.engines.baseline import NearestFrameEngine

        return NearestFrameEngine
    if name == "sleep":
        from tasks.engines.sleep import SleepEngine

        return SleepEngine
    if name == "null":
        from tasks.engines.null import NullEngine

        return NullEngine
    if name == "videopainter":
        from tasks.engines.videopainter import VideoPainterEngine

        return VideoPainterEngine
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}")


def _keyword_names(cls: type) -> set[str]:
    return {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}


def _videopainter_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the VideoPainter paths filled from the environment where missing."""
    out = dict(kwargs)
    for key, var in VIDEOPAINTER_ENV.items():
        if out.get(key) is None and os.environ.get(var):
            out[key] = os.environ[var]
    return out


def cuda_available() -> bool:
    """True when torch imports and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU driver loaded (``/proc/driver/nvidia/version``), or torch is already
    imported and sees CUDA; never imports torch. Nothing can put a model on a GPU where this is False."""
    import sys
    from pathlib import Path

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return True
    return Path("/proc/driver/nvidia/version").exists()


def resolve_engine(name: str, **kwargs: Any) -> EngineSelection:
    """Which engine ``name`` means here (only ``auto`` depends on the machine)."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
    if name != "auto":
        return EngineSelection(name, name, "requested")
    base = _videopainter_kwargs(kwargs).get("base")
    if not base:
        return EngineSelection(
            name, "propagation", f"VideoPainter weights not configured (no base, ${VIDEOPAINTER_ENV['base']})"
        )
    if not cuda_available():
        return EngineSelection(name, "propagation", "VideoPainter weights configured but no CUDA device")
    return EngineSelection(name, "videopainter", f"VideoPainter weights at {base} and a CUDA device")


def get_engine(name: str, **kwargs: Any) -> InpaintEngine:
    """Build the engine ``name`` with its keyword arguments (not yet ``setup()``).

    For ``auto``, ``kwargs`` may mix the settings of both candidates; each engine receives the ones it accepts, and a
    keyword neither accepts is an error.
    """
    choice = resolve_engine(name, **kwargs)
    cls = engine_class(choice.engine)
    if choice.engine == "videopainter":
        kwargs = _videopainter_kwargs(kwargs)
    accepted = _keyword_names(cls)
    if name == "auto":
        from tasks.engines.propagation import PropagationEngine

        known = _keyword_names(PropagationEngine) | set(VIDEOPAINTER_ENV)
        if choice.engine == "videopainter" or kwargs:
            from tasks.engines.videopainter import VideoPainterEngine

            known |= _keyword_names(VideoPainterEngine)
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"engine 'auto': unknown option(s) {sorted(unknown)}")
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    else:
        unknown = set(kwargs) - accepted
        if unknown:
            raise ValueError(f"engine {name!r}: unknown option(s) {sorted(unknown)}; it accepts {sorted(accepted)}")
    engine = cls(**kwargs)
    engine.selection_reason = choice.reason
    logger.info("engine %r -> %s (%s)", name, choice.engine, choice.reason)
    return engine
