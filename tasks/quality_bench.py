"""The ground-truth quality benchmark behind ``vpf bench quality``.

Each engine inpaints synthetic scenes (``tasks.synthetic``: a real still filmed by a static, panning or zooming
camera, with moving cut-out objects); PSNR and SSIM are measured *inside the hole* against the clean background
video, which is known exactly. The per-frame ``cv2.inpaint`` baseline is always run beside the engines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tasks.accept import AcceptRule
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


# ----------------------------------------------------------------------------------------------- the gate's benchmark
POSITIVE_KINDS = ("ground_truth", "propagation")
NEGATIVE_KINDS = ("original", "black", "flat", "blur", "shuffled", "shifted", "ghost")
GATE_KINDS = POSITIVE_KINDS + NEGATIVE_KINDS
POSITIVE_TARGET = 0.95  # share of positives the default rule must accept
NEGATIVE_TARGET = 0.05  # share of each negative kind it may accept
_SAME_AS_TRUTH = 2.0  # grey levels: a control whose hole is this close to the truth is not a negative


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        perm = rng.permutation(n)
        if n < 2 or not (perm == np.arange(n)).any():
            return perm


def gate_candidates(
    scene: Any, source: np.ndarray, hole: np.ndarray, *, seed: int = 0, engine: Any = None
) -> dict[str, np.ndarray]:
    """The targets ``vpf bench gate`` scores for one scene, each composited like an engine's output (the source
    outside the hole).

    Args:
        scene: a ``tasks.synthetic.SyntheticScene`` (its clean ``background`` is the truth).
        source (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip as stored (decoded).
        hole (`np.ndarray` of shape `(num_frames, height, width)`, bool): the dilated mask that is inpainted.
        engine: a set-up ``propagation`` engine; its output is a positive (skipped when None).

    Returns:
        ``{kind: target}`` for the kinds of ``GATE_KINDS``: ``ground_truth``; ``propagation``; ``original`` (the
        unedited clip); ``black``; ``flat`` (each frame's mean background colour, as the null engine fills);
        ``blur`` (a Gaussian of sigma 12 px at 720 px of the original); ``shuffled`` (the truth with its frames
        permuted); ``shifted`` (the truth moved by 6 px right and 4 px down at 720 px); ``ghost`` (70 % truth +
        30 % original).
    """
    from tasks.engines.null import NullEngine

    rng = np.random.default_rng(seed)
    inside = hole[..., None]
    truth = scene.background
    width = source.shape[2]

    def put(fill: np.ndarray) -> np.ndarray:
        return np.where(inside, fill, source).astype(np.uint8)

    sigma = 12.0 * width / 720
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in source])
    dx, dy = max(1, round(6 * width / 720)), max(1, round(4 * width / 720))
    shifted = np.roll(truth, (dy, dx), axis=(1, 2))
    out = {"ground_truth": put(truth)}
    if engine is not None:
        out["propagation"] = engine.inpaint(source, hole, prompt=scene.caption, edit_type="remove", seed=seed)
    out.update(
        {
            "original": source.copy(),
            "black": put(np.zeros_like(source)),
            "flat": NullEngine().inpaint(source, hole),
            "blur": put(blurred),
            "shuffled": put(truth[_derangement(len(truth), rng)]),
            "shifted": put(shifted),
            "ghost": put(np.round(0.7 * truth.astype(np.float32) + 0.3 * source.astype(np.float32))),
        }
    )
    return out


def _stored(frames: np.ndarray, fps: float) -> np.ndarray:
    """``frames`` as a trainer reads them from the catalog: encoded as the factory stores clips, then decoded."""
    import tempfile
    from pathlib import Path

    from tasks.video_io import encode_stored, read_frames

    with tempfile.TemporaryDirectory(prefix="vpf-gate-") as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(encode_stored(frames, fps))
        return read_frames(str(path))


def run_gate_benchmark(
    *,
    scenes: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    frames: int = 49,
    height: int = 480,
    width: int = 720,
    encode: bool = True,
    rule: Any = None,
    fps: float = 8.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Score every candidate of every scene with the gate and its rule (default: ``AcceptRule()``).

    Scenes are rendered per kind and seed at the given geometry; the source is stored and decoded as ingest stores
    it, each candidate as the render step stores it (``encode=False`` skips the codec). The mask is the objects'
    masks dilated by the factory's default (``tasks.masks.default_dilation_radius``).

    Returns:
        ``{"rows": [...], "rates": {kind: accepted share}, "counts": {kind: [accepted, scored]}, "not_negative":
        {kind: count}, "targets_met": bool, "failures": {kind: {check: count}}, "s_per_pair", "cpu_s_per_pair",
        "geometry"}``. A control whose hole equals the truth's within ``_SAME_AS_TRUTH`` grey levels (a shuffled
        still background) is scored but not counted as a negative.
    """
    from tasks import gate
    from tasks.engines.registry import get_engine
    from tasks.synthetic import MOTIONS

    kinds = list(scenes or MOTIONS)
    unknown = set(kinds) - set(MOTIONS)
    if unknown:
        raise ValueError(f"unknown scene kind(s) {sorted(unknown)}; known: {', '.join(MOTIONS)}")
    rule = rule or AcceptRule()
    engine = get_engine("propagation")
    engine.setup()
    rows: list[dict[str, Any]] = []
    wall, cpu = [], []
    for seed in seeds:
        for kind in kinds:
            scene = make_scene(kind, num_frames=frames, height=height, width=width, seed=seed)
            source = _stored(scene.frames, fps) if encode else scene.frames
            hole = dilate_masks(scene.masks, default_dilation_radius(width))
            candidates = gate_candidates(scene, source, hole, seed=seed, engine=engine)
            truth = candidates["ground_truth"]
            for name, target in candidates.items():
                stored = _stored(target, fps) if encode else target
                start, start_cpu = time.perf_counter(), time.process_time()
                quality = gate.score_render(source, stored, hole, object_masks=scene.masks)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                decision, reason = rule.decide(quality)
                same = (
                    name in NEGATIVE_KINDS
                    and float(np.abs(target[hole].astype(np.int16) - truth[hole]).mean()) < _SAME_AS_TRUTH
                )
                rows.append(
                    {
                        "scene": scene.name,
                        "motion": kind,
                        "seed": seed,
                        "kind": name,
                        "positive": name in POSITIVE_KINDS,
                        "counted": not same,
                        "decision": decision,
                        "reason": reason,
                        **{k: quality[k] for k in gate.GATE_COLUMNS},
                    }
                )
                if progress is not None:
                    progress(rows[-1])
    return summarise_gate(rows, wall, cpu, {"frames": frames, "height": height, "width": width, "encode": encode})


def summarise_gate(
    rows: list[dict[str, Any]], wall: list[float], cpu: list[float], geometry: dict[str, Any]
) -> dict[str, Any]:
    """Accept rates per kind, failed checks per kind, targets and seconds per pair of a gate benchmark."""
    counts: dict[str, list[int]] = {}
    not_negative: dict[str, int] = {}
    failures: dict[str, dict[str, int]] = {}
    for row in rows:
        kind = row["kind"]
        if not row["counted"]:
            not_negative[kind] = not_negative.get(kind, 0) + 1
            continue
        accepted, scored = counts.setdefault(kind, [0, 0])
        counts[kind] = [accepted + (row["decision"] == "accepted"), scored + 1]
        if row["decision"] == "rejected":
            for part in row["reason"].split(" (not checked")[0].split("; "):
                check = part.split(" ")[0]
                failures.setdefault(kind, {})[check] = failures.setdefault(kind, {}).get(check, 0) + 1
    rates = {kind: a / n for kind, (a, n) in counts.items() if n}
    met = all(
        rates.get(kind, 0.0) >= POSITIVE_TARGET if kind in POSITIVE_KINDS else rates[kind] <= NEGATIVE_TARGET
        for kind in rates
    )
    return {
        "rows": rows,
        "rates": rates,
        "counts": counts,
        "not_negative": not_negative,
        "failures": failures,
        "targets_met": met,
        "s_per_pair": float(np.mean(wall)) if wall else None,
        "cpu_s_per_pair": float(np.mean(cpu)) if cpu else None,
        "geometry": geometry,
    }


def format_gate_table(result: dict[str, Any]) -> str:
    """One line per kind: role, pairs, accepted, rate, target, the checks that rejected it most."""
    lines = [["kind", "role", "pairs", "accepted", "rate", "target", "rejected by (pairs)"]]
    for kind in GATE_KINDS:
        if kind not in result["counts"]:
            if kind in result["not_negative"]:
                lines.append([kind, "negative", "0", "-", "-", "<= 5%", "every control equalled the truth"])
            continue
        accepted, scored = result["counts"][kind]
        positive = kind in POSITIVE_KINDS
        top = sorted(result["failures"].get(kind, {}).items(), key=lambda kv: -kv[1])[:4]
        note = ", ".join(f"{check} {n}" for check, n in top)
        if result["not_negative"].get(kind):
            note += f" [{result['not_negative'][kind]} equal to the truth, not counted]"
        lines.append([
            kind, "positive" if positive else "negative", str(scored), str(accepted),
            f"{100 * accepted / scored:.0f}%", ">= 95%" if positive else "<= 5%", note,
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
