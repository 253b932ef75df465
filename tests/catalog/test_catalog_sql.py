"""Read-only SQL: every rejected statement kind, file/environment access, CTE scopes, nesting bounds, and the sandbox
underneath."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from catalog.sql import MAX_PARENTHESES, MAX_TREE_DEPTH, SqlRejected, check_read_only
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


def _old_cte_names(sql: str) -> set[str]:
    """What the old check took for CTE names: every ``cte_map`` key anywhere in the tree, whatever its scope (its
    tables were the views plus these, so any of these names passed as a table everywhere in the query)."""
    tree = json.loads(duckdb.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    names, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            names.update(e["key"].lower() for e in (node.get("cte_map") or {}).get("map", []))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


@pytest.fixture
def secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file a query must never read, in the working directory (also as ``main.<name>``, what DuckDB opens for a
    qualified ``main."<name>"`` it finds no table for); its non-ASCII name tells DuckDB's ASCII-only case folding
    from Python's."""
    monkeypatch.chdir(tmp_path)
    for name in ("sécret.csv", "main.sécret.csv"):
        (tmp_path / name).write_text("secret\nTOPSECRET\n")
    return tmp_path / "sécret.csv"


def _plain_duckdb_reads_secret(sql: str) -> bool:
    """Whether ``sql`` reads the secret on a DuckDB connection with no sandbox (one view ``pairs``)."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE VIEW pairs AS SELECT 1 AS secret")
    try:
        text = str(con.execute(sql).fetchall())
    except duckdb.Error as exc:
        text = str(exc)
    finally:
        con.close()
    return "TOPSECRET" in text


# Names that resolve to the file, not to a CTE, though a CTE of that name exists somewhere in the query.
LEAKS = {
    "defined in a FROM subquery": "SELECT * FROM (WITH {s} AS (SELECT 1) SELECT 1), {s}",
    "defined in an EXISTS subquery": "SELECT * FROM {s} WHERE EXISTS (WITH {s} AS (SELECT 1) SELECT 1)",
    "defined in another CTE's body": "WITH a AS (WITH {s} AS (SELECT 7 AS secret) SELECT * FROM {s}) SELECT * FROM {s}",
    "forward reference": "WITH a AS (SELECT * FROM {s}), {s} AS (SELECT 1 AS secret) SELECT * FROM a",
    "self reference": "WITH {s} AS (SELECT * FROM {s}) SELECT * FROM {s}",
    "RECURSIVE without a recursive union": "WITH RECURSIVE {s} AS (SELECT * FROM {s}) SELECT * FROM {s}",
    "anchor of a recursive CTE": (
        "WITH RECURSIVE {s} AS (SELECT * FROM {s} UNION ALL SELECT * FROM {s} WHERE false) SELECT * FROM {s}"
    ),
    "non-ASCII case": "WITH {S} AS (SELECT 7 AS secret) SELECT * FROM {s}",
    "qualified name": "WITH {s} AS (SELECT 7 AS secret) SELECT * FROM main.{s}",
}


@pytest.mark.parametrize("shape", LEAKS)
def test_a_cte_name_out_of_scope_is_refused(shape: str, secret: Path) -> None:
    """Each statement reads the secret on plain DuckDB (the control), named a CTE the old check collected from the
    whole query (so it passed), and is now refused."""
    sql = LEAKS[shape].format(s=f'"{secret.name}"', S=f'"{secret.name.upper()}"')
    assert _plain_duckdb_reads_secret(sql), "control: this shape must read the file without a sandbox"
    assert secret.name.lower() in _old_cte_names(sql) or secret.name.upper().lower() in _old_cte_names(sql)
    with pytest.raises(SqlRejected, match="not a catalog view"):
        check_read_only(sql, allowed_tables={"pairs"})


# CTE names used where DuckDB binds them to the CTE: accepted, and they never read the file of the same name.
IN_SCOPE = {
    "both sides of a UNION": "WITH {s} AS (SELECT 7 AS secret) SELECT * FROM {s} UNION ALL SELECT * FROM {s}",
    "scalar subquery": "WITH {s} AS (SELECT 7 AS secret) SELECT (SELECT max(secret) FROM {s}) AS secret",
    "IN subquery": "WITH {s} AS (SELECT 7 AS secret) SELECT * FROM pairs WHERE 1 NOT IN (SELECT secret FROM {s})",
    "later CTE, nested": (
        "WITH {s} AS (SELECT 7 AS secret), b AS (SELECT * FROM (SELECT * FROM {s})) SELECT * FROM b JOIN {s} USING (secret)"
    ),
    "LATERAL subquery's own WITH": (
        "SELECT * FROM (SELECT 1) t(one), LATERAL (WITH {s} AS (SELECT 7 AS secret) SELECT * FROM {s})"
    ),
    "recursive CTE": (
        "WITH RECURSIVE {s} AS (SELECT 1 AS secret UNION ALL SELECT secret + 1 FROM {s} WHERE secret < 3) "
        "SELECT * FROM {s}"
    ),
    "recursive CTE through a subquery": (
        "WITH RECURSIVE {s} AS (SELECT 1 AS secret UNION SELECT secret + 1 FROM (SELECT * FROM {s}) WHERE secret < 3) "
        "SELECT * FROM {s}"
    ),
    "MATERIALIZED": "WITH {s} AS MATERIALIZED (SELECT 7 AS secret) SELECT * FROM {s}",
    "recursive CTE USING KEY": (
        "WITH RECURSIVE {s}(secret) USING KEY (secret) AS (SELECT 1 UNION SELECT secret + 1 FROM {s} WHERE secret < 3) "
        "SELECT * FROM {s}"
    ),
    "ASCII case": "WITH {A} AS (SELECT 7 AS secret) SELECT * FROM {s}",
    "DESCRIBE of a CTE": "WITH {s} AS (SELECT 7 AS secret) SELECT * FROM (DESCRIBE {s})",
    "shadowing a view": "WITH pairs AS (SELECT 7 AS secret) SELECT * FROM pairs",
}


@pytest.mark.parametrize("shape", IN_SCOPE)
def test_a_cte_in_scope_is_accepted_and_never_reads_the_file(shape: str, secret: Path) -> None:
    ascii_upper = "".join(c.upper() if c.isascii() else c for c in secret.name)
    sql = IN_SCOPE[shape].format(s=f'"{secret.name}"', A=f'"{ascii_upper}"')
    check_read_only(sql, allowed_tables={"pairs"})
    assert not _plain_duckdb_reads_secret(sql)


def test_cte_scopes_on_a_catalog(catalog: Catalog) -> None:
    """The old regression statement (a path named by a CTE of a subquery) is refused before it runs; nested CTEs
    used where they are in scope run."""
    build_graph(catalog, n_renders=1)
    with pytest.raises(SqlRejected, match="/etc/passwd"):
        catalog.query('SELECT * FROM (WITH "/etc/passwd" AS (SELECT 1) SELECT 1), "/etc/passwd"', read_only=True)
    hidden = f'"{catalog.fragments("pairs")[0]}"'  # a raw fragment under the root
    sql = f"SELECT * FROM (WITH {hidden} AS (SELECT 1) SELECT 1), {hidden}"
    assert hidden.strip('"').lower() in _old_cte_names(sql)  # so the old check passed it
    con = catalog.connect(read_only_guard=True)
    try:
        assert con.execute(sql).fetchall()  # control: the sandbox alone lets a file under the root through
    finally:
        con.close()
    with pytest.raises(SqlRejected, match="not a catalog view"):
        catalog.query(sql, read_only=True)
    nested = (
        "WITH a AS (SELECT pair_id, edit_type FROM pairs), b AS (SELECT * FROM a WHERE edit_type IN "
        "(SELECT edit_type FROM a)) SELECT count(*) AS n FROM b WHERE pair_id IN (SELECT pair_id FROM a)"
    )
    assert catalog.query(nested, read_only=True).to_pylist() == [{"n": 2}]
    counted = "WITH RECURSIVE t(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM t WHERE i < 5) SELECT sum(i) AS s FROM t"
    assert catalog.query(counted, read_only=True).to_pylist() == [{"s": 15}]


DEEP = {
    "calls": lambda n: "SELECT " + "abs(" * n + "1" + ")" * n,
    "subqueries": lambda n: "SELECT * FROM " + "(SELECT * FROM " * n + "pairs" + ")" * n,
    "parentheses": lambda n: "SELECT " + "(" * n + "1" + ")" * n,
    "operator chain": lambda n: "SELECT " + " + ".join(["1"] * n),
    "CASE": lambda n: "SELECT " + "CASE WHEN true THEN " * n + "1" + " END" * n,
    "string concatenation": lambda n: "SELECT " + " || ".join(["'x'"] * n),
}


@pytest.mark.parametrize("depth", [450, 5000])
@pytest.mark.parametrize("kind", DEEP)
def test_deep_nesting_is_refused_not_a_crash(kind: str, depth: int) -> None:
    with pytest.raises(SqlRejected, match="nested too deeply"):
        check_read_only(DEEP[kind](depth))


def test_the_old_check_crashed_on_450_nested_calls() -> None:
    """Control: the old check decoded the syntax tree with ``json.loads`` and walked it recursively; at 450 nested
    calls the decoding alone raises ``RecursionError``."""
    text = duckdb.execute("SELECT json_serialize_sql(?)", [DEEP["calls"](450)]).fetchone()[0]
    with pytest.raises(RecursionError):
        json.loads(text)


@pytest.mark.parametrize(
    ("kind", "depth"), [("calls", 30), ("subqueries", 12), ("parentheses", MAX_PARENTHESES - 1), ("CASE", 20)]
)
def test_reasonable_nesting_is_accepted_and_runs(kind: str, depth: int, catalog: Catalog) -> None:
    build_graph(catalog, n_renders=1)
    sql = DEEP[kind](depth)
    check_read_only(sql)
    assert catalog.query(sql, read_only=True).num_rows > 0


def test_nesting_bounds_are_exact() -> None:
    """Parentheses: ``MAX_PARENTHESES`` levels pass, one more is refused; the syntax tree takes 3 levels per operator
    of a chain, so a chain of about ``MAX_TREE_DEPTH / 3`` operators is the longest that passes."""
    check_read_only(DEEP["parentheses"](MAX_PARENTHESES))
    with pytest.raises(SqlRejected, match=f"more than {MAX_PARENTHESES} levels of parentheses"):
        check_read_only(DEEP["parentheses"](MAX_PARENTHESES + 1))
    check_read_only(DEEP["operator chain"](MAX_TREE_DEPTH // 3 - 5))
    with pytest.raises(SqlRejected, match=f"more than {MAX_TREE_DEPTH} levels deep"):
        check_read_only(DEEP["operator chain"](MAX_TREE_DEPTH // 3 + 5))


def test_parentheses_in_strings_and_comments_do_not_count() -> None:
    check_read_only("SELECT '" + "(" * 500 + "' AS s -- " + "(" * 500 + "\n, 1 /* " + "(" * 500 + " */")
