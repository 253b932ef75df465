"""Every table exists from a catalog's first write: an empty placeholder fragment with the table's schema, which plain
Parquet readers can glob and which views, look-ups, checks and compaction take in their stride."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq

from catalog import storage
from catalog.schema import TABLES
from catalog.storage import PLACEHOLDER_NAME, is_placeholder
from catalog.store import Catalog


def _glob(catalog: Catalog, table: str) -> str:
    return f"{catalog.root_url()}/tables/{table}/*.parquet"


def test_first_write_makes_every_table_readable_as_plain_parquet(any_catalog: Catalog) -> None:
    any_catalog.append("sources", [{"source_id": "s", "uri": "u"}])
    con = duckdb.connect()
    if not any_catalog.is_local:
        con.register_filesystem(any_catalog.fs)
    for table, schema in TABLES.items():
        result = con.sql(f"SELECT * FROM read_parquet('{_glob(any_catalog, table)}', union_by_name = true)")
        assert result.columns == schema.names, table
        assert len(result.fetchall()) == (1 if table == "sources" else 0), table
    # the README's latest-row recipe, on a table with no rows yet
    latest = con.sql(
        f"SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet('{_glob(any_catalog, 'failures')}', "
        "union_by_name = true, filename = true, file_row_number = true) QUALIFY row_number() OVER (PARTITION BY "
        "failure_id ORDER BY created_at DESC, filename DESC, file_row_number DESC) = 1"
    ).fetchall()
    assert latest == []
    placeholder = any_catalog.fragments("failures", placeholder=True)
    assert [p.rsplit("/", 1)[-1] for p in placeholder] == [PLACEHOLDER_NAME]
    with any_catalog.fs.open(placeholder[0], "rb") as f:
        assert pq.read_schema(f).remove_metadata() == TABLES["failures"]
    assert any_catalog.fragments("failures") == []  # holds no row: not listed as a fragment of rows
    assert any_catalog.fragments("sources", placeholder=True) == any_catalog.fragments("sources")  # written at once


def test_views_lookups_stats_and_check_take_placeholders_in_their_stride(catalog: Catalog) -> None:
    catalog.append("sources", [{"source_id": "s", "uri": "u"}])
    catalog.append("clips", [])  # no rows: no fragment
    for table in TABLES:
        assert catalog.query(f"SELECT count(*) AS n FROM {table}").to_pylist() == [{"n": int(table == "sources")}]
    assert catalog.existing_ids("failures", ["f"]) == set()
    assert catalog.stats()["tables"]["failures"] == {"fragments": 0, "bytes": 0, "rows": 0}
    assert catalog.check() == [] and catalog.unreadable_fragments(full=True) == []
    assert catalog.gc(older_than_s=0)["deleted"] == 0


def test_compaction_drops_a_placeholder_once_its_table_has_rows(catalog: Catalog) -> None:
    catalog.append("sources", [{"source_id": "s", "uri": "u"}])
    catalog.append("failures", [{"failure_id": "f1", "stage": "ingest", "reason": "x"}])
    assert len(catalog.fragments("failures", placeholder=True)) == 2
    assert catalog.compact() == {}  # nothing to merge; the placeholder goes silently
    assert [is_placeholder(p) for p in catalog.fragments("failures", placeholder=True)] == [False]
    assert catalog.fragments("pairs", placeholder=True)  # tables without rows keep theirs
    catalog.append("failures", [{"failure_id": "f2", "stage": "ingest", "reason": "y"}])
    merged = catalog.compact()
    assert merged["failures"]["rows_out"] == 2 and len(merged["failures"]["merged"]) == 2
    assert catalog.query("SELECT count(*) AS n FROM failures").to_pylist() == [{"n": 2}]


def test_placeholders_are_written_once_whatever_the_writers(catalog: Catalog, monkeypatch) -> None:
    catalog.append("sources", [{"source_id": "s", "uri": "u"}])
    path = catalog.fragments("runs", placeholder=True)[0]
    monkeypatch.setattr(storage, "_TABLES_READY", set())  # as a new process would start
    catalog.fs.rm(path)
    Catalog(catalog.url).append("sources", [{"source_id": "t", "uri": "v"}])
    assert catalog.fragments("runs", placeholder=True) == [path]  # made again for a table that lost it
    monkeypatch.setattr(storage, "_TABLES_READY", set())
    pairs = catalog.fragments("pairs", placeholder=True)[0]
    mtime = catalog.fs.info(pairs)["mtime"]
    assert catalog._atomic_write(pairs, b"other bytes", exclusive=True) is False  # never replaced
    assert catalog.fs.info(pairs)["mtime"] == mtime
    assert [p for p in catalog.fs.ls(catalog.table_dir("pairs"), detail=False) if ".tmp-" in p] == []
