"""A clip's camera motion from optical flow, so any frame can be looked at from any other frame's pixels.

Used where a check or a finder compares a frame with other frames of the same (possibly moving) camera: the gate's
``effect_residual`` and ``object_texture_ratio`` (``tasks.gate``) and the moving-camera route of the side-effect
finder (``tasks.effects``). Maps are affine, fitted to dense DIS optical flow between neighbouring frames outside a
``busy`` region (holes, objects) and chained; they model pans, zooms and small rotations, not parallax.
"""

from __future__ import annotations

import cv2
import numpy as np


def grow(masks: np.ndarray, px: int) -> np.ndarray:
    """``masks`` `(T, h, w)` bool dilated by an ellipse of radius ``px`` pixels, frame by frame."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(m.view(np.uint8), kernel) for m in masks]).astype(bool)


def affine_from_flow(flow: np.ndarray, valid: np.ndarray, step: int = 3) -> np.ndarray | None:
    """The affine map `(2, 3)` from a frame's pixel coordinates to another's that best fits ``flow`` `(h, w, 2)` on
    ``valid`` pixels (least squares on a grid of ``step`` px, refitted without the worst third); None with too few
    pixels."""
    h, w = valid.shape
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    keep = valid[ys, xs]
    if keep.sum() < 12:
        return None
    x, y = xs[keep].astype(np.float64), ys[keep].astype(np.float64)
    dst = np.stack([x + flow[ys, xs, 0][keep], y + flow[ys, xs, 1][keep]], 1)
    design = np.stack([x, y, np.ones_like(x)], 1)
    use = np.ones(len(x), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[use], dst[use], rcond=None)
        err = np.hypot(*(design @ coef - dst).T)
        use = err <= np.quantile(err, 0.67) + 1e-6
    return coef.T


def clear_at(busy: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Pixels of a frame whose spot in another frame (``affine`` `(2, 3)`: this frame's pixels → that frame's) lies
    inside that frame and clear of its ``busy`` `(h, w)` bool region."""
    h, w = busy.shape
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(busy.view(np.uint8), affine, (w, h), flags=flags, borderValue=1) == 0


def aligned(frame: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Another frame `(h, w)` float32 resampled onto this one's pixels (``affine`` as in :func:`clear_at`)."""
    h, w = frame.shape
    return cv2.warpAffine(frame, affine, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def camera_maps(luma: np.ndarray, busy: np.ndarray) -> list[np.ndarray]:
    """Per frame, the affine map `(3, 3)` from its pixels to the first frame's: maps between neighbouring frames
    fitted to their optical flow outside ``busy`` `(T, h, w)` bool (grown by 2 px), chained. ``luma`` `(T, h, w)`
    float32 grey levels. A frame pair with too little clear flow is taken as not moving. Frame t's pixels → frame
    r's: ``(inv(maps[r]) @ maps[t])[:2]``."""
    grey = np.clip(luma, 0, 255).astype(np.uint8)
    outside = ~grow(busy, 2)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    to_first = [np.eye(3)]
    for t in range(1, len(luma)):
        affine = affine_from_flow(dis.calc(grey[t], grey[t - 1], None), outside[t] & outside[t - 1])
        step = np.eye(3) if affine is None else np.vstack([affine, [0.0, 0.0, 1.0]])
        to_first.append(to_first[-1] @ step)
    return to_first
