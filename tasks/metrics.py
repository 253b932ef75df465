"""Quality metrics of an editing pair and the accept/reject rule (docs/method.md).

- Background preservation (outside the inpainted mask, both frames masked, averaged over background pixels only):
  PSNR (dB), SSIM, MSE and MAE on the [0, 1] scale. PSNR of identical backgrounds is capped at ``PSNR_CAP_DB``
  (and ``psnr_bg_capped`` is recorded) so the number stays finite in Parquet and JSON.
- Temporal consistency of the filled region: the mean absolute difference ([0, 1] scale) between each edited
  frame and the previous edited frame warped onto it by optical flow, over mask pixels whose flow passes a
  forward-backward consistency check.
- Mask statistics: area ratios and frame-to-frame change.
- LPIPS and CLIP similarity only when their weights are available locally (paths given); otherwise ``None`` with the
  reason in ``metrics_json``, never an approximation.

``pair_metrics`` returns a dict whose keys are ``pairs`` columns (plus ``quality_flags`` and ``metrics_json``);
``AcceptRule.decide`` turns it into ``("accepted" | "rejected", reason)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.engines.base import check_inputs
from tasks.engines.propagation import NO_OBSERVED_BACKGROUND, flow_size


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
    area = masks.reshape(masks.shape[0], -1).mean(axis=1)
    change = float(np.abs(np.diff(area)).max()) if len(area) > 1 else 0.0
    return {
        "mask_area_ratio": float(area.mean()),
        "mask_area_ratio_min": float(area.min()),
        "mask_area_ratio_max": float(area.max()),
        "mask_max_area_change": change,
        "mask_empty_frames": int((area == 0).sum()),
        "mask_full_frames": int((area == 1).sum()),
    }


# ----------------------------------------------------------------------------------------------- learned metrics
def clip_similarity(
    edited: np.ndarray,
    masks: np.ndarray,
    *,
    model_path: str | Path,
    caption: str,
    region_caption: str | None = None,
    num_samples: int = 4,
) -> dict[str, float | None]:
    """CLIP similarity (cosine × 100, as CLIPScore) of sampled frames with ``caption``, and of the masked frames
    (``frame × mask``) with ``region_caption``, from a local ``transformers`` CLIP folder.

    Returns ``{"clip_sim", "clip_sim_masked"}`` (the second None without a region caption).
    """
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_path)).eval()
    processor = CLIPProcessor.from_pretrained(str(model_path))
    index = np.linspace(0, len(edited) - 1, min(num_samples, len(edited))).round().astype(int)

    def score(images: list[np.ndarray], text: str) -> float:
        with torch.no_grad():
            inputs = processor(text=[text], images=images, return_tensors="pt", padding=True)
            outputs = model(**inputs)
            image_embeds = torch.nn.functional.normalize(outputs.image_embeds, dim=-1)
            text_embeds = torch.nn.functional.normalize(outputs.text_embeds, dim=-1)
            return float((image_embeds @ text_embeds.T).clamp(min=0).mean() * 100)

    clip_sim = score([edited[i] for i in index], caption)
    clip_masked = None
    if region_caption:
        clip_masked = score([edited[i] * masks[i][..., None] for i in index], region_caption)
    return {"clip_sim": clip_sim, "clip_sim_masked": clip_masked}


def _learned_metrics(
    edited: np.ndarray,
    masks: np.ndarray,
    original: np.ndarray,
    *,
    lpips_path: str | Path | None,
    clip_path: str | Path | None,
    caption: str | None,
    region_caption: str | None,
) -> tuple[dict[str, float | None], dict[str, str]]:
    values: dict[str, float | None] = {"lpips": None, "clip_sim": None, "clip_sim_masked": None}
    reasons: dict[str, str] = {}
    if lpips_path is None:
        reasons["lpips"] = "no LPIPS weights configured"
    else:
        reasons["lpips"] = "LPIPS is not implemented in this build; weights given but not used"
    if clip_path is None:
        reasons["clip_sim"] = reasons["clip_sim_masked"] = "no CLIP weights configured"
    elif not Path(clip_path).exists():
        reasons["clip_sim"] = reasons["clip_sim_masked"] = f"CLIP weights not found at {clip_path}"
    elif not caption:
        reasons["clip_sim"] = reasons["clip_sim_masked"] = "no caption to compare with"
    else:
        values.update(
            clip_similarity(edited, masks, model_path=clip_path, caption=caption, region_caption=region_caption)
        )
        if values["clip_sim_masked"] is None:
            reasons["clip_sim_masked"] = "no region caption"
    return values, reasons


# ----------------------------------------------------------------------------------------------- per pair
def pair_metrics(
    original: np.ndarray,
    edited: np.ndarray,
    masks: np.ndarray,
    *,
    flags: list[str] | None = None,
    lpips_path: str | Path | None = None,
    clip_path: str | Path | None = None,
    caption: str | None = None,
    region_caption: str | None = None,
) -> dict[str, Any]:
    """All metrics of one render, keyed like the ``pairs`` columns.

    Args:
        original, edited (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): before and after.
        masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the (dilated) mask that was inpainted.
        flags: quality flags reported by the engine (e.g. ``PropagationReport.flags``).
        lpips_path, clip_path: local weights; None = metric absent (reason recorded).
        caption, region_caption: texts for CLIP similarity.

    Returns:
        ``psnr_bg``, ``ssim_bg``, ``mse_bg``, ``mae_bg``, ``temporal_warp_error``, ``mask_area_ratio``, ``lpips``,
        ``clip_sim``, ``clip_sim_masked``, ``quality_flags`` (list) and ``metrics_json`` (everything, with reasons).

    Raises:
        InputError: mismatched shapes, non-finite values (see ``check_inputs``), or an empty mask.
    """
    original, masks = check_inputs(original, masks, name="original")
    edited, _ = check_inputs(edited, masks, name="edited")
    if edited.shape != original.shape:
        from tasks.errors import InputError

        raise InputError("edited", "shape_mismatch", f"edited {edited.shape} differs from original {original.shape}")
    stats = mask_statistics(masks)
    quality_flags = list(flags or [])
    if stats["mask_full_frames"] == masks.shape[0] and NO_OBSERVED_BACKGROUND not in quality_flags:
        quality_flags.append(NO_OBSERVED_BACKGROUND)
    background = background_metrics(original, edited, masks)
    warp = temporal_warp_error(edited, masks)
    learned, reasons = _learned_metrics(
        edited,
        masks,
        original,
        lpips_path=lpips_path,
        clip_path=clip_path,
        caption=caption,
        region_caption=region_caption,
    )
    if background["psnr_bg"] is None:
        reasons["psnr_bg"] = "no background pixels"
    if warp is None:
        reasons["temporal_warp_error"] = "no consistent flow inside the mask"
    details = {
        **background,
        "psnr_bg_capped": background["psnr_bg"] == PSNR_CAP_DB,
        "temporal_warp_error": warp,
        **stats,
        **learned,
        "absent": reasons,
        "quality_flags": quality_flags,
    }
    return {
        **background,
        "temporal_warp_error": warp,
        "mask_area_ratio": stats["mask_area_ratio"],
        **learned,
        "quality_flags": quality_flags,
        "metrics_json": json.dumps(details, sort_keys=True),
    }


# ----------------------------------------------------------------------------------------------- decision
@dataclass
class AcceptRule:
    """Thresholds a pair must meet to be accepted; None disables a check.

    A check whose metric is absent (None) is skipped and the skip is named in the reason, unless
    ``reject_missing`` is set, which rejects instead.
    """

    min_psnr_bg: float | None = 30.0
    min_ssim_bg: float | None = None
    max_warp_error: float | None = 0.1
    min_mask_area_ratio: float | None = 0.001
    max_mask_area_ratio: float | None = 0.9
    max_lpips: float | None = None
    min_clip_sim: float | None = None
    min_judge_compliance: int | None = None
    min_judge_consistency: int | None = None
    min_judge_quality: int | None = None
    reject_flags: list[str] = field(default_factory=lambda: [NO_OBSERVED_BACKGROUND])
    reject_missing: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def decide(self, metrics: dict[str, Any]) -> tuple[str, str]:
        """``("accepted" | "rejected", reason)``; the reason lists every failed check (and skipped ones)."""
        failed: list[str] = []
        skipped: list[str] = []
        checks = (
            ("psnr_bg", self.min_psnr_bg, ">="),
            ("ssim_bg", self.min_ssim_bg, ">="),
            ("temporal_warp_error", self.max_warp_error, "<="),
            ("mask_area_ratio", self.min_mask_area_ratio, ">="),
            ("mask_area_ratio", self.max_mask_area_ratio, "<="),
            ("lpips", self.max_lpips, "<="),
            ("clip_sim", self.min_clip_sim, ">="),
            ("judge_compliance", self.min_judge_compliance, ">="),
            ("judge_consistency", self.min_judge_consistency, ">="),
            ("judge_quality", self.min_judge_quality, ">="),
        )
        for key, limit, op in checks:
            if limit is None:
                continue
            value = metrics.get(key)
            if value is None:
                (failed if self.reject_missing else skipped).append(f"{key} absent")
                continue
            ok = value >= limit if op == ">=" else value <= limit
            if not ok:
                failed.append(f"{key} {value:.4g} {'<' if op == '>=' else '>'} {limit:g}")
        for flag in metrics.get("quality_flags") or []:
            if flag in self.reject_flags:
                failed.append(f"flag {flag}")
        note = f" (not checked: {', '.join(skipped)})" if skipped else ""
        if failed:
            return "rejected", "; ".join(failed) + note
        return "accepted", "all checks passed" + note


def decide(metrics: dict[str, Any], rule: AcceptRule | None = None) -> tuple[str, str]:
    """``(rule or AcceptRule()).decide(metrics)``."""
    return (rule or AcceptRule()).decide(metrics)
