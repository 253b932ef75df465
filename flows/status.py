"""What ``vpf status`` shows: the last runs, rows per table, failures by stage and reason, and where the latest run
spent its time (``stage_timings``)."""

from __future__ import annotations

from typing import Any

from catalog.schema import TABLES
from catalog.store import Catalog
from tasks.timings import STAGES


def catalog_status(catalog: str, *, last: int = 5) -> dict[str, Any]:
    """``{"runs": [...], "rows": {table: n}, "failures": [{stage, reason, count, example}], "stages": {"run_id": ...,
    "rows": [{stage, batches, items, wall_s, cpu_s}]}}`` (latest row per id; stages of the newest run that recorded
    timings, in pipeline order)."""
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
        latest = con.execute(
            "SELECT t.run_id FROM stage_timings t LEFT JOIN runs r USING (run_id) "
            "GROUP BY t.run_id ORDER BY max(r.started_at) DESC NULLS LAST, max(t.created_at) DESC LIMIT 1"
        ).fetchall()
        stages: dict[str, Any] = {"run_id": latest[0][0] if latest else None, "rows": []}
        if latest:
            order = ", ".join(f"'{s}'" for s in STAGES)
            stages["rows"] = (
                con.execute(
                    "SELECT stage, count(DISTINCT batch) AS batches, sum(items) AS items, round(sum(wall_s), 2) AS "
                    "wall_s, round(sum(cpu_s), 2) AS cpu_s FROM stage_timings WHERE run_id IS NOT DISTINCT FROM ? "
                    f"GROUP BY stage ORDER BY list_position([{order}], stage) NULLS LAST, stage",
                    [latest[0][0]],
                )
                .to_arrow_table()
                .to_pylist()
            )
    finally:
        con.close()
    return {"catalog": cat.url, "runs": runs, "rows": rows, "failures": failures, "stages": stages}
