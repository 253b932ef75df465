"""Atomic fragments and media for real: SIGKILLed writers and concurrent writer processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import catalog.storage
from catalog.storage import temp_path, temp_writer, this_host
from catalog.store import Catalog


REPO = Path(__file__).resolve().parents[2]

# A writer that stores a media file, then appends rows naming it, forever. With ``hold`` it stops right before the
# fragment's fsync/rename (the file is fully written under its temporary name) so the kill lands mid-write.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from catalog.store import Catalog
    import catalog.store as store

    root, hold = sys.argv[1], sys.argv[2] == "hold"
    catalog = Catalog(root)
    if hold:
        real_fsync = os.fsync
        def slow_fsync(fd):
            if "/tables/sources/" in os.readlink(f"/proc/self/fd/{fd}"):  # the fragment, not media or placeholders
                open(os.path.join(root, "holding"), "w").close()
                time.sleep(60)
            real_fsync(fd)
        store.os.fsync = slow_fsync
    i = 0
    while True:
        uri = catalog.put_media(os.urandom(2048) + str(i).encode(), "mp4")
        rows = [{"source_id": f"s{i}-{k}", "uri": uri, "caption": "x" * 50} for k in range(5000)]
        catalog.append("sources", rows)
        i += 1
    """
)


def _media_named_by_rows(catalog: Catalog) -> set[str]:
    return set(catalog.query("SELECT DISTINCT uri FROM sources").column("uri").to_pylist())


def _assert_consistent(catalog: Catalog) -> None:
    assert catalog.unreadable_fragments(full=True) == []
    for uri in _media_named_by_rows(catalog):
        assert catalog.fs.exists(catalog.path(uri)), f"row names missing media {uri}"
    # temporary files are never listed as fragments
    assert all(not p.rsplit("/", 1)[-1].startswith(".tmp") for p in catalog.fragments("sources"))


def _spawn(root: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), mode], env=env, cwd=REPO)


def test_sigkill_mid_fragment_write_leaves_no_visible_partial_fragment(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    proc = _spawn(root, "hold")
    try:
        deadline = time.monotonic() + 60
        while not (root / "holding").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "writer never reached the fragment write"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    catalog = Catalog(root)
    leftovers = list((root / "tables" / "sources").glob(".tmp-*"))
    assert leftovers, "the kill should have landed while the fragment was under its temporary name"
    assert temp_writer(leftovers[0].name) == (this_host(), proc.pid)  # the name says whose it was
    assert catalog.fragments("sources") == []
    assert catalog.query("SELECT count(*) AS n FROM sources").column("n")[0].as_py() == 0
    _assert_consistent(catalog)
    assert catalog.check() == []
    collected = catalog.gc()  # default grace period of a day: a dead writer's file goes at once all the same
    assert collected["partial_writes"] == [str(p) for p in leftovers] and not any(p.exists() for p in leftovers)


def test_sigkill_at_random_moments_keeps_the_catalog_consistent(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    for delay in (1.5, 2.2):
        proc = _spawn(root, "run")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        catalog = Catalog(root)
        _assert_consistent(catalog)
        n = catalog.query("SELECT count(*) AS n FROM sources").column("n")[0].as_py()
        assert n % 5000 == 0  # whole batches only
    assert catalog.check() == []


CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys
    from catalog.store import Catalog
    catalog, worker = Catalog(sys.argv[1]), sys.argv[2]
    for batch in range(10):
        catalog.append("pairs", [
            {"pair_id": f"pair-{worker}-{batch}-{k}", "render_id": "r", "instruction_id": "i", "clip_id": "c",
             "object_id": "o", "edit_type": "remove", "instruction": "remove it", "src_video_uri": "media/a",
             "tgt_video_uri": "media/b", "mask_uri": "media/m", "engine": "propagation", "decision": "accepted"}
            for k in range(1000)
        ])
    """
)


def test_four_writer_processes_times_ten_thousand_rows(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(root), str(w)], env=env, cwd=REPO)
        for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    catalog = Catalog(root)
    assert len(catalog.fragments("pairs")) == 40
    result = catalog.query("SELECT count(*) AS n, count(DISTINCT pair_id) AS d FROM pairs").to_pylist()
    assert result == [{"n": 40_000, "d": 40_000}]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_write_that_fails_leaves_no_temporary_file(tmp_path: Path, monkeypatch, failing: str) -> None:
    """A full disk (or any error) while a fragment or a media file is written: the error reaches the caller and the
    temporary file is gone; nothing half-written is visible."""
    cat = Catalog(tmp_path / "cat")
    cat.append("sources", [{"source_id": "before", "uri": "u"}])

    class FullDisk:
        def __getattr__(self, name: str):
            return getattr(os, name)

        @staticmethod
        def replace(src: str, dst: str) -> None:
            if failing == "replace":
                raise OSError(28, "No space left on device")
            os.replace(src, dst)

        @staticmethod
        def fsync(fd: int) -> None:
            if failing == "fsync":
                raise OSError(28, "No space left on device")
            os.fsync(fd)

    monkeypatch.setattr(catalog.storage, "os", FullDisk())
    if failing == "write":
        real_open = open

        def full_open(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            if "w" in mode and ".tmp-" in str(path):
                handle.write = lambda data: (_ for _ in ()).throw(OSError(28, "No space left on device"))
            return handle

        monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(OSError, match="No space left"):
        cat.append("sources", [{"source_id": "lost", "uri": "u"}])
    with pytest.raises(OSError, match="No space left"):
        cat.put_media(b"never stored", "mp4")
    monkeypatch.undo()
    assert list(Path(cat.root).rglob(".tmp-*")) == []
    assert cat.query("SELECT source_id FROM sources").to_pylist() == [{"source_id": "before"}]
    assert cat.check() == []


def test_gc_removes_dead_writers_temporary_files_at_once_and_keeps_live_ones(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    cat.append("sources", [{"source_id": "s", "uri": "u"}])
    folder = cat.table_dir("sources")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = Path(temp_path(folder))  # a write of this (live) process in flight
    theirs = Path(temp_path(folder).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))  # a writer killed with -9
    remote = Path(temp_path(folder).replace(f"{this_host()}-", "another-host-"))  # can't tell: age decides
    legacy = Path(folder) / ".tmp-0123abcd"  # written before names carried their writer
    for path in (mine, theirs, remote, legacy):
        path.write_bytes(b"half a fragment")
    assert temp_writer(theirs.name) == (this_host(), dead.pid)
    listed = cat.gc(dry_run=True)
    assert listed["partial_writes"] == [str(theirs)] and theirs.exists()
    assert cat.gc()["partial_writes"] == [str(theirs)]
    assert not theirs.exists() and mine.exists() and remote.exists() and legacy.exists()
    old = time.time() - 3 * 86400
    for path in (mine, remote, legacy):
        os.utime(path, (old, old))
    assert sorted(cat.gc()["partial_writes"]) == sorted(str(p) for p in (mine, remote, legacy))
