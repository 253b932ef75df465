"""The ground-truth quality benchmark behind ``vpf bench quality``.

Each engine inpaints synthetic scenes (``tasks.synthetic``: a real still filmed by a static, panning or zooming
camera, with moving cut-out objects); PSNR and SSIM are measured *inside the hole* against the clean background
video, which is known exactly. The per-frame ``cv2.inpaint`` baseline is always run beside the engines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.masks import default_dilation_radius, dilate_masks
from tasks.metrics import region_metrics
from tasks.synthetic import CAMERAS, make_scene


BASELINE = "cv2-inpaint"


def run_quality_benchmark(
    engine_names: Sequence[str],
    *,
    scenes: Sequence[str] = CAMERAS,
    frames: int = 49,
    height: int = 480,
    width: int = 720,
    seed: int = 0,
    dilation_radius: int | None = None,
    engine_options: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run each engine (and the baseline) on each scene.

    Returns:
        One dict per (engine, scene): ``engine``, ``scene``, ``psnr_hole``, ``ssim_hole``, ``seconds``, ``fps``,
        ``hole_ratio``, ``background`` (the still's name). The baseline's rows have ``engine == "cv2-inpaint"``.
    """
    from tasks.engines.registry import get_engine

    unknown = set(scenes) - set(CAMERAS)
    if unknown:
        raise ValueError(f"unknown scene(s) {sorted(unknown)}; known: {', '.join(CAMERAS)}")
    names = list(dict.fromkeys([*engine_names, BASELINE]))
    engines = {name: get_engine(name, **(engine_options or {}).get(name, {})) for name in names}
    for engine in engines.values():
        engine.setup()
    dilation = default_dilation_radius(width) if dilation_radius is None else dilation_radius
    results = []
    for camera in scenes:
        scene = make_scene(camera, num_frames=frames, height=height, width=width, seed=seed)
        hole = dilate_masks(scene.masks, dilation)
        for name, engine in engines.items():
            start = time.perf_counter()
            edited = engine.inpaint(scene.frames, hole, prompt=scene.caption, edit_type="remove", seed=seed)
            seconds = time.perf_counter() - start
            m = region_metrics(edited, scene.background, hole)
            results.append(
                {
                    "engine": engine.engine_id,
                    "requested": name,
                    "scene": camera,
                    "background": scene.background_name,
                    "psnr_hole": m["psnr"],
                    "ssim_hole": m["ssim"],
                    "seconds": seconds,
                    "fps": frames / seconds if seconds > 0 else None,
                    "hole_ratio": float(hole.mean()),
                }
            )
    return results


def summary_json(results: list[dict[str, Any]], engine: str) -> dict[str, Any]:
    """``{"engine": engine, "results": [{"scene", "psnr_hole", "ssim_hole"}, ...], "baseline": [...]}``."""

    def rows(name: str) -> list[dict[str, Any]]:
        keep = ("scene", "psnr_hole", "ssim_hole", "fps")
        return [{k: r[k] for k in keep} for r in results if r["requested"] == name]

    resolved = next((r["engine"] for r in results if r["requested"] == engine), engine)
    return {"engine": resolved, "results": rows(engine), "baseline": rows(BASELINE)}


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per scene, PSNR/SSIM of each engine, and the gain over the baseline."""
    engines = list(dict.fromkeys(r["requested"] for r in results))
    scenes = list(dict.fromkeys(r["scene"] for r in results))
    by = {(r["requested"], r["scene"]): r for r in results}
    header = ["scene", "hole %"] + [f"{e} PSNR / SSIM / fps" for e in engines]
    lines = [header]
    for scene in scenes:
        row = [scene, f"{100 * by[(engines[0], scene)]['hole_ratio']:.1f}"]
        for e in engines:
            r = by.get((e, scene))
            row.append(f"{r['psnr_hole']:.2f} dB / {r['ssim_hole']:.3f} / {r['fps']:.1f}" if r else "-")
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def mean_psnr(results: list[dict[str, Any]], engine: str) -> float:
    return float(np.mean([r["psnr_hole"] for r in results if r["requested"] == engine]))
