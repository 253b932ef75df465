"""Export benchmark: a catalog of ``--pairs`` pairs (2,000 by default) with small real media, exported as WebDataset,
Parquet (media embedded) and DiffSynth-Studio VACE metadata, each in its own process.

    python bench/export.py [--pairs 2000] [--json]

Reports pairs/s and the peak resident memory of each export process (imports included). Target (issue 16): peak
memory under 1 GB at 2,000 pairs: exports stream pair by pair (WebDataset, CSV) or row group by row group
(Parquet), so memory does not grow with the number of pairs. With ``--json`` the last line is one JSON object of the
figures.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Run as ``python bench/export.py``, this file's folder comes first on sys.path and would shadow nothing today, but
# keep the rule of the other benchmarks: import the project's packages, not files next to this one.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import av  # noqa: E402
import numpy as np  # noqa: E402

from catalog import ids  # noqa: E402
from catalog.store import Catalog  # noqa: E402


FRAMES, SIZE, FPS = 8, 48, 8.0
PAIRS_PER_SOURCE = 10  # five renders (remove + add) per source
LIMIT_BYTES = 1 << 30

CHILD = """
import json, resource, sys, time
from catalog.export import ExportConfig, export
from catalog.store import Catalog
cat = Catalog(sys.argv[1])
kind, out = sys.argv[2], sys.argv[3]
started = time.perf_counter()
split = "train=0.9,val=0.05,test=0.05"
if kind.startswith("diffsynth"):
    config = ExportConfig(preset=kind, split=split)
else:
    config = ExportConfig(format=kind, split=split, shard_mb=8)
summary = export(cat, out, config)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rows": summary["rows"], "files": len(summary["files"]), "elapsed_s": elapsed, "peak_rss": peak}))
"""


def tiny_mp4(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(FPS), options={"preset": "ultrafast"})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        for t in range(FRAMES):
            frame = np.roll(base, t, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def mask_npz(rng: np.random.Generator) -> bytes:
    masks = np.zeros((FRAMES, SIZE, SIZE), dtype=bool)
    x, y = rng.integers(0, SIZE // 2, 2)
    masks[:, y : y + SIZE // 3, x : x + SIZE // 3] = True
    buffer = io.BytesIO()
    np.savez_compressed(buffer, packed=np.packbits(masks.reshape(-1)), shape=np.asarray(masks.shape, np.int64))
    return buffer.getvalue()


def build_catalog(root: str, n_pairs: int, seed: int = 0) -> Catalog:
    """``n_pairs`` pairs over ``n_pairs / PAIRS_PER_SOURCE`` sources (one clip and object each)."""
    rng = np.random.default_rng(seed)
    cat = Catalog(root)
    rows: dict[str, list[dict]] = {t: [] for t in ("sources", "clips", "objects", "instructions", "renders", "pairs")}
    renders_per_source = PAIRS_PER_SOURCE // 2
    for s in range(-(-n_pairs // PAIRS_PER_SOURCE)):
        clip_bytes = tiny_mp4(rng)
        clip_uri = cat.put_media(clip_bytes, "mp4")
        source_id = ids.source_id(ids.sha256_bytes(clip_bytes))
        geometry = {"width": SIZE, "height": SIZE, "fps": FPS}
        clip_id = ids.clip_id(source_id, 0, FRAMES, geometry)
        mask = mask_npz(rng)
        mask_uri = cat.put_media(mask, "npz")
        object_id = ids.object_id(clip_id, ids.sha256_bytes(mask))
        rows["sources"].append({"source_id": source_id, "uri": f"file:///footage/{s}.mp4", "license": "CC-BY-4.0"})
        rows["clips"].append(
            {
                "clip_id": clip_id,
                "source_id": source_id,
                "start_frame": 0,
                "end_frame": FRAMES,
                "frame_stride": 1,
                "num_frames": FRAMES,
                "fps": FPS,
                "width": SIZE,
                "height": SIZE,
                "video_uri": clip_uri,
                "caption": "a synthetic scene",
            }  # fmt: skip
        )
        rows["objects"].append(
            {
                "object_id": object_id,
                "clip_id": clip_id,
                "label": "box",
                "mask_source": "provided",
                "mask_uri": mask_uri,
                "qa_status": "ok",
            }  # fmt: skip
        )
        for k in range(renders_per_source):
            text = f"remove the box #{k}"
            instruction_id = ids.instruction_id(object_id, "remove", text, "template")
            rows["instructions"].append(
                {
                    "instruction_id": instruction_id,
                    "object_id": object_id,
                    "clip_id": clip_id,
                    "edit_type": "remove",
                    "instruction": text,
                    "target_caption": "an empty synthetic scene",
                    "proposer": "template",
                }  # fmt: skip
            )
            out_uri = cat.put_media(tiny_mp4(rng), "mp4")
            render_id = ids.render_id(instruction_id, "propagation", {}, k)
            rows["renders"].append(
                {
                    "render_id": render_id,
                    "instruction_id": instruction_id,
                    "clip_id": clip_id,
                    "object_id": object_id,
                    "engine": "propagation",
                    "engine_version": "1",
                    "seed": k,
                    "video_uri": out_uri,
                    "mask_uri": mask_uri,
                }  # fmt: skip
            )
            for direction, src, tgt in (("remove", clip_uri, out_uri), ("add", out_uri, clip_uri)):
                rows["pairs"].append(
                    {
                        "pair_id": ids.pair_id(render_id, direction),
                        "render_id": render_id,
                        "instruction_id": instruction_id,
                        "clip_id": clip_id,
                        "object_id": object_id,
                        "edit_type": direction,
                        "instruction": text if direction == "remove" else "add a box",
                        "src_video_uri": src,
                        "tgt_video_uri": tgt,
                        "mask_uri": mask_uri,
                        "engine": "propagation",
                        "psnr_bg": float(30 + k),
                        "decision": "accepted",
                    }  # fmt: skip
                )
    rows["pairs"] = rows["pairs"][:n_pairs]
    for table, table_rows in rows.items():
        cat.append(table, table_rows)
    return cat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vpf-bench-export-") as tmp:
        started = time.perf_counter()
        build_catalog(f"{tmp}/catalog", args.pairs)
        build_s = time.perf_counter() - started
        figures: dict[str, float | int | bool] = {"pairs": args.pairs, "build_catalog_s": round(build_s, 2)}
        print(f"catalog of {args.pairs} pairs built in {build_s:.1f}s", file=sys.stderr)
        print(f"{'format':<16}{'pairs':>7}{'files':>7}{'seconds':>9}{'pairs/s':>10}{'peak MB':>9}")
        ok = True
        for kind in ("webdataset", "parquet", "diffsynth-vace"):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, f"{tmp}/catalog", kind, f"{tmp}/out-{kind}"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rate = result["rows"] / result["elapsed_s"]
            peak_mb = result["peak_rss"] / 2**20
            ok &= result["rows"] == args.pairs and result["peak_rss"] < LIMIT_BYTES
            print(
                f"{kind:<16}{result['rows']:>7}{result['files']:>7}{result['elapsed_s']:>9.1f}{rate:>10.1f}{peak_mb:>9.0f}"
            )
            key = kind.replace("-", "_")
            figures[f"{key}_pairs_per_s"] = round(rate, 1)
            figures[f"{key}_peak_rss_mb"] = round(peak_mb, 1)
        figures["peak_under_1gb"] = ok
        print(f"target: every export's peak memory < 1024 MB: {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
