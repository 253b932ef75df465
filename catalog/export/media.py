"""Media for exports: masks as trainers read them (an mp4, white = the edited region, or a uint8 ``.npy``), and
atomic file writes on any fsspec filesystem."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import fsspec
import numpy as np

from catalog.export.config import MaskFormat
from catalog.gallery.media import mask_array


if TYPE_CHECKING:
    from catalog.store import Catalog

MASK_FPS_DEFAULT = 8.0
TMP_PREFIX = ".tmp-"  # what open_atomic names a file it has not finished


def mask_mp4_bytes(masks: np.ndarray, fps: float) -> bytes:
    """``masks`` (`(num_frames, height, width)` bool) as a lossless H.264 mp4 (yuv420p, ``qp=0``): 255 where True,
    0 elsewhere, so any video reader gets the mask back exactly by thresholding at 128. Odd sides get one black
    row/column (H.264 needs even sides)."""
    num_frames, height, width = masks.shape
    frames = np.zeros((num_frames, height + height % 2, width + width % 2, 3), dtype=np.uint8)
    frames[:, :height, :width, :] = masks[..., None].astype(np.uint8) * 255
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"qp": "0"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def mask_npy_bytes(masks: np.ndarray) -> bytes:
    """``masks`` as a ``.npy`` uint8 `(num_frames, height, width)` array, 1 = the edited region."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(masks, dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def decode_video(data: bytes) -> np.ndarray:
    """An mp4's frames as `(num_frames, height, width, 3)` uint8 RGB."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


class MaskCache:
    """Encoded masks of the last few mask files (the ``remove`` and ``add`` pairs of a render share one)."""

    def __init__(self, catalog: Catalog, size: int = 8):
        self.catalog = catalog
        self.size = size
        self._items: OrderedDict[tuple[str, str, float], bytes] = OrderedDict()

    def get(self, uri: str, fmt: MaskFormat, fps: float | None) -> bytes:
        key = (uri, fmt, float(fps or MASK_FPS_DEFAULT))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        masks = mask_array(self.catalog.read_media(uri), uri)
        data = mask_mp4_bytes(masks, key[2]) if fmt == "mp4" else mask_npy_bytes(masks)
        self._items[key] = data
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return data


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


@contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[Any]:
    """Write ``path`` so that it appears complete or not at all (local: temp name + rename; object stores: the
    upload completes on close, and is discarded when the block raises)."""
    if not is_local(fs):
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            if hasattr(f, "discard"):  # fsspec's buffered files: abort the upload, and never commit it on close
                f.discard()
                f.closed = True
            else:
                f.close()
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
            raise
        f.close()
        return
    parent = path.rsplit("/", 1)[0]
    os.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with ``open_atomic``."""
    with open_atomic(fs, path) as f:
        f.write(data)
