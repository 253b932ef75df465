"""Catalog upkeep: ``stats``, ``compact``, ``check`` and ``gc`` (the Python API behind ``vpf catalog …``).

``compact`` is safe with concurrent readers and writers: it deletes only the fragments it merged, after the merged
fragment is written, and the views' latest-row-per-id deduplication hides the moment both exist. ``gc`` deletes what
a killed writer leaves behind (media no row names, temporary files of cut-short writes), only when older than a grace
period, so media a live writer has stored but not yet named survive; a temporary file of a dead process of this host
goes at once. ``check`` also names runs that stopped without a final status (:func:`run_state`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.redact import redact
from catalog.schema import ID_COLUMNS, TABLES
from catalog.storage import (
    TMP_PREFIX,
    CatalogError,
    is_missing_file,
    is_placeholder,
    process_alive,
    temp_writer,
    this_host,
)
from catalog.views import UNIQUE_SUFFIX, connect, quote_ident, quote_literal


if TYPE_CHECKING:
    from catalog.storage import CatalogStorage


# Foreign keys checked by ``check``: table -> {column: referenced table}.
REFERENCES: dict[str, dict[str, str]] = {
    "clips": {"source_id": "sources"},
    "objects": {"clip_id": "clips"},
    "instructions": {"object_id": "objects", "clip_id": "clips"},
    "renders": {"instruction_id": "instructions", "clip_id": "clips", "object_id": "objects"},
    "pairs": {"render_id": "renders", "instruction_id": "instructions", "clip_id": "clips", "object_id": "objects"},
    "reviews": {"pair_id": "pairs"},
    "decisions": {"pair_id": "pairs"},
}

MEDIA_PREFIX = "media/"

HEARTBEAT_S = 30.0  # a running run writes its runs row again this often (``runs.heartbeat_s`` records its own)
HEARTBEAT_ENV = "VPF_RUN_HEARTBEAT_S"  # seconds; overrides HEARTBEAT_S for the runs this process starts
STALE_BEATS = 4  # a running run whose last heartbeat is older than this many intervals is interrupted


def media_columns(table: str) -> list[str]:
    """Columns holding catalog-relative media uris (``*_uri``, except external locations such as manifests)."""
    return [f.name for f in TABLES[table] if f.name.endswith("_uri") and f.name != "manifest_uri"]


# ---------------------------------------------------------------------------------------------------- stats
def stats(catalog: CatalogStorage) -> dict[str, Any]:
    """Rows (latest per id), raw rows, fragments and bytes per table; pairs by edit type, decision and engine;
    failures by stage, reason and error type."""
    tables: dict[str, Any] = {}
    for table in TABLES:
        directory = catalog.table_dir(table)
        catalog.fs.invalidate_cache(directory)
        listing = catalog.fs.ls(directory, detail=True) if catalog.fs.exists(directory) else []
        infos = [i for i in listing if i["name"].endswith(".parquet") and not is_placeholder(i["name"])]
        tables[table] = {"fragments": len(infos), "bytes": int(sum(i.get("size", 0) or 0 for i in infos))}
    con = connect(catalog)
    try:
        for table in TABLES:
            tables[table]["rows"] = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
        pairs_by = con.sql(
            "SELECT edit_type, decision, engine, count(*) AS n FROM pairs GROUP BY ALL ORDER BY n DESC, 1, 2, 3"
        ).to_arrow_table()
        failures_by = con.sql(
            "SELECT stage, reason, error_type, count(*) AS n FROM failures GROUP BY ALL ORDER BY n DESC, 1, 2, 3"
        ).to_arrow_table()
    finally:
        con.close()
    return {"tables": tables, "pairs_by": pairs_by.to_pylist(), "failures_by": failures_by.to_pylist()}


# ---------------------------------------------------------------------------------------------------- compact
def _small_fragments(catalog: CatalogStorage, table: str, small_bytes: int) -> list[str]:
    directory = catalog.table_dir(table)
    catalog.fs.invalidate_cache(directory)  # object-store listings are cached; writers add fragments
    listing = catalog.fs.ls(directory, detail=True) if catalog.fs.exists(directory) else []
    return sorted(
        i["name"]
        for i in listing
        if i["name"].endswith(".parquet") and not is_placeholder(i["name"]) and (i.get("size") or 0) < small_bytes
    )


def _drop_placeholder(catalog: CatalogStorage, table: str) -> None:
    """Delete the table's empty placeholder once the table has a fragment of rows (it only made the table exist)."""
    listing = catalog.fragments(table, placeholder=True)
    if len(listing) > 1:
        for path in filter(is_placeholder, listing):
            try:
                catalog.fs.rm(path)
            except FileNotFoundError:
                pass


def _stamp_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split("-", 1)[0]


def merge_fragments(catalog: CatalogStorage, table: str, paths: list[str]) -> tuple[pa.Table, int]:
    """The latest row per id over the fragments ``paths`` (same rule as the views), aligned to the current
    schema, and the number of rows read. Raises ``CatalogError`` naming any unreadable fragment."""
    urls = [catalog.fragment_url(p) for p in paths]
    files = "[" + ", ".join(quote_literal(u) for u in urls) + "]"
    key = quote_ident(ID_COLUMNS[table])
    con = duckdb.connect(":memory:")
    try:
        if not catalog.is_local:
            con.register_filesystem(catalog.fs)
        source = f"read_parquet({files}, union_by_name = true, filename = true, file_row_number = true)"
        rows_in = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
        # Same rule as the views, computed on the narrow key columns: find the rows that lose to a later version
        # of their id (only ids present more than once go through the window), then drop them from the full rows.
        # About twice as fast as windowing every row with all its columns.
        merged = con.sql(
            f"WITH keys AS (SELECT {key}, created_at, filename, file_row_number FROM {source}), "
            f"dup AS (SELECT {key} FROM keys GROUP BY {key} HAVING count(*) > 1), "
            f"losers AS (SELECT filename, file_row_number FROM keys SEMI JOIN dup USING ({key}) "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY created_at DESC, filename DESC, "
            f"file_row_number DESC) > 1) "
            f"SELECT * EXCLUDE (filename, file_row_number) FROM {source} ANTI JOIN losers "
            f"USING (filename, file_row_number)"
        ).to_arrow_table()
    except duckdb.Error as exc:
        bad = [u for u in catalog.unreadable_fragments(table) if u in urls]
        if bad:
            raise CatalogError(f"{table}: cannot compact, unreadable fragment(s) {bad}: {exc}") from exc
        raise
    finally:
        con.close()
    return catalog.to_table(table, merged.replace_schema_metadata(None)), rows_in


@dataclass
class Compaction:
    table: str
    merged: list[str]  # fragment paths merged (and deleted)
    rows_in: int
    rows_out: int
    fragment: str | None  # the new fragment


def compact(catalog: CatalogStorage, table: str | None = None, small_bytes: int = 64 << 20) -> dict[str, Any]:
    """Merge every table's fragments smaller than ``small_bytes`` into one deduplicated fragment per table.

    Returns ``{table: Compaction as dict}`` for the tables that were compacted. The empty placeholder fragment of a
    table that has rows is deleted too (not reported: it holds no row). Safe with concurrent readers and writers:

    - it merges only fragments it listed, writes the merged fragment (one atomic write) first, and only then deletes
      exactly the fragments it merged; fragments written meanwhile by other writers are never touched;
    - a reader that lists fragments while both the merged fragment and the old ones exist sees every row twice, and
      the views' latest-row-per-id deduplication returns each row once; a reader whose listed fragment is deleted
      before it reads it gets "file not found", and ``Catalog.query`` lists again and retries (with back-off);
    - two compactions racing merge the same rows into two fragments; views deduplicate them and the next compaction
      merges them.
    """
    results: dict[str, Any] = {}
    for name in [table] if table else list(TABLES):
        catalog._check_table(name)
        _drop_placeholder(catalog, name)
        for attempt in range(3):
            small = _small_fragments(catalog, name, small_bytes)
            if len(small) < 2 and not (len(small) == 1 and not small[0].endswith(UNIQUE_SUFFIX)):
                break
            try:
                deduped, rows_in = merge_fragments(catalog, name, small)
            except duckdb.Error as exc:
                if attempt < 2 and is_missing_file(exc):
                    continue  # another compaction removed some of them meanwhile: list again
                raise
            target = catalog._write_fragment(name, deduped, unique=True, stamp=_stamp_of(small[-1]))
            for path in small:
                try:
                    catalog.fs.rm(path)
                except FileNotFoundError:
                    pass  # a concurrent compaction merged and removed it first; its rows are in its fragment
            results[name] = asdict(Compaction(name, small, rows_in, deduped.num_rows, target))
            break
    return results


# ---------------------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class Problem:
    kind: str  # unreadable_fragment | missing_media | hash_mismatch | dangling_reference | interrupted_run
    table: str
    subject: str  # the fragment, media uri or row id at fault
    message: str
    severity: Literal["error", "warning"] = "error"  # warning: worth knowing, the catalog is consistent

    def __str__(self) -> str:
        return f"[{self.kind}] {self.table}: {self.message}" + (" (warning)" if self.severity == "warning" else "")


def run_state(
    status: str,
    heartbeat_at: datetime | None,
    heartbeat_s: float | None,
    created_at: datetime | None,
    now: datetime | None = None,
) -> str:
    """A run's status as readers show it: ``interrupted`` for a ``running`` row (the latest of its run) whose last
    sign of life (``heartbeat_at``, else ``created_at`` for rows written before heartbeats) is older than
    ``STALE_BEATS`` heartbeat intervals (``heartbeat_s``, else ``HEARTBEAT_S``); else the stored status. Computed
    when read: the stored rows are never rewritten."""
    if status != "running":
        return status
    last = heartbeat_at or created_at
    if last is None:
        return status
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    age = ((now or datetime.now(timezone.utc)) - last).total_seconds()
    return "interrupted" if age > STALE_BEATS * (heartbeat_s or HEARTBEAT_S) else status


def interrupted_runs(runs: pa.Table, now: datetime | None = None) -> list[dict[str, Any]]:
    """The latest row of each run in ``runs`` (all versions, oldest fragment first), for the runs that
    :func:`run_state` calls ``interrupted``."""
    latest: dict[str, dict[str, Any]] = {}
    for row in runs.to_pylist():
        held = latest.get(row["run_id"])
        if held is None or row["created_at"] >= held["created_at"]:
            latest[row["run_id"]] = row
    return [
        row
        for row in latest.values()
        if run_state(row["status"], row.get("heartbeat_at"), row.get("heartbeat_s"), row["created_at"], now)
        == "interrupted"
    ]


def check(catalog: CatalogStorage, verify_hashes: bool = True) -> list[Problem]:
    """Every fragment readable; every media uri named by a row exists (and its sha256 matches its name); every
    reference (pairs → renders → instructions → objects → clips → sources) points at an existing row. Runs that
    stopped without a final status (:func:`run_state`) are listed as ``interrupted_run`` warnings: the catalog is
    consistent (a rerun resumes their work), so callers judge health by the problems of severity ``error``."""
    problems: list[Problem] = []
    rows: dict[str, pa.Table] = {}
    for table, schema in TABLES.items():
        parts = []
        for path in catalog.fragments(table, placeholder=True):
            try:
                with catalog.fs.open(path, "rb") as f:
                    parts.append(catalog.to_table(table, pq.read_table(f).replace_schema_metadata(None)))
            except FileNotFoundError:
                continue  # compacted away since listing; its rows are in the merged fragment
            except (OSError, pa.ArrowException, CatalogError) as exc:
                url = catalog.fragment_url(path)
                problems.append(Problem("unreadable_fragment", table, url, f"fragment {url} is unreadable: {exc}"))
        rows[table] = pa.concat_tables(parts) if parts else schema.empty_table()

    for run in interrupted_runs(rows["runs"]):
        last = run.get("heartbeat_at") or run["created_at"]
        problems.append(
            Problem(
                "interrupted_run",
                "runs",
                run["run_id"],
                f"run {run['run_id']} of {redact(run.get('source'))} (host {run.get('host')}) stopped without a "
                f"final status; last heard of at {last:%Y-%m-%d %H:%M:%S%z}. Running the same source again resumes it",
                "warning",
            )
        )
    ids = {table: set(arrow.column(ID_COLUMNS[table]).to_pylist()) for table, arrow in rows.items()}
    for table, refs in REFERENCES.items():
        arrow = rows[table]
        key = arrow.column(ID_COLUMNS[table]).to_pylist()
        for column, target in refs.items():
            for row_id, value in zip(key, arrow.column(column).to_pylist()):
                if value is not None and value not in ids[target]:
                    problems.append(
                        Problem(
                            "dangling_reference",
                            table,
                            row_id,
                            f"{table} row {row_id}: {column}={value} names no row of {target}",
                        )
                    )

    media: dict[str, tuple[str, str]] = {}
    for table, arrow in rows.items():
        key = arrow.column(ID_COLUMNS[table]).to_pylist()
        for column in media_columns(table):
            for row_id, uri in zip(key, arrow.column(column).to_pylist()):
                if uri and uri.startswith(MEDIA_PREFIX):
                    media.setdefault(uri, (table, f"{table} row {row_id} column {column}"))
    for uri, (table, where) in sorted(media.items()):
        path = catalog.path(uri)
        if not catalog.fs.exists(path):
            problems.append(Problem("missing_media", table, uri, f"{where} names missing media {uri}"))
            continue
        if verify_hashes:
            h = hashlib.sha256()
            with catalog.fs.open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            expected = uri.rsplit("/", 1)[-1].split(".", 1)[0]
            if h.hexdigest() != expected:
                problems.append(
                    Problem("hash_mismatch", table, uri, f"{where}: media {uri} has sha256 {h.hexdigest()}")
                )
    return problems


# ---------------------------------------------------------------------------------------------------- gc


def _modified(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def gc(catalog: CatalogStorage, *, older_than_s: float = 86400.0, dry_run: bool = False) -> dict[str, Any]:
    """Delete media files that no row of any table names (every version of every row counts) and temporary files of
    interrupted writes, when older than ``older_than_s`` seconds (default one day: longer than any writer holds media
    it has not named yet). A temporary file whose writer (named in it, see ``catalog.storage.temp_path``) was a
    process of this host that is gone is deleted whatever its age. Returns ``{"orphan_media": [...],
    "partial_writes": [...], "deleted": n, "referenced": n}``; ``dry_run`` only lists. A file whose age the store
    does not report is kept (unless its writer is known dead).

    Orphan media come from writers killed between storing media and recording the rows that name them (a process
    stores media first), or from a re-render whose bytes differ, which leaves the earlier file unnamed.
    """
    referenced: set[str] = set()
    for table in TABLES:
        columns = media_columns(table)
        for path in catalog.fragments(table):
            try:
                with catalog.fs.open(path, "rb") as f:
                    fragment = pq.ParquetFile(f)
                    arrow = fragment.read(columns=[c for c in columns if c in fragment.schema_arrow.names])
            except FileNotFoundError:  # compacted away since listing: its rows are in the merged fragment
                continue
            for column in arrow.column_names:
                referenced.update(u for u in arrow.column(column).to_pylist() if u)
    now, host = time.time(), this_host()
    orphans, partial = [], []
    for directory in [catalog.path("media"), *(catalog.table_dir(t) for t in TABLES)]:
        catalog.fs.invalidate_cache(directory)
        if not catalog.fs.exists(directory):
            continue
        for path, info in catalog.fs.find(directory, detail=True).items():
            name = path.rsplit("/", 1)[-1]
            modified = _modified(info)
            writer = temp_writer(name)
            if writer is not None and writer[0] == host and not process_alive(writer[1], modified):
                partial.append(path)  # its writer is dead: no write will ever finish it
                continue
            if modified is None or now - modified < older_than_s:
                continue
            if name.startswith(TMP_PREFIX):
                partial.append(path)
            elif directory == catalog.path("media"):
                relative = MEDIA_PREFIX + path.rsplit("/media/", 1)[1]
                if relative not in referenced:
                    orphans.append(path)
    deleted = 0
    if not dry_run:
        for path in [*orphans, *partial]:
            try:
                catalog.fs.rm(path)
                deleted += 1
            except FileNotFoundError:
                pass
    return {"orphan_media": orphans, "partial_writes": partial, "deleted": deleted, "referenced": len(referenced)}
