"""Throughput of the ``propagation`` engine at 480×720 against the per-frame ``cv2.inpaint`` baseline.

Each engine inpaints the three synthetic ground-truth scenes (static, pan, zoom; 49 frames) ``--repeat`` times,
interleaved so both see the same machine load; the best run per scene counts. Prints frames/s of each, the ratio,
and CPU seconds per frame (``fps_cpu`` = frames per CPU second, steadier on a shared machine). Target: >= 8 frames/s.

    .venv/bin/python bench/engine.py [--frames 49 --height 480 --width 720 --repeat 2] [--json]

With ``--json`` the last line is one JSON object holding ``fps``, ``baseline_fps``, ``ratio`` and the per-scene
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.engines.baseline import Cv2InpaintEngine  # noqa: E402
from tasks.engines.propagation import PropagationEngine  # noqa: E402
from tasks.masks import default_dilation_radius, dilate_masks  # noqa: E402
from tasks.synthetic import CAMERAS, make_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    engines = {"propagation": PropagationEngine(), "cv2-inpaint": Cv2InpaintEngine()}
    rows = []
    for camera in CAMERAS:
        scene = make_scene(camera, num_frames=args.frames, height=args.height, width=args.width, seed=args.seed)
        masks = dilate_masks(scene.masks, default_dilation_radius(args.width))
        best = {name: (float("inf"), float("inf")) for name in engines}
        for _ in range(args.repeat):
            for name, engine in engines.items():
                wall, cpu = time.perf_counter(), time.process_time()
                engine.inpaint(scene.frames, masks)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = min(best[name], (wall, cpu))
        rows.append({"scene": camera, "hole_ratio": float(masks.mean()), **{n: best[n] for n in engines}})

    frames_total = args.frames * len(rows)
    wall = {n: sum(r[n][0] for r in rows) for n in engines}
    cpu = {n: sum(r[n][1] for r in rows) for n in engines}
    fps = frames_total / wall["propagation"]
    baseline_fps = frames_total / wall["cv2-inpaint"]
    print(f"engine throughput, {args.frames} frames at {args.height}x{args.width}, best of {args.repeat}")
    print(f"{'scene':8s} {'hole %':>7s} {'propagation fps':>16s} {'cv2-inpaint fps':>16s} {'ratio':>7s}")
    for r in rows:
        p, b = args.frames / r["propagation"][0], args.frames / r["cv2-inpaint"][0]
        print(f"{r['scene']:8s} {100 * r['hole_ratio']:7.1f} {p:16.1f} {b:16.1f} {p / b:7.2f}")
    print(f"{'all':8s} {'':7s} {fps:16.1f} {baseline_fps:16.1f} {fps / baseline_fps:7.2f}")
    print(
        f"CPU seconds per frame: propagation {cpu['propagation'] / frames_total:.3f}, "
        f"cv2-inpaint {cpu['cv2-inpaint'] / frames_total:.3f}; target >= 8 frames/s: {'met' if fps >= 8 else 'NOT met'}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "fps": fps,
                    "baseline_fps": baseline_fps,
                    "ratio": fps / baseline_fps,
                    "cpu_s_per_frame": cpu["propagation"] / frames_total,
                    "fps_cpu": frames_total / cpu["propagation"],
                    "scenes": {r["scene"]: args.frames / r["propagation"][0] for r in rows},
                }
            )
        )


if __name__ == "__main__":
    main()
