"""The gallery's media: copy (or link) the pairs' files into the site, and make masks playable.

Catalog media keep their catalog-relative path inside the site (``media/<aa>/<sha256>.<ext>``), so a pair's source
clip shared by its ``remove`` and ``add`` pairs is copied once, and rebuilding a gallery only copies what is new.
Masks stored as arrays (``.npz`` holding a ``(num_frames, height, width)`` bool array) are encoded once as H.264
(white = the edited region) under ``media/masks/``.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import av
import numpy as np

from catalog.gallery.errors import GalleryError


if TYPE_CHECKING:
    from catalog.store import Catalog


log = logging.getLogger(__name__)

MediaMode = Literal["copy", "link", "none"]
MEDIA_MODES = ("copy", "link", "none")
MASK_FPS_DEFAULT = 8.0
COPY_THREADS = 8


def _is_catalog_relative(uri: str) -> bool:
    path = PurePosixPath(uri)
    return bool(uri) and "://" not in uri and not path.is_absolute() and ".." not in path.parts


def mask_array(data: bytes, uri: str) -> np.ndarray:
    """The ``(num_frames, height, width)`` bool mask stored in an ``.npz`` file.

    Reads the factory's bit-packed layout (``packed`` + ``shape``, written by ``tasks.masks.encode_masks_npz``), a
    ``masks`` array, or a file holding a single array. Raises ``ValueError`` naming ``uri`` otherwise.
    """
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{uri}: not a readable npz file ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{uri}: holds a single .npy array, not an npz archive")
    with npz:
        keys = sorted(npz.files)
        if {"packed", "shape"} <= set(keys):
            shape = tuple(int(v) for v in npz["shape"])
            masks = np.unpackbits(npz["packed"], count=int(np.prod(shape))).reshape(shape)
        elif "masks" in keys:
            masks = npz["masks"]
        elif len(keys) == 1:
            masks = npz[keys[0]]
        else:
            raise ValueError(f"{uri}: mask npz holds {keys}; expected 'packed' + 'shape', 'masks' or one array")
    if masks.ndim != 3:
        raise ValueError(f"{uri}: mask array has shape {masks.shape}; expected (num_frames, height, width)")
    return masks.astype(bool)


def encode_mask_mp4(masks: np.ndarray, path: Path, fps: float) -> None:
    """Write ``masks`` (`(num_frames, height, width)` bool) as an H.264 mp4, white where True.

    H.264 in yuv420p needs even sides: odd heights/widths get one black row/column.
    """
    num_frames, height, width = masks.shape
    frames = np.zeros((num_frames, height + height % 2, width + width % 2, 3), dtype=np.uint8)
    frames[:, :height, :width, :] = masks[..., None].astype(np.uint8) * 255
    tmp = path.with_name(f".tmp-{path.name}")
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


class MediaPlan:
    """Collects the media a site needs while its rows are read, then materialises them in one pass."""

    def __init__(self, catalog: Catalog | None, out: Path, mode: MediaMode):
        if mode not in MEDIA_MODES:
            raise GalleryError(f"media mode {mode!r} is not one of {MEDIA_MODES}")
        if mode == "link" and catalog is not None and not catalog.is_local:
            raise GalleryError(f"media='link' needs a local catalog; {catalog.url!r} is remote: use media='copy'")
        self.catalog = catalog
        self.out = out
        self.mode = mode
        self.copies: dict[str, str] = {}  # site-relative path -> catalog uri
        self.masks: dict[str, tuple[str, float]] = {}  # site-relative path -> (catalog uri, fps)
        self.missing: set[str] = set()

    def video(self, uri: str | None) -> tuple[str | None, str | None]:
        """(key, site-relative path) of a file copied as is; (None, None) when there is none to show."""
        if not uri or self.mode == "none":
            return None, None
        if not _is_catalog_relative(uri):
            log.warning("gallery: %r is not a catalog-relative media path; not shown", uri)
            self.missing.add(uri)
            return uri, None
        self.copies[uri] = uri
        return uri, uri

    def mask(self, uri: str | None, *, fps: float | None) -> tuple[str | None, str | None]:
        """Like ``video``; ``.npz`` masks are planned for encoding as ``media/masks/<stem>.mp4``."""
        if not uri or self.mode == "none" or not uri.endswith(".npz"):
            return self.video(uri)
        if not _is_catalog_relative(uri):
            return self.video(uri)
        site = f"media/masks/{PurePosixPath(uri).stem}.mp4"
        self.masks[site] = (uri, float(fps) if fps else MASK_FPS_DEFAULT)
        return uri, site

    def materialise(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Copy/link/encode everything planned that the site lacks; returns how many files the site's media holds.

        Files a pair names but the catalog lacks are added to ``missing`` (the pair is still shown). ``progress``
        is called with ``(files done, files to do)`` as they finish.
        """
        if self.mode == "none":
            return 0
        jobs: list[Callable[[], None]] = []
        for site, uri in self.copies.items():
            target = self.out / site
            if target.exists() or target.is_symlink():
                continue
            jobs.append(lambda uri=uri, target=target: self._copy(uri, target))
        for site, (uri, fps) in self.masks.items():
            target = self.out / site
            if target.exists():
                continue
            jobs.append(lambda uri=uri, target=target, fps=fps: self._encode_mask(uri, target, fps))
        with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
            for done, _ in enumerate(pool.map(lambda job: job(), jobs), start=1):
                if progress:
                    progress(done, len(jobs))
        return sum(1 for site in [*self.copies, *self.masks] if (self.out / site).exists())

    def _copy(self, uri: str, target: Path) -> None:
        assert self.catalog is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        source = self.catalog.path(uri)
        if self.mode == "link":
            if not os.path.exists(source):
                self.missing.add(uri)
                return
            os.symlink(os.path.abspath(source), target)
            return
        tmp = target.with_name(f".tmp-{target.name}")
        try:
            self.catalog.fs.get_file(source, str(tmp))
        except FileNotFoundError:
            self.missing.add(uri)
            tmp.unlink(missing_ok=True)
            return
        os.replace(tmp, target)

    def _encode_mask(self, uri: str, target: Path, fps: float) -> None:
        assert self.catalog is not None
        try:
            data = self.catalog.read_media(uri)
            masks = mask_array(data, uri)
        except FileNotFoundError:
            self.missing.add(uri)
            return
        except ValueError as exc:  # an unreadable mask is one pair's problem, not the gallery's
            log.warning("gallery: %s", exc)
            self.missing.add(uri)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        encode_mask_mp4(masks, target, fps)
