"""Catalog maintenance flows: ``compact`` (merge small fragments, daily) and ``export`` (training sets, on demand)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from catalog.store import default_root, require_catalog


@flow(name="compact", flow_run_name="compact {table}", persist_result=False)
def compact(catalog: str | None = None, table: str | None = None, small_bytes: int = 64 << 20) -> dict[str, Any]:
    """Merge each table's (or ``table``'s) fragments smaller than ``small_bytes`` into one deduplicated fragment."""
    cat = require_catalog(catalog or default_root())
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
    fmt: Literal["webdataset", "parquet", "csv"] | None = "parquet",
    catalog: str | None = None,
    where: str | None = None,
    preset: Literal["diffsynth-vace", "diffsynth-control"] | None = None,
    split: str | None = None,
    split_by: Literal["source", "clip"] = "source",
    seed: int = 0,
    balance: list[str] | None = None,
    cap: int | None = None,
    since: str | None = None,
    licenses: list[str] | None = None,
    shard_mb: float = 512.0,
    shard_size: int | None = None,
    embed_media: bool = True,
    mask_format: Literal["mp4", "npy"] = "mp4",
    prompt_from: Literal["instruction", "target_caption"] = "instruction",
) -> dict[str, Any]:
    """Export the pairs matching the SQL predicate ``where`` (e.g. ``decision = 'accepted'``) to ``out_url``; the
    parameters are ``vpf export``'s options (see ``catalog.export``). A ``preset`` implies the csv format."""
    cat = require_catalog(catalog or default_root())
    report = cat.export(
        None if preset else fmt, out_url, where=where, preset=preset, split=split, split_by=split_by, seed=seed,
        balance=balance, cap=cap, since=since, licenses=licenses, shard_bytes=int(shard_mb * (1 << 20)),
        shard_size=shard_size, embed_media=embed_media, mask_format=mask_format, prompt_from=prompt_from,
    )  # fmt: skip
    get_run_logger().info("exported %s from %s: %s", preset or fmt, cat.url, report)
    create_table_artifact(
        key="export-report",
        table=[{"split": k, "pairs": v} for k, v in report["splits"].items()],
        description=f"export {report['export_id']} of {cat.url} to {out_url} (card: {report['card']})",
    )
    return report
