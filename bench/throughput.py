"""End-to-end throughput: ``build_pairs`` over N generated clips at the model geometry (49×480×720), in three modes.

    .venv/bin/python bench/throughput.py [--clips 12] [--modes propagation,null,sim] [--sim-seconds 20]
                                         [--effect-masks auto|all|off] [--json]

Modes, each in a fresh process after an untimed warm-up: ``propagation`` (the CPU engine, previews on), ``null`` (the
factory's own cost per clip) and ``sim`` (the ``sleep`` engine: T = ``--sim-seconds`` per clip of device time and no
CPU). Prints pairs per hour, CPU utilisation, CPU seconds per clip, peak RSS and busy seconds per stage. Targets
(2 cores): propagation ≥ 3,000 pairs/hour and ≥ 180% CPU; null ≤ 1.5 s per clip; sim wall ≤ 1.05 × N × T; peak RSS
growth < 10% from the smallest to the largest ``--clips`` value. See docs/throughput.md, "The benchmark".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.env import apply_local_defaults  # noqa: E402


apply_local_defaults()

MODES = ("propagation", "null", "sim")
STAGES = ("ingest", "annotate", "propose", "render", "score", "encode", "record")
TARGETS = {"propagation_pairs_per_hour": 3000.0, "propagation_cpu_pct": 180.0, "null_s_per_clip": 1.5,
           "sim_wall_ratio": 1.05, "rss_growth_pct": 10.0}  # fmt: skip


def write_clips(out: Path, n: int, *, num_frames: int, height: int, width: int, fps: float) -> Path:
    """``n`` distinct synthetic clips (one moving object each, provided masks) and their manifest; reuses files
    already written for the same geometry."""
    import numpy as np

    from tasks.synthetic import CAMERAS, make_scene
    from tasks.video_io import encode_mp4

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        video, masks = out / f"clip{i:04d}.mp4", out / f"clip{i:04d}_masks.npz"
        meta = out / f"clip{i:04d}.json"
        if not (video.exists() and masks.exists() and meta.exists()):
            scene = make_scene(CAMERAS[i % len(CAMERAS)], num_frames=num_frames, height=height, width=width,
                               num_objects=1, seed=i)  # fmt: skip
            video.write_bytes(encode_mp4(scene.frames, fps=fps))
            np.savez_compressed(masks, scene.label_map.astype(np.uint8))  # a VPData-style uint8 label map
            meta.write_text(json.dumps({"caption": scene.caption, "label": scene.labels[0]}))
        info = json.loads(meta.read_text())
        rows.append({"uri": video.name, "caption": info["caption"], "mask_uri": masks.name, "mask_id": 1,
                     "label": info["label"]})  # fmt: skip
    manifest = out / f"manifest-{n}.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _tree_cpu_s(proc: object) -> float:
    """CPU seconds (user + system) of ``proc`` and its live children (the Prefect API server)."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:  # type: ignore[attr-defined]
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_mode(args: argparse.Namespace) -> dict[str, object]:
    """One mode in this process: warm up, then time one ``build_pairs`` run; returns its figures."""
    import psutil

    from flows.build_pairs import build_pairs
    from tasks.config import RunConfig

    engine, options, previews = {"propagation": ("propagation", {}, True), "null": ("null", {}, False),
                                 "sim": ("sleep", {"seconds": args.sim_seconds}, True)}[args.child]  # fmt: skip
    geometry = {"num_frames": args.frames, "height": args.height, "width": args.width, "fps": args.fps}
    with tempfile.TemporaryDirectory(prefix="vpf-bench-tp-") as tmp:
        # warm-up, not timed: starts the Prefect API and imports every stage
        tiny = {"num_frames": 9, "height": 64, "width": 96, "fps": 8.0}
        warm = write_clips(Path(args.child_clips).parent / "warm", 1, **tiny)
        build_pairs(RunConfig(source=str(warm), catalog=str(Path(tmp) / "warm"), geometry=tiny, gallery=False,
                              render={"engine": engine, "engine_options": {"seconds": 0.0} if engine == "sleep" else {}},
                              score={"previews": previews}))  # fmt: skip
        config = RunConfig(source=args.child_clips, catalog=str(Path(tmp) / "cat"), geometry=geometry, gallery=False,
                           batch_size=args.batch_size,
                           render={"engine": engine, "engine_options": options, "effect_masks": args.effect_masks},
                           score={"previews": previews})  # fmt: skip
        me = psutil.Process()
        cpu0, t0 = _tree_cpu_s(me), time.perf_counter()
        summary = build_pairs(config)
        wall = time.perf_counter() - t0
        cpu = _tree_cpu_s(me) - cpu0
        stages = stage_breakdown(str(Path(tmp) / "cat"), summary.run_id)
    pairs = int(summary.counts.get("pairs", 0))
    return {
        "mode": args.child,
        "clips": args.clips_n,
        "status": summary.status,
        "pairs": pairs,
        "failures": int(summary.counts.get("failures", 0)),
        "wall_s": round(wall, 2),
        "s_per_clip": round(wall / max(1, args.clips_n), 3),
        "pairs_per_hour": round(pairs / wall * 3600, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_s_per_clip": round(cpu / max(1, args.clips_n), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stages_s": stages,
    }


def stage_breakdown(catalog: str, run_id: str) -> dict[str, float]:
    """Busy seconds per stage of ``run_id`` from the catalog's ``stage_timings``."""
    from catalog.store import Catalog

    rows = (
        Catalog(catalog)
        .query(
            f"SELECT stage, sum(wall_s) AS s FROM stage_timings WHERE run_id = '{run_id}' GROUP BY stage",
            read_only=True,
        )
        .to_pylist()
    )
    return {r["stage"]: round(float(r["s"]), 2) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="12", help="clips per run; a comma-separated list runs each size")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--sim-seconds", type=float, default=20.0, help="simulated device seconds per clip (sim)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "vpf-bench-throughput"),
                        help="where generated clips are kept between runs")  # fmt: skip
    parser.add_argument(
        "--effect-masks",
        choices=("auto", "all", "off"),
        default="auto",
        help="side-effect masks of the removals (the factory's default: auto)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-clips", help=argparse.SUPPRESS)
    parser.add_argument("--clips-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_mode(args)))
        return

    sizes = [int(s) for s in args.clips.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        raise SystemExit(f"--modes: unknown mode(s) {bad}; known: {MODES}")
    clip_dir = Path(args.work_dir) / f"{args.frames}x{args.height}x{args.width}"
    results = []
    for n in sizes:
        manifest = write_clips(clip_dir, n, num_frames=args.frames, height=args.height, width=args.width,
                               fps=args.fps)  # fmt: skip
        for mode in modes:
            cmd = [sys.executable, __file__, "--child", mode, "--child-clips", str(manifest), "--clips-n", str(n),
                   "--sim-seconds", str(args.sim_seconds), "--batch-size", str(args.batch_size),
                   "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
                   "--fps", str(args.fps), "--effect-masks", args.effect_masks]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"mode {mode} with {n} clips failed (exit {proc.returncode})")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(f"{'mode':<12}{'clips':>6}{'pairs':>6}{'wall s':>9}{'s/clip':>8}{'pairs/h':>9}{'CPU %':>7}{'CPU s/clip':>11}"
          f"{'RSS MB':>8}  busy s per stage")  # fmt: skip
    for r in results:
        stages = r["stages_s"]
        breakdown = " ".join(f"{s}={stages[s]:.1f}" for s in STAGES if s in stages) if stages else "(not recorded)"
        print(f"{r['mode']:<12}{r['clips']:>6}{r['pairs']:>6}{r['wall_s']:>9.1f}{r['s_per_clip']:>8.2f}"
              f"{r['pairs_per_hour']:>9.0f}{r['cpu_pct']:>7.0f}{r['cpu_s_per_clip']:>11.2f}{r['peak_rss_mb']:>8.0f}"
              f"  {breakdown}")  # fmt: skip

    figures: dict[str, object] = {"cores": os.cpu_count(), "effect_masks": args.effect_masks,
                                  "geometry": [args.frames, args.height, args.width],
                                  "sim_seconds": args.sim_seconds, "runs": results}  # fmt: skip
    largest = {r["mode"]: r for r in results if r["clips"] == max(sizes)}
    checks = []
    if "propagation" in largest:
        p = largest["propagation"]
        figures["propagation_pairs_per_hour"], figures["propagation_cpu_pct"] = p["pairs_per_hour"], p["cpu_pct"]
        checks.append(("propagation pairs/hour", p["pairs_per_hour"], ">=", TARGETS["propagation_pairs_per_hour"]))
        checks.append(("propagation CPU %", p["cpu_pct"], ">=", TARGETS["propagation_cpu_pct"]))
    if "null" in largest:
        figures["null_s_per_clip"] = largest["null"]["s_per_clip"]
        checks.append(("null factory s/clip", largest["null"]["s_per_clip"], "<=", TARGETS["null_s_per_clip"]))
    if "sim" in largest:
        s = largest["sim"]
        ratio = s["wall_s"] / (s["clips"] * args.sim_seconds) if args.sim_seconds > 0 else None
        figures["sim_wall_ratio"] = round(ratio, 3) if ratio is not None else None
        if ratio is not None:
            checks.append(
                (f"sim wall / (N x {args.sim_seconds:g}s)", round(ratio, 3), "<=", TARGETS["sim_wall_ratio"])
            )
    if len(sizes) > 1:
        for mode in modes:
            rss = {r["clips"]: r["peak_rss_mb"] for r in results if r["mode"] == mode}
            growth = 100 * (rss[max(sizes)] / rss[min(sizes)] - 1)
            figures[f"{mode}_rss_growth_pct"] = round(growth, 1)
            checks.append((f"{mode} RSS growth % {min(sizes)}->{max(sizes)}", round(growth, 1), "<",
                           TARGETS["rss_growth_pct"]))  # fmt: skip
    for name, value, op, target in checks:
        ok = value >= target if op == ">=" else value <= target if op == "<=" else value < target
        print(f"{name:<40}{value:>10}  target {op} {target:<8} {'ok' if ok else 'MISSED'}")
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end (other work on the machine "
          "distorts every figure)")  # fmt: skip
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
