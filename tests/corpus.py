"""Generated test inputs for ingest: small good clips with masks, and a corpus of bad inputs.

``write_good_clips(dir, n)`` writes ``n`` synthetic clips (a moving square object, label 3, and a second object,
label 5, on a textured background) with VPData-style label maps and a manifest. ``write_bad_corpus(dir)`` writes one
file (or manifest row) per problem in :data:`BAD_CORPUS_EXPECTED`, which says how ingest must treat it: the failure
stage and reason, or ``None`` for inputs that must be handled (odd sizes, rotation metadata).

Everything is sized for :data:`CORPUS_GEOMETRY` (17 frames at 8 fps, 64×96): the good clips run at 16 fps (stride
2), 40 frames, so exactly one window fits; ``too_short`` has 20 frames, fewer than the 33 a window needs.

The unsupported codec is MS-MPEG-4 v2 (``msmpeg4v2``) in an AVI: a real legacy codec FFmpeg decodes but that
:data:`tasks.video_io.SUPPORTED_CODECS` deliberately leaves out.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import av
import cv2
import numpy as np

from tasks.masks import encode_masks_rle
from tasks.types import Geometry


CORPUS_GEOMETRY = Geometry(num_frames=17, fps=8.0, height=64, width=96)
GOOD_FPS = 16
GOOD_FRAMES = 40
OBJECT_ID = 3
OTHER_ID = 5

BAD_CORPUS_EXPECTED: dict[str, tuple[str, str] | None] = {
    "zero_byte": ("ingest", "empty_file"),
    "truncated": ("ingest", "truncated_video"),
    "truncated_faststart": ("ingest", "truncated_video"),
    "text_as_mp4": ("ingest", "not_a_video"),
    "unsupported_codec": ("ingest", "unsupported_codec"),
    "zero_frames": ("ingest", "too_few_frames"),
    "one_frame": ("ingest", "too_few_frames"),
    "too_short": ("ingest", "clip_too_short"),
    "odd_dims": None,
    "rotation": None,
    "mask_shape_mismatch": ("segment", "mask_shape_mismatch"),
    "mask_id_absent": ("segment", "mask_id_absent"),
    "empty_mask": ("segment", "empty_mask"),
    "full_frame_mask": ("segment", "full_frame_mask"),
    "mask_not_an_archive": ("segment", "bad_mask"),
    "mask_zip_garbage": ("segment", "bad_mask"),
    "mask_wrong_members": ("segment", "bad_mask"),
    "mask_pickled": ("segment", "bad_mask"),
    "mask_wrong_dtype": ("segment", "bad_mask"),
    "mask_wrong_shape": ("segment", "bad_mask"),
    "mask_huge_dims": ("segment", "mask_too_large"),
    "mask_empty_file": ("segment", "bad_mask"),
    "mask_truncated": ("segment", "bad_mask"),
    "mask_bad_rle": ("segment", "bad_mask"),
    "missing_uri_row": ("ingest", "missing_uri"),
    "missing_object": ("ingest", "not_found"),
    "outside_roots": ("ingest", "outside_roots"),
    "extra_column": ("ingest", "unknown_columns"),
    "missing_column": ("ingest", "missing_columns"),
}
"""name → (failure stage, reason) or None when ingest must succeed. ``extra_column``/``missing_column`` are whole
manifests (``<name>`` paths); every other name is a row of the ``manifest`` that :func:`write_bad_corpus` returns."""


def synth_clip(num_frames: int, height: int, width: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with two moving squares → ``(frames (T, H, W, 3) uint8, labels (T, H, W) uint8)``;
    label 3 is the main object (about 6% of the frame), label 5 a smaller one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 64 * 4], -1)
    base = (base + rng.integers(0, 24, (height, width, 3))).clip(0, 255).astype(np.uint8)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    side = max(4, round(0.25 * min(height, width)))
    small = max(2, side // 2)
    colour = rng.integers(0, 256, 3)
    for t in range(num_frames):
        frame = base.copy()
        x = int(round((width - side - 1) * t / max(num_frames - 1, 1)))
        y = (height - side) // 3
        frame[y : y + side, x : x + side] = colour
        labels[t, y : y + side, x : x + side] = OBJECT_ID
        sx, sy = width - small - 1 - x // 2, height - small - 2
        frame[sy : sy + small, sx : sx + small] = 255 - colour
        labels[t, sy : sy + small, sx : sx + small] = OTHER_ID
        frames[t] = frame
    return frames, labels


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    faststart: bool = False,
) -> str:
    """Write ``frames`` ``(T, H, W, 3)`` with PyAV (any codec/pixel format; ``rotation`` as display-matrix metadata)."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        if len(frames) == 0:
            container.start_encoding()
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _write_labels(path: Path, labels: np.ndarray) -> str:
    np.savez_compressed(path, labels)  # VPData layout: key arr_0, (F, H, W) integer labels
    return str(path)


def write_good_clips(directory: str | Path, n: int, *, seed: int = 0) -> dict[str, object]:
    """``n`` good clips with label-map masks → ``{"videos": [...], "masks": [...], "manifest": path}``.

    The manifest (CSV, relative paths) selects object ``OBJECT_ID`` of each clip and gives it a caption and label.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    videos, masks, rows = [], [], []
    for i in range(n):
        frames, labels = synth_clip(GOOD_FRAMES, 64, 96, seed=seed + i)
        video = write_video(directory / f"good_{i}.mp4", frames, GOOD_FPS)
        mask = _write_labels(directory / f"good_{i}_masks.npz", labels)
        videos.append(video)
        masks.append(mask)
        rows.append(
            {
                "uri": f"good_{i}.mp4",
                "caption": f"a square moving to the right, clip {i}",
                "mask_uri": f"good_{i}_masks.npz",
                "mask_id": OBJECT_ID,
                "label": "square",
            }
        )
    manifest = directory / "good_manifest.csv"
    _write_csv(manifest, rows, ["uri", "caption", "mask_uri", "mask_id", "label"])
    return {"videos": videos, "masks": masks, "manifest": str(manifest)}


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})


def _npy(descr: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """A ``.npy`` member whose header says ``descr`` and ``shape`` whatever ``data`` holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _damaged_masks(labels: np.ndarray) -> dict[str, bytes]:
    """Mask archives damaged in the ways real ones are: ``name`` → the file's bytes (written as ``<name>.npz``)."""
    good = io.BytesIO()
    np.savez_compressed(good, labels)
    pickled = io.BytesIO()
    np.savez(pickled, arr_0=np.array([{"labels": 3}, None], dtype=object))  # an object array: pickled inside
    return {
        "mask_not_an_archive": np.random.default_rng(0).bytes(4096),
        "mask_zip_garbage": b"PK\x03\x04" + np.random.default_rng(1).bytes(512),
        "mask_wrong_members": _zip({"labels.npy": b"\0" * 64, "readme.txt": b"masks are elsewhere"}),
        "mask_pickled": pickled.getvalue(),
        "mask_wrong_dtype": _zip({"arr_0.npy": _npy("<f4", labels.shape, labels.astype("<f4").tobytes())}),
        "mask_wrong_shape": _zip({"arr_0.npy": _npy("|u1", labels.shape[1:], labels[0].tobytes())}),
        "mask_huge_dims": _zip({"arr_0.npy": _npy("|u1", (10**6, 10**5, 10**5), b"\3" * 64)}),
        "mask_empty_file": b"",
        "mask_truncated": good.getvalue()[: len(good.getvalue()) // 2],
    }


def write_bad_corpus(directory: str | Path) -> dict[str, str]:
    """Write the bad-input corpus → ``{name: path or uri}`` for every name of :data:`BAD_CORPUS_EXPECTED`, plus
    ``"manifest"`` (a CSV with one row per row-level case and one good clip, ``"good"``), ``"root"`` (the allowed
    root: pass ``roots=[corpus["root"]]``) and ``"outside_dir"``."""
    directory = Path(directory)
    inside = directory / "inside"
    outside = directory / "outside"
    inside.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {"root": str(inside), "outside_dir": str(outside)}
    frames, labels = synth_clip(GOOD_FRAMES, 64, 96, seed=7)

    good = write_video(inside / "good.mp4", frames, GOOD_FPS)
    paths["good"] = good
    _write_labels(inside / "good_masks.npz", labels)

    (inside / "zero_byte.mp4").write_bytes(b"")
    paths["zero_byte"] = str(inside / "zero_byte.mp4")

    whole = Path(write_video(inside / "whole.mp4", frames, GOOD_FPS)).read_bytes()  # index (moov) at the end
    (inside / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (inside / "whole.mp4").unlink()
    paths["truncated"] = str(inside / "truncated.mp4")

    whole = Path(write_video(inside / "whole.mp4", frames, GOOD_FPS, faststart=True)).read_bytes()  # index first
    (inside / "truncated_faststart.mp4").write_bytes(whole[: len(whole) // 2])
    (inside / "whole.mp4").unlink()
    paths["truncated_faststart"] = str(inside / "truncated_faststart.mp4")

    (inside / "notes.mp4").write_text("This is a text file, not a video.\n" * 20)
    paths["text_as_mp4"] = str(inside / "notes.mp4")

    paths["unsupported_codec"] = write_video(
        inside / "legacy_msmpeg4v2.avi", frames, GOOD_FPS, codec="msmpeg4v2", pix_fmt="yuv420p"
    )
    paths["zero_frames"] = write_video(inside / "zero_frames.mp4", frames[:0], GOOD_FPS)
    paths["one_frame"] = write_video(inside / "one_frame.mp4", frames[:1], GOOD_FPS)
    paths["too_short"] = write_video(inside / "too_short.mp4", frames[:20], GOOD_FPS)

    odd_frames, odd_labels = synth_clip(GOOD_FRAMES, 49, 65, seed=8)  # odd sizes need 4:4:4 in H.264
    paths["odd_dims"] = write_video(inside / "odd_dims.mp4", odd_frames, GOOD_FPS, pix_fmt="yuv444p")
    _write_labels(inside / "odd_dims_masks.npz", odd_labels)

    # Coded 96x64, displayed 64 wide x 96 tall: the display matrix turns it 90° counter-clockwise.
    paths["rotation"] = write_video(inside / "rotated.mp4", frames, GOOD_FPS, rotation=90)
    _write_labels(inside / "rotated_masks.npz", np.rot90(labels, k=1, axes=(1, 2)))

    _write_labels(inside / "small_masks.npz", labels[:, ::2, ::2])
    paths["mask_shape_mismatch"] = str(inside / "small_masks.npz")
    paths["mask_id_absent"] = str(inside / "good_masks.npz")

    empty_dir = inside / "empty_png_masks"
    empty_dir.mkdir(exist_ok=True)
    for t in range(GOOD_FRAMES):
        cv2.imwrite(str(empty_dir / f"{t:05d}.png"), np.zeros((64, 96), np.uint8))
    paths["empty_mask"] = str(empty_dir)

    (inside / "full_frame.json").write_text(json.dumps(encode_masks_rle(np.ones((GOOD_FRAMES, 64, 96), bool))))
    paths["full_frame_mask"] = str(inside / "full_frame.json")

    damaged = _damaged_masks(labels)
    for name, data in damaged.items():
        (inside / f"{name}.npz").write_bytes(data)
        paths[name] = str(inside / f"{name}.npz")
    (inside / "mask_bad_rle.json").write_text(json.dumps([[1, 2, 3], "counts", None]))
    paths["mask_bad_rle"] = str(inside / "mask_bad_rle.json")

    paths["missing_uri_row"] = f"{inside / 'manifest.csv'}#row=missing_uri"
    paths["missing_object"] = str(inside / "missing.mp4")
    paths["missing_object_url"] = f"memory://vpf-corpus-{uuid.uuid4().hex[:8]}/missing.mp4"
    paths["outside_roots"] = write_video(outside / "elsewhere.mp4", frames, GOOD_FPS)

    columns = ["uri", "caption", "mask_uri", "mask_id", "label"]
    rows = [
        {"uri": "good.mp4", "caption": "good", "mask_uri": "good_masks.npz", "mask_id": OBJECT_ID, "label": "square"},
        {"uri": "zero_byte.mp4"},
        {"uri": "truncated.mp4"},
        {"uri": "truncated_faststart.mp4"},
        {"uri": "notes.mp4"},
        {"uri": "legacy_msmpeg4v2.avi"},
        {"uri": "zero_frames.mp4"},
        {"uri": "one_frame.mp4"},
        {"uri": "too_short.mp4"},
        {"uri": "odd_dims.mp4", "mask_uri": "odd_dims_masks.npz", "mask_id": OBJECT_ID, "label": "square"},
        {"uri": "rotated.mp4", "mask_uri": "rotated_masks.npz", "mask_id": OBJECT_ID, "label": "square"},
        {"uri": "good.mp4", "mask_uri": "small_masks.npz", "mask_id": OBJECT_ID, "caption": "mask shape"},
        {"uri": "good.mp4", "mask_uri": "good_masks.npz", "mask_id": 42, "caption": "absent id"},
        {"uri": "good.mp4", "mask_uri": "empty_png_masks", "caption": "empty"},
        {"uri": "good.mp4", "mask_uri": "full_frame.json", "caption": "full frame"},
        *({"uri": "good.mp4", "mask_uri": f"{name}.npz", "mask_id": OBJECT_ID, "caption": name} for name in damaged),
        {"uri": "good.mp4", "mask_uri": "mask_bad_rle.json", "caption": "bad rle"},
        {"uri": "", "caption": "a row without uri"},
        {"uri": "missing.mp4"},
        {"uri": "../outside/elsewhere.mp4"},
    ]
    _write_csv(inside / "manifest.csv", rows, columns)
    paths["manifest"] = str(inside / "manifest.csv")

    _write_csv(inside / "extra_column.csv", [{"uri": "good.mp4", "colour": "red"}], ["uri", "colour"])
    paths["extra_column"] = str(inside / "extra_column.csv")
    _write_csv(inside / "missing_column.csv", [{"video": "good.mp4"}], ["video"])
    paths["missing_column"] = str(inside / "missing_column.csv")
    return paths


if __name__ == "__main__":  # python tests/corpus.py DIR: write both corpora for a look
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "vpf-corpus"
    corpora = {"bad": write_bad_corpus(target), "good": write_good_clips(os.path.join(target, "good"), 2)}
    print(json.dumps(corpora, indent=2))
