"""Export pairs as training sets a trainer reads as they are: WebDataset shards, Parquet for Hugging Face
``datasets``, a CSV of media files, or DiffSynth-Studio's metadata files.

Rows: ``pairs_full`` plus each source's ``license``/``attribution``, filtered by ``where`` (a SQL predicate checked
by the same read-only guard as ``vpf sql``), the licences, ``since`` (an earlier export), split into leak-free
splits and optionally balanced; see :mod:`catalog.export.select`. Every format carries the pair's ``split``.
Output goes to any fsspec URL:

- ``webdataset``: ``<split>-000000.tar`` …, closed before they pass ``shard_bytes`` (or ``shard_size`` samples);
  a sample is ``<pair_id>.src.mp4``, ``<pair_id>.tgt.mp4``, ``<pair_id>.mask.mp4`` (lossless, white = edited; or
  ``.mask.npy``, uint8 `(T, H, W)`, with ``mask_format="npy"``), ``<pair_id>.txt`` (the instruction) and
  ``<pair_id>.json`` (every other field).
- ``parquet``: ``data/<split>-00000.parquet`` …, written row group by row group (memory holds one row group), every
  field plus the video columns ``src_video``, ``tgt_video``, ``mask_video`` as ``{bytes, path}`` structs typed
  ``datasets.Video`` in the file's Hugging Face metadata. ``embed_media``: the mp4 bytes inside the files; else
  ``bytes`` is null and ``path`` names a copy under the export root (relative to it).
  ``datasets.load_dataset(out)`` finds the splits from the card.
- ``csv``: the media copied under ``<out>/media/`` (each file once) and ``metadata.csv`` listing, per pair,
  ``src_video``, ``tgt_video``, ``mask_video`` (paths relative to ``out``), ``prompt``, ``split`` and provenance.
  With a ``preset``, DiffSynth-Studio's columns instead, one ``metadata_<split>.csv`` per split:
  ``diffsynth-vace``: ``video`` (the target), ``vace_video`` (the source), ``vace_video_mask``, ``prompt``;
  ``diffsynth-control``: ``video``, ``control_video``, ``prompt``.

Every export also writes ``README.md`` (a dataset card: counts, schema, loading, licences; see
:mod:`catalog.export.card`) and ``manifest.json`` (options, files written, pair ids per split), and keeps a copy of
the manifest in the catalog under ``exports/<export_id>/manifest.json`` for ``since``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.export.card import dataset_card
from catalog.export.media import MASK_FORMATS, MaskCache, MaskFormat, is_local, open_atomic, write_atomic
from catalog.export.select import SPLIT_BY_COLUMN, Since, SplitBy, parse_split, select_for_export


if TYPE_CHECKING:
    from catalog.store import Catalog

ExportFormat = Literal["webdataset", "parquet", "csv"]
FORMATS: tuple[str, ...] = ("webdataset", "parquet", "csv")
Preset = Literal["diffsynth-vace", "diffsynth-control"]
PRESETS: dict[str, tuple[str, ...]] = {
    "diffsynth-vace": ("video", "vace_video", "vace_video_mask", "prompt"),
    "diffsynth-control": ("video", "control_video", "prompt"),
}
PromptFrom = Literal["instruction", "target_caption"]
PROMPT_FROM = ("instruction", "target_caption")
DEFAULT_SHARD_BYTES = 512 << 20
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 64
VIDEO_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Video's storage
VIDEO_COLUMNS = ("src_video", "tgt_video", "mask_video")
CSV_COLUMNS = ("pair_id", "split", "src_video", "tgt_video", "mask_video", "prompt", "edit_type", "engine",
               "decision", "license", "attribution")  # fmt: skip
EXPORTS_DIR = "exports"
MANIFEST = "manifest.json"

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export that cannot be made as asked (bad option, unknown ``since``); the message names the option."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


def _ext(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    return name.split(".", 1)[-1] if "." in name else "bin"


def _prompt(row: Mapping[str, Any], prompt_from: PromptFrom) -> str:
    if prompt_from == "target_caption" and row.get("target_caption"):
        return row["target_caption"]
    return row["instruction"]


def _mask_site(uri: str, fps: float | None, fmt: MaskFormat) -> str:
    stem = uri.rsplit("/", 1)[-1].split(".", 1)[0]
    return f"media/masks/{stem}-{float(fps or 8.0):g}fps.{fmt}"


def _datasets_video_supported() -> bool:
    """Whether the installed ``datasets`` (if any) knows the ``Video`` feature (3.1+); without ``datasets`` here
    the files are written for a reader that has it."""
    try:
        version = importlib_metadata.version("datasets")
    except importlib_metadata.PackageNotFoundError:
        return True
    major, minor = (int(p) if p.isdigit() else 0 for p in (version.split(".") + ["0"])[:2])
    return (major, minor) >= (3, 1)


def vpf_version() -> str:
    try:
        return importlib_metadata.version("videopainter-factory")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def load_since(catalog: Catalog, since: str, storage_options: Mapping[str, Any] | None = None) -> Since:
    """The earlier export named by ``since``: an export id (its manifest kept in the catalog), or the URL of an
    export folder or of its ``manifest.json``."""
    if "/" not in since and not since.endswith(".json"):
        fs, path = catalog.fs, catalog.path(f"{EXPORTS_DIR}/{since}/{MANIFEST}")
    else:
        fs, path = fsspec.core.url_to_fs(since if since.endswith(".json") else f"{since.rstrip('/')}/{MANIFEST}",
                                         **dict(storage_options or {}))  # fmt: skip
    try:
        with fs.open(path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise ExportError(f"since: no export manifest for {since!r} (looked for {path})") from None
    as_of = manifest.get("catalog_as_of")
    return Since(
        export_id=manifest["export_id"],
        as_of=datetime.fromisoformat(as_of) if as_of else None,
        pair_ids=frozenset(p for ids in manifest.get("pairs", {}).values() for p in ids),
    )


class _Shards:
    """Rotates the output files of one split: a new file when the next sample would pass ``max_bytes`` or the file
    holds ``max_samples`` samples."""

    def __init__(self, max_bytes: int, max_samples: int | None):
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.bytes = 0
        self.samples = 0

    def full(self, next_bytes: int) -> bool:
        if self.samples == 0:
            return False
        if self.max_samples is not None and self.samples >= self.max_samples:
            return True
        return self.bytes + next_bytes > self.max_bytes

    def add(self, n_bytes: int) -> None:
        self.bytes += n_bytes
        self.samples += 1

    def reset(self) -> None:
        self.bytes = self.samples = 0


class _Exporter:
    def __init__(
        self,
        catalog: Catalog,
        rows: pa.Table,
        fs: fsspec.AbstractFileSystem,
        out: str,
        *,
        shard_bytes: int,
        shard_size: int | None,
        embed_media: bool,
        mask_format: MaskFormat,
        preset: Preset | None,
        prompt_from: PromptFrom,
        progress: Progress | None,
    ):
        self.catalog, self.rows, self.fs, self.out = catalog, rows, fs, out
        self.shard_bytes, self.shard_size = shard_bytes, shard_size
        self.embed_media, self.mask_format, self.preset, self.prompt_from = (
            embed_media,
            mask_format,
            preset,
            prompt_from,
        )
        self.masks = MaskCache(catalog)
        self.files: list[dict[str, Any]] = []
        self.copied: set[str] = set()
        self.done = 0
        self.progress = progress
        self.meta_columns = list(rows.column_names)

    # ------------------------------------------------------------------ helpers
    def url(self, relative: str) -> str:
        path = f"{self.out}/{relative}"
        return path if is_local(self.fs) else self.fs.unstrip_protocol(path)

    def tick(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.rows.num_rows)

    def split_rows(self) -> list[tuple[str, list[int]]]:
        """(split, row indices) in the rows' order."""
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.rows.column("split").to_pylist()):
            groups.setdefault(s, []).append(i)
        return list(groups.items())

    def iter_rows(self, indices: Sequence[int], chunk: int = 64):
        for start in range(0, len(indices), chunk):
            yield from self.rows.take(pa.array(indices[start : start + chunk], pa.int64())).to_pylist()

    def mask_bytes(self, row: Mapping[str, Any], fmt: MaskFormat) -> bytes:
        return self.masks.get(row["mask_uri"], fmt, row.get("clip_fps"))

    def copy_media(self, uri: str) -> str:
        """Copy a catalog media file to the same relative path under the export; returns that path."""
        if uri not in self.copied:
            target = f"{self.out}/{uri}"
            if not self.fs.exists(target):
                write_atomic(self.fs, target, self.catalog.read_media(uri))
            self.copied.add(uri)
        return uri

    def copy_mask(self, row: Mapping[str, Any]) -> str:
        site = _mask_site(row["mask_uri"], row.get("clip_fps"), "mp4")
        if site not in self.copied:
            target = f"{self.out}/{site}"
            if not self.fs.exists(target):
                write_atomic(self.fs, target, self.mask_bytes(row, "mp4"))
            self.copied.add(site)
        return site

    def record(self, relative: str, split: str | None, samples: int, n_bytes: int) -> None:
        self.files.append({"path": relative, "split": split, "samples": samples, "bytes": n_bytes})

    # ------------------------------------------------------------------ webdataset
    def webdataset(self) -> list[tuple[str, str]]:
        for split, indices in self.split_rows():
            shards = _Shards(self.shard_bytes, self.shard_size)
            number, tar, handle, ctx, name = 0, None, None, None, None

            def close() -> None:
                nonlocal tar, ctx
                if tar is not None:
                    tar.close()
                    ctx.__exit__(None, None, None)
                    self.record(name, split, shards.samples, shards.bytes)
                    tar = ctx = None

            try:
                for row in self.iter_rows(indices):
                    key = row["pair_id"]
                    mtime = int(row["created_at"].timestamp()) if row.get("created_at") else 0
                    members = [
                        (f"{key}.src.{_ext(row['src_video_uri'])}", self.catalog.read_media(row["src_video_uri"])),
                        (f"{key}.tgt.{_ext(row['tgt_video_uri'])}", self.catalog.read_media(row["tgt_video_uri"])),
                        (f"{key}.mask.{self.mask_format}", self.mask_bytes(row, self.mask_format)),
                        (f"{key}.txt", row["instruction"].encode()),
                        (
                            f"{key}.json",
                            json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False).encode(),
                        ),
                    ]
                    size = sum(512 + len(d) + (-len(d)) % 512 for _, d in members)
                    if tar is not None and shards.full(size):
                        close()
                        number += 1
                    if tar is None:
                        shards.reset()
                        name = f"{split}-{number:06d}.tar"
                        ctx = open_atomic(self.fs, f"{self.out}/{name}")
                        handle = ctx.__enter__()
                        tar = tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT)
                    for member, data in members:
                        info = tarfile.TarInfo(member)
                        info.size, info.mtime, info.mode = len(data), mtime, 0o644
                        tar.addfile(info, io.BytesIO(data))
                    shards.add(size)
                    self.tick()
                close()
            except BaseException as exc:
                if tar is not None:
                    tar.close()
                    ctx.__exit__(type(exc), exc, exc.__traceback__)
                raise
        columns = [
            ("src.mp4", "bytes"), ("tgt.mp4", "bytes"),
            (f"mask.{self.mask_format}", "bytes (mp4, white = edited)" if self.mask_format == "mp4"
             else "bytes (.npy uint8 (T, H, W), 1 = edited)"),
            ("txt", "the instruction, utf-8"), ("json", "every field below"),
        ]  # fmt: skip
        return columns + [(c, str(self.rows.schema.field(c).type)) for c in self.meta_columns]

    # ------------------------------------------------------------------ parquet
    def parquet_schema(self) -> pa.Schema:
        fields = [self.rows.schema.field(c) for c in self.meta_columns]
        fields += [pa.field(c, VIDEO_STRUCT) for c in VIDEO_COLUMNS]
        schema = pa.schema(fields)
        if _datasets_video_supported():
            features = {"info": {"features": {c: {"_type": "Video"} for c in VIDEO_COLUMNS}}}
            schema = schema.with_metadata({b"huggingface": json.dumps(features).encode()})
        return schema

    def parquet(self) -> list[tuple[str, str]]:
        schema = self.parquet_schema()
        for split, indices in self.split_rows():
            shards = _Shards(self.shard_bytes, self.shard_size)
            number = 0
            writer: pq.ParquetWriter | None = None
            ctx = None
            name = ""
            buffer: list[dict[str, Any]] = []
            buffered = 0

            def flush() -> None:
                nonlocal buffer, buffered
                if buffer:
                    writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer, buffered = [], 0

            def close() -> None:
                nonlocal writer, ctx
                if writer is not None:
                    flush()
                    writer.close()
                    ctx.__exit__(None, None, None)
                    self.record(name, split, shards.samples, shards.bytes)
                    writer = ctx = None

            try:
                for row in self.iter_rows(indices):
                    record = dict(row)
                    mask_site = _mask_site(row["mask_uri"], row.get("clip_fps"), "mp4")
                    if self.embed_media:
                        media = {
                            "src_video": (row["src_video_uri"], self.catalog.read_media(row["src_video_uri"])),
                            "tgt_video": (row["tgt_video_uri"], self.catalog.read_media(row["tgt_video_uri"])),
                            "mask_video": (mask_site, self.mask_bytes(row, "mp4")),
                        }
                    else:
                        media = {
                            "src_video": (self.copy_media(row["src_video_uri"]), None),
                            "tgt_video": (self.copy_media(row["tgt_video_uri"]), None),
                            "mask_video": (self.copy_mask(row), None),
                        }
                    size = 0
                    for column, (path, data) in media.items():
                        record[column] = {"bytes": data, "path": path}
                        size += len(data or b"") + 256
                    if writer is not None and shards.full(size):
                        close()
                        number += 1
                    if writer is None:
                        shards.reset()
                        name = f"data/{split}-{number:05d}.parquet"
                        ctx = open_atomic(self.fs, f"{self.out}/{name}")
                        writer = pq.ParquetWriter(ctx.__enter__(), schema, compression="zstd")
                    buffer.append(record)
                    buffered += size
                    shards.add(size)
                    if len(buffer) >= ROW_GROUP_ROWS or buffered >= ROW_GROUP_BYTES:
                        flush()
                    self.tick()
                close()
            except BaseException as exc:
                if writer is not None:
                    writer.close()
                    ctx.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return [(f.name, str(f.type)) for f in schema]

    # ------------------------------------------------------------------ csv / DiffSynth
    def csv(self) -> list[tuple[str, str]]:
        if self.preset is None:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
            for _, indices in self.split_rows():
                for row in self.iter_rows(indices):
                    writer.writerow([
                        row["pair_id"], row["split"], self.copy_media(row["src_video_uri"]),
                        self.copy_media(row["tgt_video_uri"]), self.copy_mask(row), _prompt(row, self.prompt_from),
                        row["edit_type"], row["engine"], row["decision"], row.get("license"), row.get("attribution"),
                    ])  # fmt: skip
                    self.tick()
            write_atomic(self.fs, f"{self.out}/metadata.csv", buffer.getvalue().encode())
            self.record("metadata.csv", None, self.rows.num_rows, len(buffer.getvalue().encode()))
            return [(c, "string") for c in CSV_COLUMNS]
        columns = PRESETS[self.preset]
        for split, indices in self.split_rows():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            for row in self.iter_rows(indices):
                values = {
                    "video": self.copy_media(row["tgt_video_uri"]),
                    "vace_video": self.copy_media(row["src_video_uri"]),
                    "control_video": self.copy_media(row["src_video_uri"]),
                    "prompt": _prompt(row, self.prompt_from),
                }
                if "vace_video_mask" in columns:
                    values["vace_video_mask"] = self.copy_mask(row)
                writer.writerow([values[c] for c in columns])
                self.tick()
            data = buffer.getvalue().encode()
            write_atomic(self.fs, f"{self.out}/metadata_{split}.csv", data)
            self.record(f"metadata_{split}.csv", split, len(indices), len(data))
        return [(c, "string (path relative to this folder)" if c != "prompt" else "string") for c in columns]


def export(
    catalog: Catalog,
    fmt: ExportFormat | None,
    out_url: str,
    where: str | None = None,
    *,
    preset: Preset | None = None,
    split: str | Mapping[str, float] | None = None,
    split_by: SplitBy = "source",
    seed: int = 0,
    balance: Sequence[str] | None = None,
    cap: int | None = None,
    since: str | None = None,
    licenses: Sequence[str] | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    shard_size: int | None = None,
    embed_media: bool = True,
    mask_format: MaskFormat = "mp4",
    prompt_from: PromptFrom = "instruction",
    storage_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export the selected pairs to ``out_url`` (see module). ``fmt`` may be None with a ``preset`` (it implies
    ``csv``). Returns ``{"export_id", "format", "preset", "rows", "splits", "files", "card", "manifest"}`` (URLs).

    Raises ``ExportError`` for a bad option, ``SqlRejected`` for a ``where`` the read-only guard refuses.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise ExportError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
        if fmt not in (None, "csv"):
            raise ExportError(f"preset {preset!r} writes DiffSynth-Studio's CSV files; drop format {fmt!r}")
        fmt = "csv"
    if fmt not in FORMATS:
        raise ExportError(f"export format {fmt!r} is not one of {FORMATS}")
    if shard_size is not None and shard_size < 1:
        raise ExportError(f"shard_size must be >= 1, got {shard_size}")
    if shard_bytes < 1:
        raise ExportError(f"shard_bytes must be >= 1, got {shard_bytes}")
    if mask_format not in MASK_FORMATS:
        raise ExportError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    if prompt_from not in PROMPT_FROM:
        raise ExportError(f"prompt_from must be one of {PROMPT_FROM}, got {prompt_from!r}")
    if split_by not in SPLIT_BY_COLUMN:
        raise ExportError(f"split_by must be one of {sorted(SPLIT_BY_COLUMN)}, got {split_by!r}")
    try:
        shares = parse_split(split)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    earlier = load_since(catalog, since, storage_options) if since else None
    created = datetime.now(timezone.utc)
    try:
        rows, as_of = select_for_export(
            catalog, where=where, licenses=licenses, since=earlier, split=shares, split_by=split_by, seed=seed,
            balance=balance, cap=cap,
        )  # fmt: skip
    except ValueError as exc:
        if type(exc) is ValueError:  # option errors (SqlRejected and CatalogError pass through)
            raise ExportError(str(exc)) from None
        raise
    fs, out = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
    out = out.rstrip("/")
    fs.makedirs(out, exist_ok=True)
    exporter = _Exporter(
        catalog, rows, fs, out, shard_bytes=shard_bytes, shard_size=shard_size, embed_media=embed_media,
        mask_format=mask_format, preset=preset, prompt_from=prompt_from, progress=progress,
    )  # fmt: skip
    columns = getattr(exporter, fmt)()
    export_id = f"{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    splits = list(shares)
    counts = dict.fromkeys(splits, 0)
    pair_ids: dict[str, list[str]] = {s: [] for s in splits}
    for s, p in zip(rows.column("split").to_pylist(), rows.column("pair_id").to_pylist()):
        counts[s] += 1
        pair_ids[s].append(p)
    manifest = {
        "export_id": export_id,
        "created_at": created.isoformat(),
        "catalog": catalog.url,
        "vpf_version": vpf_version(),
        "format": fmt,
        "preset": preset,
        "options": {
            "where": where,
            "licenses": list(licenses) if licenses else None,
            "since": earlier.export_id if earlier else None,
            "split": ",".join(f"{k}={v:g}" for k, v in shares.items()),
            "split_by": split_by,
            "seed": seed,
            "balance": list(balance) if balance else None,
            "cap": cap,
            "embed_media": embed_media if fmt == "parquet" else None,
            "mask_format": mask_format,
            "prompt_from": prompt_from if fmt == "csv" else None,
        },  # fmt: skip
        "catalog_as_of": as_of.isoformat() if as_of else None,
        "rows": rows.num_rows,
        "counts": counts,
        "files": exporter.files,
        "pairs": pair_ids,
    }
    card = dataset_card(
        rows, manifest=manifest, columns=columns, splits=splits, splits_with_files=sorted(
            {f["split"] for f in exporter.files if f["split"]}, key=splits.index
        ),
    )  # fmt: skip
    write_atomic(fs, f"{out}/README.md", card.encode())
    data = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
    write_atomic(fs, f"{out}/{MANIFEST}", data)
    kept = catalog.path(f"{EXPORTS_DIR}/{export_id}/{MANIFEST}")
    try:  # kept in the catalog for ``since``; a read-only catalog still gets its export (``since`` takes the folder)
        catalog.fs.makedirs(catalog.path(f"{EXPORTS_DIR}/{export_id}"), exist_ok=True)
        catalog._atomic_write(kept, data)
    except OSError as exc:
        log.warning("export %s: could not keep its manifest in the catalog (%s): %s", export_id, kept, exc)
        kept = None
    return {
        "export_id": export_id,
        "format": fmt,
        "preset": preset,
        "rows": rows.num_rows,
        "splits": counts,
        "files": [exporter.url(f["path"]) for f in exporter.files],
        "card": exporter.url("README.md"),
        "manifest": exporter.url(MANIFEST),
        "catalog_manifest": catalog.full_url(f"{EXPORTS_DIR}/{export_id}/{MANIFEST}") if kept else None,
    }


__all__ = ["FORMATS", "PRESETS", "ExportError", "Since", "export", "load_since", "parse_split"]
