"""A ``vpf run`` annotating with SAM3 answers SIGTERM and SIGINT (Ctrl-C) within seconds: the tracking loop stops at
the next frame, the clips finished before it stay recorded, and the run's row says ``interrupted`` (not
``running``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog.store import Catalog
from tests.tasks.annotate import tiny_models


VPF = str(Path(sys.executable).parent / "vpf")
CLIP_FRAMES = 49


@pytest.fixture(scope="module")
def env(annotate_env: dict[str, str]) -> dict[str, str]:
    return annotate_env


def _footage(folder: Path, videos: int) -> Path:
    from tasks.synthetic import make_scene
    from tasks.video_io import encode_mp4

    folder.mkdir()
    for i in range(videos):
        scene = make_scene("pan", num_frames=CLIP_FRAMES, height=64, width=96, num_objects=2, seed=i)
        (folder / f"pan{i}.mp4").write_bytes(encode_mp4(scene.frames, fps=8.0))
    return folder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_sam3_run_within_seconds_and_records_it(env, tmp_path, signum) -> None:
    footage = _footage(tmp_path / "footage", videos=4)  # 4 clips of 49 frames: far longer than the wait below
    model = tiny_models.build_sam3_video(tmp_path / "sam3", max_objects=1000, num_queries=8)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("horse\nball\nstar\n")
    catalog = tmp_path / "cat"
    args = [VPF, "run", str(footage), "--catalog", str(catalog), "--segmenter", f"sam3:{model}#max_objects=3",
            "--vocab", str(vocab), "--engine", "null", "--frames", str(CLIP_FRAMES), "--height", "64", "--width", "96",
            "--fps", "8", "--no-gallery", "--batch-size", "1"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        media = catalog / "media"
        # a clip's video is stored right before it is annotated: then the tracking is under way
        while not (media.exists() and any(media.rglob("*.mp4"))):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never started annotating"
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signum)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        elapsed = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    assert elapsed < 10, f"took {elapsed:.1f}s to stop"
    assert process.returncode == 128 + signum, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if f"stopped by {signal.Signals(signum).name}" in line]
    assert lines and "Traceback" not in stderr, stderr[-3000:]
    runs = (
        Catalog(str(catalog))
        .query("SELECT status FROM runs ORDER BY created_at DESC LIMIT 1", read_only=True)
        .to_pylist()
    )
    assert [r["status"] for r in runs] == ["interrupted"]
    clips = Catalog(str(catalog)).query("SELECT count(*) AS n FROM clips", read_only=True).to_pylist()[0]["n"]
    assert clips < 4  # it stopped: not every clip was annotated


def test_a_stop_request_is_cleared_when_a_run_starts_and_checks_pass_without_one() -> None:
    """Negative controls: no request, no stop; a request left from an earlier run does not stop the next one."""
    import logging

    from flows.build_pairs import stop_on_signals
    from tasks.annotate.stop import RunInterrupted, check_stop, request_stop, stop_requested

    check_stop("frame 0")  # no request: nothing happens
    request_stop(signal.SIGINT)
    with pytest.raises(RunInterrupted, match="SIGINT during frame 3"):
        check_stop("frame 3")
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(logging.getLogger("test")):
        assert stop_requested() is None
        check_stop("frame 0")
        assert signal.getsignal(signal.SIGTERM) is not before  # the run's handler while it runs
    assert signal.getsignal(signal.SIGTERM) is before  # restored after
