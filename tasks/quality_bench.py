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


def _score_timed(
    source: np.ndarray,
    target: np.ndarray,
    hole: np.ndarray,
    object_masks: np.ndarray,
    rule: AcceptRule,
    *,
    encode: bool,
    fps: float,
    times: tuple[list[float], list[float]],
) -> dict[str, Any]:
    """Store ``target`` as the render step does (``encode``), score it against ``source`` with the gate over
    ``hole`` and decide with ``rule``; the scoring's wall and CPU seconds are appended to ``times``. Returns the
    benchmark row's ``decision``, ``reason`` and gate columns. Clips `(num_frames, height, width, 3)` uint8, masks
    `(num_frames, height, width)` bool."""
    from tasks import gate

    stored = _stored(target, fps) if encode else target
    start, start_cpu = time.perf_counter(), time.process_time()
    quality = gate.score_render(source, stored, hole, object_masks=object_masks)
    times[0].append(time.perf_counter() - start)
    times[1].append(time.process_time() - start_cpu)
    decision, reason = rule.decide(quality)
    return {"decision": decision, "reason": reason, **{k: quality[k] for k in gate.GATE_COLUMNS}}


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
                scored = _score_timed(
                    source, target, hole, scene.masks, rule, encode=encode, fps=fps, times=(wall, cpu)
                )
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
                        **scored,
                    }
                )
                if progress is not None:
                    progress(rows[-1])
    return summarise_gate(rows, wall, cpu, {"frames": frames, "height": height, "width": width, "encode": encode})


def summarise_gate(
    rows: list[dict[str, Any]],
    wall: list[float],
    cpu: list[float],
    geometry: dict[str, Any],
    *,
    positive_kinds: Sequence[str] = POSITIVE_KINDS,
) -> dict[str, Any]:
    """Accept rates per kind, failed checks per kind, targets and seconds per pair of a gate benchmark (kinds not in
    ``positive_kinds`` are negatives)."""
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
        rates.get(kind, 0.0) >= POSITIVE_TARGET if kind in positive_kinds else rates[kind] <= NEGATIVE_TARGET
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


# ----------------------------------------------------------------------------------------------- the real-footage gate
REAL_POSITIVE_KINDS = ("ground_truth", "vae")
REAL_NEGATIVE_KINDS = (
    "original",
    "black",
    "flat",
    "blur",
    "shifted",
    "ghost",
    "shuffled",
    "effect_left",
    "garbled",
    "object_black",
    "object_flat",
    "object_blur",
)
REAL_GATE_KINDS = REAL_POSITIVE_KINDS + REAL_NEGATIVE_KINDS
GARBLED_FRAMES = 3  # frames of an otherwise true fill that ``garbled`` spoils (2 on clips under 25 frames)


def scoring_masks(case: Any, dilation_radius: int | None = None) -> np.ndarray:
    """The inpainted region a real case is scored with: its object's mask grown to the effect's mask (what
    effect-aware masks give), dilated by ``dilation_radius`` (default: the factory's, for the clip's width).
    `(num_frames, height, width)` bool."""
    width = case.source.shape[2]
    radius = default_dilation_radius(width) if dilation_radius is None else dilation_radius
    return dilate_masks(case.object_mask | case.effect_mask, radius)


def vae_like(frames: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """What a perfect generative engine returns for ``frames`` `(T, H, W, 3)` uint8: the finest detail lost (each
    frame halved with an area average and brought back with a bicubic), plus light Gaussian noise (sigma 1.5 grey
    levels), over the whole frame."""
    rng = np.random.default_rng([seed, 5])
    height, width = frames.shape[1:3]
    half = (max(1, width // 2), max(1, height // 2))
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        soft = cv2.resize(cv2.resize(frame, half, interpolation=cv2.INTER_AREA), (width, height),
                          interpolation=cv2.INTER_CUBIC).astype(np.float32)  # fmt: skip
        out[t] = np.clip(np.round(soft + rng.normal(0.0, 1.5, soft.shape)), 0, 255).astype(np.uint8)
    return out


def _garble(truth: np.ndarray, source: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mush: half the source (the object shows through), half the truth cut in 16 px blocks (at 720 px) that are
    shuffled within the hole's box, `(H, W, 3)` uint8."""
    height, width = truth.shape[:2]
    ys, xs = np.nonzero(hole)
    if not len(ys):
        return truth
    block = max(2, round(16 * width / 720))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = truth[y0:y1, x0:x1]
    by, bx = (y1 - y0) // block, (x1 - x0) // block
    mixed = truth.copy()
    if by and bx:
        cells = (
            box[: by * block, : bx * block]
            .reshape(by, block, bx, block, 3)
            .swapaxes(1, 2)
            .reshape(-1, block, block, 3)
        )
        cells = cells[rng.permutation(len(cells))]
        tiles = cells.reshape(by, bx, block, block, 3).swapaxes(1, 2).reshape(by * block, bx * block, 3)
        mixed[y0 : y0 + by * block, x0 : x0 + bx * block] = tiles
    return np.round(0.5 * mixed.astype(np.float32) + 0.5 * source.astype(np.float32)).astype(np.uint8)


def _worst_frame_gap(target: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    """The largest, over frames, mean absolute difference (grey levels) of ``target`` from ``truth`` in the hole: a
    control equal to the truth in every frame is no negative, one with a few spoiled frames is."""
    gaps = [float(np.abs(t[h].astype(np.int16) - g[h]).mean()) for t, g, h in zip(target, truth, hole) if h.any()]
    return max(gaps, default=0.0)


def real_gate_candidates(case: Any, source: np.ndarray, hole: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The targets ``vpf bench gate --real`` scores for one ``tasks.real_footage.RealCase``, each composited like an
    engine's output (the source outside ``hole``) except ``vae``, which differs over the whole frame.

    Args:
        case: the case (its ``background`` is the truth, its ``effect_layer`` the background with the effect).
        source (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip as stored (decoded).
        hole (`np.ndarray` of shape `(num_frames, height, width)`, bool): the inpainted region
            (:func:`scoring_masks`).

    Returns:
        ``{kind: target}``: the positives ``ground_truth`` and ``vae`` (:func:`vae_like` of the truth, whole frame);
        the negatives ``original``, ``black``, ``flat``, ``blur``, ``shifted``, ``ghost``, ``shuffled`` (as in
        :func:`gate_candidates`), ``effect_left`` (the object removed, its shadow or reflection kept: cases with an
        effect only), ``garbled`` (the truth with ``GARBLED_FRAMES`` frames turned to a mush of object and shuffled
        background blocks), ``object_black``, ``object_flat``, ``object_blur`` (black, each frame's mean colour, a
        Gaussian of sigma 12 px at 720 px of the source, on the object's own pixels only, the truth around them).
    """
    rng = np.random.default_rng([seed, 17])
    inside = hole[..., None]
    truth = case.background
    num_frames, _, width = source.shape[:3]

    def put(fill: np.ndarray, where: np.ndarray = inside) -> np.ndarray:
        return np.where(where, fill, source).astype(np.uint8)

    sigma = 12.0 * width / 720
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in source])
    flat = np.broadcast_to(
        np.stack([f[~h].mean(0) if (~h).any() else f.reshape(-1, 3).mean(0) for f, h in zip(source, hole)])[
            :, None, None
        ],
        source.shape,
    ).round()
    dx, dy = max(1, round(6 * width / 720)), max(1, round(4 * width / 720))
    good = put(truth)
    obj = (case.object_mask & hole)[..., None]
    out = {
        "ground_truth": good,
        "vae": vae_like(good, seed=seed),
        "original": source.copy(),
        "black": put(np.zeros_like(source)),
        "flat": put(flat),
        "blur": put(blurred),
        "shifted": put(np.roll(truth, (dy, dx), axis=(1, 2))),
        "ghost": put(np.round(0.7 * truth.astype(np.float32) + 0.3 * source.astype(np.float32))),
        "shuffled": put(truth[_derangement(num_frames, rng)]),
    }
    if case.effect != "none":
        out["effect_left"] = put(case.effect_layer)
    garbled = good.copy()
    count = GARBLED_FRAMES if num_frames >= 25 else 2
    for t in rng.choice(np.arange(1, num_frames - 1), size=min(count, max(1, num_frames - 2)), replace=False):
        garbled[t] = np.where(inside[t], _garble(truth[t], source[t], hole[t], rng), good[t])
    out["garbled"] = garbled
    out["object_black"] = np.where(obj, 0, good).astype(np.uint8)
    out["object_flat"] = np.where(obj, flat, good).astype(np.uint8)
    out["object_blur"] = np.where(obj, blurred, good).astype(np.uint8)
    return out


def run_real_gate_benchmark(
    *,
    kinds: Sequence[str] | None = None,
    effects: Sequence[str] | None = None,
    footage: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    frames: int = 49,
    height: int = 480,
    width: int = 720,
    encode: bool = True,
    rule: Any = None,
    fps: float = 8.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Score every candidate of every real-footage case (``tasks.real_footage.real_cases``) with the gate and its rule
    (default ``AcceptRule()``); sources and targets are stored and decoded as the factory stores them (``encode``).

    Returns:
        ``summarise_gate``'s result over all cases plus ``"halves": {half: summarise_gate of that half's rows}``;
        each row also names its ``footage``, ``camera``, ``effect`` and ``half``. A control whose hole equals the
        truth's within ``_SAME_AS_TRUTH`` grey levels in every frame is scored but not counted as a negative.
    """
    from tasks.real_footage import CAMERAS, EFFECTS, iter_real_cases

    rule = rule or AcceptRule()
    cases = iter_real_cases(frames=frames, height=height, width=width, kinds=tuple(kinds or CAMERAS),
                            seeds=tuple(seeds), effects=tuple(effects or EFFECTS), footage=footage)  # fmt: skip
    rows: list[dict[str, Any]] = []
    wall, cpu = [], []
    for case in cases:
        source = _stored(case.source, fps) if encode else case.source
        hole = scoring_masks(case)
        truth = case.background
        for name, target in real_gate_candidates(case, source, hole, seed=case.seed).items():
            scored = _score_timed(
                source, target, hole, case.object_mask, rule, encode=encode, fps=fps, times=(wall, cpu)
            )
            same = name in REAL_NEGATIVE_KINDS and _worst_frame_gap(target, truth, hole) < _SAME_AS_TRUTH
            rows.append(
                {
                    "scene": case.name,
                    "footage": case.footage,
                    "camera": case.camera,
                    "effect": case.effect,
                    "half": case.half,
                    "seed": case.seed,
                    "kind": name,
                    "positive": name in REAL_POSITIVE_KINDS,
                    "counted": not same,
                    **scored,
                }
            )
            if progress is not None:
                progress(rows[-1])
    geometry = {"frames": frames, "height": height, "width": width, "encode": encode}
    result = summarise_gate(rows, wall, cpu, geometry, positive_kinds=REAL_POSITIVE_KINDS)
    result["halves"] = {
        half: summarise_gate([r for r in rows if r["half"] == half], [], [], geometry,
                             positive_kinds=REAL_POSITIVE_KINDS)
        for half in dict.fromkeys(r["half"] for r in rows)
    }  # fmt: skip
    result["targets_met"] = all(h["targets_met"] for h in result["halves"].values())
    return result


def format_real_gate_table(result: dict[str, Any]) -> str:
    """One line per kind: role, then accepted / scored and the rate on each half, the target, and the checks that
    rejected it most (over both halves)."""
    halves = list(result["halves"])
    lines = [["kind", "role", *[f"{h} accepted" for h in halves], "target", "rejected by (pairs)"]]
    for kind in REAL_GATE_KINDS:
        if kind not in result["counts"] and kind not in result["not_negative"]:
            continue
        positive = kind in REAL_POSITIVE_KINDS
        cells = []
        for half in halves:
            accepted, scored = result["halves"][half]["counts"].get(kind, [0, 0])
            cells.append(f"{accepted}/{scored} ({100 * accepted / scored:.0f}%)" if scored else "-")
        top = sorted(result["failures"].get(kind, {}).items(), key=lambda kv: -kv[1])[:4]
        note = ", ".join(f"{check} {n}" for check, n in top)
        if result["not_negative"].get(kind):
            note += f" [{result['not_negative'][kind]} equal to the truth, not counted]"
        lines.append([kind, "positive" if positive else "negative", *cells, ">= 95%" if positive else "<= 5%", note])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def real_gate_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary of a real-footage gate benchmark: per half, ``rates`` and ``counts`` per kind;
    ``targets_met``; ``s_per_pair``, ``cpu_s_per_pair``; the geometry."""
    return {
        "halves": {h: {"rates": r["rates"], "counts": r["counts"]} for h, r in result["halves"].items()},
        "targets_met": result["targets_met"],
        "s_per_pair": result["s_per_pair"],
        "cpu_s_per_pair": result["cpu_s_per_pair"],
        "geometry": result["geometry"],
    }
