"""Read-only SQL over the catalog: what ``vpf sql`` and ``vpf export --where`` accept.

Two independent layers: ``check_read_only`` parses the text with DuckDB itself and accepts exactly one ``SELECT``
over the catalog's views (or ``DESCRIBE``/``SUMMARIZE``/``SHOW`` of one) with allowlisted functions, raising
``SqlRejected`` naming anything else; the query then runs on a connection sandboxed by ``catalog.views.sandbox``
(no external access, file access limited to the catalog root, configuration locked), so even a gap in the first
layer cannot read outside the catalog.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import duckdb

from catalog.views import view_names


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


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _cte_names(tree: Any) -> set[str]:
    names = set()
    for node in _walk(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            names.update(entry["key"].lower() for entry in cte_map.get("map", []))
    return names


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
        if name.lower() in _SHOW_SPECIAL:
            return
        raise SqlRejected(
            f"SHOW {name} is not allowed; read-only catalog SQL allows SHOW TABLES, SHOW ALL TABLES and "
            "DESCRIBE/SHOW/SUMMARIZE of a view or a query"
        )
    if node.get("schema_name") not in ("", "main", None) or node.get("catalog_name") not in ("", "memory", None):
        raise SqlRejected(f"SHOW {node.get('catalog_name')}.{node.get('schema_name')}.{name} is not allowed")
    if name.lower() not in tables:
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


def check_read_only(sql: str, allowed_tables: set[str] | None = None) -> None:
    """Accept exactly one read-only ``SELECT`` over the catalog views, else raise ``SqlRejected`` naming what was
    rejected.

    The text is parsed by DuckDB itself (``extract_statements`` for the statement count and kind,
    ``json_serialize_sql`` for the syntax tree). Accepted: one ``SELECT`` whose tables are the catalog's views
    (``allowed_tables`` when given) or the query's own CTEs, also as ``DESCRIBE``/``SUMMARIZE``/``SHOW`` of a view or a query, and
    ``SHOW TABLES``/``SHOW ALL TABLES`` (what users type first to look around); its table functions must be on a
    short allowlist (``range``, ``unnest``, …) and its scalar/aggregate/window functions DuckDB built-ins minus those
    that reach files, settings, the environment or other SQL text (``getenv``, ``current_setting``,
    ``json_execute_serialized_sql``…). Everything else is rejected: writes, DDL, ``COPY``, ``EXPORT``, ``ATTACH``,
    ``INSTALL``/``LOAD``, ``SET``/``PRAGMA``/``CALL``, several statements, ``read_csv('/etc/passwd')``,
    ``FROM '/etc/passwd'``.
    """
    if not sql or not sql.strip():
        raise SqlRejected("empty query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRejected(f"cannot parse the query: {exc}") from None
    if len(statements) != 1:
        raise SqlRejected(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise SqlRejected(f"{_STATEMENT_NAMES.get(kind, kind)} is not allowed: only a read-only SELECT is")
    con = duckdb.connect(":memory:")
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise SqlRejected(f"statement not allowed: {tree.get('error_message', 'cannot analyse it')}")
    tables = {t.lower() for t in (allowed_tables or set(view_names()))} | _cte_names(tree)
    for node in _walk(tree):
        node_type = node.get("type")
        if node.get("class") == "FUNCTION" or (node.get("class") == "WINDOW" and "function_name" in node):
            name = node["function_name"]
            if node.get("schema") or node.get("catalog"):
                raise SqlRejected(f"qualified function {node.get('schema')}.{name} is not allowed")
            if not allowed_function(name):
                raise SqlRejected(f"function {name}() is not allowed in read-only catalog SQL")
        if node_type == "SHOW_REF":
            _check_show(node, tables)
        if "sample" in node and "alias" in node and node_type not in _TABLE_REF_TYPES:
            raise SqlRejected(f"{node_type} is not allowed in read-only catalog SQL; query the views directly")
        if node_type == "TABLE_FUNCTION":
            name = node["function"]["function_name"]
            if name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise SqlRejected(
                    f"table function {name}() is not allowed: read-only SQL may read the catalog views "
                    f"({', '.join(sorted(view_names()))}) and {sorted(ALLOWED_TABLE_FUNCTIONS)}"
                )
        elif node_type == "BASE_TABLE":
            name = node["table_name"]
            if node.get("schema_name") not in ("", "main") or node.get("catalog_name") not in ("", "memory"):
                raise SqlRejected(f"table {node.get('catalog_name')}.{node.get('schema_name')}.{name} is not allowed")
            if name.lower() not in tables:
                raise SqlRejected(
                    f"table {name!r} is not a catalog view; tables are {', '.join(sorted(view_names()))}"
                )
