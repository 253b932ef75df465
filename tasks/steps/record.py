"""Record: the one place rows are appended to the catalog.

Rows whose id the catalog already holds are skipped, and repeats within one call keep their first row, so recording
the same work twice (a rerun, a retried task, two processes at once) writes nothing new: the look-up and the write
happen under the table's lock (``Catalog.append_new``). Media named by a row is stored before the row. Failure rows
are made here only, with credentials redacted from what they quote (``catalog.redact``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from catalog.redact import redact
from catalog.schema import ID_COLUMNS
from catalog.store import Catalog
from tasks.timings import span
from tasks.types import Failure


def record_rows(catalog: Catalog, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append the rows of ``table`` whose ids are new; returns how many were written."""
    if not rows:
        return 0
    id_col = ID_COLUMNS[table]
    unique: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        unique.setdefault(row[id_col], row)
    with span("record", items=len(unique)):
        return catalog.append_new(table, list(unique.values()))


def record_tables(catalog: Catalog, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """:func:`record_rows` for several tables in the mapping's order (referenced tables first); rows written per
    table."""
    return {table: record_rows(catalog, table, table_rows) for table, table_rows in rows.items()}


def failure_rows(failures: Iterable[Failure], run_id: str | None) -> list[dict[str, Any]]:
    """``failures`` rows; their ids hash stage + item + reason, so a rerun never duplicates them. The item and the
    message are redacted (an API key in a model URL, a signed URL's signature); the id hashes the item as given."""
    rows = []
    for failure in failures:
        row = failure.row(run_id)
        rows.append({**row, "item_id": redact(row["item_id"]), "message": redact(row["message"])})
    return rows


def record_failures(catalog: Catalog, failures: Iterable[Failure], run_id: str | None) -> int:
    """Record ``failures`` as ``failures`` rows; returns how many were new."""
    return record_rows(catalog, "failures", failure_rows(failures, run_id))
