"""The catalog's storage over any fsspec root: content-addressed media and immutable Parquet fragments.

The bottom of the ``catalog`` package (it imports only ``catalog.ids`` and ``catalog.schema``). Layout under the root::

    media/<aa>/<sha256>.<ext>            content-addressed files (videos, masks, previews)
    tables/<table>/<fragment>.parquet    immutable fragments; a fragment is never rewritten

A fragment is written under a temporary name and renamed (local roots) or put in one request (object stores), so a
reader never sees a partial file. Media is written (and made durable) before any row that names it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.ids import sha256_bytes
from catalog.schema import ID_COLUMNS, SCHEMA_VERSION, TABLES


DEFAULT_ROOT = "./vpf-data"
# A reader that lists fragments just before a compaction deletes them lists again; compactions are rare, so a few
# attempts with a short back-off outlast any realistic run of them.
MISSING_FRAGMENT_ATTEMPTS = 8


class CatalogError(ValueError):
    """Bad input for the catalog: names the table and the field (or the media) at fault."""


class NoCatalogError(CatalogError):
    """A root that holds no catalog (no ``tables/`` and no ``media/`` folder): a wrong path, not an empty catalog."""


def default_root() -> str:
    """``$VPF_CATALOG`` if set, else ``./vpf-data``."""
    return os.environ.get("VPF_CATALOG") or DEFAULT_ROOT


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


class CatalogStorage:
    """A catalog's files, rooted at an fsspec URL (``./vpf-data``, ``file:///…``, ``s3://bucket/prefix``,
    ``memory://…``): media, fragments, appends and id look-ups; no SQL views (see ``catalog.store.Catalog``)."""

    def __init__(self, root: str | os.PathLike | None = None, storage_options: Mapping[str, Any] | None = None):
        root = str(root) if root is not None else default_root()
        self.fs, path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.root = path.rstrip("/") if path != "/" else path
        self.url = root
        self.storage_options = dict(storage_options or {})

    def exists(self) -> bool:
        """Whether the root holds a catalog: a ``tables/`` or ``media/`` folder (``vpf run`` creates both)."""
        for folder in ("tables", "media"):
            path = self.path(folder)
            self.fs.invalidate_cache(path)
            if self.fs.isdir(path):
                return True
        return False

    # ---------------------------------------------------------------- paths
    def path(self, relative: str) -> str:
        """The filesystem path (no protocol) of a catalog-relative path."""
        return f"{self.root}/{relative.lstrip('/')}"

    def full_url(self, relative: str) -> str:
        """A URL another fsspec client can open: ``s3://bucket/prefix/media/…`` or an absolute local path."""
        return self.fs.unstrip_protocol(self.path(relative)) if not self.is_local else self.path(relative)

    def table_dir(self, table: str) -> str:
        self._check_table(table)
        return self.path(f"tables/{table}")

    # ---------------------------------------------------------------- media
    def put_media(self, data: bytes | os.PathLike | str, ext: str) -> str:
        """Store bytes (or a local file's bytes) content-addressed; returns the catalog-relative uri.

        Deduplicated by sha256: storing the same content twice writes once. Durable when this returns.
        """
        if isinstance(data, (str, os.PathLike)):
            data = Path(data).read_bytes()
        ext = ext.lstrip(".").lower()
        if not ext or "/" in ext:
            raise CatalogError(f"media: extension {ext!r} is not a plain file extension")
        digest = sha256_bytes(data)
        relative = f"media/{digest[:2]}/{digest}.{ext}"
        target = self.path(relative)
        if not self.fs.exists(target):
            self._atomic_write(target, data)
        return relative

    def read_media(self, relative: str) -> bytes:
        with self.fs.open(self.path(relative), "rb") as f:
            return f.read()

    def open_media(self, relative: str, mode: str = "rb"):
        return self.fs.open(self.path(relative), mode)

    # ---------------------------------------------------------------- rows
    def to_table(self, table: str, rows: Iterable[Mapping[str, Any]] | pa.Table) -> pa.Table:
        """Validate rows against the table's schema; raises ``CatalogError`` naming the table and field."""
        schema = self._check_table(table)
        if isinstance(rows, pa.Table):
            unknown = set(rows.column_names) - set(schema.names)
            if unknown:
                raise CatalogError(f"{table}: unknown field(s) {sorted(unknown)}")
            columns = {}
            for field in schema:
                if field.name in rows.column_names:
                    try:
                        columns[field.name] = rows.column(field.name).cast(field.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                        raise CatalogError(f"{table}.{field.name}: wrong type ({exc})") from None
                else:
                    columns[field.name] = pa.nulls(rows.num_rows, field.type)
            arrow = pa.table(columns, schema=schema)
        else:
            rows = list(rows)
            now = now_utc()
            data: dict[str, list[Any]] = {name: [] for name in schema.names}
            for i, row in enumerate(rows):
                unknown = set(row) - set(schema.names)
                if unknown:
                    raise CatalogError(f"{table}: row {i} has unknown field(s) {sorted(unknown)}")
                for name in schema.names:
                    value = row.get(name)
                    if value is None and name == "created_at":
                        value = now
                    data[name].append(value)
            columns = {}
            for field in schema:
                try:
                    columns[field.name] = pa.array(data[field.name], type=field.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                    raise CatalogError(f"{table}.{field.name}: wrong type ({exc})") from None
            arrow = pa.table(columns, schema=schema)
        for field in schema:
            if not field.nullable and arrow.column(field.name).null_count:
                raise CatalogError(f"{table}.{field.name}: required field is missing in some rows")
        return arrow

    def append(self, table: str, rows: Iterable[Mapping[str, Any]] | pa.Table) -> str | None:
        """Validate and write rows as one new immutable fragment; returns its path (None for no rows).

        Nothing is written when any row is invalid. A batch whose ids are unique is written as a ``.u.parquet``
        fragment, which lets a one-fragment table skip deduplication in the views.
        """
        arrow = self.to_table(table, rows)
        if arrow.num_rows == 0:
            return None
        key = arrow.column(ID_COLUMNS[table]).combine_chunks()
        unique = len(pc.dictionary_encode(key).dictionary) == arrow.num_rows
        return self._write_fragment(table, arrow, unique=unique)

    def fragments(self, table: str) -> list[str]:
        """Paths of the table's visible fragments (temporary files excluded), sorted by name (= write time)."""
        directory = self.table_dir(table)
        self.fs.invalidate_cache(directory)  # object-store listings are cached; other writers add fragments
        if not self.fs.exists(directory):
            return []
        return sorted(p for p in self.fs.ls(directory, detail=False) if p.endswith(".parquet"))

    def fragment_url(self, path: str) -> str:
        """A fragment path as DuckDB opens it: absolute local path, or ``proto://…`` for non-local roots."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def root_url(self) -> str:
        """The root as DuckDB sees it (see ``fragment_url``)."""
        return self.fragment_url(self.root)

    def unreadable_fragments(self, table: str | None = None, full: bool = False) -> list[str]:
        """Fragments whose Parquet footer (``full``: every page) cannot be read, e.g. truncated files."""
        bad = []
        for name in [table] if table else list(TABLES):
            for path in self.fragments(name):
                try:
                    with self.fs.open(path, "rb") as f:
                        if full:
                            pq.read_table(f)
                        else:
                            pq.read_metadata(f)
                except FileNotFoundError:
                    continue  # compacted away since listing
                except (OSError, pa.ArrowException) as exc:
                    bad.append(f"{self.fragment_url(path)} ({exc})" if full else self.fragment_url(path))
        return bad

    def existing_ids(self, table: str, ids: Iterable[str], *, column: str | None = None) -> set[str]:
        """The subset of ``ids`` that some row of ``table`` already has (any version of the row) in its id column, or
        in the string ``column`` given (e.g. ``clips.plan_id``).

        Reads only the id column of that table's fragments (no views), so flows can call it per item cheaply:
        fragments never change once written, so the ids of small fragments are kept in memory (:class:`_FragmentIds`)
        and each call reads only the fragments written since the last one. Large (compacted) fragments are filtered
        by DuckDB instead, without holding their ids.
        """
        schema = self._check_table(table)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return set()
        key = column or ID_COLUMNS[table]
        if key not in schema.names or not pa.types.is_string(schema.field(key).type):
            raise CatalogError(f"{table}.{key}: not a string column of the table")
        wanted = set(ids)
        for attempt in range(MISSING_FRAGMENT_ATTEMPTS):
            try:
                present: set[str] = set()
                large = []
                for path in self.fragments(table):
                    url = self.fragment_url(path)
                    known = _FRAGMENT_IDS.get(url, key)
                    if known is None:
                        known = self._small_fragment_ids(path, url, key)
                    if known is None:
                        large.append(url)
                    else:
                        present |= wanted & known
                if large:
                    present |= self._ids_in(large, key, ids)
                return present
            except (FileNotFoundError, duckdb.Error) as exc:
                if attempt + 1 < MISSING_FRAGMENT_ATTEMPTS and (
                    isinstance(exc, FileNotFoundError) or is_missing_file(exc)
                ):
                    time.sleep(0.01 * 2**attempt)  # a compaction is swapping fragments: list again
                    continue
                if isinstance(exc, FileNotFoundError):
                    raise
                bad = self.unreadable_fragments(table)
                if bad:
                    raise CatalogError(f"{table}: unreadable fragment(s) {bad}: {exc}") from exc
                raise
        raise AssertionError("unreachable")

    def _small_fragment_ids(self, path: str, url: str, key: str) -> frozenset[str] | None:
        """The ``key`` column of a fragment of at most ``_FragmentIds.MAX_ROWS`` rows as a set, remembered; None for a
        larger one. Raises ``FileNotFoundError`` when it was compacted away, ``CatalogError`` when unreadable."""
        try:
            with self.fs.open(path, "rb") as f:
                reader = pq.ParquetFile(f)
                if reader.metadata.num_rows > _FragmentIds.MAX_ROWS:
                    return None
                if key not in reader.schema_arrow.names:  # written before the column existed
                    column = pa.chunked_array([], pa.string())
                else:
                    column = reader.read(columns=[key]).column(key)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise CatalogError(f"unreadable fragment {url}: {exc}") from exc
        known = frozenset(v for v in column.to_pylist() if v is not None)
        _FRAGMENT_IDS.put(url, key, known)
        return known

    def _ids_in(self, urls: list[str], key: str, ids: list[str]) -> set[str]:
        """The ``ids`` found in the ``key`` column of the fragments ``urls``, filtered by DuckDB."""
        files = "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in urls) + "]"
        con = duckdb.connect(":memory:")
        try:
            if not self.is_local:
                con.register_filesystem(self.fs)
            try:
                rows = con.execute(
                    f'SELECT DISTINCT "{key}" FROM read_parquet({files}, union_by_name = true) '
                    f'WHERE "{key}" IN (SELECT unnest(?))',
                    [ids],
                ).fetchall()
            except duckdb.BinderException:  # no fragment has the column yet (written before it existed)
                return set()
            return {r[0] for r in rows}
        finally:
            con.close()

    # ---------------------------------------------------------------- internals
    def _check_table(self, table: str) -> pa.Schema:
        try:
            return TABLES[table]
        except KeyError:
            raise CatalogError(f"unknown table {table!r}; tables are {sorted(TABLES)}") from None

    def _write_fragment(self, table: str, arrow: pa.Table, *, unique: bool, stamp: str | None = None) -> str:
        """Write ``arrow`` (already validated) as a new fragment; ``unique``: each id appears once in it."""
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"vpf.schema_version": str(SCHEMA_VERSION).encode(), b"vpf.table": table}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(arrow, sink, compression="zstd")
        stamp = stamp or now_utc().strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{uuid.uuid4().hex[:12]}{'.u' if unique else ''}.parquet"
        target = f"{self.table_dir(table)}/{name}"
        self._atomic_write(target, sink.getvalue().to_pybytes())
        return target

    def _atomic_write(self, target: str, data: bytes) -> None:
        parent = target.rsplit("/", 1)[0]
        if self.is_local:
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            # Object stores: a single PUT is atomic; readers never see a partial object.
            self.fs.pipe_file(target, data)


def is_missing_file(exc: Exception) -> bool:
    """Whether a DuckDB/fsspec error says a file vanished (a fragment compacted away after listing)."""
    text = str(exc)
    return any(m in text for m in ("No such file", "No files found", "FileNotFoundError", "does not exist"))


class _FragmentIds:
    """The id sets of small fragments, by fragment URL and column, shared by every ``CatalogStorage`` of the process.

    A fragment's name is unique and its bytes never change after it is written (compaction writes new fragments and
    deletes the old ones), so an entry never goes stale; an entry of a deleted fragment is simply never asked for
    again and ages out. Bounded by the number of ids held (least recently used out first).
    """

    MAX_ROWS = 50_000  # fragments up to this size are remembered (per-render and per-batch writes)
    MAX_IDS = 2_000_000  # about 200 MB of short strings at most

    def __init__(self) -> None:
        self._sets: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, url: str, key: str) -> frozenset[str] | None:
        with self._lock:
            known = self._sets.get((url, key))
            if known is not None:
                self._sets.move_to_end((url, key))
            return known

    def put(self, url: str, key: str, known: frozenset[str]) -> None:
        with self._lock:
            if (url, key) in self._sets:
                return
            self._sets[(url, key)] = known
            self._held += len(known)
            while self._held > self.MAX_IDS and len(self._sets) > 1:
                _, old = self._sets.popitem(last=False)
                self._held -= len(old)


_FRAGMENT_IDS = _FragmentIds()
