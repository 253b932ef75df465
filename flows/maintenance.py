"""Catalog maintenance flows: ``compact`` (merge small fragments, daily) and ``export`` (training sets, on demand).

``catalog`` (and ``out_url``) may be relative local paths: they resolve against the flow run's working directory,
which for a deployment's run is the deployment's working directory as Prefect records it (its
``set_working_directory`` pull step: the folder ``prefect deploy`` ran in). A root holding no catalog fails the run
with a message naming that directory and the parameter to set.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from catalog.export import ExportConfig
from catalog.export import export as export_pairs
from catalog.store import Catalog, NoCatalogError, default_root, require_catalog
from flows.options import absolute_local, deployment_hint, relative_note


def _compact_run_name() -> str:
    parameters = flow_run.parameters
    table = parameters.get("table")
    return f"compact {parameters.get('catalog') or default_root()}" + (f" {table}" if table else "")


@flow(name="compact", flow_run_name=_compact_run_name, persist_result=False)
def compact(catalog: str | None = None, table: str | None = None, small_bytes: int = 64 << 20) -> dict[str, Any]:
    """Merge each table's (or ``table``'s) fragments smaller than ``small_bytes`` into one deduplicated fragment of
    ``catalog`` (default: $VPF_CATALOG, else ./vpf-data). Raises ``NoCatalogError`` when it holds no catalog."""
    cat = open_flow_catalog(catalog)
    report = cat.compact(table=table, small_bytes=small_bytes)
    get_run_logger().info("compacted %s: %s", cat.url, report)
    create_table_artifact(
        key="compact-report",
        table=[{"key": str(k), "value": str(v)} for k, v in report.items()],
        description=f"compaction of {cat.url}",
    )
    return report


@flow(name="export", flow_run_name="export {out_url}", persist_result=False)
def export(out_url: str, config: ExportConfig, catalog: str | None = None) -> dict[str, Any]:
    """Export the pairs ``config`` selects (by default only those the quality gate accepted) from ``catalog``
    (default: $VPF_CATALOG, else ./vpf-data) to ``out_url``. ``config`` holds ``vpf export``'s options, with their
    defaults and help (see ``catalog.export.config``). Returns the export's summary; raises ``NoCatalogError`` when
    ``catalog`` holds no catalog (nothing is written then)."""
    cat = open_flow_catalog(catalog)
    out_url = absolute_local(out_url)
    report = export_pairs(cat, out_url, config)
    get_run_logger().info(
        "exported %s pairs (%s) from %s: %s", report["rows"], config.preset or config.format, cat.url, report
    )
    create_table_artifact(
        key="export-report",
        table=[{"split": k, "pairs": v} for k, v in report["splits"].items()],
        description=f"export {report['export_id']} of {cat.url} to {out_url} (card: {report['card']})",
    )
    return report


def open_flow_catalog(catalog: str | None) -> Catalog:
    """The catalog a maintenance flow works on: ``catalog`` (default: $VPF_CATALOG, else ./vpf-data), a relative
    local path resolved against the working directory. Raises ``NoCatalogError`` ("no catalog at …") naming the
    resolved path, the directory a relative path was resolved against and, in a deployment's run, the deployment
    parameter to set."""
    given = catalog or default_root()
    try:
        return require_catalog(absolute_local(given))
    except NoCatalogError as exc:
        notes = [relative_note(given), deployment_hint("catalog", to="the catalog's absolute path or URL")]
        raise NoCatalogError("; ".join([str(exc), *(note for note in notes if note)])) from None
