"""stats, compact (also under concurrent readers and writers) and check."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from catalog.store import Catalog, CatalogError
from catalog.views import UNIQUE_SUFFIX
from tests.catalog.catalog_data import T0, build_graph, full_row


def test_stats(catalog: Catalog) -> None:
    build_graph(catalog, n_renders=3)
    catalog.append(
        "failures",
        [
            {"failure_id": "f1", "stage": "render", "reason": "oom", "error_type": "RuntimeError"},
            {"failure_id": "f2", "stage": "render", "reason": "oom", "error_type": "RuntimeError"},
            {"failure_id": "f3", "stage": "ingest", "reason": "truncated_video", "error_type": "InputError"},
        ],
    )
    stats = catalog.stats()
    rows = {t: info["rows"] for t, info in stats["tables"].items()}
    assert rows == {
        "sources": 1,
        "clips": 1,
        "objects": 1,
        "instructions": 3,
        "renders": 3,
        "pairs": 6,
        "runs": 0,
        "failures": 3,
        "stage_timings": 0,
        "reviews": 0,
        "decisions": 0,
    }
    assert stats["tables"]["pairs"]["fragments"] == 1
    by = {(r["edit_type"], r["decision"], r["engine"]): r["n"] for r in stats["pairs_by"]}
    assert by == {
        ("remove", "accepted", "propagation"): 2,
        ("add", "accepted", "propagation"): 2,
        ("remove", "rejected", "propagation"): 1,
        ("add", "rejected", "propagation"): 1,
    }
    assert stats["failures_by"][0] == {"stage": "render", "reason": "oom", "error_type": "RuntimeError", "n": 2}


def test_compact_merges_and_deduplicates(any_catalog: Catalog) -> None:
    for i in range(5):
        any_catalog.append(
            "sources", [{"source_id": f"s{j}", "uri": f"v{i}", "created_at": T0 + timedelta(i)} for j in range(i + 1)]
        )
    any_catalog.append("runs", [full_row("runs", 0)])  # one unique fragment: nothing to do
    before = any_catalog.query("SELECT * FROM sources ORDER BY source_id")
    result = any_catalog.compact()
    assert set(result) == {"sources"}
    assert result["sources"]["rows_in"] == 15 and result["sources"]["rows_out"] == 5
    fragments = any_catalog.fragments("sources")
    assert len(fragments) == 1 and fragments[0].endswith(UNIQUE_SUFFIX)
    assert any_catalog.query("SELECT * FROM sources ORDER BY source_id") == before
    assert any_catalog.compact() == {}


def test_compact_refuses_unreadable_fragment_and_deletes_nothing(catalog: Catalog) -> None:
    catalog.append("sources", [{"source_id": "a", "uri": "x"}])
    catalog.append("sources", [{"source_id": "b", "uri": "y"}])
    broken = catalog.fragments("sources")[0]
    data = open(broken, "rb").read()
    open(broken, "wb").write(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=broken.rsplit("/", 1)[-1]):
        catalog.compact()
    assert len(catalog.fragments("sources")) == 2


def test_compact_with_concurrent_readers_and_writers(catalog: Catalog) -> None:
    """Readers never lose or double-count rows while compactions and a writer run; the writer's rows all land."""
    batches, batch_rows = 30, 50
    written = [0]  # rows whose append returned
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for b in range(batches):
                catalog.append("sources", [{"source_id": f"s{b}-{k}", "uri": "u"} for k in range(batch_rows)])
                written[0] += batch_rows
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        last = 0
        try:
            while not done.is_set():
                floor = written[0]
                n, distinct = (
                    catalog.query("SELECT count(*), count(DISTINCT source_id) FROM sources").to_pylist()[0].values()
                )
                assert n == distinct, "a row was counted twice"
                assert n >= max(floor, last), f"rows were lost: {n} < {max(floor, last)}"
                last = n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    compactions = 0
    while not done.is_set():
        compactions += bool(catalog.compact("sources"))
    for t in threads:
        t.join()
    assert not errors, errors
    assert compactions >= 1
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": batches * batch_rows}]
    catalog.compact("sources")
    assert len(catalog.fragments("sources")) == 1
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": batches * batch_rows}]


def test_check_healthy_catalog(any_catalog: Catalog) -> None:
    build_graph(any_catalog, n_renders=2)
    assert any_catalog.check() == []


def test_check_finds_truncated_fragment_missing_media_and_dangling_rows(catalog: Catalog) -> None:
    rows = build_graph(catalog, n_renders=2)
    # a truncated fragment
    fragment = catalog.fragments("renders")[0]
    data = open(fragment, "rb").read()
    open(fragment, "wb").write(data[:100])
    # a missing media file and a corrupted one
    missing = rows["pairs"][0]["mask_uri"]
    catalog.fs.rm(catalog.path(missing))
    corrupted = rows["clips"][0]["video_uri"]
    with catalog.fs.open(catalog.path(corrupted), "wb") as f:
        f.write(b"not the original bytes")
    # a row pointing at nothing
    catalog.append("objects", [{**rows["objects"][0], "object_id": "object_orphan", "clip_id": "clip_missing"}])

    problems = catalog.check()
    kinds = {(p.kind, p.subject) for p in problems}
    assert ("unreadable_fragment", fragment) in kinds
    assert ("missing_media", missing) in kinds
    assert ("hash_mismatch", corrupted) in kinds
    assert ("dangling_reference", "object_orphan") in kinds
    # pairs now point at renders that cannot be read
    assert {p.subject for p in problems if p.kind == "dangling_reference" and p.table == "pairs"} == {
        r["pair_id"] for r in rows["pairs"]
    }
    assert fragment in "\n".join(str(p) for p in problems)


def test_truncated_fragment_is_named_by_queries_touching_it(catalog: Catalog) -> None:
    build_graph(catalog, n_renders=1)
    fragment = catalog.fragments("pairs")[0]
    data = open(fragment, "rb").read()
    open(fragment, "wb").write(data[: len(data) - 10])
    for sql in ("SELECT count(*) FROM pairs", "SELECT * FROM pairs_full"):
        with pytest.raises(Exception, match=fragment.rsplit("/", 1)[-1]):
            catalog.query(sql)
    with pytest.raises(Exception, match=fragment.rsplit("/", 1)[-1]):
        catalog.query("SELECT count(*) FROM pairs", read_only=True)
    # tables that do not touch it still work
    assert catalog.query("SELECT count(*) AS n FROM clips").to_pylist() == [{"n": 1}]


def _view_sql(catalog: Catalog, table: str) -> str:
    con = catalog.connect()
    try:
        return con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [table]).fetchall()[0][0]
    finally:
        con.close()


def test_compacted_table_view_reads_without_deduplication_window(catalog: Catalog) -> None:
    catalog.append("sources", [{"source_id": "a", "uri": "1"}])
    catalog.append("sources", [{"source_id": "a", "uri": "2"}, {"source_id": "b", "uri": "3"}])
    assert "row_number" in _view_sql(catalog, "sources")  # two fragments may share ids
    catalog.compact()
    assert "row_number" not in _view_sql(catalog, "sources")
    assert catalog.query("SELECT source_id, uri FROM sources ORDER BY 1").to_pylist() == [
        {"source_id": "a", "uri": "2"},
        {"source_id": "b", "uri": "3"},
    ]


def test_two_compactions_racing_lose_nothing(catalog: Catalog) -> None:
    for b in range(20):
        catalog.append("sources", [{"source_id": f"s{b}-{k}", "uri": "u"} for k in range(10)])
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def compact() -> None:
        try:
            barrier.wait()
            catalog.compact("sources")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compact) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert catalog.query("SELECT count(*) AS n, count(DISTINCT source_id) AS d FROM sources").to_pylist() == [
        {"n": 200, "d": 200}
    ]


def test_compaction_interrupted_before_deleting_keeps_views_exact(catalog: Catalog, monkeypatch) -> None:
    """A compactor killed after writing the merged fragment but before removing the old ones: both sets of rows
    are visible on disk, the views still count each row once, and the next compaction cleans up."""
    for b in range(3):
        catalog.append("sources", [{"source_id": f"s{b}-{k}", "uri": "u"} for k in range(5)])
    real_rm = catalog.fs.rm
    calls = []

    def dying_rm(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt("killed mid-compaction")
        return real_rm(path, *args, **kwargs)

    monkeypatch.setattr(catalog.fs, "rm", dying_rm)
    with pytest.raises(KeyboardInterrupt):
        catalog.compact("sources")
    monkeypatch.setattr(catalog.fs, "rm", real_rm)
    assert len(catalog.fragments("sources")) == 3  # merged + two old ones
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": 15}]
    catalog.compact("sources")
    assert len(catalog.fragments("sources")) == 1
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": 15}]


def test_compaction_relists_when_a_listed_fragment_vanished(catalog: Catalog, monkeypatch) -> None:
    import catalog.maintenance as maintenance

    for b in range(3):
        catalog.append("sources", [{"source_id": f"s{b}", "uri": "u"}])
    real = maintenance._small_fragments
    stale = [*real(catalog, "sources", 1 << 30), f"{catalog.table_dir('sources')}/19990101T000000000000-gone.parquet"]
    listings = iter([sorted(stale)])
    monkeypatch.setattr(maintenance, "_small_fragments", lambda *a: next(listings, None) or real(*a))
    result = catalog.compact("sources")
    assert len(result["sources"]["merged"]) == 3
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": 3}]


def test_gc_collects_unnamed_media_and_partial_writes_only(catalog: Catalog) -> None:
    """What a killed writer leaves (media stored before its row, a temporary file of a write cut short) goes; every
    media file a row names (in any version of the row) stays, and so does anything younger than the grace period."""
    import os
    import time
    from pathlib import Path

    build_graph(catalog, n_renders=2)
    named = sorted(str(p) for p in Path(catalog.path("media")).rglob("*") if p.is_file())
    unnamed = catalog.put_media(b"rendered, never recorded", "mp4")
    partial = Path(catalog.table_dir("pairs")) / ".tmp-0123"
    partial.write_bytes(b"half a fragment")

    fresh = catalog.gc()  # default grace period: a live writer's media survives
    assert fresh["orphan_media"] == [] and fresh["partial_writes"] == [] and fresh["deleted"] == 0
    old = time.time() - 3 * 86400
    for path in [catalog.path(unnamed), str(partial), *named]:
        os.utime(path, (old, old))
    listed = catalog.gc(dry_run=True)
    assert [Path(p).name for p in listed["orphan_media"]] == [Path(unnamed).name]
    assert listed["partial_writes"] == [str(partial)] and listed["deleted"] == 0
    assert Path(catalog.path(unnamed)).exists()
    done = catalog.gc()
    assert done["deleted"] == 2 and not Path(catalog.path(unnamed)).exists() and not partial.exists()
    assert sorted(str(p) for p in Path(catalog.path("media")).rglob("*") if p.is_file()) == named
    assert catalog.check() == []


def test_run_state_reads_a_stale_running_row_as_interrupted() -> None:
    from datetime import datetime, timezone

    from catalog.maintenance import HEARTBEAT_S, STALE_BEATS, run_state

    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    beat = now - timedelta(seconds=10)
    assert run_state("running", beat, 5.0, None, now) == "running"  # 10 s: two beats of 5 s
    assert run_state("running", beat, 2.0, None, now) == "interrupted"  # five beats of 2 s missed
    assert run_state("completed", now - timedelta(days=9), 2.0, None, now) == "completed"  # final states stay
    old = now - timedelta(seconds=STALE_BEATS * HEARTBEAT_S + 1)
    assert run_state("running", None, None, old, now) == "interrupted"  # a row from before heartbeats: created_at
    assert run_state("running", None, None, now - timedelta(seconds=HEARTBEAT_S), now) == "running"


def test_check_warns_of_interrupted_runs_without_rewriting_them(catalog: Catalog) -> None:
    from datetime import datetime, timezone

    from catalog.maintenance import HEARTBEAT_S, STALE_BEATS

    now = datetime.now(timezone.utc)
    stale = now - timedelta(seconds=STALE_BEATS * 0.5 + 5)
    runs = [
        {"run_id": "run_killed", "status": "running", "heartbeat_at": stale, "heartbeat_s": 0.5, "created_at": stale,
         "source": "https://user:SECRET@host/manifest.csv", "host": "h"},
        {"run_id": "run_live", "status": "running", "heartbeat_at": now, "heartbeat_s": HEARTBEAT_S},
        {"run_id": "run_done", "status": "running", "heartbeat_at": stale, "heartbeat_s": 0.5, "created_at": stale},
    ]  # fmt: skip
    catalog.append("runs", runs)
    catalog.append("runs", [{**runs[2], "status": "completed", "heartbeat_at": now, "created_at": now}])
    problems = catalog.check()
    assert [(p.kind, p.subject, p.severity) for p in problems] == [("interrupted_run", "run_killed", "warning")]
    assert "SECRET" not in str(problems[0]) and "https://***@host/manifest.csv" in str(problems[0])
    stored = catalog.query("SELECT run_id, status FROM runs ORDER BY run_id").to_pylist()
    assert [r["status"] for r in stored] == ["completed", "running", "running"]  # history as written
