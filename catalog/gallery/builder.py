"""Build the static gallery site under ``out``: a data index split into chunks, the pairs' media, and the page::

    index.html  app.js  style.css   the page (package data of catalog.gallery)
    data/index.js                   ``window.VPF_GALLERY_INDEX = …``: every pair's facets and metrics, column-wise
    data/chunks/00000.js …          ``VPF_GALLERY_CHUNK(n, […])``: pair details, ``chunk_size`` per file, on demand
    media/…                         the pairs' media and playable masks (see ``catalog.gallery.media``)

Data files are JavaScript loaded with ``<script>`` tags, so the site works from ``file://`` (where ``fetch()`` of
local files is refused) and from any static host.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from catalog.gallery.errors import GalleryError
from catalog.gallery.media import MediaMode, MediaPlan
from catalog.sql import SqlRejected


if TYPE_CHECKING:
    from catalog.store import Catalog


log = logging.getLogger(__name__)

GALLERY_FORMAT = 1
STATIC_FILES = ("index.html", "app.js", "style.css")
DEFAULT_CHUNK_SIZE = 100

FACETS = ("edit_type", "decision", "engine")
# (column, label, higher is better); only metrics with at least one value in the selection reach the index.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("psnr_bg", "PSNR bg", True),
    ("ssim_bg", "SSIM bg", True),
    ("mse_bg", "MSE bg", False),
    ("mae_bg", "MAE bg", False),
    ("hole_change", "hole change", True),
    ("object_match", "object match", False),
    ("ring_colour_gap", "ring colour gap", False),
    ("ring_texture_ratio", "ring texture", True),
    ("seam_error", "seam", False),
    ("flicker_ratio", "flicker", False),
    ("motion_gap", "motion gap", False),
    ("temporal_warp_error", "warp err", False),
    ("mask_area_ratio", "mask area", False),
    ("clip_label_src", "CLIP label before", False),
    ("clip_label_tgt", "CLIP label after", False),
    ("reseg_iou_src", "re-found before (IoU)", True),
    ("reseg_iou_tgt", "re-found after (IoU)", False),
    ("judge_compliance", "judge compliance", True),
    ("judge_consistency", "judge consistency", True),
    ("judge_quality", "judge quality", True),
)

# The gallery's rows come from the catalog's ``pairs_full`` view (pairs joined with their instruction, clip, source,
# render and object; see catalog/views.py), so ``--where`` predicates use the same columns as ``vpf export --where``.
GALLERY_VIEW = "pairs_full"


@dataclass
class GalleryBuild:
    """What ``build_site`` wrote."""

    out: Path
    index_html: Path
    n_pairs: int
    n_chunks: int
    n_media_files: int
    missing_media: list[str] = field(default_factory=list)


def gallery_query(where: str | None = None) -> str:
    """The SQL selecting the gallery's rows, filtered by a predicate over the columns of ``pairs_full``.

    Raises ``GalleryError`` when ``where`` is not a single boolean expression (``;``, comments or a second statement).
    """
    sql = f"SELECT * FROM {GALLERY_VIEW}"
    if where is not None and where.strip():
        predicate = where.strip()
        if ";" in predicate or "--" in predicate or "/*" in predicate:
            raise GalleryError(f"--where {where!r}: a predicate may not contain ';' or SQL comments")
        sql += f"\nWHERE ({predicate})"
    sql += "\nORDER BY created_at, pair_id"
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise GalleryError(f"--where {where!r} is not a valid SQL predicate: {exc}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise GalleryError(f"--where {where!r} must be one boolean expression over the pairs' columns")
    return sql


def select_rows(catalog: Catalog, where: str | None = None) -> pa.Table:
    """The ``pairs_full`` rows matching ``where``, oldest first; read-only SQL, sandboxed like ``vpf sql``."""
    sql = gallery_query(where)
    try:
        return catalog.query(sql, read_only=True)
    except SqlRejected as exc:
        raise GalleryError(f"--where {where!r} was rejected: {exc}") from None
    except duckdb.Error as exc:
        raise GalleryError(f"--where {where!r} failed against the catalog: {exc}") from None


def build_gallery(
    catalog: Catalog,
    where: str | None = None,
    out: str | Path = "gallery",
    *,
    media: MediaMode = "copy",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    title: str | None = None,
) -> Path:
    """Build the gallery of the catalog's pairs matching ``where`` into ``out``; returns the path of ``index.html``.

    Example (a run's gallery, for its Prefect artifact)::

        index = build_gallery(catalog, f"run_id = '{run_id}'", Path(out_dir) / "gallery")
        create_markdown_artifact(f"[gallery]({index.as_uri()})")
    """
    rows = select_rows(catalog, where)
    return build_site(
        rows, out, catalog=catalog, media=media, chunk_size=chunk_size, where=where, title=title
    ).index_html


def build_site(
    rows: pa.Table,
    out: str | Path,
    *,
    catalog: Catalog | None = None,
    media: MediaMode = "copy",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    where: str | None = None,
    title: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GalleryBuild:
    """Write the site for ``rows`` (columns of ``pairs_full``; at least the pairs table's) into ``out``.

    ``media``: ``"copy"`` copies the media into the site (works anywhere), ``"link"`` symlinks them (local catalogs;
    the site then only works on this machine), ``"none"`` writes no media (the index alone; cards show no video).
    Rebuilding into the same folder replaces the data files and reuses media already copied.
    """
    if chunk_size < 1:
        raise GalleryError(f"chunk_size must be >= 1, got {chunk_size}")
    if media != "none" and catalog is None:
        raise GalleryError(f"media={media!r} needs the catalog the rows come from; pass catalog= or media='none'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GalleryError(f"gallery output {str(out)!r} exists and is not a folder")
    _check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)

    records = rows.select([c for c in rows.column_names if c in _USED_COLUMNS]).to_pylist()
    plan = MediaPlan(catalog, out, media)
    details = [_detail(r, plan) for r in records]
    n_media = plan.materialise(progress)
    missing = sorted(plan.missing)
    if missing:
        log.warning(
            "gallery: %d media file(s) named by pairs are missing from the catalog, e.g. %s", len(missing), missing[0]
        )
        missing_set = set(missing)
        for d in details:
            gone = [k for k in ("src", "mask", "tgt") if d.get(f"{k}_key") in missing_set]
            if gone:
                d["missing"] = gone
    for d in details:
        for k in ("src", "mask", "tgt"):
            d.pop(f"{k}_key", None)

    for name in STATIC_FILES:
        (out / name).write_bytes(resources.files("catalog.gallery").joinpath(name).read_bytes())

    data_dir = out / "data"
    chunk_dir = data_dir / "chunks"
    if chunk_dir.exists():
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True)
    n_chunks = math.ceil(len(details) / chunk_size)
    for n in range(n_chunks):
        part = details[n * chunk_size : (n + 1) * chunk_size]
        (chunk_dir / f"{n:05d}.js").write_text(f"VPF_GALLERY_CHUNK({n},{_json(part)});\n", encoding="utf-8")

    index = _index(records, chunk_size=chunk_size, n_chunks=n_chunks, where=where, title=title, media=media)
    index["missing_media"] = len(missing)
    (data_dir / "index.js").write_text(f"window.VPF_GALLERY_INDEX={_json(index)};\n", encoding="utf-8")
    return GalleryBuild(
        out=out,
        index_html=out / "index.html",
        n_pairs=len(details),
        n_chunks=n_chunks,
        n_media_files=n_media,
        missing_media=missing,
    )


# ---------------------------------------------------------------- internals
_USED_COLUMNS = frozenset(
    {
        *FACETS,
        *(name for name, _, _ in METRICS),
        "pair_id",
        "instruction",
        "instruction_long",
        "engine_version",
        "decision_reason",
        "object_label",
        "target_caption",
        "quality_flags",
        "judge_reason",
        "src_video_uri",
        "tgt_video_uri",
        "mask_uri",
        "contact_sheet_uri",
        "clip_id",
        "render_id",
        "run_id",
        "created_at",
        "clip_fps",
    }
)


def _check_output_folder(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a gallery (we replace ``data/`` there)."""
    if out.is_dir() and any(out.iterdir()):
        marker = out / "data" / "index.js"
        if not marker.exists() or b"VPF_GALLERY_INDEX" not in marker.read_bytes()[:64]:
            raise GalleryError(
                f"gallery output {str(out)!r} is a non-empty folder that holds no gallery; pick another"
            )


def _json(value: Any) -> str:
    # ensure_ascii keeps the files plain ASCII, so no charset question arises under file://.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.5g}")


def _detail(row: dict[str, Any], plan: MediaPlan) -> dict[str, Any]:
    fps = row.get("clip_fps")
    src_key, src = plan.video(row.get("src_video_uri"))
    tgt_key, tgt = plan.video(row.get("tgt_video_uri"))
    mask_key, mask = plan.mask(row.get("mask_uri"), fps=fps)
    _, sheet = plan.video(row.get("contact_sheet_uri"))
    created = row.get("created_at")
    detail = {
        "id": row["pair_id"],
        "edit_type": row.get("edit_type"),
        "instruction": row.get("instruction"),
        "instruction_long": row.get("instruction_long"),
        "engine": row.get("engine"),
        "engine_version": row.get("engine_version"),
        "decision": row.get("decision"),
        "decision_reason": row.get("decision_reason"),
        "label": row.get("object_label"),
        "target_caption": row.get("target_caption"),
        "quality_flags": row.get("quality_flags") or [],
        "metrics": {name: _number(row.get(name)) for name, _, _ in METRICS if row.get(name) is not None},
        "judge_reason": row.get("judge_reason"),
        "src": src,
        "mask": mask,
        "tgt": tgt,
        "sheet": sheet,
        "src_key": src_key,
        "mask_key": mask_key,
        "tgt_key": tgt_key,
        "clip_id": row.get("clip_id"),
        "render_id": row.get("render_id"),
        "run_id": row.get("run_id"),
        "created_at": created.isoformat() if isinstance(created, datetime) else created,
        "fps": _number(fps),
    }
    return {k: v for k, v in detail.items() if v is not None}


def _index(
    records: Sequence[dict[str, Any]],
    *,
    chunk_size: int,
    n_chunks: int,
    where: str | None,
    title: str | None,
    media: str,
) -> dict[str, Any]:
    """Column-wise facets (as codes into ``dicts``) and metrics of every row, in site order."""
    dicts: dict[str, list[str]] = {}
    columns: dict[str, list[Any]] = {}
    for facet in FACETS:
        values = [r.get(facet) or "" for r in records]
        names = sorted(set(values))
        code = {v: i for i, v in enumerate(names)}
        dicts[facet] = names
        columns[facet] = [code[v] for v in values]
    metrics = []
    for name, label, higher in METRICS:
        values = [_number(r.get(name)) for r in records]
        if any(v is not None for v in values):
            metrics.append({"name": name, "label": label, "higher_is_better": higher})
            columns[name] = values
    return {
        "format": GALLERY_FORMAT,
        "title": title or "VideoPainter Factory pairs",
        "where": where or "",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total": len(records),
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "media": media,
        "facets": list(FACETS),
        "dicts": dicts,
        "metrics": metrics,
        "columns": columns,
    }


__all__ = [
    "GALLERY_VIEW",
    "GalleryBuild",
    "GalleryError",
    "build_gallery",
    "build_site",
    "gallery_query",
    "select_rows",
]
