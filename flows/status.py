"""What ``vpf status`` shows: the last runs, rows per table, failures by stage and reason, and where the latest run
spent its time (``stage_timings``). A run that stopped without a final status shows as ``interrupted``
(``catalog.maintenance.run_state``); every text is redacted (``catalog.redact``), old rows included.

A failure that a later run made good is counted as ``superseded``, not as open (:data:`SUPERSEDED_SQL`): a clip
that failed to segment or was rejected (e.g. ``no_vocabulary``) and got objects from a later run, an object that a
later run recorded with ``qa_status = 'ok'``, a source that failed to ingest and got clips from a later run. The
rows stay as they are."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import duckdb

from catalog.maintenance import run_state
from catalog.redact import redact
from catalog.schema import TABLES
from catalog.store import MISSING_FRAGMENT_ATTEMPTS, Catalog, is_missing_file
from tasks.timings import STAGES


SUPERSEDED_SQL = """
    (f.item_kind = 'clip' AND f.stage IN ('segment', 'select') AND EXISTS (
        SELECT 1 FROM objects o WHERE o.clip_id = f.item_id AND o.created_at > f.created_at
        AND o.run_id IS DISTINCT FROM f.run_id))
    OR (f.item_kind = 'object' AND EXISTS (
        SELECT 1 FROM objects o WHERE o.object_id = f.item_id AND o.qa_status = 'ok' AND o.created_at > f.created_at
        AND o.run_id IS DISTINCT FROM f.run_id))
    OR (f.item_kind = 'source' AND f.stage = 'ingest' AND EXISTS (
        SELECT 1 FROM clips c JOIN sources s USING (source_id) WHERE s.uri = f.item_id
        AND c.created_at > f.created_at AND c.run_id IS DISTINCT FROM f.run_id))
"""
"""Whether the failure row ``f`` was made good by a later run (another run id, a later row)."""


def catalog_status(catalog: str, *, last: int = 5, now: datetime | None = None) -> dict[str, Any]:
    """``{"catalog": url, "runs": [...], "rows": {table: n}, "failures": [{stage, reason, count, superseded,
    example}], "stages":
    {"run_id": ..., "rows": [{stage, batches, items, wall_s, cpu_s}]}}`` (latest row per id; stages of the newest run
    that recorded timings, in pipeline order). A run's ``status`` is as of ``now`` (default: the clock), its
    ``heartbeat_at`` the last time it was heard of. A fragment deleted while it is read (a compaction, a run's
    superseded heartbeat) makes it read again."""
    cat = Catalog(catalog)
    for attempt in range(MISSING_FRAGMENT_ATTEMPTS):
        try:
            report = _read(cat, last)
            break
        except duckdb.Error as exc:
            if attempt + 1 == MISSING_FRAGMENT_ATTEMPTS or not is_missing_file(exc):
                raise
            time.sleep(0.01 * 2**attempt)
    now = now or datetime.now(timezone.utc)
    for run in report["runs"]:
        heartbeat_s = run.pop("heartbeat_s")
        run["status"] = run_state(run["status"], run["heartbeat_at"], heartbeat_s, None, now)
        run["source"] = redact(run["source"])
    for failure in report["failures"]:
        failure["example"] = redact(failure["example"])
    return {"catalog": redact(cat.url), **report}


def _read(cat: Catalog, last: int) -> dict[str, Any]:
    """The rows of the report as stored (see :func:`catalog_status`)."""
    con = cat.connect()
    try:
        runs = (
            con.table("runs")
            .order("started_at DESC NULLS LAST, created_at DESC")
            .limit(last)
            .select(
                "run_id, status, started_at, finished_at, source, n_clips, n_pairs, n_failures, "
                "coalesce(heartbeat_at, created_at) AS heartbeat_at, heartbeat_s"
            )
            .to_arrow_table()
            .to_pylist()
        )
        rows = {table: con.table(table).count("*").fetchall()[0][0] for table in TABLES}
        failures = (  # count: the open ones; example: an open one's message while there is one
            con.sql(f"SELECT f.*, ({SUPERSEDED_SQL}) AS superseded FROM failures f")
            .aggregate(
                "stage, reason, count(*) FILTER (WHERE NOT superseded) AS count, "
                "count(*) FILTER (WHERE superseded) AS superseded, "
                "coalesce(any_value(message) FILTER (WHERE NOT superseded), any_value(message)) AS example",
                "stage, reason",
            )
            .order("count DESC, superseded DESC, stage, reason")
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
                con.sql(
                    "SELECT stage, count(DISTINCT batch) AS batches, sum(items) AS items, round(sum(wall_s), 2) AS "
                    "wall_s, round(sum(cpu_s), 2) AS cpu_s FROM stage_timings WHERE run_id IS NOT DISTINCT FROM ? "
                    f"GROUP BY stage ORDER BY list_position([{order}], stage) NULLS LAST, stage",
                    params=[latest[0][0]],
                )
                .to_arrow_table()
                .to_pylist()
            )
    finally:
        con.close()
    return {"runs": runs, "rows": rows, "failures": failures, "stages": stages}
