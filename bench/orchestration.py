"""Orchestration overhead: ``build_pairs`` (Prefect, ephemeral API) against a plain Python loop over the same stage
functions (``tasks.steps``), with the null engine on N small synthetic clips. Target: ratio ≤ 1.3.

    .venv/bin/python bench/orchestration.py [--clips 200] [--batch-size 50] [--json]

Both paths do the same work into fresh catalogs: discover, ingest+segment, propose, plan, render (null engine),
score, previews, record. The Prefect API is started before timing (a warm-up flow), so the flow's time is what a
long-running worker pays per run. The machine's load varies (shared cores): compare runs made one after the other,
and rerun when the two paths' times look inconsistent. With ``--json`` the last line is one JSON object with ``ratio``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.env import apply_local_defaults  # noqa: E402


apply_local_defaults()

TINY = {"num_frames": 17, "height": 64, "width": 96, "fps": 8.0}


def write_clips(out: Path, n: int) -> Path:
    """``n`` distinct synthetic clips (one object each) with provided masks and a manifest."""
    import numpy as np

    from tasks.synthetic import CAMERAS, make_scene
    from tasks.video_io import encode_mp4

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        scene = make_scene(
            CAMERAS[i % len(CAMERAS)],
            num_frames=TINY["num_frames"],
            height=TINY["height"],
            width=TINY["width"],
            num_objects=1,
            seed=i,
        )
        (out / f"clip{i:04d}.mp4").write_bytes(encode_mp4(scene.frames, fps=TINY["fps"]))
        np.savez_compressed(out / f"clip{i:04d}_masks.npz", scene.label_map)
        rows.append(
            {
                "uri": f"clip{i:04d}.mp4",
                "caption": scene.caption,
                "mask_uri": f"clip{i:04d}_masks.npz",
                "mask_id": 1,
                "label": scene.labels[0],
            }
        )
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def plain_loop(manifest: Path, catalog: str, batch_size: int) -> dict[str, int]:
    """The same steps as ``build_pairs``, called directly, with no Prefect."""
    from catalog.ids import make_id
    from catalog.store import Catalog
    from tasks.config import RunConfig
    from tasks.engines.registry import get_engine
    from tasks.produce import PairMaker
    from tasks.proposers import get_proposer
    from tasks.steps import discover, ingest, plan, propose, record
    from tasks.steps.score import Scorers

    cat = Catalog(catalog)
    run_id = make_id("run", "plain", time.time())
    config = RunConfig(source=str(manifest), catalog=catalog, render={"engine": "null"}, geometry=TINY)
    items, failures = discover.discover(config)
    record.record_failures(cat, failures, run_id)
    annotators = ingest.make_annotators(config, cat)
    proposer = get_proposer("template", cache_url=cat.full_url("cache/proposals"))
    proposer.setup()
    engine = get_engine("null")
    engine.setup()
    maker = PairMaker(engine, Scorers(), config.render, config.score.model_copy(update={"workers": 0}))
    counts = {"pairs": 0}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        ingested = ingest.ingest(batch, cat, config.geometry, annotators, run_id=run_id)
        objects, clips = ingested.rows.get("objects", []), ingested.rows.get("clips", [])
        proposed = propose.propose(objects, clips, proposer, edit_types=config.edit_types, seed=0, run_id=run_id)
        instructions = proposed.rows["instructions"]
        record.record_tables(
            cat, {"instructions": instructions, "failures": record.failure_rows(proposed.failures, run_id)}
        )
        jobs = plan.plan(instructions, objects, clips, dilation_radius=None)
        counts["pairs"] += maker.make(jobs, cat, run_id=run_id).counts["pairs"]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from flows.build_pairs import build_pairs
    from tasks.config import RunConfig

    def config(source: Path, catalog: Path) -> RunConfig:
        return RunConfig(
            source=str(source),
            catalog=str(catalog),
            render={"engine": "null"},
            geometry=TINY,
            batch_size=args.batch_size,
        )

    with tempfile.TemporaryDirectory(prefix="vpf-bench-orch-") as tmp:
        tmp_path = Path(tmp)
        manifest = write_clips(tmp_path / "clips", args.clips)

        # Warm-up, not timed: start the Prefect API and import/initialise every stage on both paths.
        warm = write_clips(tmp_path / "warm", 2)
        t = time.perf_counter()
        build_pairs(config(warm, tmp_path / "warm-flow"))
        api_start_s = time.perf_counter() - t
        plain_loop(warm, str(tmp_path / "warm-plain"), args.batch_size)

        t = time.perf_counter()
        plain = plain_loop(manifest, str(tmp_path / "plain"), args.batch_size)
        plain_s = time.perf_counter() - t

        t = time.perf_counter()
        summary = build_pairs(config(manifest, tmp_path / "flow"))
        flow_s = time.perf_counter() - t

    if summary.counts.get("pairs") != plain["pairs"]:
        raise SystemExit(f"the two paths disagree: flow {summary.counts} vs plain {plain}")
    ratio = flow_s / plain_s
    print(f"{'path':<28}{'seconds':>10}")
    print(f"{'plain Python loop':<28}{plain_s:>10.2f}")
    print(f"{'build_pairs (Prefect)':<28}{flow_s:>10.2f}")
    print(f"{'ratio (target <= 1.3)':<28}{ratio:>10.3f}")
    print(
        f"clips {args.clips}, batch size {args.batch_size}, pairs {plain['pairs']}, "
        f"warm-up incl. Prefect API start (not timed) {api_start_s:.1f}s, cores {os.cpu_count()}"
    )
    if args.json:
        figures = {"clips": args.clips, "batch_size": args.batch_size, "pairs": plain["pairs"]}
        figures.update(plain_s=round(plain_s, 3), flow_s=round(flow_s, 3), ratio=round(ratio, 3))
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
