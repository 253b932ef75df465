"""Pixel metrics shared by the quality gate (``tasks.gate``), ``vpf eval`` and the benchmarks.

- Region metrics: PSNR (dB), SSIM, MSE and MAE on the [0, 1] scale between two clips over a region's pixels only;
  PSNR of identical regions is capped at ``PSNR_CAP_DB`` so the number stays finite in Parquet and JSON.
- Temporal consistency of a filled region: the mean absolute difference ([0, 1] scale) between each edited frame
  and the previous edited frame warped onto it by optical flow, over mask pixels that pass a forward-backward check.
- Mask statistics: area ratios and frame-to-frame change.

The removal checks live in ``tasks.gate``, the accept rule in ``tasks.accept``.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from tasks.engines.propagation import flow_size


PSNR_CAP_DB = 100.0
_SSIM_SIGMA = 1.5
_C1, _C2 = 0.01**2, 0.03**2


# ----------------------------------------------------------------------------------------------- pixel metrics
def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for an MSE on the [0, 1] scale, capped at ``PSNR_CAP_DB``."""
    if mse <= 10 ** (-PSNR_CAP_DB / 10):
        return PSNR_CAP_DB
    return float(-10.0 * math.log10(mse))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Gaussian window, sigma 1.5) averaged over colour channels.

    Args:
        a, b (`np.ndarray` of shape `(num_frames, height, width, 3)`): uint8 or float in [0, 1].

    Returns:
        `(num_frames, height, width)` float32.
    """
    out = np.empty(a.shape[:3], np.float32)
    scale = 1.0 / 255.0 if a.dtype == np.uint8 else 1.0
    for t in range(a.shape[0]):
        x = a[t].astype(np.float32) * scale
        y = b[t].astype(np.float32) * scale

        def blur(img: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(img, (0, 0), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        num = (2 * mx * my + _C1) * (2 * cxy + _C2)
        den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
        out[t] = (num / den).mean(axis=-1)
    return out


def region_metrics(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> dict[str, float | None]:
    """PSNR, SSIM, MSE and MAE between two clips over ``region`` pixels only.

    Both clips are masked outside ``region`` (set to 0) before SSIM, so pixels outside the region cannot leak into
    its windows. Averages are over the region's pixels (MSE pooled over the whole clip, then PSNR).

    Args:
        a, b (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clips.
        region (`np.ndarray` of shape `(num_frames, height, width)`, bool): pixels to compare.

    Returns:
        ``{"psnr", "ssim", "mse", "mae"}`` (MSE/MAE on the [0, 1] scale); all None for an empty region.
    """
    if not region.any():
        return {"psnr": None, "ssim": None, "mse": None, "mae": None}
    diff = (a[region].astype(np.float32) - b[region].astype(np.float32)) / 255.0
    mse = float(np.mean(diff**2))
    mae = float(np.mean(np.abs(diff)))
    keep = region[..., None]
    ssim = float(ssim_map(np.where(keep, a, 0), np.where(keep, b, 0))[region].mean())
    return {"psnr": psnr_from_mse(mse), "ssim": ssim, "mse": mse, "mae": mae}


def background_metrics(original: np.ndarray, edited: np.ndarray, masks: np.ndarray) -> dict[str, float | None]:
    """Background preservation outside ``masks``: ``psnr_bg``, ``ssim_bg``, ``mse_bg``, ``mae_bg``."""
    m = region_metrics(original, edited, ~masks)
    return {"psnr_bg": m["psnr"], "ssim_bg": m["ssim"], "mse_bg": m["mse"], "mae_bg": m["mae"]}


# ----------------------------------------------------------------------------------------------- temporal
def temporal_warp_error(edited: np.ndarray, masks: np.ndarray, *, flow_scale: float = 0.5) -> float | None:
    """Mean absolute warp error ([0, 1] scale) of the filled region between consecutive edited frames.

    Flow is estimated on the edited clip (DIS, at ``flow_scale``); frame t is warped onto frame t+1 and compared
    inside ``masks[t + 1]`` where the forward-backward flow check passes (error under 1 px at flow resolution).

    Args:
        edited (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the edited clip.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the region that was filled.

    Returns:
        The error, or None when fewer than two frames or no checked pixel.
    """
    num_frames, height, width = masks.shape
    if num_frames < 2:
        return None
    h, w = flow_size(height, width, flow_scale)
    small = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in edited]).astype(np.float32)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small.astype(np.uint8)])
    small_masks = np.stack(
        [cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in masks]
    )
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    total, count = 0.0, 0
    for t in range(num_frames - 1):
        region = small_masks[t + 1]
        if not region.any():
            continue
        back = dis.calc(grey[t + 1], grey[t], None)  # t+1 -> t
        fwd = dis.calc(grey[t], grey[t + 1], None)  # t -> t+1
        mx, my = gx + back[..., 0], gy + back[..., 1]
        warped = cv2.remap(small[t], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fwd_at = cv2.remap(fwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        consistent = np.hypot(*(back + fwd_at).transpose(2, 0, 1)) < 1.0
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        ok = region & consistent & inside
        if ok.any():
            total += float(np.abs(warped[ok] - small[t + 1][ok]).sum()) / 255.0
            count += int(ok.sum()) * 3
    return total / count if count else None


# ----------------------------------------------------------------------------------------------- masks
def mask_statistics(masks: np.ndarray) -> dict[str, Any]:
    """Area ratios per frame (mean, min, max), the largest frame-to-frame change of area relative to the frame,
    and the counts of empty and full frames."""
    area = np.count_nonzero(masks.reshape(masks.shape[0], -1), axis=1) / max(1, masks[0].size)
    change = float(np.abs(np.diff(area)).max()) if len(area) > 1 else 0.0
    return {
        "mask_area_ratio": float(area.mean()),
        "mask_area_ratio_min": float(area.min()),
        "mask_area_ratio_max": float(area.max()),
        "mask_max_area_change": change,
        "mask_empty_frames": int((area == 0).sum()),
        "mask_full_frames": int((area == 1).sum()),
    }
