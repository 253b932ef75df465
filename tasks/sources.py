"""Discover the videos to ingest: folders, globs and manifests on any fsspec URL, and VPData/VPBench CSVs.

:func:`discover_sources` turns a video, a folder, a glob, a manifest (columns :data:`MANIFEST_COLUMNS`) or a
VPData/VPBench CSV into ``SourceItem``s, with masks found next to videos (:func:`sibling_mask`) or named by the
manifest. A bad row becomes a :class:`Failure` and the other rows go on. With ``roots`` set, every video and mask
must lie under one of them (after resolving ``..`` and symlinks), else the row fails with ``outside_roots``; the
items carry the roots, and every file opened for them later is checked again when opened (:func:`resolve_within_roots`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import fsspec

from tasks.errors import InputError
from tasks.types import Failure, SourceItem


VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson", ".parquet")
MANIFEST_COLUMNS = (
    "uri",
    "start_frame",
    "end_frame",
    "start_s",
    "end_s",
    "caption",
    "mask_uri",
    "mask_id",
    "label",
    "box",
    "license",
    "attribution",
)
VPDATA_COLUMNS = (
    "path",
    "mask_id",
    "start_frame",
    "end_frame",
    "fps",
    "caption",
    "video_inpainting_prompt",
    "image_inpainting_prompt",
    "type",
    "Edited_video_caption",
    "Edited_image_caption",
    "Editing_instruction",
)
"""VPData/VPBench columns we read or knowingly ignore (``fps`` is re-probed from the file; the image/edit prompt
columns belong to the benchmark)."""

MAX_MANIFEST_LINE_CHARS = 1 << 20
"""The longest line of a CSV or JSONL manifest read (characters): a longer line is refused as that row's ``bad_row``
without being held, so one line cannot take the worker's memory."""

MAX_PARQUET_FOOTER_BYTES = 16 << 20
"""The largest Parquet footer (its metadata) parsed; a manifest declaring more fails with ``bad_manifest``."""

MAX_PARQUET_ROW_GROUP_BYTES = 256 << 20
"""The largest Parquet row group read (uncompressed bytes its metadata declares); its rows fail with ``bad_row``."""


# --------------------------------------------------------------------------------------------------------- paths
def _has_protocol(uri: str) -> bool:
    return "://" in uri


def _is_local(uri: str) -> bool:
    return not _has_protocol(uri) or uri.startswith("file://")


def _normalise(uri: str) -> str:
    """A canonical form for comparisons: real absolute local paths, ``proto://`` + normalised path otherwise."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if not _has_protocol(uri):
        return os.path.realpath(os.path.expanduser(uri))
    protocol, path = uri.split("://", 1)
    return f"{protocol}://{posixpath.normpath('/' + path).lstrip('/')}"


def _join(base_dir: str, relative: str) -> str:
    if _has_protocol(relative) or relative.startswith("/") or relative.startswith("file://"):
        return relative
    if _has_protocol(base_dir):
        return f"{base_dir.rstrip('/')}/{relative}"
    return os.path.join(base_dir, relative)


def _parent(uri: str) -> str:
    if _has_protocol(uri) and not uri.startswith("file://"):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri[len("file://") :] if uri.startswith("file://") else uri))


def within_roots(uri: str, roots: Sequence[str] | None) -> bool:
    """True when ``roots`` is unset or ``uri`` lies under one of them (``..`` and symlinks resolved)."""
    return not roots or _under(_normalise(uri), roots)


def _under(target: str, roots: Sequence[str]) -> bool:
    for root in roots:
        base = _normalise(root).rstrip("/")
        if target == base or target.startswith(base + "/"):
            return True
    return False


def resolve_within_roots(uri: str, roots: Sequence[str] | None) -> str:
    """The path to open for ``uri``, checked when it is about to be opened: for a local path (or ``file://`` URL)
    its real path, ``..`` and every symlink resolved now, so a file swapped for a link after discovery is caught; a
    remote URL is returned as it is, checked by its normalised prefix. Open the returned path, not ``uri``.

    Raises ``InputError`` ``outside_roots`` when ``roots`` is set and the file lies under none of them.
    """
    target = _normalise(uri)
    if roots and not _under(target, roots):
        raise _outside(uri, roots)
    return target if _is_local(uri) else uri


def _unstrip(fs: Any, path: str, like: str) -> str:
    """Give a path listed by ``fs`` the same protocol style as the user's ``like`` URL."""
    if not _has_protocol(like) or like.startswith("file://"):
        return path
    if "::" in like:  # chained URLs (simplecache::s3://…): let fsspec spell it
        return fs.unstrip_protocol(path)
    protocol, rest = like.split("://", 1)
    return f"{protocol}://{path if rest.startswith('/') else path.lstrip('/')}"


# --------------------------------------------------------------------------------------------------------- public
def discover_sources(
    source: str, *, roots: Sequence[str] | None = None, storage_options: Mapping[str, Any] | None = None
) -> tuple[list[SourceItem], list[Failure]]:
    """Expand ``source`` (a video, folder, glob, manifest or VPData CSV) into work items.

    ``source`` is one of:

    - a video file, a folder (searched recursively for video files) or a glob (``s3://bucket/clips/**/*.mp4``); each
      video's masks are picked up when they lie next to it (:func:`sibling_mask`);
    - a manifest (``.csv``, ``.jsonl``/``.ndjson``, ``.parquet``) with the columns of :data:`MANIFEST_COLUMNS`.
      ``uri`` is required; relative ``uri``/``mask_uri`` resolve against the manifest's folder. A column outside that
      set fails the whole manifest (naming the columns); a bad row becomes a failure and the other rows go on;
    - a VPData/VPBench CSV, recognised by its header (``path`` and ``mask_id`` columns, no ``uri``). See
      :func:`_vpdata_item` for how its videos and ``all_masks.npz`` label maps are found.

    With ``roots`` set, every video and mask must lie under one of them (after resolving ``..`` and symlinks), else
    the row fails with ``outside_roots``. A video that does not exist fails with ``not_found``.

    Returns ``(items, failures)``; failures have stage ``"ingest"`` and item kind ``"source"``. Never raises for bad
    input.
    """
    source = str(source)
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(source, **options)
    if source.lower().endswith(MANIFEST_EXTENSIONS):
        return _discover_manifest(source, fs, path, roots, options)
    masks: dict[str, str | None] | None = None
    if any(ch in path for ch in "*?["):
        uris = [_unstrip(fs, p, source) for p in sorted(fs.glob(path)) if p.lower().endswith(VIDEO_EXTENSIONS)]
        if not uris:
            return [], [_failure(source, InputError(source, "not_found", "the glob matches no video file"))]
    elif fs.isdir(path):
        entries = fs.find(path, withdirs=True, detail=True)
        listing = set(entries)
        videos = sorted(
            p for p, info in entries.items() if p.lower().endswith(VIDEO_EXTENSIONS) and info["type"] != "directory"
        )
        uris = [_unstrip(fs, p, source) for p in videos]
        if not uris:
            return [], [_failure(source, InputError(source, "not_found", "the folder holds no video file"))]
        masks = {uri: sibling_mask(fs, p, root=path, listing=listing) for uri, p in zip(uris, videos)}
        masks = {uri: None if m is None else _unstrip(fs, m, source) for uri, m in masks.items()}
    elif fs.exists(path):
        uris = [source]
    else:
        return [], [_failure(source, InputError(source, "not_found", "no such file, folder or object"))]
    if masks is None:  # a glob or a single video: look for each one's masks next to it
        masks = {}
        for uri in uris:
            found = sibling_mask(fs, fsspec.core.url_to_fs(uri, **options)[1])
            masks[uri] = None if found is None else _unstrip(fs, found, source)
    items, failures = [], []
    for uri in uris:
        mask = masks.get(uri)
        if not within_roots(uri, roots):
            failures.append(_failure(uri, _outside(uri, roots)))
        elif mask is not None and not within_roots(mask, roots):
            failures.append(_failure(mask, _outside(mask, roots)))
        else:
            items.append(SourceItem(uri=uri, mask_uri=mask, roots=_roots(roots)))
    return items, failures


def _roots(roots: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(str(root) for root in roots) if roots else None


def sibling_mask(fs: Any, video: str, *, root: str | None = None, listing: set[str] | None = None) -> str | None:
    """The masks lying next to a video found in a folder or glob (a path of ``fs``), or ``None``. First match of

    - ``<dir>/<stem>_masks.npz`` and ``<dir>/<stem>.npz`` (label maps or bool masks, see :mod:`tasks.masks`);
    - VPData layouts: ``<dir>/<stem>/all_masks.npz``, and under the searched folder ``root``:
      ``video_inpainting/<kind>/<base>/all_masks.npz``, ``<kind>/<base>/all_masks.npz``,
      ``masks/<base>/all_masks.npz`` (``<base>``: the name up to its first dot; ``<kind>``: ``pexels`` when it
      holds ``_``, else ``videovo``);
    - PNG-sequence folders ``<dir>/<stem>_masks/`` and ``<dir>/<stem>/`` holding ``.png`` frames.

    ``listing`` (every path under ``root``, folders included) avoids a request per candidate on object stores.
    A label map without a ``mask_id`` yields one object per label (``tasks.segment.ProvidedSegmenter``).
    """
    folder, name = posixpath.split(video)
    stem = name.rsplit(".", 1)[0]
    base = name.split(".")[0]
    kind = "pexels" if "_" in base else "videovo"
    files = [f"{folder}/{stem}_masks.npz", f"{folder}/{stem}.npz", f"{folder}/{stem}/all_masks.npz"]
    if root is not None:
        root = root.rstrip("/")
        files += [f"{root}/video_inpainting/{kind}/{base}/all_masks.npz", f"{root}/{kind}/{base}/all_masks.npz",
                  f"{root}/masks/{base}/all_masks.npz"]  # fmt: skip
    for candidate in files:
        if candidate in listing if listing is not None else fs.isfile(candidate):
            return candidate
    for candidate in (f"{folder}/{stem}_masks", f"{folder}/{stem}"):
        if listing is not None:
            if any(p.startswith(candidate + "/") and p.lower().endswith(".png") for p in listing):
                return candidate
        elif fs.isdir(candidate) and any(p.lower().endswith(".png") for p in fs.ls(candidate, detail=False)):
            return candidate
    return None


def _failure(item_id: str, exc: InputError) -> Failure:
    return Failure.from_exception("ingest", "source", item_id, exc)


def _outside(uri: str, roots: Sequence[str] | None) -> InputError:
    return InputError(uri, "outside_roots", f"path is outside the allowed roots {list(roots or [])}")


# --------------------------------------------------------------------------------------------------------- manifests
class _LongLine(ValueError):
    """A manifest line longer than :data:`MAX_MANIFEST_LINE_CHARS`."""


class _BoundedLines:
    """The lines of a text stream, each read with at most :data:`MAX_MANIFEST_LINE_CHARS` characters held: a longer
    line is read past in pieces and its ``next()`` raises :class:`_LongLine`; iteration goes on with the next line
    (so ``csv.reader`` can go on too)."""

    def __init__(self, text: IO[str]):
        self.text = text
        self.number = 0  # lines read so far

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_MANIFEST_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_MANIFEST_LINE_CHARS:
            while line and not line.endswith(("\n", "\r")):
                line = self.text.readline(MAX_MANIFEST_LINE_CHARS)
            raise _LongLine(f"line {self.number} is longer than {MAX_MANIFEST_LINE_CHARS} characters")
        return line


Rows = Iterator[tuple[int, dict[str, Any] | Exception]]


def _read_rows(source: str, fs: Any, path: str) -> tuple[list[str], Rows]:
    """``(columns, rows)``, the rows read as they are iterated; a row that cannot be parsed (or is too long, see
    :data:`MAX_MANIFEST_LINE_CHARS`, :data:`MAX_PARQUET_ROW_GROUP_BYTES`) is yielded as the exception. Memory holds
    one line (CSV), the parsed rows (JSONL, whose columns are known only once every line is read) or one row group
    (Parquet), never the whole file's bytes. Raises ``ValueError``/``OSError`` when the header cannot be read."""
    lower = source.lower()
    if lower.endswith(".parquet"):
        return _parquet_rows(source, fs, path)
    f = fs.open(path, "rb")
    try:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="" if lower.endswith(".csv") else None)
        lines = _BoundedLines(text)
        if lower.endswith(".csv"):
            reader = csv.DictReader(lines)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            return columns, _csv_rows(source, reader, text)
        with text:
            return _jsonl_rows(source, lines)
    except BaseException:
        f.close()
        raise


def _csv_rows(source: str, reader: csv.DictReader, text: IO[str]) -> Rows:
    with text:
        index = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (_LongLine, csv.Error) as exc:  # the reader starts the next row afresh
                yield index, InputError(f"{source}#row={index}", "bad_row", f"row {index}: {exc}")
                index += 1
                continue
            if None in row:  # more cells than header columns
                message = f"row {index} has more cells than the header"
                yield index, InputError(f"{source}#row={index}", "bad_row", message)
            else:
                yield index, {k.strip(): v for k, v in row.items()}
            index += 1


def _jsonl_rows(source: str, lines: _BoundedLines) -> tuple[list[str], Rows]:
    parsed: list[tuple[int, dict[str, Any] | Exception]] = []
    columns: list[str] = []
    while True:
        n = len(parsed)
        try:
            line = next(lines)
        except StopIteration:
            break
        except _LongLine as exc:
            parsed.append((n, InputError(f"{source}#row={n}", "bad_row", str(exc))))
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            message = f"line {lines.number} is not a JSON object ({exc})"
            parsed.append((n, InputError(f"{source}#row={n}", "bad_row", message)))
            continue
        columns.extend(k for k in row if k not in columns)
        parsed.append((n, row))
    return columns, iter(parsed)


def _parquet_rows(source: str, fs: Any, path: str) -> tuple[list[str], Rows]:
    """A Parquet manifest read one row group at a time; its footer and each row group's declared size are checked
    before they are read (:data:`MAX_PARQUET_FOOTER_BYTES`, :data:`MAX_PARQUET_ROW_GROUP_BYTES`)."""
    import pyarrow.parquet as pq

    size = int(fs.size(path))
    f = fs.open(path, "rb")
    try:
        f.seek(max(0, size - 8))
        tail = f.read(8)
        if len(tail) < 8 or tail[4:] != b"PAR1":
            raise ValueError("not a Parquet file (no PAR1 footer)")
        footer = int.from_bytes(tail[:4], "little")
        if footer > MAX_PARQUET_FOOTER_BYTES:
            raise ValueError(f"its metadata declares {footer} bytes; at most {MAX_PARQUET_FOOTER_BYTES} are read")
        f.seek(0)
        parquet = pq.ParquetFile(f)
        columns = list(parquet.schema_arrow.names)
    except BaseException:
        f.close()
        raise

    def rows() -> Rows:
        with f:
            index = 0
            for group in range(parquet.metadata.num_row_groups):
                meta = parquet.metadata.row_group(group)
                declared = max(
                    meta.total_byte_size,
                    sum(meta.column(c).total_uncompressed_size for c in range(meta.num_columns)),
                )
                if declared > MAX_PARQUET_ROW_GROUP_BYTES:
                    where = f"{source}#row={index}"
                    message = (
                        f"rows {index}..{index + meta.num_rows - 1} (row group {group}) declare {declared} bytes; "
                        f"at most {MAX_PARQUET_ROW_GROUP_BYTES} are read at once"
                    )
                    yield index, InputError(where, "bad_row", message)
                    index += meta.num_rows
                    continue
                for row in parquet.read_row_group(group).to_pylist():
                    yield index, row
                    index += 1

    return columns, rows()


def _until_unreadable(source: str, rows: Rows) -> Rows:
    """``rows`` until the file stops being readable part way (a decoding error, a damaged row group): then one
    ``bad_manifest`` error, and the rows read so far stand."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (ValueError, OSError, csv.Error) as exc:
            yield -1, InputError(source, "bad_manifest", f"manifest stops being readable ({exc})")
            return
        yield row


def _discover_manifest(
    source: str, fs: Any, path: str, roots: Sequence[str] | None, options: dict[str, Any]
) -> tuple[list[SourceItem], list[Failure]]:
    if not fs.exists(path):
        return [], [_failure(source, InputError(source, "not_found", "manifest not found"))]
    try:
        resolved = resolve_within_roots(source, roots)  # checked as it is opened
    except InputError as exc:
        return [], [_failure(source, exc)]
    try:
        columns, rows = _read_rows(source, fs, resolved if _is_local(source) else path)
    except (ValueError, OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [_failure(source, InputError(source, "bad_manifest", f"manifest is not readable ({exc})"))]
    vpdata = "uri" not in columns and {"path", "mask_id"} <= set(columns)
    known = VPDATA_COLUMNS if vpdata else MANIFEST_COLUMNS
    unknown = [c for c in columns if c not in known]
    if not vpdata and "uri" not in columns:
        message = f"manifest has no 'uri' column (columns: {columns}; allowed: {list(MANIFEST_COLUMNS)})"
        return [], [_failure(source, InputError(source, "missing_columns", message))]
    if unknown:
        message = f"unknown manifest column(s) {unknown}; allowed: {list(known)}"
        return [], [_failure(source, InputError(source, "unknown_columns", message))]
    base_dir = _parent(source)
    items, failures = [], []
    for index, row in _until_unreadable(source, rows):
        if isinstance(row, Exception):
            failures.append(_failure(getattr(row, "input", f"{source}#row={index}"), row))
            continue
        try:
            if vpdata:
                item = _vpdata_item(row, base_dir, source, index, options)
            else:
                item = _manifest_item(row, base_dir, source, index)
            for uri in (item.uri, item.mask_uri):
                if uri is not None and not within_roots(uri, roots):
                    raise _outside(uri, roots)
            fs_item, item_path = fsspec.core.url_to_fs(item.uri, **options)
            if not fs_item.exists(item_path):
                raise InputError(item.uri, "not_found", f"row {index} of {source}: no such file or object")
        except InputError as exc:
            failures.append(_failure(exc.input, exc))
            continue
        except Exception as exc:  # anything unforeseen in one row fails that row only
            where = f"{source}#row={index}"
            failures.append(Failure.unexpected("ingest", "source", where, exc, where))
            continue
        item.roots = _roots(roots)
        items.append(item)
    return items, failures


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value != value  # NaN


def _as_int(value: Any, name: str, where: str) -> int | None:
    if _blank(value):
        return None
    try:
        number = float(value)
        if number != int(number) or not -(2**63) <= int(number) < 2**63:  # the catalog stores int64
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise InputError(where, "bad_row", f"{name} must be a 64-bit integer, got {value!r}") from None


def _as_float(value: Any, name: str, where: str) -> float | None:
    if _blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(where, "bad_row", f"{name} must be a finite number, got {value!r}")
    return number


def _as_box(value: Any, where: str) -> tuple[int, int, int, int] | None:
    if _blank(value):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        box = tuple(int(round(float(p))) for p in parts)
    except (TypeError, ValueError, OverflowError):
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1] or min(box) < 0:
        raise InputError(
            where, "bad_row", f"box must be 'x0,y0,x1,y1' with x1 > x0 >= 0 and y1 > y0 >= 0, got {value!r}"
        )
    return box  # type: ignore[return-value]


def _check_range(item: SourceItem, where: str) -> None:
    frames = item.start_frame is not None or item.end_frame is not None
    seconds = item.start_s is not None or item.end_s is not None
    if frames and seconds:
        raise InputError(where, "bad_row", "give start_frame/end_frame or start_s/end_s, not both")
    for lo, hi, unit in ((item.start_frame, item.end_frame, "frame"), (item.start_s, item.end_s, "s")):
        if lo is not None and lo < 0:
            raise InputError(where, "bad_row", f"start_{unit} must be >= 0, got {lo}")
        if lo is not None and hi is not None and hi <= lo:
            raise InputError(where, "bad_row", f"end_{unit} ({hi}) must be greater than start_{unit} ({lo})")


def _manifest_item(row: dict[str, Any], base_dir: str, source: str, index: int) -> SourceItem:
    uri = row.get("uri")
    if _blank(uri):
        raise InputError(f"{source}#row={index}", "missing_uri", f"row {index} of {source} has no uri")
    uri = _join(base_dir, str(uri).strip())
    mask_uri = None if _blank(row.get("mask_uri")) else _join(base_dir, str(row["mask_uri"]).strip())
    item = SourceItem(
        uri=uri,
        start_frame=_as_int(row.get("start_frame"), "start_frame", uri),
        end_frame=_as_int(row.get("end_frame"), "end_frame", uri),
        start_s=_as_float(row.get("start_s"), "start_s", uri),
        end_s=_as_float(row.get("end_s"), "end_s", uri),
        caption=None if _blank(row.get("caption")) else str(row["caption"]),
        mask_uri=mask_uri,
        mask_id=_as_int(row.get("mask_id"), "mask_id", uri),
        label=None if _blank(row.get("label")) else str(row["label"]),
        box=_as_box(row.get("box"), uri),
        manifest_uri=source,
        row_index=index,
        license=None if _blank(row.get("license")) else str(row["license"]).strip(),
        attribution=None if _blank(row.get("attribution")) else str(row["attribution"]).strip(),
    )
    _check_range(item, uri)
    return item


def _vpdata_item(row: dict[str, Any], base_dir: str, source: str, index: int, options: dict[str, Any]) -> SourceItem:
    """One VPData/VPBench row → a :class:`SourceItem` with its ``all_masks.npz`` label map.

    The released code is inconsistent about where files live: training looks for masks under
    ``<csv dir>/{videovo|pexels}/<base>/``, inference and evaluation under ``<csv dir>/video_inpainting/{…}/<base>/``,
    and videos sit in per-id folders. We are lenient: ``path`` may be absolute, a URL or relative to the CSV, and the
    first existing candidate below wins (``<base>`` = the file name up to its first dot, ``<kind>`` = ``pexels`` when
    the name holds ``_`` else ``videovo``, ``<folder>`` = the first 9 characters of ``<base>``):

    - video: ``<path>``, ``<csv dir>/<path>``, ``<csv dir>/<kind>/raw_video/<folder>/<name>``,
      ``<csv dir>/<kind>/<folder>/<name>``, ``<csv dir>/raw_video/<folder>/<name>``, ``<csv dir>/<folder>/<name>``;
    - mask: ``<csv dir>/video_inpainting/<kind>/<base>/all_masks.npz``, ``<csv dir>/<kind>/<base>/all_masks.npz``,
      ``<csv dir>/masks/<base>/all_masks.npz``, ``<video dir>/all_masks.npz``.

    A row whose video or mask is found nowhere fails with ``not_found`` listing what was tried.
    """
    where = f"{source}#row={index}"
    path = row.get("path")
    if _blank(path):
        raise InputError(where, "missing_uri", f"row {index} of {source} has no path")
    path = str(path).strip()
    name = posixpath.basename(path)
    base = name.split(".")[0]
    kind = "pexels" if "_" in base else "videovo"
    folder = base[:9]
    video_candidates = [path] if _has_protocol(path) or path.startswith("/") else []
    video_candidates += [
        _join(base_dir, path),
        _join(base_dir, f"{kind}/raw_video/{folder}/{name}"),
        _join(base_dir, f"{kind}/{folder}/{name}"),
        _join(base_dir, f"raw_video/{folder}/{name}"),
        _join(base_dir, f"{folder}/{name}"),
    ]
    video = _first_existing(video_candidates, options)
    if video is None:
        raise InputError(path, "not_found", f"row {index} of {source}: video not found; tried {video_candidates}")
    mask_candidates = [
        _join(base_dir, f"video_inpainting/{kind}/{base}/all_masks.npz"),
        _join(base_dir, f"{kind}/{base}/all_masks.npz"),
        _join(base_dir, f"masks/{base}/all_masks.npz"),
        _join(_parent(video), "all_masks.npz"),
    ]
    mask = _first_existing(mask_candidates, options)
    if mask is None:
        raise InputError(
            path, "not_found", f"row {index} of {source}: all_masks.npz not found; tried {mask_candidates}"
        )
    caption = row.get("caption")
    if _blank(caption):
        caption = row.get("video_inpainting_prompt")
    item = SourceItem(
        uri=video,
        start_frame=_as_int(row.get("start_frame"), "start_frame", video),
        end_frame=_as_int(row.get("end_frame"), "end_frame", video),
        caption=None if _blank(caption) else str(caption),
        mask_uri=mask,
        mask_id=_as_int(row.get("mask_id"), "mask_id", video),
        manifest_uri=source,
        row_index=index,
    )
    _check_range(item, video)
    return item


def _first_existing(candidates: list[str], options: dict[str, Any]) -> str | None:
    for uri in candidates:
        fs, path = fsspec.core.url_to_fs(uri, **options)
        if fs.exists(path):
            return uri
    return None
