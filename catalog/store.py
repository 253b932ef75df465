"""``Catalog``: a catalog's storage (``catalog.storage``) with its SQL views, queries, maintenance and export.

The package is layered without circles: ``ids``/``schema`` → ``storage`` → ``reviews`` → ``views`` → ``sql`` →
``maintenance``/``export`` → ``store`` (this module). Callers use ``Catalog`` from here; the modules below take a
``CatalogStorage``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from catalog import export as export_module
from catalog import maintenance, views
from catalog.sql import check_read_only
from catalog.storage import (
    DEFAULT_ROOT,
    MISSING_FRAGMENT_ATTEMPTS,
    CatalogError,
    CatalogStorage,
    NoCatalogError,
    default_root,
    is_missing_file,
    now_utc,
)


__all__ = [
    "DEFAULT_ROOT",
    "MISSING_FRAGMENT_ATTEMPTS",
    "Catalog",
    "CatalogError",
    "CatalogStorage",
    "NoCatalogError",
    "default_root",
    "is_missing_file",
    "now_utc",
    "require_catalog",
]


class Catalog(CatalogStorage):
    """A catalog rooted at an fsspec URL (``./vpf-data``, ``file:///…``, ``s3://bucket/prefix``, ``memory://…``)."""

    # ---------------------------------------------------------------- SQL
    def connect(self, read_only_guard: bool = False) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with one view per table (latest row per id) and convenience views (``pairs_full``).

        The views are a snapshot of the fragments present now. ``read_only_guard`` sandboxes the connection
        (no external access, files only under the catalog root, configuration locked); see ``catalog.views``.
        """
        return views.connect(self, read_only_guard=read_only_guard)

    def query(self, sql: str, params: list[Any] | None = None, *, read_only: bool = False) -> pa.Table:
        """Run one SQL query over the views; returns an Arrow table.

        ``read_only``: first check the statement with ``catalog.sql.check_read_only`` (raises ``SqlRejected``) and
        run it on a sandboxed connection. A fragment deleted by a concurrent compaction between listing and
        reading is retried with a fresh listing (``MISSING_FRAGMENT_ATTEMPTS``); an unreadable fragment is named
        in the raised error.
        """
        if read_only:
            check_read_only(sql)
        for attempt in range(MISSING_FRAGMENT_ATTEMPTS):
            con = None
            try:
                con = self.connect(read_only_guard=read_only)
                return con.sql(sql, params=params).to_arrow_table()
            except duckdb.Error as exc:
                if attempt + 1 < MISSING_FRAGMENT_ATTEMPTS and is_missing_file(exc):
                    time.sleep(0.01 * 2**attempt)  # a compaction is swapping fragments: list again
                    continue
                if isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)):
                    bad = self.unreadable_fragments()
                    if bad:
                        raise CatalogError(f"query failed on unreadable fragment(s) {bad}: {exc}") from exc
                raise
            finally:
                if con is not None:
                    con.close()
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- maintenance
    def stats(self) -> dict[str, Any]:
        """Rows and fragments per table; pairs by edit type/decision/engine; failures by stage/reason/error type."""
        return maintenance.stats(self)

    def compact(self, table: str | None = None, small_bytes: int = 64 << 20) -> dict[str, Any]:
        """Merge each table's small fragments into one deduplicated fragment; see ``catalog.maintenance``."""
        return maintenance.compact(self, table=table, small_bytes=small_bytes)

    def check(self, verify_hashes: bool = True) -> list[Any]:
        """Problems found: errors, and warnings of runs that stopped without a final status (the catalog is healthy
        when no problem is an error); see ``catalog.maintenance.check``."""
        return maintenance.check(self, verify_hashes=verify_hashes)

    def gc(self, older_than_s: float = 86400.0, dry_run: bool = False) -> dict[str, Any]:
        """Delete media no row names and temporary files of interrupted writes, older than ``older_than_s`` (a dead
        writer's temporary files of this host at once); see ``catalog.maintenance.gc``."""
        from catalog.maintenance import gc

        return gc(self, older_than_s=older_than_s, dry_run=dry_run)

    def export(
        self,
        out_url: str,
        config: export_module.ExportConfig,
        *,
        storage_options: Mapping[str, Any] | None = None,
        progress: export_module.Progress | None = None,
    ) -> dict[str, Any]:
        """Export the pairs ``config`` selects (by default only accepted ones) to ``out_url``; see ``catalog.export``."""
        return export_module.export(self, out_url, config, storage_options=storage_options, progress=progress)


def require_catalog(root: str | os.PathLike | None, storage_options: Mapping[str, Any] | None = None) -> Catalog:
    """The catalog at ``root``; raises ``NoCatalogError`` ("no catalog at …") when the root holds none, so a wrong
    path is never read as an empty catalog. Every reader should open catalogs this way; only writers that create
    one (``vpf run``) use ``Catalog`` directly."""
    catalog = Catalog(root, storage_options=storage_options)
    if not catalog.exists():
        raise NoCatalogError(f"no catalog at {catalog.url} (no tables/ or media/ folder there)")
    return catalog
