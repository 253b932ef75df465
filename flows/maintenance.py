"""Catalog maintenance flows: ``compact`` (merge small fragments, daily) and ``export`` (training sets, on demand)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from catalog.store import Catalog, default_root


@flow(name="compact", flow_run_name="compact {table}", persist_result=False)
def compact(catalog: str | None = None, table: str | None = None, small_bytes: int = 64 << 20) -> dict[str, Any]:
    """Merge each table's (or ``table``'s) fragments smaller than ``small_bytes`` into one deduplicated fragment."""
    cat = Catalog(catalog or default_root())
    report = cat.compact(table=table, small_bytes=small_bytes)
    get_run_logger().info("compacted %s: %s", cat.url, report)
    create_table_artifact(
        key="compact-report",
        table=[{"key": str(k), "value": str(v)} for k, v in report.items()],
        description=f"compaction of {cat.url}",
    )
    return report


@flow(name="export", flow_run_name="export {fmt} → {out_url}", persist_result=False)
def export(
    out_url: str,
    fmt: Literal["webdataset", "parquet", "csv"] = "parquet",
    catalog: str | None = None,
    where: str | None = None,
) -> dict[str, Any]:
    """Export the pairs matching the SQL predicate ``where`` (e.g. ``decision = 'accepted'``) to ``out_url``."""
    cat = Catalog(catalog or default_root())
    report = cat.export(fmt, out_url, where=where)
    get_run_logger().info("exported %s from %s: %s", fmt, cat.url, report)
    return report
