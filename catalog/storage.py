"""The catalog's storage over any fsspec root: content-addressed media and immutable Parquet fragments.

The bottom of the ``catalog`` package (it imports only ``catalog.ids`` and ``catalog.schema``). Layout under the root::

    media/<aa>/<sha256>.<ext>            content-addressed files (videos, masks, previews)
    tables/<table>/<fragment>.parquet    immutable fragments; a fragment is never rewritten

A fragment is written under a temporary name and renamed (local roots) or put in one request (object stores), so a
reader never sees a partial file; a temporary name carries its writer's host and pid (``gc`` knows a dead writer's at
once). Media is written (and made durable) before any row that names it. A writer's first append makes every table
exist (an empty placeholder fragment), and ``append_new`` writes each id once even under concurrent writers (a
per-table lock, see :meth:`CatalogStorage.table_lock`).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import duckdb
import fsspec
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.ids import sha256_bytes
from catalog.schema import ID_COLUMNS, SCHEMA_VERSION, TABLES


DEFAULT_ROOT = "./vpf-data"
# A reader that lists fragments just before a compaction deletes them lists again; compactions are rare, so a few
# attempts with a short back-off outlast any realistic run of them.
MISSING_FRAGMENT_ATTEMPTS = 8
TMP_PREFIX = ".tmp-"
# The empty fragment that makes a table exist for plain-Parquet readers; its stamp sorts before every real fragment.
PLACEHOLDER_NAME = "00000000T000000000000-empty.u.parquet"
LOCKS_DIR = "locks"
LOCK_LEASE_S = 60.0  # an object-store lock whose holder stopped renewing is free after this long
LOCK_TIMEOUT_S = 600.0  # a writer waiting longer than this for a table's lock fails, naming the holder


class CatalogError(ValueError):
    """Bad input for the catalog: names the table and the field (or the media) at fault."""


class NoCatalogError(CatalogError):
    """A root that holds no catalog (no ``tables/`` and no ``media/`` folder): a wrong path, not an empty catalog."""


def default_root() -> str:
    """``$VPF_CATALOG`` if set, else ``./vpf-data``."""
    return os.environ.get("VPF_CATALOG") or DEFAULT_ROOT


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def this_host() -> str:
    """This machine's name as written into temporary names and lock records (characters ``[A-Za-z0-9._-]``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def temp_path(parent: str) -> str:
    """A fresh temporary path in folder ``parent``: ``.tmp-<host>-<pid>-<random>``, so ``gc`` can tell whether the
    process writing it is still alive (:func:`temp_writer`)."""
    return f"{parent}/{TMP_PREFIX}{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:16]}"


def temp_writer(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the writer of a temporary file named by :func:`temp_path`; None for other names (older
    temporary files, other tools' files)."""
    if not name.startswith(TMP_PREFIX):
        return None
    parts = name[len(TMP_PREFIX) :].rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def process_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` of this host exists and, with ``since`` (epoch seconds), already existed then (a pid
    reused by a younger process does not count)."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # exists, but not ours to inspect
        return True
    return since is None or started <= since + 1.0


def is_placeholder(path: str) -> bool:
    """Whether ``path`` is a table's empty placeholder fragment (written so the table exists; never holds rows)."""
    return path.rsplit("/", 1)[-1] == PLACEHOLDER_NAME


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
        fragment, which lets a one-fragment table skip deduplication in the views. Rows are written whether or not
        their ids exist (a new version of a row); :meth:`append_new` writes only new ids.
        """
        arrow = self.to_table(table, rows)
        if arrow.num_rows == 0:
            return None
        return self._append_arrow(table, arrow)

    def append_new(self, table: str, rows: Iterable[Mapping[str, Any]] | pa.Table) -> int:
        """Validate the rows and write those whose id no row of ``table`` has yet (the first of repeated ids in
        ``rows``) as one fragment; returns how many were written.

        One row per id however many threads, processes or hosts record the same ids at once: the look-up and the
        write happen under :meth:`table_lock`. Rows whose ids all exist are skipped without taking the lock.
        """
        arrow = self.to_table(table, rows)
        if arrow.num_rows == 0:
            return 0
        key = arrow.column(ID_COLUMNS[table]).combine_chunks()
        ids = key.to_pylist()
        first = {v: i for i, v in reversed(list(enumerate(ids)))}
        if len(first) < len(ids):
            arrow = arrow.take(pa.array(sorted(first.values()), pa.int64()))
            key = arrow.column(ID_COLUMNS[table]).combine_chunks()
            ids = key.to_pylist()
        if not set(ids) - self.existing_ids(table, ids):
            return 0
        for _ in range(3):
            with self.table_lock(table) as lock:
                present = self.existing_ids(table, ids)
                fresh = arrow.filter(pc.invert(pc.is_in(key, value_set=pa.array(sorted(present), pa.string()))))
                if fresh.num_rows == 0:
                    return 0
                if not lock.still_held():
                    continue  # held past its lease and taken over: look again under a new lock
                self._append_arrow(table, fresh)
                return fresh.num_rows
        raise CatalogError(f"{table}: lost the table's lock three times while writing; is a writer stuck?")

    def fragments(self, table: str, *, placeholder: bool = False) -> list[str]:
        """Paths of the table's visible fragments (temporary files excluded), sorted by name (= write time); the
        empty placeholder fragment only with ``placeholder``."""
        directory = self.table_dir(table)
        self.fs.invalidate_cache(directory)  # object-store listings are cached; other writers add fragments
        try:
            listing = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return []
        return sorted(p for p in listing if p.endswith(".parquet") and (placeholder or not is_placeholder(p)))

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
            for path in self.fragments(name, placeholder=True):
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

    def _append_arrow(self, table: str, arrow: pa.Table) -> str:
        """Write validated rows as a new fragment, after making the catalog's other tables exist."""
        key = arrow.column(ID_COLUMNS[table]).combine_chunks()
        unique = len(pc.dictionary_encode(key).dictionary) == arrow.num_rows
        self._ensure_tables(skip=table)
        return self._write_fragment(table, arrow, unique=unique)

    def _ensure_tables(self, skip: str | None = None) -> None:
        """Give every table without a fragment (but ``skip``, about to get one) its empty placeholder fragment, so
        plain-Parquet readers of ``tables/<table>/*.parquet`` find each table; once per root and process."""
        root = self.root_url()
        if root in _TABLES_READY:
            return
        for table in TABLES:
            if table != skip and not self.fragments(table, placeholder=True):
                path = f"{self.table_dir(table)}/{PLACEHOLDER_NAME}"
                self._atomic_write(path, self._fragment_bytes(table, TABLES[table].empty_table()), exclusive=True)
        _TABLES_READY.add(root)

    def _fragment_bytes(self, table: str, arrow: pa.Table) -> bytes:
        """``arrow`` (already validated) as Parquet bytes carrying the schema version and the table name."""
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"vpf.schema_version": str(SCHEMA_VERSION).encode(), b"vpf.table": table}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(arrow, sink, compression="zstd")
        return sink.getvalue().to_pybytes()

    def _write_fragment(self, table: str, arrow: pa.Table, *, unique: bool, stamp: str | None = None) -> str:
        """Write ``arrow`` (already validated) as a new fragment; ``unique``: each id appears once in it."""
        data = self._fragment_bytes(table, arrow)
        stamp = stamp or now_utc().strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{uuid.uuid4().hex[:12]}{'.u' if unique else ''}.parquet"
        target = f"{self.table_dir(table)}/{name}"
        self._atomic_write(target, data)
        return target

    def _atomic_write(self, target: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Write ``data`` at ``target`` so that readers see all of it or nothing; returns whether it was written.

        Local roots: a temporary file (:func:`temp_path`), synced, then renamed over ``target``; a write that fails
        removes its temporary file. Object stores: one PUT. ``exclusive``: never replace an existing ``target``
        (a hard link locally, a conditional PUT on object stores); returns False when it existed.
        """
        parent = target.rsplit("/", 1)[0]
        if not self.is_local:
            # Object stores: a single PUT is atomic; readers never see a partial object.
            if not exclusive:
                self.fs.pipe_file(target, data)
                return True
            try:
                self.fs.pipe_file(target, data, mode="create")
            except OSError as exc:  # FileExistsError, or the store's 412 Precondition Failed as an OSError
                if _precondition_failed(exc):
                    return False
                self.fs.invalidate_cache(parent)
                if self.fs.exists(target):
                    return False
                raise
            return True
        self.fs.makedirs(parent, exist_ok=True)
        tmp = temp_path(parent)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if not exclusive:
                os.replace(tmp, target)
                return True
            try:
                os.link(tmp, target)  # fails if target exists: never replaces it
            except FileExistsError:
                return False
            except OSError:  # no hard links on this filesystem: an existing target is kept, a race may replace it
                if os.path.exists(target):
                    return False
                os.replace(tmp, target)
            return True
        finally:
            try:
                os.unlink(tmp)  # gone after a rename; left after a link or a failed write
            except FileNotFoundError:
                pass

    @contextmanager
    def table_lock(self, table: str, *, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[TableLock]:
        """Hold the table's lock: exclusive across this process's threads, other processes and other hosts writing the
        same catalog. Local roots: an ``flock`` on ``locks/<table>.lock`` (released by the system when its holder
        dies). ``memory://``: this process only. Object stores: a lease (:class:`_LeaseLock`) needing conditional PUTs
        (``If-None-Match``, as S3 and SeaweedFS serve them). Waiting longer than ``timeout_s`` raises
        ``CatalogError`` naming the holder."""
        self._check_table(table)
        key = (self.root_url(), table)
        with _PROCESS_LOCKS_GUARD:
            thread_lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        if not thread_lock.acquire(timeout=timeout_s):
            raise CatalogError(f"{table}: another thread of this process has held the table's lock for {timeout_s}s")
        try:
            if self.is_local:
                with _file_lock(self.path(f"{LOCKS_DIR}/{table}.lock"), table, timeout_s) as lock:
                    yield lock
            elif "memory" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)):
                yield _HELD
            else:
                lease = _LeaseLock(self, table)
                lease.acquire(timeout_s)
                try:
                    yield lease
                finally:
                    lease.release()
        finally:
            thread_lock.release()


class TableLock(Protocol):
    """What :meth:`CatalogStorage.table_lock` yields."""

    def still_held(self) -> bool:
        """Whether the lock is still this holder's (renewing a lease that is running out); False: it was lost."""
        ...


class _Held:
    """A lock that cannot be lost (``flock``, a process-local lock)."""

    def still_held(self) -> bool:
        return True


_HELD = _Held()


@contextmanager
def _file_lock(path: str, table: str, timeout_s: float) -> Iterator[TableLock]:
    """An exclusive ``flock`` on ``path`` (created if needed), polled until ``timeout_s``."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, delay = time.monotonic() + timeout_s, 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CatalogError(f"{table}: {path} has been locked by another writer for {timeout_s}s") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.05)
        try:
            yield _HELD
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _LeaseLock:
    """A table's lock on an object store, made of create-only writes (no deletes of a live lock, no clocks compared
    beyond the lease).

    ``locks/<table>/<epoch>.json`` is a log of the lock's states: each holds ``{"state": "held" | "free", "host",
    "pid", "expires"}``, and the one with the greatest epoch is current. Taking the lock (when free, expired, or held
    by a dead process of this host) and giving it back each create the next epoch with a conditional PUT, so exactly
    one writer makes each transition; a taker then lists again and holds the lock only if its epoch is the greatest
    (its listing may have been stale). Epochs two behind the current one are deleted by whoever takes the lock.
    """

    def __init__(self, storage: CatalogStorage, table: str, lease_s: float = LOCK_LEASE_S):
        self.storage, self.table, self.lease_s = storage, table, lease_s
        self.folder = storage.path(f"{LOCKS_DIR}/{table}")
        self.epoch = 0
        self.expires = 0.0

    def _path(self, epoch: int) -> str:
        return f"{self.folder}/{epoch:012d}.json"

    def _epochs(self) -> list[int]:
        fs = self.storage.fs
        fs.invalidate_cache(self.folder)
        try:
            names = [p.rsplit("/", 1)[-1] for p in fs.ls(self.folder, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _read(self, epoch: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.storage.fs.cat_file(self._path(epoch)))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return {"state": "free"}  # unreadable: treated as free, the next transition replaces it

    def _create(self, epoch: int, state: str) -> bool:
        record = {"state": state, "host": this_host(), "pid": os.getpid(), "since": time.time()}
        if state == "held":
            record["expires"] = record["since"] + self.lease_s
        return self.storage._atomic_write(self._path(epoch), json.dumps(record).encode(), exclusive=True)

    @staticmethod
    def _takeable(record: dict[str, Any]) -> bool:
        if record.get("state") != "held" or float(record.get("expires", 0)) < time.time():
            return True
        return record.get("host") == this_host() and not process_alive(int(record["pid"]), record.get("since"))

    def acquire(self, timeout_s: float) -> None:
        deadline, delay = time.monotonic() + timeout_s, 0.01
        while True:
            epochs = self._epochs()
            latest = epochs[-1] if epochs else 0
            record = self._read(latest) if latest else {"state": "free"}
            if record is not None and self._takeable(record):
                if self._create(latest + 1, "held") and self._current(latest + 1):
                    self.epoch, self.expires = latest + 1, time.time() + self.lease_s
                    for old in epochs:
                        if old < latest:
                            try:
                                self.storage.fs.rm(self._path(old))
                            except FileNotFoundError:
                                pass
                    return
            elif record is not None:  # held: wait for its holder (another writer's transitions need no wait)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)
            if time.monotonic() > deadline:
                holder = f"{record.get('host')} pid {record.get('pid')}" if record else "another writer"
                raise CatalogError(
                    f"{self.table}: the table's lock {self._path(latest)} has been held by {holder} for more than "
                    f"{timeout_s}s"
                )

    def _current(self, epoch: int) -> bool:
        """Whether ``epoch``, just created, is the greatest: a listing older than a few transitions can name an epoch
        since pruned, whose number is free again; the fresh listing then shows the real, greater one."""
        epochs = self._epochs()
        return bool(epochs) and epochs[-1] == epoch

    def still_held(self) -> bool:
        """Renews the lease when less than half of it is left; False when another writer has taken the lock."""
        if time.time() < self.expires - self.lease_s / 2:
            return True
        if self._create(self.epoch + 1, "held") and self._current(self.epoch + 1):
            self.epoch, self.expires = self.epoch + 1, time.time() + self.lease_s
            return True
        return False

    def release(self) -> None:
        self._create(self.epoch + 1, "free")  # fails only when the lease ran out and was taken: nothing to undo


_PROCESS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()
_TABLES_READY: set[str] = set()  # roots whose tables this process has made exist


def _forget_locks_in_child() -> None:
    """A forked child starts with no lock held (a parent thread may have held one while forking)."""
    global _PROCESS_LOCKS_GUARD
    _PROCESS_LOCKS.clear()
    _PROCESS_LOCKS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _precondition_failed(exc: BaseException) -> bool:
    """Whether a failed create-only write failed because the object exists (or another create of it is racing):
    ``FileExistsError``, or HTTP 412/409 from S3-compatible stores (s3fs raises them as ``OSError``)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
        text = str(seen).lower()
        if "pre-condition" in text or "precondition" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
