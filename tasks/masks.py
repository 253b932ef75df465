"""Object masks: codecs, loading provided masks, resampling to a clip, dilation and QA.

Masks are ``(num_frames, height, width)`` bool arrays, True = the region to edit.

Stored format (catalog media, ``objects.mask_uri``): an ``.npz`` with ``packed`` (``np.packbits`` of the flattened
mask) and ``shape``, zlib-compressed (:func:`encode_masks_npz` / :func:`decode_masks_npz`).

Provided masks (``mask_uri`` of a source item) come in three forms, all indexed by the *source video's* frame index
and in its *displayed* orientation (see :mod:`tasks.video_io`):

- ``.npz`` integer label map ``(F, H, W)`` as VPData stores it (key ``arr_0``, else the only array); the object is
  ``label_map == mask_id``. A bool array (or a label map without ``mask_id``) is used as the mask itself (``!= 0``).
- a folder of PNGs, one per frame in name order; 8/16-bit label images (select ``== mask_id``) or binary images.
- a COCO-RLE ``.json``: a list with one RLE per frame (``{"size": [h, w], "counts": …}``, ``null`` = empty frame),
  or an object mapping object ids to such lists (selected by ``mask_id``).

A mask whose frames are in the video's coded orientation (height and width swapped relative to a rotated video) is
rotated like the video. Any other spatial size is refused (``mask_shape_mismatch``).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import fsspec
import numpy as np

from tasks.errors import InputError
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
    """One COCO RLE (or ``None`` for an empty frame) per frame → ``(T, H, W)`` bool."""
    from pycocotools import mask as mask_utils

    sizes = set()
    for i, rle in enumerate(rles):
        if rle is None:
            continue
        size = rle.get("size") if isinstance(rle, Mapping) else None
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
            or "counts" not in rle
        ):
            raise InputError(uri, "bad_mask", f"frame {i}: not a COCO RLE (a {{'size': [h, w], 'counts': …}} object)")
        sizes.add(tuple(size))
    if len(sizes) != 1:
        raise InputError(uri, "bad_mask", f"RLE frames need one common size, got {sorted(sizes) or 'none'}")
    height, width = sizes.pop()
    if len(rles) * height * width > MAX_MASK_BYTES:
        raise InputError(
            uri, "mask_too_large", f"{len(rles)} frames of {width}x{height} exceed {MAX_MASK_BYTES} bytes"
        )
    out = np.zeros((len(rles), height, width), dtype=bool)
    for i, rle in enumerate(rles):
        if rle is None:
            continue
        counts = rle["counts"]
        try:
            if isinstance(counts, list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(dict(rle), height, width)
            else:
                rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
            with warnings.catch_warnings():  # pycocotools' Cython code trips a NumPy 2 copy=False deprecation
                warnings.simplefilter("ignore", DeprecationWarning)
                out[i] = mask_utils.decode(rle).astype(bool)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise InputError(uri, "bad_mask", f"frame {i}: not a valid COCO RLE ({exc})") from None
    return out


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


# --------------------------------------------------------------------------------------------------------- loading
def _read_bytes(uri: str, storage_options: Mapping[str, Any] | None) -> bytes:
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(uri, "not_found", "mask file not found") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(uri, "unreadable", f"mask file cannot be read ({exc.strerror or exc})") from None


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
    present = np.unique(labels)
    shown = ", ".join(str(int(v)) for v in present[:20]) + (" …" if present.size > 20 else "")
    raise InputError(uri, "mask_id_absent", f"mask_id {mask_id} does not occur in the label map (labels: {shown})")


MAX_MASK_BYTES = 8 << 30
"""The largest provided mask a worker loads (bytes of the decoded array; 8 GiB holds a 2000-frame 1080p uint16 label
map). A file declaring more is refused (``mask_too_large``) before anything is allocated."""

_MASK_DTYPE_KINDS = "biu"  # bool, signed and unsigned integers


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


def _read_npy(archive: zipfile.ZipFile, member: str, uri: str, *, max_bytes: int, ndim: int | None) -> np.ndarray:
    """One ``.npy`` member, its header checked before any data is read: a bool/integer dtype (never objects, so
    nothing is ever unpickled), ``ndim`` dimensions, at most ``max_bytes``, and as much data as the header says."""
    with archive.open(member) as f:
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
        if ndim is not None and len(shape) != ndim:
            raise InputError(
                uri, "bad_mask", f"{member} must have {ndim} dimensions (frames, height, width), got shape {shape}"
            )
        if any(int(v) < 0 for v in shape):
            raise InputError(uri, "bad_mask", f"{member} declares a negative dimension {shape}")
        nbytes = int(np.prod([int(v) for v in shape], dtype=object)) * dtype.itemsize
        if nbytes > max_bytes:
            raise InputError(
                uri, "mask_too_large", f"{member} declares shape {shape} ({nbytes} bytes); the limit is {max_bytes}"
            )
    with archive.open(member) as f:
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(uri, "bad_mask", f"{member} is truncated or corrupt ({exc})") from None


def read_npz_masks(data: bytes | Any, uri: str, *, max_bytes: int | None = None) -> np.ndarray:
    """An ``.npz`` mask file (bytes or a binary file object) → its array, checked member by member (see
    :func:`_read_npy`): a VPData integer label map ``(F, H, W)`` (key ``arr_0``, else the only array) or a vpf bit-packed
    bool mask (``packed`` + ``shape``). Raises ``InputError`` (``bad_mask``, ``mask_too_large``) for anything else:
    random bytes, a file that is not a zip archive, wrong or missing members, pickled objects (never unpickled),
    other dtypes or dimensions, sizes over ``max_bytes`` (default :data:`MAX_MASK_BYTES`), truncated data."""
    max_bytes = MAX_MASK_BYTES if max_bytes is None else max_bytes
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise InputError(uri, "bad_mask", f"not a readable npz archive ({exc})") from None
    try:
        with archive:
            key, names = _npz_member(archive, uri)
            if key != "packed":
                return _read_npy(archive, names[key], uri, max_bytes=max_bytes, ndim=3)
            shape = _read_npy(archive, names["shape"], uri, max_bytes=1024, ndim=1)
            if shape.dtype.kind not in "iu" or len(shape) != 3 or (shape < 0).any():
                raise InputError(uri, "bad_mask", f"'shape' must be 3 non-negative integers, got {shape.tolist()}")
            count = int(np.prod([int(v) for v in shape], dtype=object))
            if count > max_bytes:
                raise InputError(uri, "mask_too_large", f"declared shape {shape.tolist()} exceeds {max_bytes} bytes")
            packed = _read_npy(archive, names["packed"], uri, max_bytes=max_bytes, ndim=1)
            if packed.dtype != np.uint8 or packed.size * 8 < count:
                raise InputError(
                    uri, "bad_mask", f"'packed' holds {packed.size * 8} bits of {packed.dtype}, shape needs {count}"
                )
            return np.unpackbits(packed, count=count).astype(bool).reshape(tuple(int(v) for v in shape))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, KeyError) as exc:
        # a damaged member (bad CRC, unsupported compression, encrypted, missing entry)
        raise InputError(uri, "bad_mask", f"damaged npz archive ({type(exc).__name__}: {exc})") from None


def load_label_map(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The array of an ``.npz`` mask file as stored: a VPData ``(F, H, W)`` integer label map (key ``arr_0``, else
    the only array) or a vpf bool mask. Select an object with :func:`select_label`. See :func:`read_npz_masks`."""
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            return read_npz_masks(f, uri)
    except FileNotFoundError:
        raise InputError(uri, "not_found", "mask file not found") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(uri, "unreadable", f"mask file cannot be read ({exc.strerror or exc})") from None
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(uri, "bad_mask", f"not a readable npz ({exc})") from None


def _load_png_folder(uri: str, mask_id: int | None, storage_options: Mapping[str, Any] | None) -> np.ndarray:
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    names = sorted(p for p in fs.ls(path, detail=False) if p.lower().endswith(".png"))
    if not names:
        raise InputError(uri, "not_found", "mask folder holds no .png files")
    frames = []
    total = 0
    for name in names:
        try:  # OpenCV refuses declared sizes over CV_IO_MAX_IMAGE_PIXELS (2^30) itself, with cv2.error
            image = cv2.imdecode(np.frombuffer(fs.cat_file(name), np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise InputError(uri, "bad_mask", f"{name} is not a readable PNG ({str(exc).strip()})") from None
        if image is None:
            raise InputError(uri, "bad_mask", f"{name} is not a readable PNG")
        if image.dtype.kind not in "bu" or image.ndim not in (2, 3):
            raise InputError(uri, "bad_mask", f"{name}: a mask PNG holds 8/16-bit labels, got {image.dtype}")
        total += image.nbytes
        if total > MAX_MASK_BYTES:
            raise InputError(uri, "mask_too_large", f"the mask PNGs exceed {MAX_MASK_BYTES} bytes")
        frames.append(image if image.ndim == 2 else image[..., 0])
    if len({f.shape for f in frames}) != 1:
        raise InputError(uri, "bad_mask", "mask PNGs have different sizes")
    labels = np.stack(frames)
    if mask_id is None and labels.max() > 1:
        return labels > 127  # binary images saved as 0/255
    return select_label(labels, mask_id, uri)


def _load_rle_json(uri: str, mask_id: int | None, storage_options: Mapping[str, Any] | None) -> np.ndarray:
    try:
        data = json.loads(_read_bytes(uri, storage_options))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(uri, "bad_mask", f"not valid JSON ({exc})") from None
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
    return decode_masks_rle(data, uri)


def load_masks(
    uri: str, mask_id: int | None = None, *, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Load a provided mask (``.npz`` label map, ``.json`` COCO RLE or a PNG folder) → ``(F, H, W)`` bool.

    Raises ``InputError``: ``not_found``, ``bad_mask``, ``mask_id_absent``.
    """
    uri = str(uri)
    lower = uri.lower().rstrip("/")
    if lower.endswith(".npz"):
        masks = select_label(load_label_map(uri, storage_options=storage_options), mask_id, uri)
    elif lower.endswith(".json"):
        masks = _load_rle_json(uri, mask_id, storage_options)
    else:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        if not fs.isdir(path):
            kind = "not_found" if not fs.exists(path) else "bad_mask"
            raise InputError(uri, kind, "mask_uri must be an .npz label map, a COCO-RLE .json or a folder of PNGs")
        masks = _load_png_folder(uri, mask_id, storage_options)
    return masks


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
    min_area: float = 0.01,
    max_area: float = 0.90,
    max_area_change: float = 0.20,
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
