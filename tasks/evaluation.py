"""``vpf eval``: the paper-style evaluation table of inpainting engines on clips with a known clean background.

For every engine and every clip the engine fills the (dilated) mask and its output is compared with the ground truth
(the clip without the objects): PSNR, SSIM, MSE and MAE inside and outside the mask, the flow-warp error of the
filled region, and with CLIP weights configured CLIP text similarity and temporal consistency (absent without
weights, never estimated). Clips come from the synthetic scenes (``tasks.synthetic``), the real-footage cases
(``tasks.real_footage``: :func:`real_clips`) or a ground-truth folder (:func:`folder_clips`). With
``effect_masks="auto"`` each object's mask is grown to its side effects (``tasks.effects``) before dilation, as
renders do. LPIPS is not part of the table: the project ships no LPIPS implementation.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import InputError
from tasks.metrics import psnr_from_mse, region_metrics, temporal_warp_error


METRIC_COLUMNS = (
    "psnr_in", "ssim_in", "mse_in", "mae_in", "psnr_out", "ssim_out", "mse_out", "mae_out", "warp_error",
    "clip_text_sim", "clip_temporal",
)  # fmt: skip


@dataclass
class GroundTruthClip:
    """``frames``/``truth``: `(num_frames, height, width, 3)` uint8; ``masks``: `(num_frames, height, width)` bool
    (the objects, before dilation); ``caption``: what the truth shows."""

    name: str
    frames: np.ndarray
    truth: np.ndarray
    masks: np.ndarray
    caption: str | None


def synthetic_clips(
    kinds: Sequence[str], seeds: Sequence[int], *, frames: int, height: int, width: int
) -> Iterator[GroundTruthClip]:
    """Synthetic scenes, one per kind and seed; the caption is the background's description."""
    from tasks.synthetic import BACKGROUNDS, make_scene

    for seed in seeds:
        for kind in kinds:
            scene = make_scene(kind, num_frames=frames, height=height, width=width, seed=seed)
            yield GroundTruthClip(
                scene.name, scene.frames, scene.background, scene.masks, BACKGROUNDS[scene.background_name]
            )


def real_clips(
    kinds: Sequence[str], seeds: Sequence[int], effects: Sequence[str], *, frames: int, height: int, width: int
) -> Iterator[GroundTruthClip]:
    """The real-footage cases (``tasks.real_footage.real_cases``), one per footage, seed, camera kind and effect; the
    truth is the footage without object and effect, the masks are the object's (its effect is for the engine's
    mask to find: ``effect_masks="auto"``)."""
    from tasks.real_footage import real_cases

    for case in real_cases(frames=frames, height=height, width=width, kinds=kinds, seeds=seeds, effects=effects):
        yield GroundTruthClip(case.name, case.source, case.background, case.object_mask, None)


def inpainting_hole(
    clip: GroundTruthClip, dilation_radius: int | None = None, effect_masks: str = "off"
) -> tuple[np.ndarray, dict[str, Any]]:
    """The region an engine fills for ``clip``: its masks grown to their side effects (``tasks.effects.find_effects``;
    ``effect_masks``: ``auto`` or ``all``, on still and moving cameras alike, or ``off``), then dilated by ``dilation_radius`` pixels (default: the factory's).

    Returns:
        ``(hole, info)``: `(num_frames, height, width)` bool, and ``{"effect_area", "effect_source"}``.
    """
    from tasks.masks import default_dilation_radius, dilate_masks

    if effect_masks not in ("auto", "all", "off"):
        raise ValueError(f"effect_masks must be 'auto', 'all' or 'off', got {effect_masks!r}")
    radius = dilation_radius if dilation_radius is not None else default_dilation_radius(clip.frames.shape[2])
    grown, info = clip.masks, {"effect_area": None, "effect_source": "off"}
    if effect_masks != "off":
        from tasks.effects import find_effects

        found = find_effects(clip.frames, clip.masks, name=clip.name)  # auto and all alike: every camera
        grown, info = clip.masks | found.masks, {"effect_area": found.area, "effect_source": found.source}
    return dilate_masks(grown, radius), info


def folder_clips(folder: str | Path) -> Iterator[GroundTruthClip]:
    """Clips of a ground-truth folder laid out as ``vpf samples`` writes it. Raises ``InputError`` naming the file at
    fault.

    ``manifest.csv`` holds ``uri``, ``mask_uri``, optional ``mask_id`` and ``caption``, one row per object (the masks
    of a clip's rows are united); ``ground_truth/<clip stem>_background.mp4`` is the clip without its objects.
    """
    from tasks.masks import load_masks
    from tasks.video_io import read_frames

    root = Path(folder)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputError(str(root), "not_found", "no manifest.csv in the ground-truth folder")
    by_clip: dict[str, list[dict[str, str]]] = {}
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("uri") or not row.get("mask_uri"):
                raise InputError(str(manifest), "bad_manifest", "every row needs uri and mask_uri")
            by_clip.setdefault(row["uri"], []).append(row)
    if not by_clip:
        raise InputError(str(manifest), "bad_manifest", "the manifest has no rows")
    for uri, rows in by_clip.items():
        video = root / uri
        truth_path = root / "ground_truth" / f"{Path(uri).stem}_background.mp4"
        if not truth_path.is_file():
            raise InputError(str(truth_path), "not_found", f"no ground truth for {uri}")
        frames = read_frames(str(video))
        truth = read_frames(str(truth_path))
        masks = np.zeros(frames.shape[:3], bool)
        for row in rows:
            mask_id = int(row["mask_id"]) if row.get("mask_id") else None
            m = load_masks(str(root / row["mask_uri"]), mask_id)
            if m.shape != masks.shape:
                raise InputError(row["mask_uri"], "mask_shape_mismatch", f"mask {m.shape} vs clip {masks.shape}")
            masks |= m
        if truth.shape != frames.shape:
            raise InputError(str(truth_path), "shape_mismatch", f"ground truth {truth.shape} vs clip {frames.shape}")
        yield GroundTruthClip(Path(uri).stem, frames, truth, masks, rows[0].get("caption") or None)


def clip_metrics(edited: np.ndarray, clip: GroundTruthClip, hole: np.ndarray, scorer: Any = None) -> dict[str, Any]:
    """The table's metrics of one edited clip against its truth (``hole``: the dilated mask that was filled).

    Region metrics come from ``tasks.metrics.region_metrics``, the warp error from
    ``tasks.metrics.temporal_warp_error``; with a CLIP ``scorer``, ``clip_text_sim`` is the similarity of sampled
    edited frames with the clip's background caption and ``clip_temporal`` the mean cosine similarity × 100 of
    consecutive frames' embeddings.
    """
    inside = region_metrics(edited, clip.truth, hole)
    outside = region_metrics(edited, clip.truth, ~hole)
    row: dict[str, Any] = {f"{k}_in": v for k, v in inside.items()}
    row.update({f"{k}_out": v for k, v in outside.items()})
    row["warp_error"] = temporal_warp_error(edited, hole)
    row["clip_text_sim"] = row["clip_temporal"] = None
    if scorer is not None:
        index = np.linspace(0, len(edited) - 1, min(8, len(edited))).round().astype(int)
        if clip.caption:
            row["clip_text_sim"] = scorer.similarity([edited[i] for i in index], clip.caption)
        embeddings = scorer.image_embeddings(list(edited))
        row["clip_temporal"] = float((embeddings[1:] * embeddings[:-1]).sum(1).mean() * 100)
    return row


def evaluate_engines(
    engine_names: Sequence[str],
    clips: Sequence[GroundTruthClip] | Iterator[GroundTruthClip],
    *,
    dilation_radius: int | None = None,
    clip_weights: str | None = None,
    seed: int = 0,
    engine_options: dict[str, dict[str, Any]] | None = None,
    effect_masks: str = "off",
) -> dict[str, Any]:
    """Run every engine on every clip and average the metrics per engine.

    ``dilation_radius``: of the object masks before inpainting, in pixels (default: the factory's,
    ``tasks.masks.default_dilation_radius``); ``effect_masks``: ``auto`` grows them to the objects' side effects
    first (:func:`inpainting_hole`). Per-clip rows carry ``effect_area`` and ``effect_source``.

    Per engine, metrics are means over clips, except PSNR, which is computed from the mean MSE.

    Returns:
        ``{"engines": [{"engine", "clips", "seconds_per_clip", <METRIC_COLUMNS>...}], "per_clip": [...],
        "absent": {column: reason}}``; a column is None for an engine when no clip produced it.
    """
    from tasks.engines.registry import get_engine
    from tasks.gate import ClipScorer

    if effect_masks not in ("auto", "all", "off"):  # before any engine is built
        raise ValueError(f"effect_masks must be 'auto', 'all' or 'off', got {effect_masks!r}")
    engines = {name: get_engine(name, **(engine_options or {}).get(name, {})) for name in engine_names}
    for engine in engines.values():
        engine.setup()
    scorer = ClipScorer(clip_weights) if clip_weights else None
    if scorer is not None:
        scorer.setup()  # once, before any clip: a bad path fails here, not half-way
    per_clip: list[dict[str, Any]] = []
    for clip in clips:
        hole, effects = inpainting_hole(clip, dilation_radius, effect_masks)
        for name, engine in engines.items():
            start = time.perf_counter()
            edited = engine.inpaint(clip.frames, hole, prompt=clip.caption or "", edit_type="remove", seed=seed)
            seconds = time.perf_counter() - start
            per_clip.append({"engine": name, "clip": clip.name, "seconds": seconds, **effects,
                             **clip_metrics(edited, clip, hole, scorer)})  # fmt: skip
    rows = []
    for name, engine in engines.items():
        mine = [r for r in per_clip if r["engine"] == name]
        row: dict[str, Any] = {"engine": engine.engine_id, "requested": name, "clips": len(mine)}
        row["seconds_per_clip"] = float(np.mean([r["seconds"] for r in mine])) if mine else None
        for key in METRIC_COLUMNS:
            values = [r[key] for r in mine if r[key] is not None]
            row[key] = float(np.mean(values)) if values else None
        for side in ("in", "out"):  # PSNR of the mean MSE: one exact clip (capped at 100 dB) must not dominate
            row[f"psnr_{side}"] = None if row[f"mse_{side}"] is None else psnr_from_mse(row[f"mse_{side}"])
        rows.append(row)
    absent = {}
    if scorer is None:
        absent["clip_text_sim"] = absent["clip_temporal"] = "no CLIP weights configured (--clip-weights)"
    return {"engines": rows, "per_clip": per_clip, "absent": absent}


def format_eval_table(result: dict[str, Any]) -> str:
    """One row per engine; absent columns are left out with a note."""
    present = [k for k in METRIC_COLUMNS if any(r[k] is not None for r in result["engines"])]
    header = ["engine", "clips", *present, "s/clip"]
    lines = [header]
    for r in result["engines"]:
        cells = [r["requested"], str(r["clips"])]
        for key in present:
            v = r[key]
            cells.append("-" if v is None else f"{v:.2f}" if key.startswith(("psnr", "clip")) else f"{v:.4f}")
        cells.append(f"{r['seconds_per_clip']:.1f}" if r["seconds_per_clip"] is not None else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    for key, why in result["absent"].items():
        text += f"\n{key}: absent ({why})"
    return text
