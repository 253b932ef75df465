"""Catalog rows and views: round trip per table and root, latest row per id, validation naming table and field."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.schema import ID_COLUMNS, SCHEMA_VERSION, TABLES
from catalog.store import Catalog, CatalogError
from catalog.views import UNIQUE_SUFFIX
from tests.catalog.catalog_data import T0, build_graph, full_row


def _sorted(rows: list[dict], key: str) -> list[dict]:
    return sorted(rows, key=lambda r: r[key])


@pytest.mark.parametrize("table", list(TABLES))
def test_round_trip_every_table(catalog: Catalog, table: str) -> None:
    rows = [full_row(table, i) for i in range(3)]
    path = catalog.append(table, rows)
    key = ID_COLUMNS[table]
    got = catalog.query(f'SELECT * FROM "{table}"')
    assert got.schema.names == TABLES[table].names
    assert _sorted(got.to_pylist(), key) == _sorted(rows, key)
    # the fragment carries the schema version and the table name
    metadata = pq.read_metadata(path).metadata
    assert metadata[b"vpf.schema_version"] == str(SCHEMA_VERSION).encode()
    assert metadata[b"vpf.table"] == table.encode()


def test_round_trip_graph_on_every_root(any_catalog: Catalog) -> None:
    rows = build_graph(any_catalog, n_renders=2)
    for table, written in rows.items():
        key = ID_COLUMNS[table]
        got = any_catalog.query(f"SELECT * EXCLUDE (created_at) FROM {table}").to_pylist()
        expected = [{**{n: None for n in TABLES[table].names if n != "created_at"}, **r} for r in written]
        assert _sorted(got, key) == _sorted(expected, key)
    full = any_catalog.query(
        "SELECT pair_id, instruction_text, clip_caption, source_uri, engine_version FROM pairs_full"
    )
    assert full.num_rows == 4
    assert set(full.column("clip_caption").to_pylist()) == {"a street at dusk"}
    assert set(full.column("engine_version").to_pylist()) == {"1"}
    assert all(t.startswith("remove the car") for t in full.column("instruction_text").to_pylist())
    media = rows["pairs"][0]["src_video_uri"]
    assert any_catalog.read_media(media)[4:8] == b"ftyp"


def test_rewriting_same_ids_never_duplicates(any_catalog: Catalog) -> None:
    first = [{"source_id": f"s{i}", "uri": f"v1-{i}", "created_at": T0} for i in range(5)]
    any_catalog.append("sources", first)
    any_catalog.append(
        "sources", [{**r, "uri": r["uri"].replace("v1", "v2"), "created_at": T0 + timedelta(1)} for r in first[:3]]
    )
    # same timestamp, later fragment wins
    any_catalog.append("sources", [{**first[0], "uri": "v3-0", "created_at": T0 + timedelta(1)}])
    # older timestamp written later loses
    any_catalog.append("sources", [{**first[4], "uri": "stale", "created_at": T0 - timedelta(1)}])
    got = dict(
        any_catalog.query("SELECT source_id, uri FROM sources").to_pylist()
        and [(r["source_id"], r["uri"]) for r in any_catalog.query("SELECT source_id, uri FROM sources").to_pylist()]
    )
    assert got == {"s0": "v3-0", "s1": "v2-1", "s2": "v2-2", "s3": "v1-3", "s4": "v1-4"}
    assert any_catalog.query("SELECT count(*) AS n FROM sources").column("n")[0].as_py() == 5


def test_duplicate_ids_in_one_batch_keep_the_last_row(catalog: Catalog) -> None:
    path = catalog.append(
        "sources", [{"source_id": "s", "uri": "a", "created_at": T0}, {"source_id": "s", "uri": "b", "created_at": T0}]
    )
    assert not path.endswith(UNIQUE_SUFFIX)  # not unique: the view must deduplicate it
    assert catalog.query("SELECT uri FROM sources").to_pylist() == [{"uri": "b"}]


def test_unique_batches_are_marked(catalog: Catalog) -> None:
    assert catalog.append("sources", [{"source_id": "a", "uri": "x"}, {"source_id": "b", "uri": "y"}]).endswith(
        UNIQUE_SUFFIX
    )


def test_empty_tables_give_empty_views_with_schema_columns(catalog: Catalog) -> None:
    con = catalog.connect()
    for table, schema in TABLES.items():
        result = con.sql(f"SELECT * FROM {table}").to_arrow_table()
        assert result.num_rows == 0
        assert result.schema.names == schema.names
    assert con.execute("SELECT count(*) FROM pairs_full").fetchone()[0] == 0


def test_old_fragments_missing_a_column_read_as_null(catalog: Catalog) -> None:
    # a fragment written before a nullable column existed (schema evolution)
    catalog.append("sources", [{"source_id": "new", "uri": "n", "caption": "c"}])
    old = pa.table({"source_id": ["old"], "uri": ["o"], "created_at": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    pq.write_table(old, f"{catalog.table_dir('sources')}/19990101T000000000000-oldschema0000.parquet")
    got = {r["source_id"]: r["caption"] for r in catalog.query("SELECT source_id, caption FROM sources").to_pylist()}
    assert got == {"new": "c", "old": None}


def test_existing_ids(catalog: Catalog) -> None:
    catalog.append("pairs", [full_row("pairs", i) for i in range(3)])
    known = [full_row("pairs", i)["pair_id"] for i in range(3)]
    assert catalog.existing_ids("pairs", [known[0], "pair_unknown", known[2]]) == {known[0], known[2]}
    assert catalog.existing_ids("pairs", []) == set()
    assert catalog.existing_ids("runs", ["run-x"]) == set()


@pytest.mark.parametrize("remembered", [True, False], ids=["small-fragments", "large-fragments"])
def test_existing_ids_reads_each_fragment_once_and_follows_compaction(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, remembered: bool
) -> None:
    """Ids of small fragments are remembered, so a call reads only fragments written since the last one; large
    fragments go through DuckDB. Either way the answer follows new writes and compaction."""
    from catalog import storage

    if not remembered:
        monkeypatch.setattr(storage._FragmentIds, "MAX_ROWS", 0)
    opened: list[str] = []
    real_open = catalog.fs.open
    monkeypatch.setattr(catalog.fs, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    ids = [full_row("pairs", i)["pair_id"] for i in range(4)]
    catalog.append("pairs", [full_row("pairs", 0)])
    catalog.append("pairs", [full_row("pairs", 1)])
    assert catalog.existing_ids("pairs", ids) == set(ids[:2])
    first = len(opened)
    assert first == 2  # both fragments' footers
    assert catalog.existing_ids("pairs", ids) == set(ids[:2])
    assert len(opened) == (first if remembered else 2 * first)  # remembered: nothing read again
    catalog.append("pairs", [full_row("pairs", 2)])
    assert catalog.existing_ids("pairs", ids) == set(ids[:3])
    catalog.compact("pairs")
    assert len(catalog.fragments("pairs")) == 1
    assert catalog.existing_ids("pairs", ids) == set(ids[:3])
    assert catalog.existing_ids("pairs", ["pair_unknown"]) == set()


def test_existing_values_of_another_string_column(catalog: Catalog) -> None:
    """``column=``: the same lookup on a string column other than the id, e.g. a clip's plan."""
    rows = [full_row("clips", i) for i in range(2)]
    catalog.append("clips", rows)
    plans = [r["plan_id"] for r in rows]
    assert all(plans)
    assert catalog.existing_ids("clips", [*plans, "plan_unknown"], column="plan_id") == set(plans)
    assert catalog.existing_ids("clips", ["plan_unknown"], column="plan_id") == set()
    with pytest.raises(CatalogError, match="not a string column"):
        catalog.existing_ids("clips", ["x"], column="start_frame")


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"source_id": "s", "uri": "u", "width": "wide"}, "sources.width"),  # wrong type
        ({"source_id": "s", "width": 3}, "sources.uri"),  # missing required field
        ({"source_id": None, "uri": "u"}, "sources.source_id"),  # required field null
    ],
)
def test_bad_row_names_table_and_field_and_writes_nothing(catalog: Catalog, row: dict, field: str) -> None:
    good = {"source_id": "ok", "uri": "fine"}
    with pytest.raises(CatalogError, match=field.replace(".", r"\.")):
        catalog.append("sources", [good, row])
    assert catalog.fragments("sources") == []
    assert catalog.query("SELECT count(*) AS n FROM sources").column("n")[0].as_py() == 0


def test_bad_arrow_table_names_table_and_field(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"pairs\.psnr_bg"):
        catalog.append("pairs", pa.table({"pair_id": ["p"], "psnr_bg": ["not a number"]}))
    with pytest.raises(CatalogError, match=r"unknown field.*nonsense"):
        catalog.append("sources", [{"source_id": "s", "uri": "u", "nonsense": 1}])
    assert catalog.fragments("pairs") == [] and catalog.fragments("sources") == []


def test_media_is_content_addressed(any_catalog: Catalog) -> None:
    a = any_catalog.put_media(b"same bytes", "mp4")
    assert any_catalog.put_media(b"same bytes", ".MP4") == a
    assert a.startswith("media/") and a.endswith(".mp4")
    assert any_catalog.read_media(a) == b"same bytes"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latest_row_per_id_matches_a_reference_with_compacted_base_and_deltas(catalog: Catalog, seed: int) -> None:
    """Random rewrites (random timestamps, ties included) across a compacted base and later delta fragments: the
    view equals the rule computed in Python (greatest created_at, then later fragment, then later row)."""
    import random

    rng = random.Random(seed)
    written: list[tuple[datetime, int, int, str, str]] = []  # (created_at, fragment, row, id, uri)

    def write(n_rows: int) -> None:
        fragment = len({w[1] for w in written})
        rows = [
            {
                "source_id": f"s{rng.randrange(30)}",
                "uri": f"f{fragment}-r{r}",
                "created_at": T0 + timedelta(rng.randrange(5)),
            }
            for r in range(n_rows)
        ]
        catalog.append("sources", rows)
        written.extend((row["created_at"], fragment, r, row["source_id"], row["uri"]) for r, row in enumerate(rows))

    for _ in range(4):
        write(20)
    catalog.compact()
    assert len(catalog.fragments("sources")) == 1
    for _ in range(3):
        write(rng.randrange(1, 8))
    expected: dict[str, tuple] = {}
    for entry in written:
        if entry[3] not in expected or entry[:3] > expected[entry[3]][:3]:
            expected[entry[3]] = entry
    con = catalog.connect()
    view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'sources'").fetchall()[0][0]
    con.close()
    assert "base AS" in view  # the compacted fragment is read as the base, the rest as the delta
    got = {r["source_id"]: r["uri"] for r in catalog.query("SELECT source_id, uri FROM sources").to_pylist()}
    assert got == {k: v[4] for k, v in expected.items()}
    assert catalog.query("SELECT count(*) AS n FROM sources").to_pylist() == [{"n": len(expected)}]
