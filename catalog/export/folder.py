"""An export folder holds one export, finished or not at all; ``manifest.json`` is what makes it one.

Local folders: the export is written into a hidden sibling (``.<name>.vpf-partial-<id>``) renamed into place at the
end; an export it replaces is renamed aside (``.<name>.vpf-old-<id>``) first, then deleted file by file from its
manifest. Readers see the earlier export, no folder, or the new one. A lock file beside it keeps a second export
out. Object stores (no folder rename) write in place behind a marker (``.vpf-partial.json``) and a README stub that
points loaders at nothing; the data, the card and ``manifest.json`` come last. What a killed export left is removed
by the next export into the folder or by ``clean_partial``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import fsspec

from catalog.export.media import TMP_PREFIX, is_local, write_atomic


MANIFEST = "manifest.json"
CARD = "README.md"
MARKER = ".vpf-partial.json"
STAGING = ".vpf-partial-"  # .<name>.vpf-partial-<export_id>: an export being written, beside its folder
ASIDE = ".vpf-old-"  # .<name>.vpf-old-<export_id>: the export it replaces, until deleted
LOCK = ".vpf-lock"  # .<name>.vpf-lock: held (flock) by the export writing the folder
OWN_DIRS = ("media/", "data/")  # an export owns every file under these (media copies, Parquet files)
STUB_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: export-not-finished
---
# Export not finished

This folder holds an export that has not finished, or was killed: it has no `manifest.json`, and nothing in it is
a dataset. The next `vpf export` into this folder, or `catalog.export.clean_partial`, removes it.
"""

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export that cannot be made as asked: an option this catalog cannot serve (an unknown ``since``, a
    ``balance`` column the rows lack; the message names the option), or an output folder that holds something else
    (the message names the folder and what is there). Options that are wrong whatever the catalog are refused by
    ``ExportConfig``'s validation (``pydantic.ValidationError``) before any export starts."""


def owned_files(manifest: Mapping[str, Any]) -> tuple[set[str], tuple[str, ...]]:
    """The files (paths relative to the folder) the export of ``manifest`` wrote, and the folders wholly its own:
    its data files, media copies, ``README.md`` and ``manifest.json``. A manifest that lists no ``media`` (written
    before they were listed) owns ``media/``."""
    files = {f["path"] for f in manifest.get("files", [])} | {CARD, MANIFEST}
    if "media" in manifest:
        return files | set(manifest["media"]), ()
    return files, ("media/",)


def read_manifest(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, Any] | None:
    """The manifest of the export in ``root``; None when there is none (or it does not parse)."""
    try:
        manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
    except (FileNotFoundError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "export_id" in manifest else None


def _files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """Every file under ``root``, relative to it (none when ``root`` does not exist)."""
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return []
    return sorted(p[len(root) + 1 :] for p in fs.find(root) if p.startswith(root + "/"))


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", … ({len(names)} files)" if len(names) > n else "")


def _prune(root: str, keep_root: bool) -> None:
    """Remove the empty folders under local ``root`` (and ``root`` itself unless ``keep_root``)."""
    if not os.path.isdir(root):
        return
    for folder, _, _ in os.walk(root, topdown=False):
        if folder != root or not keep_root:
            with contextlib.suppress(OSError):  # not empty (or gone): it stays
                os.rmdir(folder)


def _remove(fs: fsspec.AbstractFileSystem, root: str, relative: Iterable[str], dry_run: bool = False) -> list[str]:
    removed = []
    for name in relative:
        path = f"{root}/{name}"
        try:
            if not dry_run:
                fs.rm_file(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _remove_export(
    fs: fsspec.AbstractFileSystem,
    root: str,
    manifest: Mapping[str, Any],
    *,
    manifest_first: bool,
    keep: Iterable[str] = (),
    dry_run: bool = False,
) -> list[str]:
    """Delete the files of the export ``manifest`` describes from ``root`` (only those). ``manifest_first``: the
    folder stops being an export at once; else the manifest goes last, so an interrupted removal can go on."""
    files, dirs = owned_files(manifest)
    kept = set(keep)
    doomed = [f for f in _files(fs, root) if (f in files or f.startswith(dirs)) and f not in kept and f != MANIFEST]
    order = [MANIFEST, *doomed] if manifest_first else [*doomed, MANIFEST]
    return _remove(fs, root, [f for f in order if f not in kept], dry_run)


def _clean_in_place(fs: fsspec.AbstractFileSystem, root: str, dry_run: bool = False) -> list[str]:
    """Remove what an in-place export that never finished left in ``root`` (see ``ExportFolder``) and any
    temporary file of an interrupted write; a finished export stays."""
    present = _files(fs, root)
    doomed = [p for p in present if p.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
    if MARKER in present:
        try:
            marker = json.loads(fs.cat_file(f"{root}/{MARKER}"))
        except ValueError:  # cut short while written: nothing was written after it
            marker = {}
        manifest = read_manifest(fs, root)
        if not (manifest and manifest["export_id"] == marker.get("export_id")):  # else only the marker was left
            listed = {*marker.get("old_files", []), *marker.get("writing", []), CARD, MANIFEST}
            doomed += [p for p in present if p in listed or p.startswith(OWN_DIRS)]
        doomed.append(MARKER)
    removed = _remove(fs, root, dict.fromkeys(doomed), dry_run)
    if is_local(fs) and not dry_run:
        _prune(root, keep_root=True)
    return removed


def _beside(out: str, kind: str, export_id: str = "") -> str:
    parent, name = os.path.split(out)
    return os.path.join(parent, f".{name}{kind}{export_id}")


def _clean_beside(out: str, dry_run: bool = False) -> list[str]:
    """Remove the staged exports a killed local export left beside ``out``; put back an earlier export it had set
    aside when ``out`` is missing (killed between the two renames), else finish deleting it."""
    parent, name = os.path.split(out)
    try:
        entries = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    done: list[str] = []
    fs = fsspec.filesystem("file")
    for entry in entries:
        path = os.path.join(parent, entry)
        if entry.startswith(f".{name}{STAGING}"):
            done.append(path)
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        elif entry.startswith(f".{name}{ASIDE}"):
            manifest = read_manifest(fs, path)
            if not os.path.lexists(out) and manifest is not None:
                done.append(path)
                if not dry_run:
                    os.rename(path, out)
                continue
            if manifest is not None:
                done += _remove_export(fs, path, manifest, manifest_first=False, dry_run=dry_run)
            if not dry_run:
                _prune(path, keep_root=False)
                if os.path.exists(path):
                    log.warning("export folder %s: %s holds files no export listed; left there", out, path)
    return done


class _Lock:
    """An exclusive ``flock`` on ``path``, created when missing and removed on release; a killed holder frees it."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _stageable(out: str) -> bool:
    """Whether local ``out`` can be staged beside and renamed into place (a writable parent; not a link or a mount
    point)."""
    parent = os.path.dirname(out)
    return (
        os.path.isdir(parent) and os.access(parent, os.W_OK) and not os.path.islink(out) and not os.path.ismount(out)
    )


def clean_partial(
    out_url: str, *, storage_options: Mapping[str, Any] | None = None, dry_run: bool = False
) -> list[str]:
    """Remove what killed exports left in (local: and beside) the export folder ``out_url``: a staged export never
    renamed into place, an earlier export set aside (put back when the folder is missing), the files of an in-place
    export that never wrote its manifest, temporary files. A finished export stays; a local folder an export is
    writing now is left alone. Returns the paths removed or put back (with ``dry_run``: that would be)."""
    fs, out = fsspec.core.url_to_fs(out_url, **dict(storage_options or {}))
    out = out.rstrip("/")
    if not is_local(fs):
        return _clean_in_place(fs, out, dry_run)
    if not _stageable(out):  # never staged beside: only what an in-place export left
        return _clean_in_place(fs, out, dry_run) if os.path.isdir(out) else []
    lock = _Lock(_beside(out, LOCK))
    if not lock.acquire():
        return []
    try:
        return _clean_beside(out, dry_run) + (_clean_in_place(fs, out, dry_run) if os.path.isdir(out) else [])
    finally:
        lock.release()


class ExportFolder:
    """Where one export writes (``root``) and how it becomes the folder's export (see module): ``open`` (checks
    the folder, raises ``ExportError``), ``opening`` before each data file, then ``finish`` or ``abort``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, out: str, *, url: str, export_id: str, overwrite: bool):
        self.fs, self.out, self.url, self.export_id, self.overwrite = fs, out, url, export_id, overwrite
        self.staged = False
        self.root = out
        self.previous: dict[str, Any] | None = None
        self._lock: _Lock | None = None
        self._marker: dict[str, Any] | None = None

    # ------------------------------------------------------------------ open
    def open(self) -> None:
        """Take the folder: clean what killed exports left, refuse a folder that holds anything but an earlier
        export (and that one too without ``overwrite``), then prepare ``root``."""
        if self.fs.isfile(self.out):
            raise ExportError(f"export folder {self.url} is a file")
        if is_local(self.fs):
            os.makedirs(os.path.dirname(self.out), exist_ok=True)
            self.staged = _stageable(self.out)
        if self.staged:
            self._lock = _Lock(_beside(self.out, LOCK))
            if not self._lock.acquire():
                self._lock = None
                raise ExportError(f"another export is writing into {self.url} now; wait for it to finish")
        try:
            if self.staged:
                _clean_beside(self.out)
            if self.fs.isdir(self.out):
                _clean_in_place(self.fs, self.out)
            self.previous = self._check()
            if self.staged:
                self.root = _beside(self.out, STAGING, self.export_id)
                os.makedirs(self.root)
            else:
                self._begin_in_place()
        except BaseException:
            self._release()
            raise

    def _check(self) -> dict[str, Any] | None:
        files = _files(self.fs, self.out)
        if not files:
            return None
        manifest = read_manifest(self.fs, self.out)
        if manifest is None:
            raise ExportError(
                f"export folder {self.url} is not empty and holds no finished export (no {MANIFEST}): {_few(files)}; "
                "export into an empty or new folder, or remove those files"
            )
        owned, dirs = owned_files(manifest)
        foreign = [f for f in files if f not in owned and not f.startswith(dirs)]
        if foreign:
            raise ExportError(
                f"export folder {self.url} holds export {manifest['export_id']} and files it did not write: "
                f"{_few(foreign)}; export into an empty or new folder, or remove those files"
            )
        if not self.overwrite:
            raise ExportError(
                f"export folder {self.url} already holds export {manifest['export_id']} ({_few(files)}); "
                "replace it with overwrite (vpf export --overwrite), or export into another folder"
            )
        return manifest

    def _begin_in_place(self) -> None:
        self.fs.makedirs(self.out, exist_ok=True)
        self._marker = {
            "export_id": self.export_id,
            "started_at": datetime.now(timezone.utc).isoformat(),
            "replacing": self.previous["export_id"] if self.previous else None,
            "old_files": _files(self.fs, self.out),
            "writing": [],
        }
        self._write_marker()
        write_atomic(self.fs, f"{self.out}/{CARD}", STUB_CARD.encode())
        if self.previous is not None:
            _remove_export(self.fs, self.out, self.previous, manifest_first=True, keep=[CARD])

    def _write_marker(self) -> None:
        write_atomic(self.fs, f"{self.out}/{MARKER}", json.dumps(self._marker).encode())

    # ------------------------------------------------------------------ write
    def opening(self, relative: str) -> None:
        """Say that the data file ``relative`` (to the folder) is about to be written (in place: noted in the
        marker first, so a killed export's file can be found)."""
        if self._marker is not None:
            self._marker["writing"].append(relative)
            self._write_marker()

    def finish(self, card: bytes, manifest: bytes) -> None:
        """Write the card, then the manifest, and make the export the folder's (local: the renames; in place: the
        marker goes); the earlier export's files are deleted."""
        write_atomic(self.fs, f"{self.root}/{CARD}", card)
        write_atomic(self.fs, f"{self.root}/{MANIFEST}", manifest)
        if not self.staged:
            self.fs.rm_file(f"{self.out}/{MARKER}")
            self._marker = None
            self._release()
            return
        aside = _beside(self.out, ASIDE, self.export_id)
        if self.previous is not None:
            os.rename(self.out, aside)
        else:
            _prune(self.out, keep_root=False)  # an empty folder (or tree of them) gives way
        try:
            os.rename(self.root, self.out)
        except BaseException:
            if self.previous is not None and not os.path.lexists(self.out):
                os.rename(aside, self.out)
            raise
        _fsync_folder(os.path.dirname(self.out))
        if self.previous is not None:  # the new export is in place: a failure here leaves the old one aside, not lost
            try:
                fs = fsspec.filesystem("file")
                _remove_export(fs, aside, self.previous, manifest_first=False)
                _prune(aside, keep_root=False)
            except OSError as exc:
                log.warning("export folder %s: could not delete the replaced export in %s: %s", self.url, aside, exc)
            if os.path.exists(aside):
                log.warning("export folder %s: %s holds files the replaced export did not list; left", self.url, aside)
        self._release()

    def abort(self) -> None:
        """Undo an export that failed: its files go (an earlier export it was replacing in place is gone too)."""
        try:
            if self.staged:
                shutil.rmtree(self.root, ignore_errors=True)
            elif self._marker is not None:
                _clean_in_place(self.fs, self.out)
                self._marker = None
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _fsync_folder(path: str) -> None:
    """Make a rename in local folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
