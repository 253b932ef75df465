"""Idempotent appends under concurrency: writers recording the same ids at once leave one raw row per id, on a local
folder and on a real S3 server (the per-table lock of ``CatalogStorage.table_lock``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.storage import CatalogError, CatalogStorage, _LeaseLock
from catalog.store import Catalog
from catalog.views import UNIQUE_SUFFIX
from tasks.steps.record import record_rows


REPO = Path(__file__).resolve().parents[2]
N_IDS = 64

# Each writer records the same 64 sources in its own batch size and order, starting when the parent says go.
WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from catalog.store import Catalog
    from tasks.steps.record import record_rows

    root, options, worker, signals = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    catalog = Catalog(root, storage_options=options)
    rows = [{"source_id": f"s{i:03d}", "uri": f"u{i}"} for i in range(N_IDS)]
    size = (8, 13, N_IDS)[worker % 3]
    rows = rows if worker % 2 == 0 else rows[::-1]
    (signals / f"ready-{worker}").touch()
    while not (signals / "go").exists():
        time.sleep(0.001)
    print(sum(record_rows(catalog, "sources", rows[i : i + size]) for i in range(0, len(rows), size)), flush=True)
    os._exit(0)  # pyarrow's thread pool can abort at interpreter exit under load (SIGABRT): not what is tested here
    """
).replace("N_IDS", str(N_IDS))


def _raw_ids(catalog: CatalogStorage, table: str = "sources") -> list[str]:
    """Every id of every fragment, read as plain Parquet (duplicates included)."""
    ids = []
    for path in catalog.fragments(table, placeholder=True):
        with catalog.fs.open(path, "rb") as f:
            ids += pq.read_table(f).column("source_id").to_pylist()
    return ids


def _writers_started_together(root: str, options: dict, signals: Path, n: int) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, root, json.dumps(options), str(w), str(signals)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(n)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(signals.glob("ready-*"))) < n:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
            time.sleep(0.01)
        (signals / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * n
    return [int(o.strip()) for o in outputs]


@pytest.mark.parametrize("root_kind", ["local", "s3"])
def test_three_processes_recording_the_same_ids_leave_one_raw_row_per_id(root_kind, tmp_path, request) -> None:
    if root_kind == "local":
        root, options = str(tmp_path / "cat"), {}
    else:
        s3 = request.getfixturevalue("s3")
        root, options = s3.url(f"cat-{uuid.uuid4().hex[:8]}"), s3.storage_options
    signals = tmp_path / "signals"
    signals.mkdir()
    written = _writers_started_together(root, options, signals, 3)
    catalog = Catalog(root, storage_options=options)
    raw = _raw_ids(catalog)
    assert len(raw) == len(set(raw)) == N_IDS, f"{len(raw)} raw rows for {len(set(raw))} ids; written {written}"
    assert sum(written) == N_IDS  # each id written by exactly one writer
    assert all(p.endswith(UNIQUE_SUFFIX) for p in catalog.fragments("sources"))  # the views' fast path holds
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": N_IDS}]
    catalog.compact()
    assert len(catalog.fragments("sources", placeholder=True)) == 1


def test_threads_recording_overlapping_batches_write_each_id_once(any_catalog: Catalog) -> None:
    rows = [{"source_id": f"s{i:03d}", "uri": f"u{i}"} for i in range(40)]
    barrier = threading.Barrier(6)
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            mine = rows[k * 5 :] + rows[: k * 5]  # each thread starts elsewhere in the list
            counts.append(sum(record_rows(any_catalog, "sources", mine[i : i + 7]) for i in range(0, 40, 7)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    raw = _raw_ids(any_catalog)
    assert sum(counts) == len(raw) == len(set(raw)) == 40


def test_rows_whose_ids_all_exist_are_skipped_without_the_lock(catalog: Catalog, monkeypatch) -> None:
    rows = [{"source_id": "a", "uri": "x"}, {"source_id": "b", "uri": "y"}, {"source_id": "a", "uri": "z"}]
    assert catalog.append_new("sources", rows) == 2  # the first of a repeated id is kept
    assert catalog.query("SELECT uri FROM sources WHERE source_id = 'a'").to_pylist() == [{"uri": "x"}]

    def no_lock(*args, **kwargs):
        raise AssertionError("the lock was taken for rows that all exist")

    monkeypatch.setattr(CatalogStorage, "table_lock", no_lock)
    assert catalog.append_new("sources", rows[:2]) == 0
    assert catalog.append_new("sources", []) == 0


# ------------------------------------------------------------------------------------------ the object-store lock
def _lease(catalog: CatalogStorage, lease_s: float = 60.0) -> _LeaseLock:
    return _LeaseLock(catalog, "sources", lease_s=lease_s)


def _s3_catalog(s3) -> Catalog:
    return Catalog(s3.url(f"cat-{uuid.uuid4().hex[:8]}"), storage_options=s3.storage_options)


def test_lease_lock_excludes_a_second_holder_until_released(s3) -> None:
    catalog = _s3_catalog(s3)
    first = _lease(catalog)
    first.acquire(timeout_s=5)
    with pytest.raises(CatalogError, match=f"pid {os.getpid()}"):
        _lease(catalog).acquire(timeout_s=0.3)  # held by a live process (this one): wait, then give up naming it
    first.release()
    second = _lease(catalog)
    second.acquire(timeout_s=5)
    assert second.epoch == first.epoch + 2  # held, free, held: each transition one create-only write
    second.release()
    assert len(second._epochs()) <= 3  # old epochs are pruned by whoever takes the lock


def test_a_stale_listing_never_gives_the_lock_twice(s3, monkeypatch) -> None:
    """A taker whose listing predates a few transitions creates an epoch number pruned since (the create succeeds):
    the fresh listing after it shows the real, greater epoch, so it does not hold the lock."""
    catalog = _s3_catalog(s3)
    holder = _lease(catalog)
    for _ in range(2):  # epochs 1 (held), 2 (free), 3 (held): taking 3 prunes 1
        holder.acquire(timeout_s=5)
        if holder.epoch == 1:
            holder.release()
    assert holder.epoch == 3 and holder._epochs() == [2, 3]
    late = _lease(catalog)
    listings: list[list[int]] = [[]]  # what it listed before any epoch existed
    real = _LeaseLock._epochs
    monkeypatch.setattr(_LeaseLock, "_epochs", lambda self: listings.pop() if listings else real(self))
    with pytest.raises(CatalogError, match="has been held by"):
        late.acquire(timeout_s=0.5)
    assert late._read(1) is not None  # its create of the pruned number went through…
    holder.release()  # …and the real holder's release still works
    late.acquire(timeout_s=5)
    assert late.epoch == 5


def test_lease_lock_of_a_dead_process_or_past_its_lease_is_taken_at_once(s3) -> None:
    catalog = _s3_catalog(s3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = _lease(catalog)
    lock.acquire(timeout_s=5)
    record = {"state": "held", "host": lock._read(lock.epoch)["host"], "pid": dead.pid, "since": time.time(),
              "expires": time.time() + 3600}  # fmt: skip
    catalog.fs.pipe_file(lock._path(lock.epoch + 1), json.dumps(record).encode())  # a holder killed with -9
    started = time.monotonic()
    successor = _lease(catalog)
    successor.acquire(timeout_s=5)
    assert time.monotonic() - started < 2
    successor.release()

    expired = _lease(catalog, lease_s=0.2)
    expired.acquire(timeout_s=5)  # a live holder (this process) whose lease ran out
    time.sleep(0.3)
    taker = _lease(catalog)
    taker.acquire(timeout_s=1)
    assert not expired.still_held()  # the late holder learns it lost the lock before writing
    assert taker.still_held()


def test_a_local_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from catalog.store import Catalog\nwith Catalog({str(root)!r}).table_lock('sources'):\n"
         "    print('held', flush=True)\n    import time; time.sleep(60)"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CatalogError, match="locked by another writer"):
            with Catalog(root).table_lock("sources", timeout_s=0.2):
                pass
        holder.kill()
        holder.wait()
        with Catalog(root).table_lock("sources", timeout_s=2):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
