"""What ``vpf status`` shows: the last runs, rows per table, failures by stage and reason."""

from __future__ import annotations

from typing import Any

from catalog.schema import TABLES
from catalog.store import Catalog


def catalog_status(catalog: str, *, last: int = 5) -> dict[str, Any]:
    """``{"runs": [...], "rows": {table: n}, "failures": [{stage, reason, count, example}]}`` (latest row per id)."""
    cat = Catalog(catalog)
    con = cat.connect()
    try:
        runs = (
            con.table("runs")
            .order("started_at DESC NULLS LAST, created_at DESC")
            .limit(last)
            .select("run_id, status, started_at, finished_at, source, n_clips, n_pairs, n_failures")
            .to_arrow_table()
            .to_pylist()
        )
        rows = {table: con.table(table).count("*").fetchall()[0][0] for table in TABLES}
        failures = (
            con.table("failures")
            .aggregate("stage, reason, count(*) AS count, any_value(message) AS example", "stage, reason")
            .order("count DESC, stage, reason")
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        con.close()
    return {"catalog": cat.url, "runs": runs, "rows": rows, "failures": failures}
