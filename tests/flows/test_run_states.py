"""Honest run states: a live run beats, a run that stops beating (kill -9, a failed final write) reads as
``interrupted`` in ``vpf status`` and ``vpf catalog check``; the stored rows are never rewritten."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.maintenance import HEARTBEAT_ENV, STALE_BEATS
from catalog.store import Catalog
from flows.build_pairs import RunHeartbeat, heartbeat_interval
from flows.status import catalog_status
from tests.conftest import kill_tree


VPF = str(Path(sys.executable).parent / "vpf")
BEAT_S = 0.3  # long enough for a status read between two beats (each beat deletes the one before)


def _raw_statuses(cat: Catalog) -> list[str]:
    return [s for p in cat.fragments("runs") for s in pq.read_table(cat.fs.open(p, "rb")).column("status").to_pylist()]


def _status(cat: Catalog) -> str:
    return catalog_status(str(cat.root))["runs"][0]["status"]


def test_a_beating_run_stays_running_and_a_finished_one_leaves_two_rows(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    heartbeat = RunHeartbeat(cat, {"run_id": "run_live", "status": "running", "source": "clips/"}, BEAT_S)
    heartbeat.start()
    try:
        time.sleep(3 * STALE_BEATS * BEAT_S)  # longer than a stale heartbeat: only fresh beats keep it running
        assert _status(cat) == "running"
        assert len(cat.fragments("runs")) <= 3  # the first row and at most two beats: each beat drops the one before
    finally:
        heartbeat.finish({"run_id": "run_live", "status": "completed", "source": "clips/"})
    assert _raw_statuses(cat) == ["running", "completed"]
    time.sleep(2 * STALE_BEATS * BEAT_S)
    assert _status(cat) == "completed"
    assert cat.check() == []


def test_a_run_whose_final_write_fails_reads_as_interrupted(tmp_path: Path, monkeypatch) -> None:
    """The disk fills up: the final row cannot be written, the beats have stopped, the run shows as interrupted."""
    cat = Catalog(tmp_path / "cat")
    heartbeat = RunHeartbeat(cat, {"run_id": "run_full", "status": "running", "source": "clips/"}, BEAT_S)
    heartbeat.start()
    time.sleep(2 * BEAT_S)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cat, "append", full)
    with pytest.raises(OSError):
        heartbeat.finish({"run_id": "run_full", "status": "completed", "source": "clips/"})
    monkeypatch.undo()
    assert not heartbeat._thread.is_alive()
    time.sleep((STALE_BEATS + 1) * BEAT_S)
    assert _status(cat) == "interrupted"
    assert set(_raw_statuses(cat)) == {"running"}  # history as written
    assert [(p.kind, p.subject, p.severity) for p in cat.check()] == [("interrupted_run", "run_full", "warning")]


def test_heartbeat_interval_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, "0.25")
    assert heartbeat_interval() == 0.25
    for bad in ("", "soon", "-1", "0"):
        monkeypatch.setenv(HEARTBEAT_ENV, bad)
        assert heartbeat_interval() == 30.0


def test_vpf_run_killed_with_9_shows_as_interrupted(vpf_env, tiny_samples, tmp_path: Path) -> None:
    manifest, _ = tiny_samples
    catalog = tmp_path / "catalog"
    beat = 0.5
    args = [VPF, "run", str(manifest), "--catalog", str(catalog), "--frames", "17", "--height", "64", "--width", "96"]
    args += ["--engine", "sleep", "--engine-option", "seconds=120"]  # a render that outlives the test
    proc = subprocess.Popen(
        args, env={**vpf_env, HEARTBEAT_ENV: str(beat)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cat = Catalog(catalog)
    try:
        deadline = time.monotonic() + 120
        while not (catalog / "tables" / "runs").exists() or not cat.fragments("runs"):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never wrote its runs row"
            time.sleep(0.1)
        time.sleep(2 * STALE_BEATS * beat)
        assert _status(cat) == "running", "a live run must keep beating"
    finally:
        kill_tree(proc.pid)
    time.sleep((STALE_BEATS + 1) * beat)
    status = subprocess.run(
        [VPF, "status", "--catalog", str(catalog), "--json"], env=vpf_env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["runs"][0]["status"] == "interrupted"
    assert set(_raw_statuses(cat)) == {"running"}  # the stored rows stay as the run left them
    check = subprocess.run(
        [VPF, "catalog", "check", "--catalog", str(catalog), "--no-hash"], env=vpf_env, capture_output=True, text=True
    )
    assert "[interrupted_run]" in check.stdout, check.stdout + check.stderr
