"""Read-only SQL: every rejected statement kind, file/environment access, and the sandbox underneath."""

from __future__ import annotations

import duckdb
import pytest

from catalog.sql import SqlRejected, check_read_only
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("INSERT INTO pairs SELECT * FROM pairs", "INSERT"),
        ("UPDATE pairs SET decision = 'accepted'", "UPDATE"),
        ("DELETE FROM pairs", "DELETE"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("CREATE VIEW v AS SELECT 1", "CREATE"),
        ("CREATE MACRO m(x) AS x", "CREATE"),
        ("DROP VIEW pairs", "DROP"),
        ("ALTER VIEW pairs RENAME TO p2", "ALTER"),
        ("COPY (SELECT * FROM pairs) TO '/tmp/out.csv'", "COPY"),
        ("COPY pairs FROM '/etc/passwd'", "COPY"),
        ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
        ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("INSTALL httpfs", "INSTALL/LOAD"),
        ("LOAD httpfs", "INSTALL/LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("RESET threads", "SET"),
        ("PRAGMA version", "PRAGMA"),
        ("CALL pragma_version()", "CALL"),
        ("BEGIN TRANSACTION", "transaction"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1; DROP VIEW pairs", "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto"),
        ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
        ("SELECT * FROM read_blob('/etc/passwd')", "read_blob"),
        ("SELECT * FROM read_json('/etc/passwd')", "read_json"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "read_parquet"),
        ("SELECT * FROM parquet_metadata('/etc/passwd')", "parquet_metadata"),
        ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv"),
        ("SELECT * FROM glob('/etc/*')", "glob"),
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
        ("SELECT * FROM query('SELECT 1')", "query"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT current_setting('home_directory')", "current_setting"),
        ("SELECT json_execute_serialized_sql('x')", "json_execute_serialized_sql"),
        ("SELECT * FROM pairs WHERE pair_id IN (SELECT content FROM read_text('/etc/passwd'))", "read_text"),
        ("WITH t AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM t", "read_csv"),
        ("SELECT * FROM other.main.pairs", "not allowed"),
        ("DESCRIBE '/etc/passwd'", "/etc/passwd"),
        ("SUMMARIZE '/etc/passwd'", "/etc/passwd"),
        ("SUMMARIZE SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("DESCRIBE SELECT getenv('HOME')", "getenv"),
        ('SHOW "/etc/passwd"', "/etc/passwd"),
        ("SHOW no_such_view", "not a catalog view"),
        ("SHOW other.main.pairs", "not allowed"),
        ("SHOW databases", "SHOW databases is not allowed"),
        ("SELECT * FROM (SUMMARIZE read_text('/etc/passwd'))", "read_text"),
        ("SELECT * FROM (DESCRIBE '/etc/passwd')", "/etc/passwd"),
        ("", "empty"),
    ],
)
def test_rejected(sql: str, named: str) -> None:
    with pytest.raises(SqlRejected, match=named.replace("(", r"\(")):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT edit_type, decision, count(*) FROM pairs GROUP BY ALL",
        "WITH a AS (SELECT * FROM pairs WHERE decision = 'accepted') SELECT a.pair_id, i.instruction FROM a "
        "JOIN instructions i USING (instruction_id)",
        "SELECT * FROM pairs_full WHERE psnr_bg > 20 ORDER BY psnr_bg DESC LIMIT 3",
        "SELECT pair_id, row_number() OVER (PARTITION BY engine ORDER BY created_at) FROM pairs",
        "SELECT list_transform([1, 2], x -> x + 1), regexp_matches('a', 'a'), date_trunc('day', now())",
        "SELECT * FROM range(3) t(i) UNION ALL SELECT 1",
        "FROM failures SELECT stage, count(*) GROUP BY stage",
    ],
)
def test_allowed(sql: str) -> None:
    check_read_only(sql)


LOOK_AROUND = [
    "SHOW TABLES",
    "SHOW ALL TABLES",
    "SHOW",
    "DESCRIBE",
    "DESCRIBE pairs",
    "SHOW pairs",
    "SUMMARIZE pairs",
    "SUMMARIZE SELECT psnr_bg FROM pairs WHERE decision = 'accepted'",
    "DESCRIBE SELECT * FROM pairs_full",
    "SELECT column_name FROM (DESCRIBE renders) WHERE column_type = 'VARCHAR'",
    "FROM (SUMMARIZE failures) SELECT column_name, approx_unique",
]


@pytest.mark.parametrize("sql", LOOK_AROUND)
def test_looking_around_is_allowed_and_runs(sql: str, catalog: Catalog) -> None:
    """What users type first: accepted by the parser check and answered by the sandboxed connection."""
    build_graph(catalog, n_renders=1)
    check_read_only(sql)
    result = catalog.query(sql, read_only=True)
    assert result.num_rows > 0


def test_show_tables_lists_the_catalog_views_only(catalog: Catalog) -> None:
    from catalog.views import view_names

    build_graph(catalog, n_renders=1)
    names = set(catalog.query("SHOW TABLES", read_only=True).column("name").to_pylist())
    assert names == set(view_names())
    described = catalog.query("DESCRIBE pairs", read_only=True).column("column_name").to_pylist()
    assert "pair_id" in described and "decision" in described
    summary = {r["column_name"]: r for r in catalog.query("SUMMARIZE pairs", read_only=True).to_pylist()}
    assert summary["edit_type"]["count"] == 2


def test_reading_etc_passwd_fails_through_the_catalog(catalog: Catalog) -> None:
    build_graph(catalog, n_renders=1)
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')"):
        with pytest.raises(SqlRejected):
            catalog.query(sql, read_only=True)


def test_sandbox_blocks_files_outside_the_catalog_even_without_the_parser(catalog: Catalog) -> None:
    """Layer 2 alone: the guarded connection cannot read /etc/passwd nor unlock itself, yet reads the views."""
    build_graph(catalog, n_renders=1)
    con = catalog.connect(read_only_guard=True)
    assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == 2
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"SELECT * FROM read_text('{catalog.root}/../../../etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
    ):
        with pytest.raises(duckdb.PermissionException):
            con.execute(sql)
    for sql in ("SET enable_external_access = true", "SET allowed_directories = ['/']"):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute(sql)


def test_read_only_query_runs(catalog: Catalog) -> None:
    build_graph(catalog, n_renders=2)
    result = catalog.query("SELECT edit_type, count(*) AS n FROM pairs GROUP BY ALL ORDER BY 1", read_only=True)
    assert result.to_pylist() == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]


def test_failing_query_raises_duckdb_error(catalog: Catalog) -> None:
    with pytest.raises(duckdb.BinderException, match="no_such_column"):
        catalog.query("SELECT no_such_column FROM pairs", read_only=True)


def test_read_only_on_every_root(any_catalog: Catalog) -> None:
    """The sandbox limits file access to the root also for registered fsspec filesystems (memory://, s3://)."""
    build_graph(any_catalog, n_renders=1)
    assert any_catalog.query("SELECT count(*) AS n FROM pairs_full", read_only=True).to_pylist() == [{"n": 2}]
    con = any_catalog.connect(read_only_guard=True)
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_text('/etc/passwd')")


def test_cte_name_shadowing_a_path_cannot_read_the_file(catalog: Catalog) -> None:
    """A CTE named like a file passes the parser check outside its scope; the sandbox still refuses the file."""
    sql = 'SELECT * FROM (WITH "/etc/passwd" AS (SELECT 1) SELECT 1), "/etc/passwd"'
    check_read_only(sql)
    with pytest.raises(duckdb.CatalogException, match="/etc/passwd"):
        catalog.query(sql, read_only=True)
