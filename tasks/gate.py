"""The pair-quality gate: does a removal render really remove the object, and cleanly?

:func:`score_render` scores the media a trainer reads (the stored, decoded source and target clips) with the mask
that was filled and, when known, the object's own mask. Every check is a named ``pairs`` column (``GATE_COLUMNS``);
weight-free checks run everywhere, the CLIP and re-segmentation checks (:class:`ClipScorer`, :class:`ResegScorer`)
only where their models are configured. The decision is ``tasks.accept.AcceptRule``'s. What each check measures,
what it refuses and how its threshold was chosen: docs/quality-gate.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.annotate.loading import under_load_lock
from tasks.camera_motion import aligned, box_of, camera_maps, clear_at, grow, grown_box
from tasks.effect_segments import PhraseFinder
from tasks.engines.base import NO_OBSERVED_BACKGROUND, check_inputs
from tasks.errors import InputError
from tasks.metrics import PSNR_CAP_DB, mask_statistics, psnr_from_mse


GATE_VERSION = "gate-1"
WORK_SIDE = 160  # longer side of the scoring region, in pixels
RING_PX = 6  # width of the ring around the hole, working pixels
BAND_PX = 3  # width of the seam band inside the hole edge, working pixels
SSIM_FRAMES = 4
_NOISE_FLOOR = 2.0  # grey levels: texture below this is codec noise
_MIN_PIXELS = 12  # fewer working pixels in a frame's region: the frame is not used for that check
BAD_FRAME_FLICKER = 3.0  # a frame whose hole changes 3x more than the background from the frame before is bad
BAD_FRAME_MATCH = 0.6  # ... and one where the object's texture is back (its NCC with the source's object)
REFERENCE_STEP = 3  # object_texture_ratio looks the background up in every third frame
REFERENCE_FLOOR = 0.1  # grey levels added to both texture energies of the reference ratio
EFFECT_STEP = 2  # effect_residual measures every second frame
EFFECT_SIGMAS = 2.0  # effect_residual keeps what exceeds this many standard errors of the per-frame residuals

# the columns a score fills (besides metrics_json and quality_flags), in schema order
GATE_COLUMNS = (
    "psnr_bg",
    "ssim_bg",
    "mse_bg",
    "mae_bg",
    "hole_change",
    "object_match",
    "ring_colour_gap",
    "ring_texture_ratio",
    "seam_error",
    "flicker_ratio",
    "motion_gap",
    "temporal_warp_error",
    "effect_residual",
    "object_ring_colour_gap",
    "object_texture_ratio",
    "bad_frame_share",
    "mask_area_ratio",
    "object_frames_ratio",
    "clip_label_src",
    "clip_label_tgt",
    "reseg_iou_src",
    "reseg_iou_tgt",
)


# ----------------------------------------------------------------------------------------------- background
def luma_ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Gaussian window, sigma 1.5) of two `(height, width)` uint8 grey images → float32."""
    x, y = a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def background_fidelity(source: np.ndarray, target: np.ndarray, masks: np.ndarray) -> dict[str, float | None]:
    """Stored target against stored source outside ``masks``: ``psnr_bg`` (dB, capped), ``mse_bg``, ``mae_bg``
    ([0, 1] scale, over every background pixel) and ``ssim_bg`` (luma, half resolution, ``SSIM_FRAMES`` frames).

    Args:
        source, target (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8).
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the inpainted region.
    """
    sq = ab = 0.0
    count = 0
    keep = (~masks).view(np.uint8)
    for t in range(len(source)):
        n = int(np.count_nonzero(keep[t]))
        if not n:
            continue
        sq += cv2.norm(source[t], target[t], cv2.NORM_L2SQR, mask=keep[t])
        ab += cv2.norm(source[t], target[t], cv2.NORM_L1, mask=keep[t])
        count += 3 * n
    if not count:
        return {"psnr_bg": None, "ssim_bg": None, "mse_bg": None, "mae_bg": None}
    mse, mae = sq / count / 255.0**2, ab / count / 255.0
    index = np.unique(np.linspace(0, len(source) - 1, min(SSIM_FRAMES, len(source))).round().astype(int))
    height, width = masks.shape[1:]
    size = (max(1, width // 2), max(1, height // 2))

    values = []
    for t in index:
        small = cv2.resize(keep[t], size, interpolation=cv2.INTER_NEAREST) > 0
        if not small.any():
            continue
        a, b = (cv2.resize(cv2.cvtColor(f[t], cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
                for f in (source, target))  # fmt: skip
        values.append(luma_ssim_map(np.where(small, a, 0), np.where(small, b, 0))[small])
    ssim = float(np.concatenate(values).mean()) if values else None
    return {"psnr_bg": psnr_from_mse(mse), "ssim_bg": ssim, "mse_bg": mse, "mae_bg": mae}


# ----------------------------------------------------------------------------------------------- working region
@dataclass(frozen=True)
class Region:
    """The scoring region: the crop ``[y0:y1, x0:x1]`` of the full frames, reduced by the integer ``factor``
    (area average) so that its longer side is at most ``WORK_SIDE``."""

    y0: int
    y1: int
    x0: int
    x1: int
    factor: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) at working resolution."""
        return (self.x1 - self.x0) // self.factor, (self.y1 - self.y0) // self.factor


def working_region(masks: np.ndarray, *, work_side: int = WORK_SIDE) -> Region:
    """The bounding box of ``masks`` over all frames, padded so that a ring of ``RING_PX`` working pixels (and a
    margin) fits around it, cut to a multiple of the reduction factor."""
    _, height, width = masks.shape
    ys = np.flatnonzero(masks.any(axis=(0, 2)))
    xs = np.flatnonzero(masks.any(axis=(0, 1)))
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    factor = max(1, math.ceil((max(y1 - y0, x1 - x0) + 2 * (RING_PX + 2)) / work_side))
    pad = (RING_PX + 2) * factor
    y0, y1, x0, x1 = max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)
    factor = max(1, math.ceil(max(y1 - y0, x1 - x0) / work_side))
    y1 = y0 + max(factor, (y1 - y0) // factor * factor)
    x1 = x0 + max(factor, (x1 - x0) // factor * factor)
    if y1 > height or x1 > width:  # a frame smaller than one working pixel per side: use it whole
        y0, y1, x0, x1, factor = 0, height, 0, width, 1
    return Region(y0, y1, x0, x1, factor)


def _crop_frames(frames: np.ndarray, region: Region) -> np.ndarray:
    """`(num_frames, h, w, 3)` float32 at working resolution."""
    crop = frames[:, region.y0 : region.y1, region.x0 : region.x1]
    if region.factor == 1:
        return crop.astype(np.float32)
    return np.stack([cv2.resize(f, region.size, interpolation=cv2.INTER_AREA) for f in crop]).astype(np.float32)


def _crop_cover(masks: np.ndarray, region: Region) -> np.ndarray:
    """Share of each working pixel covered by ``masks``: `(num_frames, h, w)` float32 in [0, 1]."""
    crop = masks[:, region.y0 : region.y1, region.x0 : region.x1].view(np.uint8)
    if region.factor == 1:
        return crop.astype(np.float32)
    small = [cv2.resize(m * np.uint8(255), region.size, interpolation=cv2.INTER_AREA) for m in crop]
    return np.stack(small).astype(np.float32) / 255.0


def _luma(frames: np.ndarray) -> np.ndarray:
    """`(T, h, w, 3)` float32 RGB → `(T, h, w)` float32 luma (BT.601)."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def _band_pass(frames: np.ndarray) -> np.ndarray:
    """Texture of each `(T, h, w)` frame: a Gaussian of sigma 0.5 minus one of sigma 2 (working pixels)."""
    out = np.empty_like(frames)
    for t in range(len(frames)):
        out[t] = cv2.GaussianBlur(frames[t], (0, 0), 0.5) - cv2.GaussianBlur(frames[t], (0, 0), 2.0)
    return out


def _sums(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Per-frame sums of ``values`` `(T, h, w[, c])` over ``where`` `(T, h, w)` (bool, or float32 0/1 weights) →
    `(T[, c])`."""
    w = where if where.dtype == np.float32 else where.astype(np.float32)
    if values.ndim == 4:
        return np.einsum("thwc,thw->tc", values, w)
    return np.einsum("thw,thw->t", values, w)


def _ncc(x: np.ndarray, y: np.ndarray, where: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-frame normalised cross-correlation of `(T, h, w)` ``x`` and ``y`` over ``where`` (``n`` pixels each);
    0 where either is constant."""
    sx, sy = _sums(x, where), _sums(y, where)
    sxy = _sums(x * y, where) - sx * sy / n
    sxx = _sums(x * x, where) - sx * sx / n
    syy = _sums(y * y, where) - sy * sy / n
    return np.where(sxx * syy > 1e-6, sxy / np.sqrt(np.maximum(sxx * syy, 1e-12)), 0.0)


def _median(values: np.ndarray, valid: np.ndarray) -> float | None:
    return float(np.median(values[valid])) if valid.any() else None


# ----------------------------------------------------------------------------------------------- removal checks
def removal_checks(
    source: np.ndarray, target: np.ndarray, masks: np.ndarray, object_masks: np.ndarray
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The weight-free removal checks on one render (see the module docstring): medians over frames, the share of
    bad frames and the effect left around the object.

    Args:
        source, target (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): decoded stored clips.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the inpainted (dilated) region.
        object_masks (`np.ndarray` of the same shape, bool): the object itself (inside ``masks``).

    Returns:
        ``(columns, details)``: ``hole_change``, ``object_match``, ``ring_colour_gap``, ``ring_texture_ratio``,
        ``seam_error``, ``flicker_ratio``, ``motion_gap``, ``temporal_warp_error``, ``effect_residual``,
        ``object_ring_colour_gap``, ``object_texture_ratio``, ``bad_frame_share`` (None when a check has no pixels
        to use), and details for ``metrics_json``. ``object_texture_ratio`` is the fill's texture energy on the
        object's core over the texture the clip shows at the same spots in other frames (:func:`_reference_texture`;
        details ``object_reference_texture``, ``object_reference_frames``), or, where no frame shows them, over the
        ring's (details ``object_ring_texture``, always given).
    """
    region = working_region(masks)
    src, tgt = _crop_frames(source, region), _crop_frames(target, region)
    hole_cover = _crop_cover(masks, region)
    # the object inside the hole, cut to the region first (the hole lies inside it)
    rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
    obj_region = Region(0, region.y1 - region.y0, 0, region.x1 - region.x0, region.factor)
    obj_cover = _crop_cover(object_masks[:, rows, cols] & masks[:, rows, cols], obj_region)
    hole, obj, touched = hole_cover > 0.5, obj_cover > 0.5, hole_cover > 0
    around_hole, around_obj = grow(hole, RING_PX), grow(obj_cover > 0, 2)
    ring = around_hole & ~grow(touched, 1)
    # seam band: inside the hole, within BAND_PX of its edge, at least 2 working pixels away from the object
    band = hole & grow(~hole, BAND_PX) & ~around_obj
    tgt_luma = _luma(tgt)
    src_bp, tgt_bp = _band_pass(_luma(src)), _band_pass(tgt_luma)
    src_energy, tgt_energy = np.abs(src_bp), np.abs(tgt_bp)
    # the masks as float32 weights, converted once for every per-frame sum
    obj_w, hole_w, ring_w, band_w = (m.astype(np.float32) for m in (obj, hole, ring, band))

    n_obj, n_hole, n_ring, n_band = (m.sum((1, 2)).astype(np.float64) for m in (obj, hole, ring, band))
    has_obj = n_obj >= _MIN_PIXELS
    has_ring = (n_hole >= _MIN_PIXELS) & (n_ring >= _MIN_PIXELS)
    has_band = n_band >= _MIN_PIXELS
    o, h, r, b = (np.maximum(n, 1.0) for n in (n_obj, n_hole, n_ring, n_band))

    # hole changed: mean absolute colour change on the object, in units of the source object's texture
    change = _sums(np.abs(tgt - src), obj_w).sum(1) / (3 * o) / (_sums(src_energy, obj_w) / o + _NOISE_FLOOR)
    # object gone: NCC of the band-passed source object with the band-passed target on its pixels
    match = _ncc(src_bp, tgt_bp, obj_w, o)
    # the fill fits its ring: colour distance in units of the ring's colour spread; texture energy ratio
    hole_mean, ring_mean = _sums(tgt, hole_w) / h[:, None], _sums(tgt, ring_w) / r[:, None]
    ring_var = (_sums(tgt * tgt, ring_w) / r[:, None] - ring_mean**2).clip(min=0).sum(1)
    gap = np.linalg.norm(hole_mean - ring_mean, axis=1) / (np.sqrt(ring_var) + 8.0)
    ring_texture = _sums(tgt_energy, ring_w) / r + 0.5
    texture = (_sums(tgt_energy, hole_w) / h + 0.5) / ring_texture
    # no seam: on the band of real background inside the mask edge the fill's texture is the source's
    seam = 1.0 - _ncc(src_bp, tgt_bp, band_w, b)
    warp, flicker, motion_gap, flicker_frames, frame_flicker = _temporal(
        tgt, hole, ring, ring | ~grow(touched, RING_PX)
    )
    to_first = camera_maps(tgt_luma, hole)
    busy = grow(hole, 1)
    effect, effect_frames, effect_details = _effect_residual(
        tgt_luma, hole, obj_cover > 0, to_first, near=around_hole & ~around_obj, busy=busy
    )
    # the fill on the object's own pixels against the ring
    obj_mean = _sums(tgt, obj_w) / o[:, None]
    obj_gap = np.linalg.norm(obj_mean - ring_mean, axis=1) / (np.sqrt(ring_var) + 8.0)
    # texture on the object's core (3 working pixels in from its outline, clear of the step a fill makes there)
    core = obj & ~grow(~obj, 3)
    n_core = core.sum((1, 2)).astype(np.float64)
    obj_texture = (_sums(tgt_energy, core) / np.maximum(n_core, 1.0) + 0.5) / ring_texture
    has_both = has_obj & has_ring
    has_core = (n_core >= _MIN_PIXELS) & has_ring
    ref_texture, ref_pixels = _reference_texture(tgt_luma, tgt_energy, hole, core, to_first, busy=busy)
    has_ref = np.isfinite(ref_texture)
    # frames whose fill does not follow from the frame before, or where the object's texture is back
    judged = [t for t, f in enumerate(frame_flicker) if f is not None or has_obj[t]]
    bad_frames = [t for t in judged if (frame_flicker[t] or 0.0) > BAD_FRAME_FLICKER
                  or (has_obj[t] and match[t] > BAD_FRAME_MATCH)]  # fmt: skip
    bad_share = len(bad_frames) / len(judged) if judged else None
    columns = {
        "hole_change": _median(change, has_obj),
        "object_match": _median(match, has_obj),
        "ring_colour_gap": _median(gap, has_ring),
        "ring_texture_ratio": _median(texture, has_ring),
        "seam_error": _median(seam, has_band),
        "flicker_ratio": flicker,
        "motion_gap": None if motion_gap is None else motion_gap * region.factor,  # full-resolution pixels
        "temporal_warp_error": warp,
        "effect_residual": effect,
        "object_ring_colour_gap": _median(obj_gap, has_both),
        # against the true background where the clip shows it in another frame, else against the ring
        "object_texture_ratio": _median(ref_texture, has_ref) if has_ref.any() else _median(obj_texture, has_core),
        "bad_frame_share": bad_share,
    }
    details = {
        "region": [region.x0, region.y0, region.x1, region.y1],
        "work_factor": region.factor,
        "frames_used": {
            "hole_change": int(has_obj.sum()),
            "object_match": int(has_obj.sum()),
            "ring": int(has_ring.sum()),
            "seam_error": int(has_band.sum()),
            "flicker_ratio": flicker_frames,
        },
        "object_match_p90": float(np.quantile(match[has_obj], 0.9)) if has_obj.any() else None,
        **effect_details,
        "bad_frames": bad_frames,
        "object_reference_texture": _median(ref_texture, has_ref),
        "object_reference_frames": int(has_ref.sum()),
        "object_ring_texture": _median(obj_texture, has_core),
    }
    details["frames_used"]["effect_residual"] = effect_frames
    return {k: (None if v is None else float(v)) for k, v in columns.items()}, details


def _temporal(
    target: np.ndarray, hole: np.ndarray, ring: np.ndarray, reference: np.ndarray
) -> tuple[float | None, float | None, float | None, int, list[float | None]]:
    """Temporal checks of the hole on the target (`(T, h, w, 3)` float32 at working resolution).

    Flow from frame t+1 back to t is estimated on the target (DIS) and frame t is warped onto t+1. The mean absolute
    residual inside ``hole[t + 1]`` is compared with the residual on ``reference[t + 1]`` (background around the
    hole), and the median flow inside the hole with the median flow on its ``ring`` (a fill moves with what
    surrounds it). Returns ``(warp error on the [0, 1] scale, hole residual / (background residual + 1 grey level),
    median over frames of the distance between the two median flows in working pixels, frames used, per frame the
    hole's residual from the frame before over the background's + 1 grey level (None where not measured))``.
    """
    per_frame: list[float | None] = [None] * len(target)
    if len(target) < 2:
        return None, None, None, 0, per_frame
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in target.astype(np.uint8)])
    h, w = grey.shape[1:]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    in_hole = in_ref = 0.0
    n_hole = n_ref = frames = 0
    gaps: list[float] = []
    for t in range(len(target) - 1):
        hmask, rmask = hole[t + 1], reference[t + 1]
        if hmask.sum() < _MIN_PIXELS or rmask.sum() < _MIN_PIXELS:
            continue
        back = dis.calc(grey[t + 1], grey[t], None)
        warped = cv2.remap(target[t], gx + back[..., 0], gy + back[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        residual = np.abs(warped - target[t + 1]).mean(-1)
        per_frame[t + 1] = float(residual[hmask].mean() / (residual[rmask].mean() + 1.0))
        in_hole += float(residual[hmask].sum())
        n_hole += int(hmask.sum())
        in_ref += float(residual[rmask].sum())
        n_ref += int(rmask.sum())
        frames += 1
        if ring[t + 1].sum() >= _MIN_PIXELS:
            inside, around = np.median(back[hmask], axis=0), np.median(back[ring[t + 1]], axis=0)
            gaps.append(float(np.hypot(*(inside - around))))
    if not frames:
        return None, None, None, 0, per_frame
    hole_residual, ref_residual = in_hole / n_hole, in_ref / n_ref
    gap = float(np.median(gaps)) if gaps else None
    return hole_residual / 255.0, hole_residual / (ref_residual + 1.0), gap, frames, per_frame


def _blur_radius(sigma: float) -> int:
    """Half the kernel side ``cv2.GaussianBlur`` uses for a float image and ``sigma`` (``ksize=(0, 0)``), pixels."""
    return (round(sigma * 8 + 1) | 1) // 2


def _reference_texture(
    luma: np.ndarray,
    energy: np.ndarray,
    hole: np.ndarray,
    core: np.ndarray,
    to_first: list[np.ndarray],
    *,
    busy: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fill's texture on the object's core against the true background's there, where the clip shows it.

    For every ``REFERENCE_STEP``-th frame t, each pixel of ``core[t]`` is looked up in the nearest frame (before or
    after, alternately) in which it is clear of the hole (``hole`` grown by 1), aligned onto t by the camera maps
    ``to_first``: there the clip shows the background the fill should have restored. Returns per frame ``(ratio,
    pixels)``: (mean ``energy`` on the looked-up pixels + ``REFERENCE_FLOOR``) / (mean band-pass energy of the
    aligned views there + ``REFERENCE_FLOOR``), NaN where not measured, and the number of looked-up pixels.

    Only the core's bounding box is aligned and band-passed (grown by the band-pass's kernel radius), which gives
    the whole frame's values there.

    Args:
        luma, energy (`np.ndarray` of shape `(T, h, w)`, float32): the target's luma and its band-pass magnitude.
        hole, core (`np.ndarray` of shape `(T, h, w)`, bool): the inpainted region; the object's core.
        busy: ``hole`` grown by 1 when the caller has it (else grown here).
    """
    num_frames, h, w = luma.shape
    busy = grow(hole, 1) if busy is None else busy
    from_first = [np.linalg.inv(m) for m in to_first]
    margin = _blur_radius(2.0)
    ratios = np.full(num_frames, np.nan)
    pixels = np.zeros(num_frames, int)
    for t in range(0, num_frames, REFERENCE_STEP):
        if np.count_nonzero(core[t]) < _MIN_PIXELS:
            continue
        win = box_of(core[t])
        wy0, wy1, wx0, wx1 = win
        missing = core[t][wy0:wy1, wx0:wx1].copy()
        ref_energy = np.full(missing.shape, np.nan, np.float32)
        for lag in range(1, num_frames):
            if (t - lag < 0 and t + lag >= num_frames) or not missing.any():
                break
            for r in (t - lag, t + lag):
                if not 0 <= r < num_frames:
                    continue
                affine = (from_first[r] @ to_first[t])[:2]  # frame t's pixels → frame r's
                fresh = missing & clear_at(busy[r], affine, win)
                fy0, fy1, fx0, fx1 = box_of(fresh)
                if fy1 == fy0:
                    continue
                view = grown_box((fy0 + wy0, fy1 + wy0, fx0 + wx0, fx1 + wx0), margin, (h, w))
                warped = aligned(luma[r], affine, view)
                band = cv2.GaussianBlur(warped, (0, 0), 0.5) - cv2.GaussianBlur(warped, (0, 0), 2.0)
                dy, dx = fy0 + wy0 - view[0], fx0 + wx0 - view[2]
                new = fresh[fy0:fy1, fx0:fx1]
                ref_energy[fy0:fy1, fx0:fx1][new] = np.abs(band[dy : dy + fy1 - fy0, dx : dx + fx1 - fx0])[new]
                missing &= ~fresh
        found = np.isfinite(ref_energy)
        pixels[t] = int(found.sum())
        if pixels[t] >= _MIN_PIXELS:
            ratios[t] = (float(energy[t][wy0:wy1, wx0:wx1][found].mean()) + REFERENCE_FLOOR) / (
                float(ref_energy[found].mean()) + REFERENCE_FLOOR
            )
    return ratios, pixels


def _effect_residual(
    luma: np.ndarray,
    hole: np.ndarray,
    obj: np.ndarray,
    to_first: list[np.ndarray],
    *,
    near: np.ndarray | None = None,
    busy: np.ndarray | None = None,
) -> tuple[float | None, int, dict[str, float]]:
    """Object-correlated change left around the object in the target: a shadow or reflection the fill kept.

    Args:
        luma (`np.ndarray` of shape `(T, h, w)`, float32): the target's luma at working resolution.
        hole, obj (`np.ndarray` of shape `(T, h, w)`, bool): the inpainted region and the object (touched pixels).
        to_first: the camera (``tasks.camera_motion.camera_maps``).
        near, busy: ``grow(hole, RING_PX) & ~grow(obj, 2)`` and ``grow(hole, 1)`` when the caller has them (else
            grown here).

    1. The camera: an affine map between neighbouring frames is fitted to their optical flow outside the holes and
       chained, so any frame can be aligned onto any other (``tasks.camera_motion.camera_maps``).
    2. The residual: for every ``EFFECT_STEP``-th frame t and each pixel around the object (the hole minus the
       object, and a ring of ``RING_PX`` outside the hole), the nearest frame r before and the nearest after in which
       that pixel is clear of the hole are aligned onto t. Their low-passed luma difference (Gaussian, sigma 1.5),
       less the change in exposure (the mean difference over the background both frames show), is shrunk towards
       zero by the background's own change over the same lag on the same side (frame r against frame r + (r - t),
       where that is clear too): a background that moves or changes by itself (people, water, a lamp) changes as
       much between two views of it. The pixel's residual is the side that differs less, or zero where t lies
       between its two views (t darker than one and lighter than the other): what t shows there that the
       background does not.
    3. Moving with the object: residuals are averaged in the object's frame of reference (centred on its centroid),
       where a shadow or reflection stays put while the background's own changes do not. A position counts what its
       mean exceeds by ``EFFECT_SIGMAS`` standard errors, over positions seen in at least half the frames used.

    The exposure changes are means over whole frames; the low-passed differences are computed on the rows of the
    pixels they are needed at (grown by the Gaussian's kernel radius), which gives the whole frame's values there.

    Returns:
        ``(value, frames used, details)``: the 95th percentile of that over the positions inside the hole, less the
        same over the ring outside it (what the background itself does near the object), in grey levels; None when
        fewer than two frames see the object's surroundings uncovered. Details: ``effect_inside``,
        ``effect_outside``.
    """
    num_frames, h, w = luma.shape
    near = grow(hole, RING_PX) & ~grow(obj, 2) if near is None else near
    busy = grow(hole, 1) if busy is None else busy
    free = (~busy).view(np.uint8)  # 1 where a pixel is clear of the hole grown by 1
    from_first = [np.linalg.inv(m) for m in to_first]
    margin = _blur_radius(1.5)
    nearest, linear = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    total = np.zeros((2, 2 * h, 2 * w), np.float64)
    total_sq = np.zeros_like(total)
    count = np.zeros((2, 2 * h, 2 * w), np.int32)
    frames = 0
    for t in range(0, num_frames, EFFECT_STEP):
        n_near = np.count_nonzero(near[t])
        if n_near < _MIN_PIXELS:
            continue
        ys, xs = np.nonzero(obj[t])
        if not len(ys):
            continue
        # the pixels around the object, in the rows they span (pixels are then flat indices into those rows)
        wy0, wy1, _, _ = box_of(near[t])
        near_w = near[t][wy0:wy1]
        luma_t = luma[t]
        # per pixel, the nearest frame before and the nearest after in which the pixel is clear of the hole; frame
        # r's clear pixels (uint8 0/1: inside frame r and clear of its hole there, as ``clear_at``), those of them
        # clear in t too, and its luma aligned onto t, each computed once (the lag's second view is a later one)
        view_of: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        def views(r: int, t: int = t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if r not in view_of:
                affine = (from_first[r] @ to_first[t])[:2]
                clear = cv2.warpAffine(free[r], affine, (w, h), flags=nearest, borderValue=0)
                warped = cv2.warpAffine(luma[r], affine, (w, h), flags=linear, borderMode=cv2.BORDER_REPLICATE)
                view_of[r] = clear, cv2.bitwise_and(clear, free[t]), warped
            return view_of[r]

        def mean_over(values: np.ndarray, where: np.ndarray) -> float:
            # the mean of ``values`` over ``where`` (uint8 0/1), or 0 over too few pixels: ``np.mean`` of the selected
            # pixels (a float32 pairwise sum, divided in double), as the scores were defined (a double-precision
            # mean differs in the last bits)
            if cv2.countNonZero(where) < _MIN_PIXELS:
                return 0.0
            picked = np.compress(where.view(bool).ravel(), values.ravel())
            return float(np.float32(float(np.add.reduce(picked)) / picked.size))

        sides = []
        for direction in (-1, 1):
            found = np.full(near_w.shape, np.nan, np.float32)
            missing = near_w.copy()
            n_missing = n_near
            for r in range(t + direction, -1 if direction < 0 else num_frames, direction):
                clear, both, warped = views(r)
                fresh = missing & clear[wy0:wy1].view(bool)
                at = np.flatnonzero(fresh)
                if not len(at):
                    continue
                # the Gaussians only on the rows of the fresh pixels, and their reach around them
                y0, y1 = max(0, wy0 + int(at[0]) // w - margin), min(h, wy0 + int(at[-1]) // w + 1 + margin)
                in_crop = at + (wy0 - y0) * w
                # less the change in exposure: the mean difference over the background both frames show
                change = luma_t - warped
                shift = mean_over(change, both)
                diff = cv2.GaussianBlur(change[y0:y1] - shift, (0, 0), 1.5).ravel().take(in_crop)
                # the background's own change over the same lag, on the same side: reference r against r + lag
                r2 = min(max(r + (r - t), 0), num_frames - 1)
                if r2 != r:
                    clear2, _, warped2 = views(r2)
                    change2 = warped - warped2
                    shift2 = mean_over(change2, cv2.bitwise_and(clear2, clear))
                    own = cv2.GaussianBlur(change2[y0:y1] - shift2, (0, 0), 1.5).ravel().take(in_crop)
                    own = np.where(clear2[y0:y1].ravel().take(in_crop).view(bool), np.abs(own), 0.0)
                    diff = np.sign(diff) * np.maximum(np.abs(diff) - own, 0.0)
                found.ravel()[at] = diff
                missing ^= fresh  # fresh pixels are missing ones
                n_missing -= len(at)
                if n_missing < 0.05 * n_near:
                    break
            sides.append(found)
        # the side that differs least (a background that moves by itself differs on one side only)
        before, after = sides
        closer = np.where(np.abs(before) <= np.abs(after), before, after)
        between = (before * after) < 0  # t lies between its two references: the background's own change
        residual = np.where(np.isnan(before), after, np.where(np.isnan(after), before,
                            np.where(between, 0.0, closer)))  # fmt: skip
        # into the object's frame of reference: its centroid at (h, w) of a (2h, 2w) canvas; the pixels inside the
        # hole (what the engine filled) and those of the ring outside it (the source's, as they were) apart
        oy, ox = h - int(round(ys.mean())) + wy0, w - int(round(xs.mean()))
        spot = np.s_[oy : oy + wy1 - wy0, ox : ox + w]
        hole_w = hole[t][wy0:wy1]
        used = False
        for part, where in enumerate((near_w & hole_w, near_w & ~hole_w)):
            use = where & np.isfinite(residual)
            value = np.where(use, residual, 0.0)
            total[part][spot] += value
            total_sq[part][spot] += value**2
            count[part][spot] += use
            used |= part == 0 and int(np.count_nonzero(use)) >= _MIN_PIXELS
        frames += used
    if frames < 2:
        return None, frames, {}
    levels = []
    for part in range(2):
        seen = count[part] >= max(2, frames // 2)
        if seen.sum() < _MIN_PIXELS:
            levels.append(0.0 if part else None)
            continue
        n = count[part][seen]
        mean = total[part][seen] / n
        spread = np.sqrt(np.maximum(total_sq[part][seen] / n - mean**2, 0.0) / n)
        levels.append(float(np.quantile(np.maximum(np.abs(mean) - EFFECT_SIGMAS * spread, 0.0), 0.95)))
    inside, outside_ring = levels
    if inside is None:
        return None, frames, {}
    return max(0.0, inside - outside_ring), frames, {"effect_inside": inside, "effect_outside": outside_ring}


# ----------------------------------------------------------------------------------------------- weighted checks
def _projected(output: Any) -> Any:
    """The projected CLIP embedding: a tensor (transformers 4) or the output's ``pooler_output`` (transformers 5)."""
    return output if hasattr(output, "norm") else output.pooler_output


class ClipScorer:
    """CLIP from a local ``transformers`` folder (``local_files_only``: nothing is downloaded). Build one per batch;
    the model loads on first use, once.

    Used by the gate (the object's label against the hole's region, before and after) and by ``vpf eval`` (text
    similarity of whole frames, temporal consistency of consecutive frames).
    """

    def __init__(self, model_path: str | Path, *, num_frames: int = 4) -> None:
        self.model_path = str(model_path)
        self.num_frames = num_frames
        self._model: Any = None
        self._processor: Any = None

    @under_load_lock
    def setup(self) -> None:
        """Load the model (idempotent). Raises ``FileNotFoundError`` when the folder does not exist."""
        if self._model is not None:
            return
        if not Path(self.model_path).exists():
            raise FileNotFoundError(f"CLIP weights not found at {self.model_path}")
        from transformers import CLIPModel, CLIPProcessor

        self._model = CLIPModel.from_pretrained(self.model_path, local_files_only=True).eval()
        self._processor = CLIPProcessor.from_pretrained(self.model_path, local_files_only=True)

    def image_embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit-length image embeddings `(len(images), dim)` of `(height, width, 3)` uint8 images."""
        import torch

        self.setup()
        with torch.no_grad():
            inputs = self._processor(images=images, return_tensors="pt")
            features = _projected(self._model.get_image_features(**inputs))
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def text_embedding(self, text: str) -> np.ndarray:
        """The unit-length embedding `(dim,)` of ``text``."""
        import torch

        self.setup()
        with torch.no_grad():
            limit = (
                self._model.config.text_config.max_position_embeddings
            )  # long captions are cut, as CLIP was trained
            inputs = self._processor(text=[text], return_tensors="pt", padding=True, truncation=True, max_length=limit)
            features = _projected(self._model.get_text_features(**inputs))
        return torch.nn.functional.normalize(features, dim=-1).numpy()[0]

    def similarity(self, images: list[np.ndarray], text: str) -> float:
        """Mean cosine similarity × 100 (clamped at 0, as CLIPScore) of ``images`` with ``text``."""
        return float(np.clip(self.image_embeddings(images) @ self.text_embedding(text), 0, None).mean() * 100)

    def region_crops(self, frames: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """The hole's bounding box (with a 10 % margin) on ``num_frames`` evenly spaced frames that have a hole."""
        with_hole = np.flatnonzero(masks.any(axis=(1, 2)))
        pick = np.linspace(0, len(with_hole) - 1, min(self.num_frames, len(with_hole))).round().astype(int)
        out = []
        for t in with_hole[pick]:
            ys, xs = np.nonzero(masks[t])
            my, mx = int(0.1 * (np.ptp(ys) + 1)), int(0.1 * (np.ptp(xs) + 1))
            y0, y1 = max(0, ys.min() - my), min(masks.shape[1], ys.max() + 1 + my)
            x0, x1 = max(0, xs.min() - mx), min(masks.shape[2], xs.max() + 1 + mx)
            out.append(np.ascontiguousarray(frames[t, y0:y1, x0:x1]))
        return out

    def label_scores(self, source: np.ndarray, target: np.ndarray, masks: np.ndarray, label: str) -> dict[str, float]:
        """``clip_label_src`` / ``clip_label_tgt``: the label's similarity with the hole region before and after."""
        text = f"a photo of a {label}"
        return {
            "clip_label_src": self.similarity(self.region_crops(source, masks), text),
            "clip_label_tgt": self.similarity(self.region_crops(target, masks), text),
        }


class ResegScorer:
    """Re-segmentation check: an open-vocabulary segmenter looks for the object's label in a clip, and what it finds is
    compared with the object's own masks (see the module docstring). Build one per batch: the models load on first use
    (``setup()``), once; calls from several threads take turns (``tasks.effect_segments.PhraseFinder``).

    Args:
        spec: a ``detect+track:…`` or ``sam3:…`` segmenter spec (``tasks.annotate.specs``), built here.
        segmenter: or a ``tasks.contracts.PhraseSegmenter`` already built (``setup()`` and ``track(frames, phrases)``).
        storage_options: fsspec options of model URLs in ``spec``.
        found_iou: a frame counts as "found" in the details when its best IoU reaches this.
    """

    def __init__(
        self,
        spec: str | None = None,
        *,
        segmenter: Any = None,
        storage_options: dict[str, Any] | None = None,
        found_iou: float = 0.5,
    ) -> None:
        # the phrases are passed with each call (the object's label)
        self.finder = PhraseFinder(spec, segmenter=segmenter, storage_options=storage_options, role="reseg segmenter",
                                   not_loaded="reseg_not_loaded", models="the gate's re-segmentation models")  # fmt: skip
        self.name, self.segmenter = self.finder.name, self.finder.segmenter
        self.found_iou = float(found_iou)

    @property
    def _ready(self) -> bool:  # the models are loaded (read by tests that count loads)
        return self.finder.ready

    def setup(self) -> None:
        """Load the segmenter's models (idempotent). Raises ``InputError`` naming the spec and the path at fault."""
        self.finder.setup()

    def find(self, frames: np.ndarray, label: str) -> np.ndarray:
        """Masks `(num_instances, num_frames, height, width)` bool of every instance of ``label`` found in ``frames``
        `(num_frames, height, width, 3)` uint8."""
        self.setup()
        masks = [m for _, m in self.finder.track(frames, [label])]
        return np.stack(masks) if masks else np.zeros((0, *frames.shape[:3]), bool)

    def iou(self, frames: np.ndarray, object_masks: np.ndarray, label: str) -> tuple[float, dict[str, Any]]:
        """``(mean over the object's frames of the best instance IoU, details)``; ``object_masks`` `(T, H, W)` bool
        must be visible in some frame."""
        frames_with = np.flatnonzero(object_masks.any(axis=(1, 2)))
        found = self.find(frames, label)
        best = np.zeros(len(frames_with))
        for k, t in enumerate(frames_with):
            obj = object_masks[t]
            for inst in found[:, t]:
                union = np.count_nonzero(inst | obj)
                best[k] = max(best[k], np.count_nonzero(inst & obj) / union)
        details = {"instances": int(len(found)), "object_frames": int(len(frames_with)),
                   "found_frames": int((best >= self.found_iou).sum())}  # fmt: skip
        return float(best.mean()), details

    def scores(
        self, source: np.ndarray, target: np.ndarray, object_masks: np.ndarray, label: str
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """``reseg_iou_src`` / ``reseg_iou_tgt`` and their details (instances, frames found)."""
        src, src_details = self.iou(source, object_masks, label)
        tgt, tgt_details = self.iou(target, object_masks, label)
        details = {"segmenter": self.name, "label": label, "src": src_details, "tgt": tgt_details}
        return {"reseg_iou_src": src, "reseg_iou_tgt": tgt}, details


# ----------------------------------------------------------------------------------------------- one render
def score_render(
    source: np.ndarray,
    target: np.ndarray,
    masks: np.ndarray,
    *,
    object_masks: np.ndarray | None = None,
    flags: list[str] | None = None,
    label: str | None = None,
    clip: ClipScorer | None = None,
    reseg: ResegScorer | None = None,
) -> dict[str, Any]:
    """Every gate column of one removal render, keyed like the ``pairs`` columns.

    Args:
        source (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the decoded stored source clip.
        target (`np.ndarray` of the same shape, uint8): the decoded stored edited clip.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the inpainted (dilated) region.
        object_masks (`np.ndarray` of the same shape, bool, optional): the object itself; default ``masks`` (then
            the seam check has no band to look at and is absent).
        flags: quality flags reported by the engine.
        label: the object's name, for the CLIP and re-segmentation checks.
        clip: a ``ClipScorer`` built for the batch; None = CLIP columns absent.
        reseg: a ``ResegScorer`` built for the batch; None = re-segmentation columns absent.

    Returns:
        ``GATE_COLUMNS`` (None = absent, with the reason in ``metrics_json["absent"]``), ``quality_flags``,
        ``metrics_json``, and ``clip_configured`` / ``reseg_configured`` (whether the CLIP / re-segmentation check
        could run; not columns).

    Raises:
        InputError: unreadable shapes or values, mismatched clips or masks, an empty mask.
    """
    source, masks = check_inputs(source, masks, name="source")
    target, _ = check_inputs(target, masks, name="target")
    if target.shape != source.shape:
        raise InputError("target", "shape_mismatch", f"target {target.shape} differs from source {source.shape}")
    if object_masks is None:
        object_masks = masks
    else:
        object_masks = np.asarray(object_masks, dtype=bool)
        if object_masks.shape != masks.shape:
            raise InputError(
                "object_masks", "shape_mismatch", f"object masks {object_masks.shape} differ from masks {masks.shape}"
            )
    stats = mask_statistics(masks)
    quality_flags = list(flags or [])
    if stats["mask_full_frames"] == masks.shape[0] and NO_OBSERVED_BACKGROUND not in quality_flags:
        quality_flags.append(NO_OBSERVED_BACKGROUND)
    absent: dict[str, str] = {}
    columns: dict[str, Any] = dict(background_fidelity(source, target, masks))
    if columns["psnr_bg"] is None:
        absent["psnr_bg"] = "no background pixels"
    removal, details = removal_checks(source, target, masks, object_masks)
    columns.update(removal)
    columns["mask_area_ratio"] = stats["mask_area_ratio"]
    columns["object_frames_ratio"] = float((object_masks & masks).any(axis=(1, 2)).mean())
    for key, why in (
        ("hole_change", "the object covers too few pixels in every frame"),
        ("object_match", "the object covers too few pixels in every frame"),
        ("ring_colour_gap", "no ring of background around the hole"),
        ("ring_texture_ratio", "no ring of background around the hole"),
        ("seam_error", "no band between the object and the mask edge (mask not dilated, or no object mask)"),
        ("flicker_ratio", "fewer than two frames with a hole and background around it"),
        ("motion_gap", "fewer than two frames with a hole and a ring around it"),
        ("temporal_warp_error", "fewer than two frames with a hole and background around it"),
        ("effect_residual", "fewer than two frames show the object's surroundings uncovered in another frame"),
        ("object_ring_colour_gap", "the object covers too few pixels, or no ring of background around the hole"),
        ("object_texture_ratio", "the object's core covers too few pixels, or no ring of background around the hole"),
        ("bad_frame_share", "no frame with the object or with a hole and background around it"),
    ):
        if columns[key] is None:
            absent[key] = why
    columns["clip_label_src"] = columns["clip_label_tgt"] = None
    if clip is None:
        absent["clip_label_src"] = absent["clip_label_tgt"] = "no CLIP weights configured"
    elif not label:
        absent["clip_label_src"] = absent["clip_label_tgt"] = "no object label"
    else:
        columns.update(clip.label_scores(source, target, masks, label))
    columns["reseg_iou_src"] = columns["reseg_iou_tgt"] = None
    reseg_details = None
    if reseg is None:
        absent["reseg_iou_src"] = absent["reseg_iou_tgt"] = "no re-segmentation segmenter configured"
    elif not label:
        absent["reseg_iou_src"] = absent["reseg_iou_tgt"] = "no object label"
    elif not object_masks.any():
        absent["reseg_iou_src"] = absent["reseg_iou_tgt"] = "the object is visible in no frame"
    else:
        reseg_columns, reseg_details = reseg.scores(source, target, object_masks, label)
        columns.update(reseg_columns)
    metrics_details = {
        **columns,
        "gate_version": GATE_VERSION,
        "psnr_bg_capped": columns["psnr_bg"] == PSNR_CAP_DB,
        **stats,
        **details,
        **({"reseg": reseg_details} if reseg_details else {}),
        "absent": absent,
        "quality_flags": quality_flags,
    }
    return {
        **columns,
        "quality_flags": quality_flags,
        "clip_configured": clip is not None,
        "reseg_configured": reseg is not None,
        "metrics_json": json.dumps(metrics_details, sort_keys=True),
    }
