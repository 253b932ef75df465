"""Export pairs as training sets: WebDataset tar shards, Parquet, or a ``src_video,tgt_video,prompt`` CSV.

The rows are ``pairs_full`` (pairs joined with instructions, clips, sources, renders) filtered by ``where``, a SQL
predicate checked by the same read-only guard as ``vpf sql``. Output goes to any fsspec URL.

- ``webdataset``: ``shard-000000.tar`` … with ``shard_size`` samples each; a sample is ``<pair_id>.src.mp4``,
  ``<pair_id>.tgt.mp4``, ``<pair_id>.mask.<ext>`` (the mask file as stored, e.g. ``npz``) and ``<pair_id>.json``
  (every scalar column of ``pairs_full``). Readable with ``webdataset.WebDataset`` or ``tarfile``.
- ``parquet``: ``data-00000.parquet`` … (``shard_size`` rows each), every ``pairs_full`` column plus
  ``src_video_url``/``tgt_video_url``/``mask_url`` (absolute URLs into the catalog) and, with ``embed_media``
  (the default), the bytes themselves in ``src_video``/``tgt_video``/``mask``, so the folder is a self-contained
  dataset: ``datasets.load_dataset("parquet", data_files=f"{out}/*.parquet")``.
- ``csv``: the media are copied under ``<out>/media/`` (content-addressed names, each file once) and
  ``<out>/metadata.csv`` lists ``src_video,tgt_video,prompt`` with absolute paths (or URLs) of those copies and
  the short instruction as the prompt, as DiffSynth-style video trainers expect.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


if TYPE_CHECKING:
    from catalog.store import Catalog

ExportFormat = Literal["webdataset", "parquet", "csv"]
FORMATS: tuple[str, ...] = ("webdataset", "parquet", "csv")


def select_pairs(catalog: Catalog, where: str | None = None) -> pa.Table:
    """``pairs_full`` rows matching the SQL predicate ``where`` (read-only guard applies), ordered by pair id."""
    sql = "SELECT * FROM pairs_full"
    if where and where.strip():
        sql += f" WHERE {where}"
    return catalog.query(f"{sql} ORDER BY pair_id", read_only=True)


def _ext(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].split(".", 1)[-1] if "." in uri.rsplit("/", 1)[-1] else "bin"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


@contextmanager
def _open_atomic(fs: fsspec.AbstractFileSystem, path: str, local: bool) -> Iterator[Any]:
    """Write ``path`` so that it appears complete or not at all (local: temp name + rename; object stores: the
    upload completes on close)."""
    if not local:
        with fs.open(path, "wb") as f:
            yield f
        return
    parent = path.rsplit("/", 1)[0]
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def export(
    catalog: Catalog,
    fmt: ExportFormat,
    out_url: str,
    where: str | None = None,
    shard_size: int = 1000,
    embed_media: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export the pairs matching ``where`` to ``out_url`` as ``fmt`` (see module). Returns ``{"format", "rows",
    "files"}`` with the URLs written."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {FORMATS}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    rows = select_pairs(catalog, where)
    fs, out = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local = "file" in protocols
    out = out.rstrip("/")
    fs.makedirs(out, exist_ok=True)

    def url(path: str) -> str:
        return path if local else fs.unstrip_protocol(path)

    files: list[str] = []
    if fmt == "webdataset":
        records = rows.to_pylist()
        for shard, start in enumerate(range(0, len(records), shard_size)):
            path = f"{out}/shard-{shard:06d}.tar"
            with _open_atomic(fs, path, local) as f, tarfile.open(fileobj=f, mode="w") as tar:
                for row in records[start : start + shard_size]:
                    key = row["pair_id"]
                    mtime = row["created_at"].timestamp() if row.get("created_at") else 0
                    _add_member(
                        tar, f"{key}.src.{_ext(row['src_video_uri'])}", catalog.read_media(row["src_video_uri"]), mtime
                    )
                    _add_member(
                        tar, f"{key}.tgt.{_ext(row['tgt_video_uri'])}", catalog.read_media(row["tgt_video_uri"]), mtime
                    )
                    _add_member(tar, f"{key}.mask.{_ext(row['mask_uri'])}", catalog.read_media(row["mask_uri"]), mtime)
                    meta = {k: _jsonable(v) for k, v in row.items()}
                    _add_member(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode(), mtime)
            files.append(url(path))
    elif fmt == "parquet":
        for name, column in (("src_video", "src_video_uri"), ("tgt_video", "tgt_video_uri"), ("mask", "mask_uri")):
            uris = rows.column(column).to_pylist()
            rows = rows.append_column(f"{name}_url", pa.array([catalog.full_url(u) for u in uris], pa.string()))
            if embed_media:
                rows = rows.append_column(name, pa.array([catalog.read_media(u) for u in uris], pa.binary()))
        for shard, start in enumerate(range(0, max(rows.num_rows, 1), shard_size)):
            path = f"{out}/data-{shard:05d}.parquet"
            with _open_atomic(fs, path, local) as f:
                pq.write_table(rows.slice(start, shard_size), f, compression="zstd")
            files.append(url(path))
    else:  # csv
        fs.makedirs(f"{out}/media", exist_ok=True)

        def materialise(uri: str) -> str:
            path = f"{out}/media/{uri.rsplit('/', 1)[-1]}"
            if not fs.exists(path):
                with _open_atomic(fs, path, local) as f:
                    f.write(catalog.read_media(uri))
            return url(path)

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["src_video", "tgt_video", "prompt"])
        for row in rows.select(["src_video_uri", "tgt_video_uri", "instruction"]).to_pylist():
            writer.writerow([materialise(row["src_video_uri"]), materialise(row["tgt_video_uri"]), row["instruction"]])
        path = f"{out}/metadata.csv"
        with _open_atomic(fs, path, local) as f:
            f.write(buffer.getvalue().encode())
        files.append(url(path))
    return {"format": fmt, "rows": rows.num_rows, "files": files}
