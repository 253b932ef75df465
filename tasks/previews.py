"""Previews of a pair as catalog media: a side-by-side mp4 (original | mask overlay | edited) and a contact sheet.

Both return bytes for ``Catalog.put_media``. Videos go through ``tasks.video_io.encode_mp4`` (H.264, even sizes).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np


OVERLAY_COLOUR = np.array([255, 40, 40], np.float32)  # RGB
OVERLAY_ALPHA = 0.45


def mask_overlay(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Frames with the mask tinted red and its inner outline drawn; pixels outside the mask are unchanged.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8)
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool)

    Returns:
        `(num_frames, height, width, 3)` uint8.
    """
    out = frames.copy()
    inside = frames[masks].astype(np.float32)  # only the masked pixels: [n, 3]
    out[masks] = np.clip(np.rint(inside * (1 - OVERLAY_ALPHA) + OVERLAY_COLOUR * OVERLAY_ALPHA), 0, 255).astype(
        np.uint8
    )
    kernel = np.ones((3, 3), np.uint8)
    for t, m in enumerate(masks):
        edge = m & ~(cv2.erode(m.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0)
        out[t][edge] = OVERLAY_COLOUR.astype(np.uint8)
    return out


def _fit_height(frames: np.ndarray, height: int) -> np.ndarray:
    """Resize `(num_frames, h, w, 3)` frames to ``height`` (even), keeping the aspect ratio, width even."""
    h, w = frames.shape[1:3]
    if h == height:
        new_h, new_w = h - h % 2, w - w % 2
        return np.ascontiguousarray(frames[:, :new_h, :new_w])
    new_h = max(2, height - height % 2)
    new_w = max(2, int(round(w * new_h / h / 2)) * 2)
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA) for f in frames])


def _fit_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(num_frames, h, w)` bool masks resized to ``size`` = ``(height, width)``: a pixel is in the mask when at
    least half of the area it covers is."""
    if masks.shape[1:] == tuple(size):
        return masks
    h, w = size
    if masks.shape[1] >= h and masks.shape[2] >= w:  # shrinking: area average, then the majority
        scaled = [cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in masks.astype(np.uint8) * 255]
        return np.stack(scaled) >= 128
    return np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]).astype(
        bool
    )


def side_by_side(frames: np.ndarray, masks: np.ndarray, edited: np.ndarray, *, height: int = 240) -> np.ndarray:
    """`(num_frames, height, 3 * width', 3)` uint8 panels: original | mask overlay | edited."""
    return np.stack(list(_side_by_side_frames(frames, masks, edited, height)))


def _side_by_side_frames(
    frames: np.ndarray, masks: np.ndarray, edited: np.ndarray, height: int
) -> Iterator[np.ndarray]:
    """``side_by_side``'s frames one at a time, `(height, 3 * width', 3)` uint8 each (an encoder takes them as they
    come: no clip-sized array of panels)."""
    if not (frames.shape == edited.shape and frames.shape[:3] == masks.shape):
        raise ValueError(f"shapes differ: frames {frames.shape}, masks {masks.shape}, edited {edited.shape}")
    for t in range(len(frames)):
        small = _fit_height(frames[t : t + 1], height)  # overlay drawn at preview size, far cheaper than at full size
        overlay = mask_overlay(small, _fit_masks(masks[t : t + 1], small.shape[1:3]))
        yield np.concatenate([small[0], overlay[0], _fit_height(edited[t : t + 1], height)[0]], axis=1)


def side_by_side_mp4(
    frames: np.ndarray, masks: np.ndarray, edited: np.ndarray, fps: float, *, height: int = 240, crf: int = 23
) -> bytes:
    """H.264 mp4 bytes of ``side_by_side`` (see there), encoded frame by frame."""
    from tasks.video_io import encode_mp4

    panels = _side_by_side_frames(frames, masks, edited, height)
    return encode_mp4(panels, fps, crf=crf, preset="veryfast", threads=1)


def contact_sheet(
    frames: np.ndarray, masks: np.ndarray, edited: np.ndarray, *, columns: int = 5, thumb_height: int = 144
) -> np.ndarray:
    """A grid of ``columns`` evenly spaced frames (columns) × original / overlay / edited (rows), 2 px gaps.

    Returns `(3 * thumb_height + 4, columns * thumb_width + 2 * (columns - 1), 3)` uint8.
    """
    index = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
    small = _fit_height(frames[index], thumb_height)
    rows = [
        small,
        mask_overlay(small, _fit_masks(masks[index], small.shape[1:3])),
        _fit_height(edited[index], thumb_height),
    ]
    gap = 2
    th, tw = rows[0].shape[1:3]
    sheet = np.full((3 * th + 2 * gap, len(index) * tw + (len(index) - 1) * gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c in range(len(index)):
            y, x = r * (th + gap), c * (tw + gap)
            sheet[y : y + th, x : x + tw] = row[c]
    return sheet


def contact_sheet_png(
    frames: np.ndarray, masks: np.ndarray, edited: np.ndarray, *, columns: int = 5, thumb_height: int = 144
) -> bytes:
    """PNG bytes of ``contact_sheet`` (see there)."""
    sheet = contact_sheet(frames, masks, edited, columns=columns, thumb_height=thumb_height)
    ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cv2.imencode failed to write the contact sheet PNG")
    return data.tobytes()
