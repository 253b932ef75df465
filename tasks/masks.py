"""Object masks: codecs, loading provided masks, resampling to a clip, dilation and QA.

Masks are ``(num_frames, height, width)`` bool arrays, True = the region to edit, stored in the catalog as a
packed, compressed ``.npz`` (:func:`encode_masks_npz` / :func:`decode_masks_npz`). Provided masks (a source item's
``mask_uri``) are VPData-style ``.npz`` label maps, folders of PNGs or COCO-RLE ``.json`` files, indexed by the
source video's frame and in its displayed orientation (:func:`load_mask_frames`); a mask in the coded orientation of
a rotated video is rotated like the video, any other size is refused (``mask_shape_mismatch``). Loaders are bounded
by construction: declared sizes are checked against the video (:class:`MaskBounds`) before anything is allocated,
only the requested frames are decoded, and every file is checked against the allowed roots when it is opened.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

import cv2
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from tasks.errors import InputError
from tasks.sources import resolve_within_roots
from tasks.types import VideoInfo
from tasks.video_io import fit_frame


# --------------------------------------------------------------------------------------------------------- codecs
def encode_masks_npz(masks: np.ndarray) -> bytes:
    """``masks`` ``(T, H, W)`` bool → compressed npz bytes (bit-packed).

    The bytes depend only on the mask (fixed zip timestamps), so their sha256 can name the object and the media.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {masks.shape}")
    arrays = {
        "packed": np.packbits(masks.astype(bool).reshape(-1)),
        "shape": np.asarray(masks.shape, dtype=np.int64),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def decode_masks_npz(data: bytes) -> np.ndarray:
    """npz bytes written by :func:`encode_masks_npz` → ``(T, H, W)`` bool."""
    with np.load(io.BytesIO(data)) as npz:
        if "packed" not in npz or "shape" not in npz:
            raise ValueError(f"not a vpf mask npz: keys {sorted(npz.files)}, expected 'packed' and 'shape'")
        shape = tuple(int(v) for v in npz["shape"])
        count = int(np.prod(shape))
        return np.unpackbits(npz["packed"], count=count).astype(bool).reshape(shape)


def encode_masks_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """``masks`` ``(T, H, W)`` bool → one COCO RLE per frame (``counts`` as str, JSON-serialisable)."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_masks_rle(rles: Sequence[Mapping[str, Any] | None], uri: str = "<rle>") -> np.ndarray:
    """One COCO RLE (or ``None`` for an empty frame) per frame → ``(T, H, W)`` bool (one common size; refused over
    :data:`MAX_MASK_BYTES` before anything is decoded)."""
    return _collect(_RleFrames(rles, uri, None), None)


def default_dilation_radius(width: int) -> int:
    """The inpainting masks' dilation radius: 16 px at 720 px wide (a 33 px kernel, VideoPainter's inpainting
    dilation), in proportion at other widths, at least 1 (docs/method.md)."""
    return max(1, round(width * 16 / 720))


def dilate_masks(masks: np.ndarray, radius: int) -> np.ndarray:
    """Grow each frame of ``masks`` ``(T, H, W)`` bool by ``radius`` pixels on every side: cv2.dilate with an all-ones
    square kernel of side ``2 * radius + 1``. ``radius <= 0`` returns a copy."""
    masks = np.asarray(masks, dtype=bool)
    if radius <= 0:
        return masks.copy()
    kernel = np.ones((2 * int(radius) + 1, 2 * int(radius) + 1), np.uint8)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in masks]) if len(masks) else masks


# --------------------------------------------------------------------------------------------------------- bounds
MAX_MASK_BYTES = 8 << 30
"""The most bytes one mask load allocates for its frames, whatever the video (8 GiB holds a 2000-frame 1080p uint16
label map); a load needing more is refused (``mask_too_large``) before anything is allocated."""

MAX_UNBOUNDED_FILE_BYTES = 256 << 20
"""The largest RLE ``.json`` or PNG file read for a mask loaded without :class:`MaskBounds` (with bounds the limit
follows the video's size)."""

MAX_NPZ_MEMBERS = 16
"""The most members an ``.npz`` mask archive may list (its directory is checked before it is parsed)."""

MAX_NPZ_DIRECTORY_BYTES = 1 << 20
"""The largest central directory of an ``.npz`` mask archive parsed (bytes its end record declares)."""

_MASK_DTYPE_KINDS = "biu"  # bool, signed and unsigned integers
_SLACK_BYTES = 1 << 20  # headers and chunks around a file's pixel data


@dataclass(frozen=True)
class MaskBounds:
    """The largest provided mask a video admits: at most ``num_frames`` frames of ``height`` × ``width`` pixels (its
    displayed size), or ``width`` × ``height`` (its coded orientation) when ``rotation`` is 90 or 270.

    Loaders check a file's declared frame count and size against it before they allocate: a frame larger than the
    video's (more pixels) is refused with ``mask_too_large``, another size with ``mask_shape_mismatch``, more frames
    than the video with ``mask_too_long``. A load then holds at most the requested frames (one clip's, for
    :class:`tasks.segment.ProvidedSegmenter`) × ``height`` × ``width`` × the file's label size (≤ 8 bytes), and
    reads files no larger than the video's mask could need (:meth:`file_budget`).
    """

    num_frames: int
    height: int
    width: int
    rotation: int = 0

    @classmethod
    def of_video(cls, video: VideoInfo) -> MaskBounds:
        """The bounds of the probed ``video``."""
        return cls(int(video.num_frames), int(video.height), int(video.width), int(video.rotation))

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """The accepted ``(height, width)`` of a mask frame."""
        shown = (self.height, self.width)
        return (shown, (self.width, self.height)) if self.rotation in (90, 270) else (shown,)

    def check(self, uri: str, num_frames: int | None, height: int, width: int) -> None:
        """Raise ``InputError`` unless a mask of ``num_frames`` frames (``None``: not known yet) of ``height`` ×
        ``width`` fits the video: ``mask_too_large``, ``mask_shape_mismatch``, ``mask_too_long`` (in that order)."""
        if (height, width) not in self.sizes:
            video = f"the video is {self.width}x{self.height}"
            if height * width > self.height * self.width:
                raise InputError(uri, "mask_too_large", f"mask frames are {width}x{height}, larger than {video[4:]}")
            raise InputError(uri, "mask_shape_mismatch", f"mask frames are {width}x{height} but {video}")
        if num_frames is not None and num_frames > self.num_frames:
            raise InputError(
                uri, "mask_too_long", f"the mask has {num_frames} frames but the video has {self.num_frames}"
            )

    def file_budget(self, bytes_per_pixel: int) -> int:
        """The largest file read for a mask of this video storing ``bytes_per_pixel`` bytes per pixel of every
        frame at most (headers included)."""
        return self.num_frames * self.height * self.width * bytes_per_pixel + _SLACK_BYTES


def _check_allocation(uri: str, num_frames: int, height: int, width: int, itemsize: int) -> None:
    nbytes = num_frames * height * width * itemsize
    if nbytes > MAX_MASK_BYTES:
        raise InputError(
            uri, "mask_too_large", f"{num_frames} frames of {width}x{height} ({nbytes} bytes) exceed {MAX_MASK_BYTES}"
        )


# --------------------------------------------------------------------------------------------------------- frames
class _Frames(Protocol):
    """A mask file opened for reading frame by frame (its header checked): ``num_frames`` frames of ``height`` ×
    ``width`` of ``dtype``; :meth:`read` yields ``(index, (height, width) array)`` for increasing indices."""

    uri: str
    num_frames: int
    height: int
    width: int
    dtype: np.dtype

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]: ...


def _collect(frames: _Frames, indices: Sequence[int] | None) -> np.ndarray:
    """The frames ``indices`` (all by default) → ``(len(indices), height, width)``, allocated once and filled frame
    by frame. Raises ``mask_frames_mismatch`` for an index past the last frame, ``mask_too_large`` over
    :data:`MAX_MASK_BYTES`."""
    wanted = list(range(frames.num_frames) if indices is None else indices)
    if wanted and max(wanted) >= frames.num_frames:
        raise InputError(
            frames.uri,
            "mask_frames_mismatch",
            f"the clip needs mask frame {max(wanted)} but the mask has {frames.num_frames} frames",
        )
    if wanted and min(wanted) < 0:
        raise ValueError(f"{frames.uri}: frame indices must be >= 0, got {min(wanted)}")
    order = sorted(set(wanted))
    _check_allocation(frames.uri, len(order), frames.height, frames.width, frames.dtype.itemsize)
    out = np.empty((len(order), frames.height, frames.width), frames.dtype)
    for position, (index, frame) in enumerate(frames.read(order)):
        if frame.dtype != out.dtype:  # a PNG of more bits than the first: widen once
            out = out.astype(np.result_type(out.dtype, frame.dtype))
        out[position] = frame
    return out if order == wanted else out[np.searchsorted(order, wanted)]


def _open_error(uri: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(uri, "not_found", "mask file not found")
    return InputError(uri, "unreadable", f"mask file cannot be read ({exc.strerror or exc})")


def _open_checked(fs: Any, path: str, uri: str, roots: Sequence[str] | None) -> IO[bytes]:
    """Open ``path`` of ``fs`` (``uri`` names it in URL form) after checking it against ``roots`` now: a local path
    is opened at its real path (symlinks resolved), a remote one by its URL's prefix."""
    try:
        if isinstance(fs, LocalFileSystem):
            return open(resolve_within_roots(path, roots), "rb")  # noqa: SIM115 (the caller closes it)
        resolve_within_roots(uri, roots)
        return fs.open(path, "rb")
    except OSError as exc:
        raise _open_error(uri, exc) from None


def _read_capped(f: IO[bytes], uri: str, limit: int, what: str) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(uri, "mask_too_large", f"{what} is larger than the {limit} bytes a mask of its video needs")
    return data


# --------------------------------------------------------------------------------------------------------- npz
def _npz_member(archive: zipfile.ZipFile, uri: str) -> tuple[str, dict[str, str]]:
    """The member holding the mask: ``(member name, kind)``; kind ``packed`` (a vpf mask npz) or ``labels``."""
    names = {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
    if "packed" in names and "shape" in names:
        return "packed", names
    key = "arr_0" if "arr_0" in names else (next(iter(names)) if len(names) == 1 else None)
    if key is None:
        message = f"npz has arrays {sorted(names)}; expected 'arr_0' (a VPData label map)"
        raise InputError(uri, "bad_mask", message)
    return key, names


def _check_zip_directory(f: IO[bytes], uri: str) -> None:
    """Refuse an archive whose end records declare more than :data:`MAX_NPZ_MEMBERS` members or a central directory
    over :data:`MAX_NPZ_DIRECTORY_BYTES`, before ``zipfile`` parses that directory into memory."""
    f.seek(0, io.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - (22 + 0xFFFF)))
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # not a zip archive: zipfile says so
    members, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":  # ZIP64: the sizes are in the ZIP64 end record
        (offset,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        f.seek(offset)
        record = f.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            members, directory = struct.unpack("<QQ", record[32:48])
    if members > MAX_NPZ_MEMBERS or directory > MAX_NPZ_DIRECTORY_BYTES:
        raise InputError(
            uri, "bad_mask", f"npz lists {members} members in {directory} bytes; a mask npz holds a few arrays"
        )
    f.seek(0)


def _npy_header(f: IO[bytes], member: str, uri: str, ndim: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a ``.npy`` member's header, leaving ``f`` at its data: ``(shape, fortran_order, dtype)``, checked: a
    bool/integer dtype (never objects, so nothing is ever unpickled), ``ndim`` non-negative dimensions."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # NumPy parses the header's Python literal: any parser error can surface
        raise InputError(uri, "bad_mask", f"{member} is not a readable .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in _MASK_DTYPE_KINDS:
        raise InputError(uri, "bad_mask", f"{member} has dtype {dtype}; masks must be bool or integer labels")
    if len(shape) != ndim:
        raise InputError(uri, "bad_mask", f"{member} must have {ndim} dimension(s), got shape {shape}")
    if any(int(v) < 0 for v in shape):
        raise InputError(uri, "bad_mask", f"{member} declares a negative dimension {shape}")
    return tuple(int(v) for v in shape), bool(fortran), dtype


class _NpzFrames:
    """The frames of an ``.npz`` mask: a VPData integer label map ``(F, H, W)`` (key ``arr_0``, else the only array)
    or a vpf bit-packed bool mask (``packed`` + ``shape``), decompressed as a stream: frames before a wanted one are
    skipped, only the wanted ones are held."""

    def __init__(self, archive: zipfile.ZipFile, uri: str, bounds: MaskBounds | None):
        self.archive, self.uri = archive, uri
        key, names = _npz_member(archive, uri)
        self.packed = key == "packed"
        if self.packed:
            with archive.open(names["shape"]) as f:
                _, _, dtype = _npy_header(f, names["shape"], uri, ndim=1)
                raw = f.read(3 * dtype.itemsize + 1)
            shape = np.frombuffer(raw[: 3 * dtype.itemsize], dtype) if len(raw) == 3 * dtype.itemsize else None
            if shape is None or dtype.kind not in "iu" or (shape < 0).any():
                shown = None if shape is None else shape.tolist()
                raise InputError(uri, "bad_mask", f"'shape' must be 3 non-negative integers, got {shown}")
            self.shape = tuple(int(v) for v in shape)
            self.member = names["packed"]
            with archive.open(self.member) as f:
                (length,), _, packed_dtype = _npy_header(f, self.member, uri, ndim=1)
                self.offset = f.tell()
            count = int(np.prod(self.shape, dtype=object))
            if packed_dtype != np.uint8 or length * 8 < count:
                raise InputError(
                    uri, "bad_mask", f"'packed' holds {length * 8} bits of {packed_dtype}, shape needs {count}"
                )
            self.dtype, self.fortran = np.dtype(bool), False
        else:
            self.member = names[key]
            with archive.open(self.member) as f:
                self.shape, self.fortran, self.dtype = _npy_header(f, self.member, uri, ndim=3)
                self.offset = f.tell()
        self.num_frames, self.height, self.width = self.shape
        if bounds is not None:
            bounds.check(uri, self.num_frames, self.height, self.width)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        pixels = self.height * self.width
        with self.archive.open(self.member) as f:
            f.seek(self.offset)
            if self.fortran:  # frames are not contiguous: the whole map, bounded like any load
                _check_allocation(self.uri, self.num_frames, self.height, self.width, self.dtype.itemsize)
                size = self.num_frames * pixels * self.dtype.itemsize
                labels = np.frombuffer(self._full(f.read(size), size), self.dtype).reshape(self.shape, order="F")
                yield from ((i, labels[i]) for i in indices)
                return
            if self.packed:
                yield from self._read_packed(f, indices)
                return
            size = pixels * self.dtype.itemsize
            for index in indices:
                f.seek(self.offset + index * size)  # forward: decompresses and drops what lies between
                data = self._full(f.read(size), size)
                frame = np.frombuffer(data, np.uint8 if self.dtype == bool else self.dtype)
                frame = frame.reshape(self.height, self.width)
                yield index, (frame != 0 if self.dtype == bool else frame)

    def _read_packed(self, f: IO[bytes], indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        pixels = self.height * self.width
        position, last = 0, b""  # the next byte to read, and the byte before it (frames may share one)
        for index in indices:
            low, high = index * pixels // 8, -(-(index + 1) * pixels // 8)
            if low >= position:
                f.seek(self.offset + low)
                data = f.read(high - low)
            else:  # low == position - 1: this frame starts in the last byte read
                data = last + f.read(high - position)
            data = self._full(data, high - low)
            position, last = high, data[-1:]
            bits = np.unpackbits(np.frombuffer(data, np.uint8))
            start = index * pixels - low * 8
            yield index, bits[start : start + pixels].reshape(self.height, self.width).astype(bool)

    def _full(self, data: bytes, size: int) -> bytes:
        if len(data) < size:
            raise InputError(self.uri, "bad_mask", f"{self.member} is truncated: its data ends early")
        return data


_NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, KeyError, EOFError,
               OSError, ValueError, zlib.error, struct.error)  # fmt: skip
"""What a damaged archive raises from ``zipfile`` (bad CRC, unsupported compression, encryption, a missing entry, a
broken deflate stream) or from the arrays' bytes."""


@contextmanager
def _npz_frames(f: IO[bytes], uri: str, bounds: MaskBounds | None) -> Iterator[_NpzFrames]:
    """The frames of the ``.npz`` file object ``f``; every error of a damaged archive, also while its frames are
    read in the ``with`` block, becomes ``bad_mask``."""
    try:
        _check_zip_directory(f, uri)
        with zipfile.ZipFile(f) as archive:
            yield _NpzFrames(archive, uri, bounds)
    except InputError:
        raise
    except _NPZ_ERRORS as exc:
        raise InputError(uri, "bad_mask", f"not a readable npz archive ({type(exc).__name__}: {exc})") from None


def read_npz_masks(data: bytes | Any, uri: str, *, max_bytes: int | None = None) -> np.ndarray:
    """An ``.npz`` mask file (bytes or a binary file object) → its whole array: a VPData integer label map
    ``(F, H, W)`` (key ``arr_0``, else the only array) or a vpf bit-packed bool mask (``packed`` + ``shape``).

    Raises ``InputError`` (``bad_mask``, ``mask_too_large``) for anything else: random bytes, a file that is not a zip
    archive, wrong or missing members, pickled objects (never unpickled), other dtypes or dimensions, sizes over
    ``max_bytes`` (default :data:`MAX_MASK_BYTES`; checked on the header, before anything is allocated), truncated
    data."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with _npz_frames(f, uri, None) as frames:
        nbytes = frames.num_frames * frames.height * frames.width * frames.dtype.itemsize
        limit = MAX_MASK_BYTES if max_bytes is None else max_bytes
        if nbytes > limit:
            raise InputError(uri, "mask_too_large", f"declared shape {frames.shape} ({nbytes} bytes) exceeds {limit}")
        return _collect(frames, None)


# --------------------------------------------------------------------------------------------------------- PNG
def _png_names(fs: Any, path: str, uri: str, bounds: MaskBounds | None) -> list[str]:
    """The ``.png`` files of a mask folder, sorted (frame ``i`` is the ``i``-th); a local folder is listed only up
    to one PNG more than the video has frames (``mask_too_long``)."""
    limit = bounds.num_frames if bounds is not None else None
    if isinstance(fs, LocalFileSystem):
        names: list[str] = []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png"):
                    names.append(entry.path)
                    if limit is not None and len(names) > limit:
                        raise InputError(
                            uri, "mask_too_long", f"the mask folder holds more than {limit} PNGs, the video's frames"
                        )
    else:
        names = [p for p in fs.ls(path, detail=False) if p.lower().endswith(".png")]
        if limit is not None and len(names) > limit:
            raise InputError(uri, "mask_too_long", f"the mask folder holds {len(names)} PNGs; the video has {limit}")
    if not names:
        raise InputError(uri, "not_found", "mask folder holds no .png files")
    return sorted(names)


class _PngFrames:
    """The frames of a folder of PNGs (8/16-bit labels; the first channel of colour images): each file checked
    against the roots when it is opened, its size read from its header (PIL, nothing decoded) and checked before it
    is read whole and decoded (OpenCV)."""

    def __init__(self, fs: Any, uri: str, names: list[str], roots: Sequence[str] | None, bounds: MaskBounds | None):
        self.fs, self.uri, self.names, self.roots, self.bounds = fs, uri, names, roots, bounds
        self.num_frames = len(names)
        with self._open(0) as f:
            self.height, self.width, self.dtype = self._header(f, names[0])
        if bounds is not None:
            bounds.check(uri, self.num_frames, self.height, self.width)
        # a PNG holds at most 8 bytes a pixel (16-bit RGBA) and a filter byte a row, deflated or stored
        self.limit = self.height * (self.width * 8 + 1) + _SLACK_BYTES
        if bounds is None:
            self.limit = min(self.limit, MAX_UNBOUNDED_FILE_BYTES)

    def _open(self, index: int) -> IO[bytes]:
        name = self.names[index]
        return _open_checked(self.fs, name, f"{self.uri.rstrip('/')}/{posixpath.basename(name)}", self.roots)

    def _header(self, f: IO[bytes], name: str) -> tuple[int, int, np.dtype]:
        """``(height, width, dtype)`` from the PNG header, nothing decoded."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(f, formats=["PNG"]) as image:
                width, height = image.size
                mode = image.mode
        except Image.DecompressionBombError as exc:
            raise InputError(self.uri, "mask_too_large", f"{name}: {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(self.uri, "bad_mask", f"{name} is not a readable PNG ({exc})") from None
        return int(height), int(width), np.dtype(np.uint16 if mode.startswith("I") else np.uint8)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for index in indices:
            name = self.names[index]
            with self._open(index) as f:
                height, width, _ = self._header(f, name)
                if (height, width) != (self.height, self.width):
                    raise InputError(
                        self.uri, "bad_mask", f"mask PNGs have different sizes: {name} is {width}x{height}, "
                        f"the first {self.width}x{self.height}",
                    )  # fmt: skip
                f.seek(0)
                data = _read_capped(f, self.uri, self.limit, name)
            try:  # OpenCV refuses declared sizes over CV_IO_MAX_IMAGE_PIXELS (2^30) itself, with cv2.error
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            except cv2.error as exc:
                raise InputError(self.uri, "bad_mask", f"{name} is not a readable PNG ({str(exc).strip()})") from None
            if image is None:
                raise InputError(self.uri, "bad_mask", f"{name} is not a readable PNG")
            if image.dtype.kind not in "bu" or image.ndim not in (2, 3) or image.shape[:2] != (height, width):
                raise InputError(self.uri, "bad_mask", f"{name}: a mask PNG holds 8/16-bit labels, got {image.dtype}")
            yield index, image if image.ndim == 2 else image[..., 0]


# --------------------------------------------------------------------------------------------------------- RLE
def _rle_size(rle: Any, i: int, uri: str) -> tuple[int, int]:
    size = rle.get("size") if isinstance(rle, Mapping) else None
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        or "counts" not in rle
    ):
        raise InputError(uri, "bad_mask", f"frame {i}: not a COCO RLE (a {{'size': [h, w], 'counts': …}} object)")
    return int(size[0]), int(size[1])


class _RleFrames:
    """The frames of one object's COCO RLEs (``None`` for an empty frame), sizes checked before any is decoded."""

    dtype = np.dtype(bool)

    def __init__(self, rles: Sequence[Mapping[str, Any] | None], uri: str, bounds: MaskBounds | None):
        self.rles, self.uri = rles, uri
        sizes = {_rle_size(rle, i, uri) for i, rle in enumerate(rles) if rle is not None}
        if len(sizes) != 1:
            raise InputError(uri, "bad_mask", f"RLE frames need one common size, got {sorted(sizes) or 'none'}")
        (self.height, self.width), self.num_frames = sizes.pop(), len(rles)
        if bounds is not None:
            bounds.check(uri, self.num_frames, self.height, self.width)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        from pycocotools import mask as mask_utils

        for i in indices:
            rle = self.rles[i]
            if rle is None:
                yield i, np.zeros((self.height, self.width), bool)
                continue
            counts = rle["counts"]
            try:
                if isinstance(counts, list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(dict(rle), self.height, self.width)
                else:
                    rle = {"size": [self.height, self.width],
                           "counts": counts.encode() if isinstance(counts, str) else counts}  # fmt: skip
                with warnings.catch_warnings():  # pycocotools' Cython code trips a NumPy 2 copy=False deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    yield i, mask_utils.decode(rle).astype(bool)
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
                raise InputError(self.uri, "bad_mask", f"frame {i}: not a valid COCO RLE ({exc})") from None


def _rle_object(data: Any, mask_id: int | None, uri: str) -> list:
    """The per-frame RLEs of one object of a parsed RLE file: a list, or ``{id: list}`` picked by ``mask_id``."""
    if isinstance(data, dict):
        if mask_id is None:
            if len(data) != 1:
                raise InputError(uri, "mask_id_absent", f"RLE file holds objects {sorted(data)}; give a mask_id")
            data = next(iter(data.values()))
        elif str(mask_id) not in data:
            raise InputError(uri, "mask_id_absent", f"mask_id {mask_id} not in RLE file (objects: {sorted(data)})")
        else:
            data = data[str(mask_id)]
    if not isinstance(data, list) or not data:
        raise InputError(uri, "bad_mask", "expected a list of per-frame COCO RLEs")
    return data


# --------------------------------------------------------------------------------------------------------- loading
def select_label(labels: np.ndarray, mask_id: int | None, uri: str, frames: Sequence[int] | None = None) -> np.ndarray:
    """One object of a label map ``(F, H, W)`` → ``(F', H, W)`` bool: ``labels == mask_id`` (``!= 0`` without an id),
    on the given ``frames`` only (all by default). A bool array is returned as it is.

    Raises ``mask_id_absent`` when ``mask_id`` occurs nowhere in the map (one pass over the picked frames; the rest
    of the map is searched frame by frame only when they do not hold it).
    """
    picked = labels if frames is None else labels[np.asarray(list(frames), dtype=np.int64)]
    if labels.dtype == bool:
        if mask_id not in (None, 0, 1):
            raise InputError(uri, "mask_id_absent", f"mask_id {mask_id} given but the mask is binary")
        return picked
    if mask_id is None:
        return picked != 0
    selected = picked == mask_id
    if selected.any():
        return selected
    if frames is not None and any(np.any(frame == mask_id) for frame in labels):
        return selected  # present in the map, just not on these frames
    raise _absent(uri, mask_id, np.unique(labels))


def _absent(uri: str, mask_id: int, present: np.ndarray) -> InputError:
    shown = ", ".join(str(int(v)) for v in present[:20]) + (" …" if present.size > 20 else "")
    return InputError(uri, "mask_id_absent", f"mask_id {mask_id} does not occur in the label map (labels: {shown})")


def _require_label(frames: _Frames, mask_id: int) -> None:
    """Raise ``mask_id_absent`` unless ``mask_id`` occurs on some frame: the frames are read one at a time, up to
    the first that holds it."""
    present: set[int] = set()
    for _, frame in frames.read(range(frames.num_frames)):
        if np.any(frame == mask_id):
            return
        present.update(int(v) for v in np.unique(frame))
    raise _absent(frames.uri, mask_id, np.asarray(sorted(present)))


def _kind(uri: str) -> str:
    lower = uri.lower().rstrip("/")
    return "npz" if lower.endswith(".npz") else "json" if lower.endswith(".json") else "png"


@dataclass(frozen=True)
class MaskRequest:
    """Where a provided mask is read from and what it must fit: the allowed ``roots`` (every file opened is checked
    against them when it is opened; ``None``: anywhere), the video's :class:`MaskBounds` (``None``: only
    :data:`MAX_MASK_BYTES`) and the fsspec ``storage_options``."""

    roots: tuple[str, ...] | None = None
    bounds: MaskBounds | None = None
    storage_options: Mapping[str, Any] | None = None


def load_mask_frames(
    uri: str, frames: Sequence[int] | None = None, *, mask_id: int | None = None, request: MaskRequest | None = None
) -> tuple[np.ndarray, int | None]:
    """The native ``frames`` (all by default) of a provided mask → ``(array (len(frames), H, W), id to select)``.

    An ``.npz`` gives its stored labels (integers, or bool for a vpf mask) and ``mask_id`` still to select (see
    :func:`select_label`; :func:`require_label` tells an absent id from one absent on these frames only). A PNG
    folder (``mask_id`` selects a label; without one, images saved as 0/255 are thresholded at 127, others are
    non-zero) and a COCO-RLE ``.json`` (one list of per-frame RLEs, or ``{id: list}``) give bool and ``None``.

    Every file is checked against ``request.roots`` when it is opened, and its declared frames and size against
    ``request.bounds`` before anything is allocated; only the requested frames are decoded and held. Raises
    ``InputError``: ``not_found``, ``unreadable``, ``outside_roots``, ``bad_mask``, ``mask_id_absent``,
    ``mask_too_large``, ``mask_too_long``, ``mask_shape_mismatch``, ``mask_frames_mismatch``.
    """
    uri, request = str(uri), request or MaskRequest()
    options, bounds = dict(request.storage_options or {}), request.bounds
    fs, path = fsspec.core.url_to_fs(uri, **options)
    kind = _kind(uri)
    if kind == "npz":
        with _open_checked(fs, path, uri, request.roots) as f, _npz_frames(f, uri, bounds) as source:
            return _collect(source, frames), mask_id
    if kind == "json":
        limit = bounds.file_budget(1) if bounds is not None else MAX_UNBOUNDED_FILE_BYTES  # RLE: < a byte a pixel
        with _open_checked(fs, path, uri, request.roots) as f:
            text = _read_capped(f, uri, limit, "the RLE file")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InputError(uri, "bad_mask", f"not valid JSON ({exc})") from None
        del text
        return _collect(_RleFrames(_rle_object(data, mask_id, uri), uri, bounds), frames), None
    try:
        resolved = resolve_within_roots(uri, request.roots)
        folder = resolved if isinstance(fs, LocalFileSystem) else path
        if not fs.isdir(folder):
            reason = "not_found" if not fs.exists(folder) else "bad_mask"
            raise InputError(uri, reason, "mask_uri must be an .npz label map, a COCO-RLE .json or a folder of PNGs")
        source = _PngFrames(fs, uri, _png_names(fs, folder, uri, bounds), request.roots, bounds)
        labels = _collect(source, frames)
    except OSError as exc:
        raise _open_error(uri, exc) from None
    if mask_id is None:
        return (labels > 127 if labels.size and labels.max() > 1 else labels != 0), None  # binary images of 0/255
    selected = labels == mask_id
    if not selected.any():
        _require_label(source, mask_id)
    return selected, None


def require_label(uri: str, mask_id: int, *, request: MaskRequest | None = None) -> None:
    """Raise ``mask_id_absent`` unless label ``mask_id`` occurs on some frame of the ``.npz`` label map at ``uri``,
    reading one frame at a time (for an id that :func:`load_mask_frames` found on none of the frames it read)."""
    uri, request = str(uri), request or MaskRequest()
    fs, path = fsspec.core.url_to_fs(uri, **dict(request.storage_options or {}))
    with _open_checked(fs, path, uri, request.roots) as f, _npz_frames(f, uri, request.bounds) as source:
        if source.dtype == bool:
            if mask_id not in (0, 1):
                raise InputError(uri, "mask_id_absent", f"mask_id {mask_id} given but the mask is binary")
            return
        _require_label(source, mask_id)


def load_label_map(uri: str, *, storage_options: Mapping[str, Any] | None = None, bounds: MaskBounds | None = None,
                   roots: Sequence[str] | None = None) -> np.ndarray:  # fmt: skip
    """The whole array of an ``.npz`` mask file as stored: a VPData ``(F, H, W)`` integer label map (key ``arr_0``,
    else the only array) or a vpf bool mask. Select an object with :func:`select_label`. See
    :func:`load_mask_frames` and :func:`read_npz_masks` for the checks."""
    uri = str(uri)
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    with _open_checked(fs, path, uri, roots) as f, _npz_frames(f, uri, bounds) as source:
        return _collect(source, None)


def load_masks(
    uri: str,
    mask_id: int | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    bounds: MaskBounds | None = None,
    roots: Sequence[str] | None = None,
) -> np.ndarray:
    """Load a whole provided mask (``.npz`` label map, ``.json`` COCO RLE or a PNG folder) → ``(F, H, W)`` bool.

    Raises ``InputError``: ``not_found``, ``bad_mask``, ``mask_id_absent`` and those of :func:`load_mask_frames`.
    """
    request = MaskRequest(tuple(roots) if roots else None, bounds, storage_options)
    masks, rest = load_mask_frames(str(uri), mask_id=mask_id, request=request)
    return masks if _kind(str(uri)) != "npz" else select_label(masks, rest, str(uri))


def resample_masks(
    masks: np.ndarray,
    frame_indices: Sequence[int],
    *,
    height: int,
    width: int,
    resize_mode: str = "resize",
    video_size: tuple[int, int] | None = None,
    rotation: int = 0,
    uri: str = "<mask>",
) -> np.ndarray:
    """Pick the clip's native frame indices from ``masks`` ``(F, H, W)`` and fit them to ``height`` × ``width`` with
    the same spatial transform as the video (nearest neighbour) → ``(len(frame_indices), height, width)`` bool.

    ``video_size`` ``(height, width)`` is the source video's displayed size: a mask of a different size is refused
    (``mask_shape_mismatch``), except one in the coded orientation of a rotated video, which is rotated like the video.
    Frame indices past the mask's last frame raise ``mask_frames_mismatch``.
    """
    masks = np.asarray(masks, dtype=bool)
    if video_size is not None and masks.shape[1:] != tuple(video_size):
        if rotation in (90, 270) and masks.shape[1:] == tuple(video_size)[::-1]:
            masks = np.rot90(masks, k=rotation // 90, axes=(1, 2))
        else:
            raise InputError(
                uri,
                "mask_shape_mismatch",
                f"mask frames are {masks.shape[2]}x{masks.shape[1]} but the video is {video_size[1]}x{video_size[0]}",
            )
    indices = list(frame_indices)
    if indices and max(indices) >= masks.shape[0]:
        raise InputError(
            uri,
            "mask_frames_mismatch",
            f"the clip needs mask frame {max(indices)} but the mask has {masks.shape[0]} frames",
        )
    return np.stack([fit_frame(masks[i], height, width, resize_mode, nearest=True) for i in indices])


# --------------------------------------------------------------------------------------------------------- QA
def mask_stats(masks: np.ndarray) -> dict[str, Any]:
    """Area statistics of ``masks`` ``(T, H, W)``: area ratios, the largest relative frame-to-frame area change, and
    the first frame's bounding box ``[x0, y0, x1, y1]`` (exclusive x1/y1; ``None`` when the first frame is empty)."""
    masks = np.asarray(masks, dtype=bool)
    areas = masks.reshape(len(masks), -1).mean(axis=1)
    previous, current = areas[:-1], areas[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(previous > 0, np.abs(current - previous) / np.maximum(previous, 1e-12), np.inf)
        change = np.where((previous == 0) & (current == 0), 0.0, change)
    return {
        "area_ratio_mean": float(areas.mean()) if len(areas) else 0.0,
        "area_ratio_min": float(areas.min()) if len(areas) else 0.0,
        "area_ratio_max": float(areas.max()) if len(areas) else 0.0,
        "max_area_change": float(change.max()) if len(change) else 0.0,
        "bbox": mask_bbox(masks[0]) if len(masks) else None,
    }


def mask_bbox(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (x1, y1 exclusive) of a ``(H, W)`` mask, ``None`` if empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@dataclass
class MaskQA:
    """The verdict of :func:`qa_masks`: ``reason`` is a short code, ``message`` says why in words."""

    ok: bool
    reason: str | None
    message: str | None
    stats: dict[str, Any]


def qa_masks(
    masks: np.ndarray,
    *,
    min_area: float,
    max_area: float,
    max_area_change: float,
) -> MaskQA:
    """Check ``masks`` ``(T, H, W)`` bool.

    Reasons, checked in this order: ``empty_mask`` (no pixel in any frame), ``full_frame_mask`` (a frame ≥ 99.9%
    covered), ``empty_first_frame``, ``mask_too_small`` / ``mask_too_large`` (a frame's area ratio outside
    [``min_area``, ``max_area``]), ``area_change_too_large`` (relative area change between consecutive frames ≥
    ``max_area_change``, the paper's Δ < 20% filter).
    """
    stats = mask_stats(masks)
    areas = np.asarray(masks, dtype=bool).reshape(len(masks), -1).mean(axis=1)

    def reject(reason: str, message: str) -> MaskQA:
        return MaskQA(False, reason, message, stats)

    if not areas.any():
        return reject("empty_mask", "the mask is empty in every frame")
    if areas.max() >= 0.999:
        return reject("full_frame_mask", f"frame {int(areas.argmax())} is entirely masked")
    if areas[0] == 0:
        return reject("empty_first_frame", "the mask is empty on the first frame")
    if areas.min() < min_area:
        return reject(
            "mask_too_small", f"frame {int(areas.argmin())} area ratio {areas.min():.4f} < minimum {min_area}"
        )
    if areas.max() > max_area:
        return reject(
            "mask_too_large", f"frame {int(areas.argmax())} area ratio {areas.max():.4f} > maximum {max_area}"
        )
    if stats["max_area_change"] >= max_area_change:
        return reject(
            "area_change_too_large",
            f"area changes by {stats['max_area_change']:.3f} between frames (limit {max_area_change})",
        )
    return MaskQA(True, None, None, stats)
