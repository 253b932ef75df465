"""Previews: side-by-side mp4 and contact sheet PNG."""

from __future__ import annotations

import cv2
import numpy as np

from tasks import previews
from tasks.video_io import read_frames


def _clip() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 48, 64, 3), dtype=np.uint8)
    masks = np.zeros((6, 48, 64), bool)
    masks[:, 10:30, 20:40] = True
    edited = frames.copy()
    edited[masks] = 0
    return frames, masks, edited


def test_side_by_side_panels() -> None:
    frames, masks, edited = _clip()
    panels = previews.side_by_side(frames, masks, edited, height=48)
    assert panels.shape == (6, 48, 192, 3)
    assert np.array_equal(panels[:, :, :64], frames)
    assert np.array_equal(panels[:, :, 128:], edited)
    overlay = panels[:, :, 64:128]
    assert np.array_equal(overlay[~masks], frames[~masks])  # the overlay only tints the mask
    assert (overlay[:, 20, 30, 0] >= frames[:, 20, 30, 0] * 0.55).all()


def test_side_by_side_mp4_decodes(tmp_path) -> None:
    frames, masks, edited = _clip()
    data = previews.side_by_side_mp4(frames, masks, edited, fps=8, height=32)
    path = tmp_path / "preview.mp4"
    path.write_bytes(data)
    decoded = read_frames(str(path))
    assert decoded.shape == (6, 32, 126, 3)  # widths rounded to even per panel: 42 * 3


def test_contact_sheet_png() -> None:
    frames, masks, edited = _clip()
    data = previews.contact_sheet_png(frames, masks, edited, columns=3, thumb_height=24)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.shape == (3 * 24 + 4, 3 * 32 + 4, 3)
