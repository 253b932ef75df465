"""A clip's camera motion from optical flow, so any frame can be looked at from any other frame's pixels.

Used where a check or a finder compares a frame with other frames of the same (possibly moving) camera: the gate's
``effect_residual`` and ``object_texture_ratio`` (``tasks.gate``) and the moving-camera route of the side-effect
finder (``tasks.effects``). Maps are affine, fitted to dense DIS optical flow between neighbouring frames outside a
``busy`` region (holes, objects) and chained; they model pans, zooms and small rotations, not parallax.
"""

from __future__ import annotations

import cv2
import numpy as np


_GRID = 3  # px between the flow samples a map is fitted to


def grow(masks: np.ndarray, px: int) -> np.ndarray:
    """``masks`` `(T, h, w)` bool dilated by an ellipse of radius ``px`` pixels, frame by frame."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(m.view(np.uint8), kernel) for m in masks]).astype(bool)


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) of a frame, end-exclusive


def box_of(mask: np.ndarray) -> Box:
    """The bounding box of a `(h, w)` bool ``mask``; ``y1 == y0`` when it is empty."""
    x, y, width, height = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    return y, y + height, x, x + width


def grown_box(box: Box, px: int, shape: tuple[int, ...]) -> Box:
    """``box`` grown by ``px`` on every side, cut to a frame of ``shape`` `(h, w)`."""
    y0, y1, x0, x1 = box
    return max(0, y0 - px), min(shape[0], y1 + px), max(0, x0 - px), min(shape[1], x1 + px)


def _window(affine: np.ndarray, box: Box | None, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int]]:
    """``affine`` `(2, 3)` (this frame's pixels → another's) for the window ``box`` of a frame of ``shape`` (the
    whole frame when None), whose pixel (0, 0) is the box's top-left, and the window's size ``(width, height)``."""
    if box is None:
        return affine, (shape[1], shape[0])
    y0, y1, x0, x1 = box
    (a, b, c), (d, e, f) = affine[:2].tolist()
    return np.array([[a, b, c + a * x0 + b * y0], [d, e, f + d * x0 + e * y0]]), (x1 - x0, y1 - y0)


def clear_at(busy: np.ndarray, affine: np.ndarray, box: Box | None = None) -> np.ndarray:
    """Pixels of a frame whose spot in another frame (``affine`` `(2, 3)`: this frame's pixels → that frame's) lies
    inside that frame and clear of its ``busy`` `(h, w)` bool region; on the window ``box`` of this frame only when
    given (the whole frame's values there)."""
    warp, size = _window(affine, box, busy.shape)
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(busy.view(np.uint8), warp, size, flags=flags, borderValue=1) == 0


def aligned(frame: np.ndarray, affine: np.ndarray, box: Box | None = None) -> np.ndarray:
    """Another frame `(h, w)` float32 resampled onto this one's pixels (``affine`` as in :func:`clear_at`); on the
    window ``box`` of this frame only when given."""
    warp, size = _window(affine, box, frame.shape)
    return cv2.warpAffine(frame, warp, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def camera_maps(luma: np.ndarray, busy: np.ndarray) -> list[np.ndarray]:
    """Per frame, the affine map `(3, 3)` from its pixels to the first frame's: maps between neighbouring frames
    fitted to their optical flow outside ``busy`` `(T, h, w)` bool (grown by 2 px), chained. ``luma`` `(T, h, w)`
    grey levels, uint8 or float (clipped to 0..255 and truncated to uint8 for the flow). A frame pair with too little
    clear flow (fewer than 12 points of the grid) is taken as not moving. Frame t's pixels → frame r's:
    ``(inv(maps[r]) @ maps[t])[:2]``.

    Each neighbouring pair's map is the least-squares affine fit to the flow on a grid of ``_GRID`` px, refitted
    without the worst third of the points."""
    grey = luma if luma.dtype == np.uint8 else np.clip(luma, 0, 255).astype(np.uint8)
    h, w = grey.shape[1:]
    ys, xs = np.mgrid[0:h:_GRID, 0:w:_GRID]
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    outside = ~grow(busy, 2)[:, ::_GRID, ::_GRID]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    to_first = [np.eye(3)]
    for t in range(1, len(grey)):
        flow = dis.calc(grey[t], grey[t - 1], None)[::_GRID, ::_GRID]
        keep = outside[t] & outside[t - 1]
        step = np.eye(3)
        if keep.sum() >= 12:
            x, y = xs[keep], ys[keep]
            dst = np.stack([x + flow[..., 0][keep], y + flow[..., 1][keep]], 1)
            design = np.stack([x, y, np.ones_like(x)], 1)
            coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
            err = np.hypot(*(design @ coef - dst).T)
            use = err <= _linear_quantile(err, 0.67) + 1e-6  # refitted without the worst third
            coef, *_ = np.linalg.lstsq(design[use], dst[use], rcond=None)
            step = np.vstack([coef.T, [0.0, 0.0, 1.0]])
        to_first.append(to_first[-1] @ step)
    return to_first


def _linear_quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (its default, linear method) of a 1-d float64 array without NaNs, by a partial
    sort around the two values it interpolates between (the same arithmetic, so the same result bit for bit)."""
    n = len(values)
    virtual = (n - 1) * q  # numpy's virtual index for the linear method
    below = np.floor(virtual)
    if virtual >= n - 1:
        return float(np.max(values))
    if virtual < 0:
        return float(np.min(values))
    k = int(below)
    low, high = np.partition(values, (k, k + 1))[k : k + 2]
    gamma = virtual - below
    difference = high - low
    return float(high - difference * (1 - gamma)) if gamma >= 0.5 else float(low + difference * gamma)
