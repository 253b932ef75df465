"""DuckDB views over the catalog's Parquet fragments: one view per table (latest row per id) plus convenience views.

A connection is a snapshot: the fragment list of every table is read once, when the views are created. Latest row
per id means: the row with the greatest ``created_at``; ties go to the later fragment (fragment names start with
their write time), then to the later row in the fragment. Fragments whose name ends in ``.u.parquet`` hold each id
at most once (``Catalog.append`` marks batches with unique ids, compaction always writes them), so a table made of
one such fragment needs no deduplication (see :func:`table_view_sql`). With ``guard=True`` the connection is then
sandboxed: bounded memory and spill (:class:`QueryLimits`), external access off, file access limited to the catalog
root, configuration locked (see ``catalog.sql``).
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import psutil
import pyarrow as pa

from catalog.reviews import LATEST_REVIEWS_SQL
from catalog.schema import ID_COLUMNS, TABLES
from catalog.storage import MISSING_FRAGMENT_ATTEMPTS, CatalogError, is_missing_file


if TYPE_CHECKING:
    from catalog.storage import CatalogStorage


UNIQUE_SUFFIX = ".u.parquet"

# The latest rescore of each pair (``vpf rescore``: a pair re-decided under another accept rule from its recorded
# columns); a rescore is the pair's effective gate decision only while it is newer than the pair row itself (a pair
# scored again by a later run is decided by that run).
LATEST_DECISIONS_SQL = """
SELECT pair_id, decision, decision_reason, rule_json, created_at AS decided_at
FROM (
    SELECT *, row_number() OVER (PARTITION BY pair_id ORDER BY created_at DESC, decision_id DESC) AS _n
    FROM decisions
)
WHERE _n = 1
"""

# Convenience views, created after the table views, in this order (later ones read earlier ones).
CONVENIENCE_VIEWS: dict[str, str] = {
    "reviewed": LATEST_REVIEWS_SQL,
    "latest_decisions": LATEST_DECISIONS_SQL,
    # a pair with its instruction, clip, source and render, and three decisions: ``gate_decision`` (the gate's, as
    # the run recorded it), ``decision`` (the effective gate decision: the latest rescore when newer than the pair
    # row, else the gate's) and ``final_decision`` (the reviewer's verdict where the pair was reviewed, else
    # ``decision``)
    "pairs_full": """
        SELECT
            p.* REPLACE (
                CASE WHEN d.decided_at > p.created_at THEN d.decision ELSE p.decision END AS decision,
                CASE WHEN d.decided_at > p.created_at THEN d.decision_reason ELSE p.decision_reason END
                    AS decision_reason
            ),
            p.decision AS gate_decision,
            p.decision_reason AS gate_decision_reason,
            CASE WHEN d.decided_at > p.created_at THEN d.decided_at END AS rescored_at,
            CASE WHEN d.decided_at > p.created_at THEN d.rule_json END AS rescore_rule_json,
            rv.verdict AS review_verdict,
            rv.reason AS review_reason,
            rv.note AS review_note,
            rv.reviewer,
            rv.reviewed_at,
            coalesce(rv.verdict, CASE WHEN d.decided_at > p.created_at THEN d.decision ELSE p.decision END)
                AS final_decision,
            i.instruction AS instruction_text,
            i.target_caption,
            i.source_caption,
            i.region_caption,
            i.proposer,
            c.caption AS clip_caption,
            c.width AS clip_width,
            c.height AS clip_height,
            c.num_frames AS clip_num_frames,
            c.fps AS clip_fps,
            c.start_frame,
            c.end_frame,
            c.source_id,
            s.uri AS source_uri,
            s.width AS source_width,
            s.height AS source_height,
            r.engine_version,
            r.seed,
            r.params_json AS render_params_json,
            o.label AS object_label
        FROM pairs p
        LEFT JOIN instructions i USING (instruction_id)
        LEFT JOIN clips c ON c.clip_id = p.clip_id
        LEFT JOIN sources s ON s.source_id = c.source_id
        LEFT JOIN renders r ON r.render_id = p.render_id
        LEFT JOIN objects o ON o.object_id = p.object_id
        LEFT JOIN latest_decisions d ON d.pair_id = p.pair_id
        LEFT JOIN reviewed rv ON rv.pair_id = p.pair_id
    """,
}


def duckdb_type(type_: pa.DataType) -> str:
    """The DuckDB SQL type of a pyarrow type used in catalog/schema.py."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "VARCHAR"
    if pa.types.is_int64(type_):
        return "BIGINT"
    if pa.types.is_int32(type_):
        return "INTEGER"
    if pa.types.is_int16(type_):
        return "SMALLINT"
    if pa.types.is_float64(type_):
        return "DOUBLE"
    if pa.types.is_float32(type_):
        return "FLOAT"
    if pa.types.is_boolean(type_):
        return "BOOLEAN"
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return "BLOB"
    if pa.types.is_timestamp(type_):
        return "TIMESTAMP WITH TIME ZONE" if type_.tz else "TIMESTAMP"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"{duckdb_type(type_.value_type)}[]"
    raise TypeError(f"no DuckDB type for pyarrow type {type_}")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def empty_select(schema: pa.Schema) -> str:
    """A ``SELECT`` with the schema's columns and types and no rows."""
    columns = ", ".join(f"CAST(NULL AS {duckdb_type(f.type)}) AS {quote_ident(f.name)}" for f in schema)
    return f"SELECT {columns} WHERE false"


def is_unique_fragment(url: str) -> bool:
    return url.endswith(UNIQUE_SUFFIX)


def table_view_sql(table: str, urls: list[str], aligned: bool = False, base: str | None = None) -> str:
    """The body of the latest-row-per-id view of ``table`` over the fragments ``urls`` (oldest first).

    ``aligned``: the fragments' columns are exactly the table's schema (names, order and types), so the rows need
    no re-alignment; otherwise they are unioned by name with a typed empty relation, which adds the columns older
    fragments lack (as NULL) and fixes the column order and types.

    ``base``: one of ``urls`` that holds each id once (a ``.u.parquet`` fragment, typically the compacted bulk of
    the table). Its rows whose id appears in no other fragment are taken as they are (an anti-join against the
    ids of the small "delta" fragments); only the ids present in the delta go through the window. Same result as
    the window over everything, at a fraction of the cost when the delta is small. A table made of one ``.u``
    fragment (after ``Catalog.compact``) needs no window at all: its view costs what a plain ``read_parquet`` costs.
    """
    schema = TABLES[table]
    empty = empty_select(schema)
    if not urls:
        return empty
    align = "" if aligned else f"{empty} UNION ALL BY NAME "
    if len(urls) == 1 and is_unique_fragment(urls[0]):
        # One fragment that holds each id once: nothing to deduplicate, nothing to union.
        return f"{align}SELECT * FROM read_parquet([{quote_literal(urls[0])}])"
    key = quote_ident(ID_COLUMNS[table])
    latest = (
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY created_at DESC, filename DESC, "
        f"file_row_number DESC) = 1"
    )
    options = "union_by_name = true, filename = true, file_row_number = true"
    if base is None or len(urls) < 2:
        files = "[" + ", ".join(quote_literal(u) for u in urls) + "]"
        return f"{align}SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet({files}, {options}) {latest}"
    delta_files = "[" + ", ".join(quote_literal(u) for u in urls if u != base) + "]"
    return (
        f"{align}SELECT * FROM ("
        f"WITH base AS (SELECT * FROM read_parquet([{quote_literal(base)}], {options})), "
        f"delta AS (SELECT * FROM read_parquet({delta_files}, {options})) "
        f"SELECT * EXCLUDE (filename, file_row_number) FROM base WHERE {key} NOT IN (SELECT {key} FROM delta) "
        f"UNION ALL BY NAME "
        f"SELECT * EXCLUDE (filename, file_row_number) FROM ("
        f"SELECT * FROM base WHERE {key} IN (SELECT {key} FROM delta) UNION ALL BY NAME SELECT * FROM delta"
        f") {latest})"
    )


def _columns(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [name]
    ).fetchall()
    return [(n, t) for n, t in rows]


def _create_table_view(con: duckdb.DuckDBPyConnection, table: str, listing: list[tuple[str, int]]) -> None:
    """The latest-row-per-id view of ``table``; with several fragments the largest ``.u`` one is the base (see
    :func:`table_view_sql`)."""
    name = quote_ident(table)
    urls = [u for u, _ in listing]
    unique = [(size, u) for u, size in listing if is_unique_fragment(u)]
    base = max(unique)[1] if len(listing) > 1 and unique else None
    expected = [(f.name, duckdb_type(f.type)) for f in TABLES[table]]
    if urls:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {table_view_sql(table, urls, aligned=True, base=base)}")
        if _columns(con, table) == expected:
            return
    con.execute(f"CREATE OR REPLACE VIEW {name} AS {table_view_sql(table, urls, base=base)}")


def fragment_listing(catalog: CatalogStorage, table: str) -> list[tuple[str, int]]:
    """``(url, size in bytes)`` of the table's fragments, oldest first; URLs as DuckDB opens them (absolute local
    paths, or ``proto://…`` for a registered fsspec filesystem)."""
    directory = catalog.table_dir(table)
    catalog.fs.invalidate_cache(directory)  # object-store listings are cached; other writers add fragments
    if not catalog.fs.exists(directory):
        return []
    entries = sorted(
        (e for e in catalog.fs.ls(directory, detail=True) if e["name"].endswith(".parquet")), key=lambda e: e["name"]
    )
    return [(catalog.fragment_url(e["name"]), int(e.get("size") or 0)) for e in entries]


def create_views(con: duckdb.DuckDBPyConnection, catalog: CatalogStorage) -> dict[str, list[str]]:
    """Create (or replace) every table view and the convenience views; returns each table's fragment URLs."""
    listings: dict[str, list[str]] = {}
    for table in TABLES:
        listing = fragment_listing(catalog, table)
        urls = [u for u, _ in listing]
        listings[table] = urls
        try:
            _create_table_view(con, table, listing)
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            if is_missing_file(exc):
                raise  # compacted away since listing: ``connect`` lists again
            # An unreadable fragment: the view still exists, and any query touching it names the fragment.
            bad = catalog.unreadable_fragments(table) or urls
            message = f"catalog table {table!r}: unreadable fragment(s) {bad}: {exc}"
            con.execute(
                f"CREATE OR REPLACE VIEW {quote_ident(table)} AS SELECT e.* FROM (SELECT 1) AS one "
                f"LEFT JOIN ({empty_select(TABLES[table])}) AS e ON false WHERE error({quote_literal(message)}) IS NULL"
            )
    for name, body in CONVENIENCE_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {body}")
    return listings


def view_names() -> list[str]:
    return [*TABLES, *CONVENIENCE_VIEWS]


MEMORY_ENV = "VPF_SQL_MEMORY_LIMIT"
TEMP_DIR_ENV = "VPF_SQL_TEMP_DIR"
SPILL_ENV = "VPF_SQL_SPILL_LIMIT"
MEMORY_FRACTION = 0.5  # of the machine's memory (or its cgroup's limit), the default memory limit
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_spill_ids = itertools.count()


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or less where a cgroup (container) limits it."""
    total = psutil.virtual_memory().total
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def default_memory_limit() -> str:
    """``MEMORY_FRACTION`` of :func:`machine_memory`, as a DuckDB size."""
    return f"{int(machine_memory() * MEMORY_FRACTION) >> 20}MiB"


@functools.cache
def _checked_size(setting: str, value: str) -> str:
    """``value`` as DuckDB shows it once set as ``setting`` (``'4GB'`` → ``'3.7 GiB'``); ``ValueError`` if refused."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET {setting} = {quote_literal(value)}")
        return str(con.execute("SELECT current_setting(?)", [setting]).fetchone()[0])
    except duckdb.Error:
        raise ValueError(f"{value!r} is not a size DuckDB understands (e.g. 4GB, 512MiB, 25%)") from None
    finally:
        con.close()


@dataclass(frozen=True)
class QueryLimits:
    """What one sandboxed connection may take from the machine (see :func:`sandbox`).

    ``memory_limit``: DuckDB's ``memory_limit`` (``'4GB'``, ``'512MiB'``, ``'25%'`` of RAM); past it DuckDB spills
    to ``temp_directory``, and a query that still does not fit fails with ``duckdb.OutOfMemoryException``.
    ``spill_limit``: the most disk the spill may take (``max_temp_directory_size``). ``None`` fields take defaults:
    :func:`default_memory_limit`, a fresh folder under the system temp folder per connection (DuckDB removes what it
    wrote there when the connection closes), DuckDB's own spill cap (a share of the free disk).
    """

    memory_limit: str | None = None
    temp_directory: str | None = None
    spill_limit: str | None = None

    @classmethod
    def resolve(
        cls, memory_limit: str | None = None, temp_directory: str | None = None, spill_limit: str | None = None
    ) -> QueryLimits:
        """The limits given, else ``$VPF_SQL_MEMORY_LIMIT``/``$VPF_SQL_TEMP_DIR``/``$VPF_SQL_SPILL_LIMIT``, else the
        defaults; sizes are checked by DuckDB (``CatalogError`` naming the value and where it came from)."""
        limits = cls(
            memory_limit or os.environ.get(MEMORY_ENV) or None,
            temp_directory or os.environ.get(TEMP_DIR_ENV) or None,
            spill_limit or os.environ.get(SPILL_ENV) or None,
        )
        for what, setting, value, given, env in (
            ("memory limit", "memory_limit", limits.memory_limit, memory_limit, MEMORY_ENV),
            ("spill limit", "max_temp_directory_size", limits.spill_limit, spill_limit, SPILL_ENV),
        ):
            if value is not None:
                try:
                    _checked_size(setting, value)
                except ValueError as exc:
                    raise CatalogError(f"{what}{'' if given else f' (${env})'}: {exc}") from None
        return limits

    def with_defaults(self) -> QueryLimits:
        """Every field set: the memory default, a fresh spill folder (not created: DuckDB creates it when it spills
        and removes it on close)."""
        temp = self.temp_directory or os.path.join(tempfile.gettempdir(), f"vpf-sql-{os.getpid()}-{next(_spill_ids)}")
        return replace(self, memory_limit=self.memory_limit or default_memory_limit(), temp_directory=temp)


def sandbox(con: duckdb.DuckDBPyConnection, catalog: CatalogStorage, limits: QueryLimits | None = None) -> None:
    """Bound memory and spill (``limits``, default :meth:`QueryLimits.resolve`), limit file access to the catalog
    root, turn external access off and lock the configuration (so users' ``SET`` cannot undo any of it)."""
    limits = (limits or QueryLimits.resolve()).with_defaults()
    con.execute(f"SET memory_limit = {quote_literal(limits.memory_limit)}")
    con.execute(f"SET temp_directory = {quote_literal(limits.temp_directory)}")
    if limits.spill_limit:
        con.execute(f"SET max_temp_directory_size = {quote_literal(limits.spill_limit)}")
    con.execute(f"SET allowed_directories = [{quote_literal(catalog.root_url().rstrip('/') + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def connect(
    catalog: CatalogStorage,
    read_only_guard: bool = False,
    attempts: int = MISSING_FRAGMENT_ATTEMPTS,
    limits: QueryLimits | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views (see module docstring); ``read_only_guard``
    sandboxes it with ``limits`` (see :func:`sandbox`).

    A fragment deleted by a concurrent compaction between listing and binding makes it list again (the merged
    fragment that replaced it is then listed instead), up to ``attempts`` times.
    """
    for attempt in range(attempts):
        con = duckdb.connect(":memory:")
        try:
            if not catalog.is_local:
                con.register_filesystem(catalog.fs)
            create_views(con, catalog)
            if read_only_guard:
                sandbox(con, catalog, limits)
            return con
        except duckdb.Error as exc:
            con.close()
            if attempt + 1 < attempts and is_missing_file(exc):
                continue
            raise
    raise AssertionError("unreachable")
