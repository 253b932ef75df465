"""Read-only SQL over the catalog: what ``vpf sql`` and ``vpf export --where`` accept, and how it runs.

Two independent layers: ``check_read_only`` parses the text with DuckDB itself and walks the syntax tree with its
scopes (a CTE is visible only where DuckDB binds it), accepting exactly one ``SELECT`` over the catalog's views with
allowlisted functions and bounded nesting, and raising ``SqlRejected`` naming anything else; the query then runs on a
connection sandboxed by ``catalog.views.sandbox`` (bounded memory and spill, no external access, file access limited
to the catalog root, configuration locked), so even a gap in the first layer cannot read outside the catalog.
``stream_read_only`` runs a checked query batch by batch, so no result is ever held whole.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from catalog import views
from catalog.storage import MISSING_FRAGMENT_ATTEMPTS, CatalogError, is_missing_file
from catalog.views import QueryLimits, view_names


if TYPE_CHECKING:
    from catalog.storage import CatalogStorage


class SqlRejected(ValueError):
    """A statement that read-only catalog SQL does not allow; the message names what was rejected."""


# Table functions a read-only query may call: they generate rows from their arguments and touch nothing else.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "repeat"})

# Built-in scalar/aggregate/macro functions that reach outside the query: files, settings, environment, profiling,
# other SQL text, extensions or secrets.
DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "current_query",
        "current_query_id",
        "json_execute_serialized_sql",
        "json_deserialize_sql",
        "json_serialize_sql",
        "json_serialize_plan",
        "enable_profile",
        "disable_profile",
        "extension_versions",
        "which_secret",
        "in_search_path",
        "current_schemas",
        "current_database",
        "current_catalog",
        "setseed",
        "nextval",
        "currval",
        "sql_auto_complete",
        "query",
        "query_table",
        "read_text",
        "read_blob",
        "glob",
    }
)

_STATEMENT_NAMES = {
    "INSERT": "INSERT (a write)",
    "UPDATE": "UPDATE (a write)",
    "DELETE": "DELETE (a write)",
    "CREATE": "CREATE (DDL)",
    "CREATE_FUNC": "CREATE FUNCTION/MACRO (DDL)",
    "DROP": "DROP (DDL)",
    "ALTER": "ALTER (DDL)",
    "COPY": "COPY",
    "COPY_DATABASE": "COPY DATABASE",
    "EXPORT": "EXPORT DATABASE",
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
    "LOAD": "INSTALL/LOAD",
    "SET": "SET/RESET",
    "VARIABLE_SET": "SET VARIABLE",
    "PRAGMA": "PRAGMA",
    "CALL": "CALL",
    "TRANSACTION": "transaction control",
    "VACUUM": "VACUUM",
    "UPDATE_EXTENSIONS": "UPDATE EXTENSIONS",
    "MULTI": "a multi-statement command (PIVOT … ON …)",
}


@functools.cache
def _builtin_functions() -> frozenset[str]:
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'window', 'macro')"
        ).fetchall()
    finally:
        con.close()
    return frozenset(r[0].lower() for r in rows)


def allowed_function(name: str) -> bool:
    name = name.lower()
    return name in _builtin_functions() and name not in DENIED_FUNCTIONS


# Nesting bounds: parentheses counted on DuckDB's tokens before parsing, and levels of the JSON syntax tree (operator
# chains such as ``1+1+…+1`` nest without parentheses). Both sit well below what DuckDB's parser and Python's JSON
# decoder survive, so a deep query is refused with a message instead of crashing the check.
MAX_PARENTHESES = 64
MAX_TREE_DEPTH = 400

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """A name as DuckDB compares identifiers: case-insensitive for ASCII letters only (``"Ä"`` is not ``"ä"``)."""
    return name.translate(_ASCII_LOWER)


# ``SHOW TABLES`` and ``SHOW ALL TABLES`` (also plain ``SHOW``/``DESCRIBE``): list the connection's views, nothing else.
_SHOW_SPECIAL = {"tables": "SHOW TABLES", "__show_tables_expanded": "SHOW ALL TABLES"}


def _check_show(node: dict[str, Any], tables: set[str]) -> None:
    """``DESCRIBE``/``SUMMARIZE``/``SHOW`` of a view or a query, ``SHOW TABLES``: read-only looks at the catalog.

    ``DESCRIBE x``/``SUMMARIZE x``/``SUMMARIZE SELECT …`` carry their query (``SELECT * FROM x``), whose tables and
    functions the caller's walk checks like any other; ``SHOW x`` names its table directly; other ``SHOW`` targets
    (settings, databases, functions) are refused."""
    if node.get("query") is not None:
        return
    name = str(node.get("table_name") or "").strip('"')
    if node.get("show_type") == "SHOW_SPECIAL":
        if fold(name) in _SHOW_SPECIAL:
            return
        raise SqlRejected(
            f"SHOW {name} is not allowed; read-only catalog SQL allows SHOW TABLES, SHOW ALL TABLES and "
            "DESCRIBE/SHOW/SUMMARIZE of a view or a query"
        )
    if node.get("schema_name") not in ("", "main", None) or node.get("catalog_name") not in ("", "memory", None):
        raise SqlRejected(f"SHOW {node.get('catalog_name')}.{node.get('schema_name')}.{name} is not allowed")
    if fold(name) not in tables:
        raise SqlRejected(f"SHOW {name!r}: not a catalog view; tables are {', '.join(sorted(view_names()))}")


_TABLE_REF_TYPES = {
    "BASE_TABLE",
    "JOIN",
    "SUBQUERY",
    "TABLE_FUNCTION",
    "EMPTY",
    "EXPRESSION_LIST",
    "PIVOT",
    "SHOW_REF",
}
_TOO_DEEP = "query nested too deeply"


def _check_parentheses(sql: str) -> None:
    """Refuse more than ``MAX_PARENTHESES`` open parentheses, counted on DuckDB's tokens (not in strings/comments)."""
    tokens = duckdb.tokenize(sql)
    ends = [pos for pos, _ in tokens[1:]] + [len(sql)]
    depth = 0
    for (pos, kind), end in zip(tokens, ends):
        if kind != duckdb.token_type.operator:
            continue
        for char in sql[pos:end]:
            if char == "(":
                depth += 1
                if depth > MAX_PARENTHESES:
                    raise SqlRejected(f"{_TOO_DEEP}: more than {MAX_PARENTHESES} levels of parentheses")
            elif char == ")":
                depth -= 1


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_tree_depth(text: str) -> None:
    """Refuse a JSON syntax tree nested more than ``MAX_TREE_DEPTH`` levels, scanning the text (no recursion)."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > MAX_TREE_DEPTH:
                raise SqlRejected(
                    f"{_TOO_DEEP}: its syntax tree is more than {MAX_TREE_DEPTH} levels deep "
                    "(nested subqueries, calls or long operator chains)"
                )
        elif char in "]}":
            depth -= 1


def _check_node(node: dict[str, Any], ctes: frozenset[str], tables: frozenset[str]) -> None:
    """One node of the syntax tree, with the CTE names in scope where it sits."""
    node_type = node.get("type")
    if node.get("class") == "FUNCTION" or (node.get("class") == "WINDOW" and "function_name" in node):
        name = node["function_name"]
        if node.get("schema") or node.get("catalog"):
            raise SqlRejected(f"qualified function {node.get('schema')}.{name} is not allowed")
        if not allowed_function(name):
            raise SqlRejected(f"function {name}() is not allowed in read-only catalog SQL")
    if node_type == "SHOW_REF":
        _check_show(node, set(tables))  # ``SHOW x`` looks x up in the catalog only, never among CTEs
    if "sample" in node and "alias" in node and node_type not in _TABLE_REF_TYPES:
        raise SqlRejected(f"{node_type} is not allowed in read-only catalog SQL; query the views directly")
    if node_type == "TABLE_FUNCTION":
        name = node["function"]["function_name"]
        if fold(name) not in ALLOWED_TABLE_FUNCTIONS:
            raise SqlRejected(
                f"table function {name}() is not allowed: read-only SQL may read the catalog views "
                f"({', '.join(sorted(view_names()))}) and {sorted(ALLOWED_TABLE_FUNCTIONS)}"
            )
    elif node_type == "BASE_TABLE":
        name, schema, catalog = node["table_name"], node.get("schema_name"), node.get("catalog_name")
        if schema not in ("", "main") or catalog not in ("", "memory"):
            raise SqlRejected(f"table {catalog}.{schema}.{name} is not allowed")
        # A qualified name (main.x) is looked up in the catalog, never among CTEs: DuckDB would read a file "main.x".
        visible = tables if schema or catalog else tables | ctes
        if fold(name) not in visible:
            where = "" if schema or catalog else " nor a WITH query in scope there"
            raise SqlRejected(
                f"table {name!r} is not a catalog view{where}; tables are {', '.join(sorted(view_names()))}"
            )


def _check_scoped(statement: dict[str, Any], tables: frozenset[str]) -> None:
    """Walk the statement's syntax tree (iteratively) with the CTE names each node sees, as DuckDB binds them.

    A ``WITH`` list's i-th CTE sees the outer scope and CTEs 0..i-1 (no forward or self reference: DuckDB reads
    such a name as a table, or a file); the query of that ``WITH`` and every subquery inside it see all of them; a
    recursive CTE (``RECURSIVE_CTE_NODE``) sees itself in its recursive part (``right``) only. Nothing defined
    inside a subquery is visible outside it.
    """
    stack: list[tuple[Any, frozenset[str]]] = [(statement, frozenset())]
    while stack:
        node, ctes = stack.pop()
        if isinstance(node, list):
            stack.extend((item, ctes) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        _check_node(node, ctes, tables)
        skip = set()
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            skip.add("cte_map")
            entries = cte_map.get("map") or []
            names = [fold(entry["key"]) for entry in entries]
            for i, entry in enumerate(entries):
                stack.append((entry["value"], ctes | frozenset(names[:i])))
            ctes = ctes | frozenset(names)
        if node.get("type") == "RECURSIVE_CTE_NODE":
            skip.update(("left", "right"))
            stack.append((node.get("left"), ctes))
            stack.append((node.get("right"), ctes | {fold(node["cte_name"])}))
        stack.extend(
            (value, ctes) for key, value in node.items() if key not in skip and isinstance(value, (dict, list))
        )


def check_read_only(sql: str, allowed_tables: set[str] | None = None) -> None:
    """Accept exactly one read-only ``SELECT`` over the catalog views, else raise ``SqlRejected`` naming what was
    rejected.

    The text is parsed by DuckDB itself (``extract_statements`` for the statement count and kind,
    ``json_serialize_sql`` for the syntax tree), after a bound on its parentheses (``MAX_PARENTHESES``); the tree is
    bounded too (``MAX_TREE_DEPTH``) and walked with its scopes (see ``_check_scoped``). Accepted: one ``SELECT``
    whose tables are the catalog's views (``allowed_tables`` when given) or CTEs in scope where they are named,
    also as ``DESCRIBE``/``SUMMARIZE``/``SHOW`` of a view or a query, and ``SHOW TABLES``/``SHOW ALL TABLES``; its
    table functions must be on a short allowlist (``range``, ``unnest``, …) and its scalar/aggregate/window
    functions DuckDB built-ins minus those that reach files, settings, the environment or other SQL text
    (``getenv``, ``current_setting``, ``json_execute_serialized_sql``…). Everything else is rejected: writes, DDL,
    ``COPY``, ``EXPORT``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``/``PRAGMA``/``CALL``, several statements,
    ``read_csv('/etc/passwd')``, ``FROM '/etc/passwd'``, a name that only a CTE of another scope defines.
    """
    if not sql or not sql.strip():
        raise SqlRejected("empty query")
    _check_parentheses(sql)
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        if "expression depth" in str(exc):
            raise SqlRejected(f"{_TOO_DEEP}: DuckDB's parser refuses it") from None
        raise SqlRejected(f"cannot parse the query: {exc}") from None
    if len(statements) != 1:
        raise SqlRejected(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise SqlRejected(f"{_STATEMENT_NAMES.get(kind, kind)} is not allowed: only a read-only SELECT is")
    con = duckdb.connect(":memory:")
    try:
        text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    finally:
        con.close()
    _check_tree_depth(text)
    try:
        tree = json.loads(text)
    except RecursionError:  # unreachable below MAX_TREE_DEPTH; a refusal all the same
        raise SqlRejected(f"{_TOO_DEEP}: its syntax tree cannot be read") from None
    if tree.get("error"):
        message = str(tree.get("error_message", "cannot analyse it"))
        if "expression depth" in message:
            raise SqlRejected(f"{_TOO_DEEP}: DuckDB's parser refuses it")
        raise SqlRejected(f"statement not allowed: {message}")
    tables = frozenset(fold(t) for t in (allowed_tables or set(view_names())))
    for statement in tree["statements"]:
        _check_scoped(statement, tables)


BATCH_ROWS = 32_768


class QueryFailed(CatalogError):
    """A read-only query that DuckDB could not finish; the message is DuckDB's."""


class QueryOutOfMemory(QueryFailed):
    """A read-only query that needs more than its memory limit (``limit``, as DuckDB shows it) and spill allow."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class ResultStream:
    """A running query's result: its column names (they may repeat) and DuckDB types, the Arrow schema of what is
    read, and the rows as Arrow batches in order. Iterating ``batches`` runs the query; errors met there are raised
    as ``QueryOutOfMemory``, ``CatalogError`` (unreadable fragments) or ``QueryFailed``."""

    names: list[str]
    types: list[str]
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


_STREAM_ERRORS = (duckdb.Error, OSError, pa.ArrowException)  # a stream's errors arrive through Arrow as OSError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raise_failure(catalog: CatalogStorage, exc: BaseException, limit: str) -> None:
    """Raise what ``exc`` (from DuckDB, directly or through Arrow) means for the caller; see ``ResultStream``."""
    text = str(exc)
    if isinstance(exc, duckdb.OutOfMemoryException) or text.startswith("Out of Memory Error"):
        raise QueryOutOfMemory(
            f"the query needs more than its memory limit ({limit}) and spill allow: {_first_line(exc)}", limit
        ) from exc
    if isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)) or text.startswith(
        ("IO Error", "Invalid Input Error")
    ):
        bad = catalog.unreadable_fragments()
        if bad:
            raise CatalogError(f"query failed on unreadable fragment(s) {bad}: {exc}") from exc
    if isinstance(exc, duckdb.Error):
        raise exc
    raise QueryFailed(text) from exc


def _read_next(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _batches(
    catalog: CatalogStorage, first: pa.RecordBatch | None, reader: pa.RecordBatchReader, limit: str
) -> Iterator[pa.RecordBatch]:
    batch = first
    while batch is not None:
        yield batch
        try:
            batch = _read_next(reader)
        except _STREAM_ERRORS as exc:
            _raise_failure(catalog, exc, limit)


@contextmanager
def stream_read_only(
    catalog: CatalogStorage,
    sql: str,
    *,
    limits: QueryLimits | None = None,
    shape: Callable[[duckdb.DuckDBPyRelation], duckdb.DuckDBPyRelation] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[ResultStream]:
    """Check ``sql`` (``SqlRejected``), run it on a connection sandboxed with ``limits`` and yield its result as a
    :class:`ResultStream` of batches of at most ``batch_rows`` rows; the connection closes on exit.

    ``shape`` maps the query's relation to the one read (a projection that renders cells, say); ``names`` and
    ``types`` stay the query's. A fragment compacted away before the first batch makes it list again
    (``MISSING_FRAGMENT_ATTEMPTS``). Errors before the first batch: ``QueryOutOfMemory``, ``CatalogError`` naming
    unreadable fragments, else DuckDB's own; after it, see ``ResultStream``.
    """
    check_read_only(sql)
    for attempt in range(MISSING_FRAGMENT_ATTEMPTS):
        con = views.connect(catalog, read_only_guard=True, limits=limits)
        limit = str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        try:
            relation = con.sql(sql)
            names, types = list(relation.columns), [str(t) for t in relation.types]
            reader = (shape(relation) if shape else relation).to_arrow_reader(batch_rows)
            first = _read_next(reader)
        except _STREAM_ERRORS as exc:
            con.close()
            if attempt + 1 < MISSING_FRAGMENT_ATTEMPTS and is_missing_file(exc):
                time.sleep(0.01 * 2**attempt)  # a compaction is swapping fragments: list again
                continue
            _raise_failure(catalog, exc, limit)
        except BaseException:
            con.close()
            raise
        try:
            yield ResultStream(names, types, reader.schema, _batches(catalog, first, reader, limit))
        finally:
            con.close()
        return
    raise AssertionError("unreachable")
