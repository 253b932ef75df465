"""Export pairs as training sets a trainer reads as they are; options: one ``ExportConfig`` (:mod:`.config`), rows:
:mod:`.select`, metadata columns (no nulls, ISO timestamps): :mod:`.columns`, folder protocol: :mod:`.folder`.

- ``webdataset``: ``<split>-000000.tar`` …; a sample is ``<key>.src.mp4``, ``<key>.tgt.mp4``, ``<key>.mask.mp4``
  (lossless, white = edited; or ``.mask.npy``, uint8 `(T, H, W)`), ``<key>.txt`` (instruction), ``<key>.json``.
- ``parquet``, media embedded: ``data/<split>-00000.parquet`` …, the video columns ``{bytes, path}`` structs typed
  ``datasets.Video``; not embedded: ``data/<split>/metadata.parquet`` naming copies under ``data/<split>/media/``
  in ``*_file_name`` columns, which ``datasets`` resolves against the file's folder wherever the export lies.
- ``csv``: media under ``media/`` and ``metadata.csv`` (paths relative to the folder); a ``preset`` writes
  DiffSynth-Studio's ``metadata_<split>.csv`` instead (columns: ``PRESET_COLUMNS``).

Every export writes ``README.md`` (the card, :mod:`.card`) and, last, ``manifest.json`` (options, files, media, pair
ids per split), kept in the catalog under ``exports/<export_id>/`` for ``since``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.export.card import dataset_card, review_counts
from catalog.export.columns import trainer_table, type_note
from catalog.export.config import (
    DECISIONS,
    FORMATS,
    MASK_FORMATS,
    PRESETS,
    PROMPT_FROM,
    SPLIT_BY,
    ExportConfig,
    MaskFormat,
    Preset,
    PromptFrom,
    format_split,
    parse_split,
)
from catalog.export.folder import MANIFEST, ExportError, ExportFolder, clean_partial, read_manifest
from catalog.export.media import MaskCache, is_local, open_atomic, write_atomic
from catalog.export.select import Since, select_for_export


if TYPE_CHECKING:
    from catalog.store import Catalog

# The columns of each preset's metadata files (keys: config.PRESETS).
PRESET_COLUMNS: dict[Preset, tuple[str, ...]] = {
    "diffsynth-vace": ("video", "vace_video", "vace_video_mask", "prompt"),
    "diffsynth-control": ("video", "control_video", "prompt"),
}
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 64
VIDEO_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Video's storage
VIDEO_COLUMNS = ("src_video", "tgt_video", "mask_video")
FILE_NAME = "_file_name"  # datasets' folder builders: a <column>_file_name path becomes <column>, resolved
CSV_COLUMNS = ("pair_id", "split", "src_video", "tgt_video", "mask_video", "prompt", "edit_type", "engine",
               "decision", "license", "attribution")  # fmt: skip
EXPORTS_DIR = "exports"
STARTED = "started.json"  # in the catalog's exports/<export_id>/ while that export runs

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


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
    """Writes one format's files under ``folder.root``; ``files`` (data files) and ``media`` (copies) list what it
    wrote, relative to the folder."""

    def __init__(
        self,
        catalog: Catalog,
        rows: pa.Table,
        fs: fsspec.AbstractFileSystem,
        folder: ExportFolder,
        config: ExportConfig,
        progress: Progress | None,
    ):
        self.catalog, self.rows, self.fs = catalog, rows, fs
        self.root, self.out, self.opening = folder.root, folder.out, folder.opening
        self.meta, self.kinds = trainer_table(rows)
        self.shard_bytes, self.shard_size = config.shard_bytes, config.shard_size
        self.embed_media, self.mask_format, self.preset = config.embed_media, config.mask_format, config.preset
        self.prompt_from: PromptFrom = config.prompt_from
        self.masks = MaskCache(catalog)
        self.files: list[dict[str, Any]] = []
        self.media: list[str] = []
        self.copied: set[str] = set()
        self.done = 0
        self.progress = progress

    # ------------------------------------------------------------------ helpers
    def url(self, relative: str) -> str:
        """Where ``relative`` lies once the export is in place."""
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

    def iter_rows(self, indices: Sequence[int], chunk: int = 64) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(catalog row, exported metadata row) of each index."""
        for start in range(0, len(indices), chunk):
            take = pa.array(indices[start : start + chunk], pa.int64())
            yield from zip(self.rows.take(take).to_pylist(), self.meta.take(take).to_pylist())

    def meta_columns(self) -> list[tuple[str, str]]:
        """(name, type) of the exported metadata columns, for the card."""
        return [(n, type_note(self.meta.schema.field(n).type, self.kinds[n])) for n in self.meta.column_names]

    def mask_bytes(self, row: Mapping[str, Any], fmt: MaskFormat) -> bytes:
        return self.masks.get(row["mask_uri"], fmt, row.get("clip_fps"))

    def _copy(self, relative: str, data: Callable[[], bytes]) -> None:
        if relative not in self.copied:
            write_atomic(self.fs, f"{self.root}/{relative}", data())
            self.copied.add(relative)
            self.media.append(relative)

    def copy_media(self, uri: str, base: str = "") -> str:
        """Copy a catalog media file to ``<base><uri>`` under the export (once); returns ``uri``, its path relative
        to ``base``."""
        self._copy(f"{base}{uri}", lambda: self.catalog.read_media(uri))
        return uri

    def copy_mask(self, row: Mapping[str, Any], base: str = "") -> str:
        """The pair's mask as an mp4 under ``base`` (once); returns its path relative to ``base``."""
        site = _mask_site(row["mask_uri"], row.get("clip_fps"), "mp4")
        self._copy(f"{base}{site}", lambda: self.mask_bytes(row, "mp4"))
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
                for row, meta in self.iter_rows(indices):
                    key = row["pair_id"]
                    mtime = int(row["created_at"].timestamp()) if row.get("created_at") else 0
                    members = [
                        (f"{key}.src.{_ext(row['src_video_uri'])}", self.catalog.read_media(row["src_video_uri"])),
                        (f"{key}.tgt.{_ext(row['tgt_video_uri'])}", self.catalog.read_media(row["tgt_video_uri"])),
                        (f"{key}.mask.{self.mask_format}", self.mask_bytes(row, self.mask_format)),
                        (f"{key}.txt", row["instruction"].encode()),
                        (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()),
                    ]
                    size = sum(512 + len(d) + (-len(d)) % 512 for _, d in members)
                    if tar is not None and shards.full(size):
                        close()
                        number += 1
                    if tar is None:
                        shards.reset()
                        name = f"{split}-{number:06d}.tar"
                        self.opening(name)
                        ctx = open_atomic(self.fs, f"{self.root}/{name}")
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
            ("txt", "string (the instruction, utf-8)"), ("json", "object (the fields below)"),
        ]  # fmt: skip
        return columns + self.meta_columns()

    # ------------------------------------------------------------------ parquet
    def parquet_schema(self) -> pa.Schema:
        schema = pa.schema([*self.meta.schema, *(pa.field(c, VIDEO_STRUCT) for c in VIDEO_COLUMNS)])
        if _datasets_video_supported():
            features = {"info": {"features": {c: {"_type": "Video"} for c in VIDEO_COLUMNS}}}
            schema = schema.with_metadata({b"huggingface": json.dumps(features).encode()})
        return schema

    def parquet(self) -> list[tuple[str, str]]:
        if not self.embed_media:
            return self.parquet_paths()
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
                for row, meta in self.iter_rows(indices):
                    record = dict(meta)
                    media = {
                        "src_video": (row["src_video_uri"], self.catalog.read_media(row["src_video_uri"])),
                        "tgt_video": (row["tgt_video_uri"], self.catalog.read_media(row["tgt_video_uri"])),
                        "mask_video": (
                            _mask_site(row["mask_uri"], row.get("clip_fps"), "mp4"),
                            self.mask_bytes(row, "mp4"),
                        ),
                    }
                    size = 0
                    for column, (path, data) in media.items():
                        record[column] = {"bytes": data, "path": path}
                        size += len(data) + 256
                    if writer is not None and shards.full(size):
                        close()
                        number += 1
                    if writer is None:
                        shards.reset()
                        name = f"data/{split}-{number:05d}.parquet"
                        self.opening(name)
                        ctx = open_atomic(self.fs, f"{self.root}/{name}")
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
        return [(f.name, "datasets.Video ({bytes, path}: the mp4 in bytes)" if f.name in VIDEO_COLUMNS
                 else type_note(f.type, self.kinds[f.name])) for f in schema]  # fmt: skip

    def parquet_paths(self) -> list[tuple[str, str]]:
        """Media not embedded: per split, ``data/<split>/metadata.parquet`` (one row group at a time) whose
        ``<video>_file_name`` columns name the copies under ``data/<split>/media/``, relative to that folder."""
        schema = pa.schema([*self.meta.schema, *(pa.field(c + FILE_NAME, pa.string()) for c in VIDEO_COLUMNS)])
        for split, indices in self.split_rows():
            base = f"data/{split}/"
            name = f"{base}metadata.parquet"
            self.opening(name)
            with open_atomic(self.fs, f"{self.root}/{name}") as handle:
                writer = pq.ParquetWriter(handle, schema, compression="zstd")
                try:
                    buffer: list[dict[str, Any]] = []
                    for row, meta in self.iter_rows(indices):
                        buffer.append({
                            **meta,
                            "src_video" + FILE_NAME: self.copy_media(row["src_video_uri"], base),
                            "tgt_video" + FILE_NAME: self.copy_media(row["tgt_video_uri"], base),
                            "mask_video" + FILE_NAME: self.copy_mask(row, base),
                        })  # fmt: skip
                        if len(buffer) >= ROW_GROUP_ROWS:
                            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                            buffer = []
                        self.tick()
                    if buffer:
                        writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                finally:
                    writer.close()
            self.record(name, split, len(indices), self.fs.size(f"{self.root}/{name}"))
        where = "datasets.Video (in the file: {}, a path relative to data/<split>/)"
        return self.meta_columns() + [(c, where.format(c + FILE_NAME)) for c in VIDEO_COLUMNS]

    # ------------------------------------------------------------------ csv / DiffSynth
    def csv(self) -> list[tuple[str, str]]:
        if self.preset is None:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
            for _, indices in self.split_rows():
                for row, meta in self.iter_rows(indices):
                    writer.writerow([
                        row["pair_id"], row["split"], self.copy_media(row["src_video_uri"]),
                        self.copy_media(row["tgt_video_uri"]), self.copy_mask(row), _prompt(row, self.prompt_from),
                        meta["edit_type"], meta["engine"], meta["decision"], meta["license"], meta["attribution"],
                    ])  # fmt: skip
                    self.tick()
            data = buffer.getvalue().encode()
            self.opening("metadata.csv")
            write_atomic(self.fs, f"{self.root}/metadata.csv", data)
            self.record("metadata.csv", None, self.rows.num_rows, len(data))
            return [
                (c, "string (path relative to this folder)" if c in VIDEO_COLUMNS else "string") for c in CSV_COLUMNS
            ]
        columns = (
            *PRESET_COLUMNS[self.preset],
            "decision",
        )  # the trainer reads its own columns; this one is for people
        for split, indices in self.split_rows():
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            for row, _ in self.iter_rows(indices):
                values = {
                    "video": self.copy_media(row["tgt_video_uri"]),
                    "vace_video": self.copy_media(row["src_video_uri"]),
                    "control_video": self.copy_media(row["src_video_uri"]),
                    "prompt": _prompt(row, self.prompt_from),
                    "decision": row["decision"],
                }
                if "vace_video_mask" in columns:
                    values["vace_video_mask"] = self.copy_mask(row)
                writer.writerow([values[c] for c in columns])
                self.tick()
            data = buffer.getvalue().encode()
            name = f"metadata_{split}.csv"
            self.opening(name)
            write_atomic(self.fs, f"{self.root}/{name}", data)
            self.record(name, split, len(indices), len(data))
        return [
            (c, "string" if c in ("prompt", "decision") else "string (path relative to this folder)") for c in columns
        ]


def _started(catalog: Catalog, export_id: str) -> str:
    return catalog.path(f"{EXPORTS_DIR}/{export_id}/{STARTED}")


def _note_start(catalog: Catalog, export_id: str, url: str) -> bool:
    """Record in the catalog that export ``export_id`` is writing ``url`` (for ``gc_exports``); False when the
    catalog cannot take it (read-only: the export goes on)."""
    record = {"export_id": export_id, "url": url, "started_at": datetime.now(timezone.utc).isoformat()}
    try:
        catalog.fs.makedirs(catalog.path(f"{EXPORTS_DIR}/{export_id}"), exist_ok=True)
        catalog._atomic_write(_started(catalog, export_id), json.dumps(record).encode())
    except OSError as exc:
        log.warning("export %s: could not record its start in the catalog: %s", export_id, exc)
        return False
    return True


def _drop_start(catalog: Catalog, export_id: str) -> None:
    try:
        catalog.fs.rm_file(_started(catalog, export_id))
        if not catalog.fs.ls(catalog.path(f"{EXPORTS_DIR}/{export_id}")):
            catalog.fs.rmdir(catalog.path(f"{EXPORTS_DIR}/{export_id}"))
    except OSError:
        pass


def export(
    catalog: Catalog,
    out_url: str,
    config: ExportConfig,
    *,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export the pairs ``config`` selects to the folder ``out_url`` (see module); ``progress(done, total)`` is called
    after each pair. Returns ``{"export_id", "format", "preset", "rows", "splits", "files", "card", "manifest",
    "catalog_manifest", "replaced"}`` (URLs; ``replaced``: the id of the export ``overwrite`` replaced, or None).

    The folder holds one export: one that holds anything else, or an earlier export without ``config.overwrite``,
    raises ``ExportError`` (as does an option this catalog cannot serve: unknown ``since``, ``balance`` column);
    a ``where`` the read-only guard refuses raises ``SqlRejected``. Nothing is written then. Readers of a local
    folder see the earlier export or the new one, never a part; on object stores ``manifest.json`` comes last and
    the card's loaders read only what it lists. A killed export's leftovers go with the next export into the folder,
    ``clean_partial`` or ``gc_exports`` (:mod:`catalog.export.folder`).
    """
    fmt = config.format
    shares = config.shares
    earlier = load_since(catalog, config.since, storage_options) if config.since else None
    created = datetime.now(timezone.utc)
    try:
        selection = select_for_export(catalog, config, since=earlier)
    except ValueError as exc:
        if type(exc) is ValueError:  # option errors (SqlRejected and CatalogError pass through)
            raise ExportError(str(exc)) from None
        raise
    rows, as_of = selection.rows, selection.newest
    fs, out = fsspec.core.url_to_fs(out_url, **dict(storage_options or {}))
    out = out.rstrip("/")
    export_id = f"{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    location = out if is_local(fs) else fs.unstrip_protocol(out)
    folder = ExportFolder(fs, out, url=location, export_id=export_id, overwrite=config.overwrite)
    folder.open()
    noted = _note_start(catalog, export_id, location)
    try:
        exporter = _Exporter(catalog, rows, fs, folder, config, progress)
        columns = getattr(exporter, fmt)()
        splits = list(shares)
        counts = dict.fromkeys(splits, 0)
        pair_ids: dict[str, list[str]] = {s: [] for s in splits}
        for s, p in zip(rows.column("split").to_pylist(), rows.column("pair_id").to_pylist()):
            counts[s] += 1
            pair_ids[s].append(p)
        # every option as given (``since`` resolved to the export id, ``split`` written out); those that do not apply
        # to this format are null
        options = config.model_dump(mode="json", exclude={"format", "preset"})
        options.update(since=earlier.export_id if earlier else None, split=format_split(shares))
        sharded = fmt == "webdataset" or (fmt == "parquet" and config.embed_media)
        options.update(
            shard_mb=config.shard_mb if sharded else None,
            shard_size=config.shard_size if sharded else None,
            embed_media=config.embed_media if fmt == "parquet" else None,
            prompt_from=config.prompt_from if fmt == "csv" else None,
            mask_format=config.mask_format if fmt == "webdataset" else None,
        )
        manifest = {
            "export_id": export_id,
            "created_at": created.isoformat(),
            "url": location,
            "catalog": catalog.url,
            "vpf_version": vpf_version(),
            "format": fmt,
            "preset": config.preset,
            "options": options,
            "catalog_as_of": as_of.isoformat() if as_of else None,
            "replaces": folder.previous["export_id"] if folder.previous else None,
            "rows": rows.num_rows,
            "counts": counts,
            "reviews": review_counts(rows, selection.withheld_by_review),
            "files": exporter.files,
            "media": exporter.media,
            "pairs": pair_ids,
        }
        card = dataset_card(rows, manifest=manifest, columns=columns, splits=splits, local=is_local(fs))
        data = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
        folder.finish(card.encode(), data)
    except BaseException:
        folder.abort()
        if noted:
            _drop_start(catalog, export_id)
        raise
    kept = catalog.path(f"{EXPORTS_DIR}/{export_id}/{MANIFEST}")
    try:  # kept in the catalog for ``since``; a read-only catalog still gets its export (``since`` takes the folder)
        catalog.fs.makedirs(catalog.path(f"{EXPORTS_DIR}/{export_id}"), exist_ok=True)
        catalog._atomic_write(kept, data)
    except OSError as exc:
        log.warning("export %s: could not keep its manifest in the catalog (%s): %s", export_id, kept, exc)
        kept = None
    if noted:
        _drop_start(catalog, export_id)
    return {
        "export_id": export_id,
        "format": fmt,
        "preset": config.preset,
        "rows": rows.num_rows,
        "splits": counts,
        "files": [exporter.url(f["path"]) for f in exporter.files],
        "card": exporter.url("README.md"),
        "manifest": exporter.url(MANIFEST),
        "catalog_manifest": catalog.full_url(f"{EXPORTS_DIR}/{export_id}/{MANIFEST}") if kept else None,
        "replaced": manifest["replaces"],
    }


def gc_exports(
    catalog: Catalog,
    *,
    older_than_s: float = 86400.0,
    dry_run: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """For every export this catalog saw start more than ``older_than_s`` seconds ago and never finish (its
    ``exports/<id>/started.json``), remove what it left in its folder (``clean_partial``: a finished export there
    stays), then the record. ``storage_options``: the folders' (default: the catalog's, for folders on the catalog's
    kind of store). Returns the paths removed or put back (``dry_run``: that would be). ``vpf catalog gc``'s hook."""
    root = catalog.path(EXPORTS_DIR)
    catalog.fs.invalidate_cache(root)
    if not catalog.fs.exists(root):
        return []
    protocols = catalog.fs.protocol if isinstance(catalog.fs.protocol, tuple) else (catalog.fs.protocol,)
    now = datetime.now(timezone.utc)
    done: list[str] = []
    for path in sorted(catalog.fs.glob(f"{root}/*/{STARTED}")):
        try:
            record = json.loads(catalog.fs.cat_file(path))
            started = datetime.fromisoformat(record["started_at"])
        except (FileNotFoundError, ValueError, KeyError):
            continue
        if (now - started).total_seconds() < older_than_s:
            continue
        options = storage_options
        if options is None:
            same = fsspec.utils.get_protocol(record["url"]) in protocols
            options = catalog.storage_options if same else {}
        done += clean_partial(record["url"], storage_options=options, dry_run=dry_run)
        if not dry_run:
            _drop_start(catalog, record["export_id"])
        done.append(path)
    return done


__all__ = [
    "DECISIONS",
    "FORMATS",
    "MASK_FORMATS",
    "PRESETS",
    "PRESET_COLUMNS",
    "PROMPT_FROM",
    "SPLIT_BY",
    "ExportConfig",
    "ExportError",
    "Since",
    "clean_partial",
    "export",
    "gc_exports",
    "load_since",
    "parse_split",
    "read_manifest",
]
