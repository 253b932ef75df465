"""The ``propagation`` engine: flow-guided video inpainting on the CPU, with no learned weights.

How a clip is filled (all steps vectorised with OpenCV/numpy; no per-pixel Python):

1. Optical flow between neighbouring frames, both directions, with OpenCV's DIS on grey frames downscaled by
   ``flow_scale``.
2. Flow completion, estimated on the background only: the camera's motion between the two frames is fitted as an
   affine map on the vectors outside both holes; the second frame is warped onto the first with it, both holes are
   painted over with the same smooth surface in both frames (so the object leaves no motion signal), and DIS
   measures the residual motion, which is replaced inside the holes by a harmonic (Laplace) interpolation from the
   boundary, solved coarse to fine. The flow is the affine motion composed with the residual: exact inside the hole
   for static, panning and zooming cameras, and a smooth continuation of the surroundings otherwise.
3. Propagation by chained flows: a backward-in-time pass (t = T-2 … 0) lets each hole pixel follow the completed
   flow into frame t+1 and take whatever *source* that position already has there: an observed pixel, or the source
   it inherited from frames further on. A forward-in-time pass does the same from the past. Sources are carried as
   coordinates (frame, x, y), not colours, so a pixel seen 30 frames away is resampled once, not 30 times.
4. The two directions are blended, weighted by temporal distance (1 / (1 + |Δt|)); colours are sampled bilinearly
   from the source frame using only its observed pixels.
5. Pixels never observed in any frame are filled spatially (``cv2.inpaint``, Telea) from their frame's known and
   propagated pixels.
6. Composition: only pixels inside the (optionally further dilated) mask change; every other pixel is returned
   bit-identical.

Bad input raises ``InputError`` (empty masks, non-finite values, mismatched shapes). A clip whose masks cover every
pixel of every frame has nothing to propagate: it is filled with neutral grey and reported with the flag
``no_observed_background`` (see ``PropagationReport``), which the flow copies into ``pairs.quality_flags``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine, check_inputs
from tasks.masks import dilate_masks


# Bump whenever the output of the same inputs can change.
ALGORITHM_VERSION = "prop-1"

FlowPreset = Literal["ultrafast", "fast", "medium"]
_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

_HOLE_GROW = 4  # flow-resolution pixels added around holes: DIS vectors there are disturbed by the object
_MIN_FLOW_SIDE = 32
_COLS = 4096  # point lists are remapped as (rows, _COLS) images: OpenCV maps must stay under 32767 per side

# quality flags
NO_OBSERVED_BACKGROUND = "no_observed_background"
FRAME_WITHOUT_BACKGROUND = "frame_without_background"
MOSTLY_SPATIAL_FILL = "mostly_spatial_fill"


@dataclass
class PropagationReport:
    """What the engine did with one clip; ``flags`` go to ``pairs.quality_flags``."""

    hole_pixels: int
    propagated_pixels: int
    spatial_pixels: int
    observed_fraction: float  # unmasked share of all pixels of the clip
    flags: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def propagated_ratio(self) -> float:
        return self.propagated_pixels / self.hole_pixels if self.hole_pixels else 0.0

    def as_dict(self) -> dict:
        return {
            "hole_pixels": self.hole_pixels,
            "propagated_pixels": self.propagated_pixels,
            "spatial_pixels": self.spatial_pixels,
            "propagated_ratio": self.propagated_ratio,
            "observed_fraction": self.observed_fraction,
            "flags": list(self.flags),
            "elapsed_s": self.elapsed_s,
        }


@dataclass
class PropagationResult:
    """``frames``: `(num_frames, height, width, 3)` uint8, the filled clip."""

    frames: np.ndarray
    report: PropagationReport


# ----------------------------------------------------------------------------------------------- input checks
# ----------------------------------------------------------------------------------------------- flow
_LAPLACE = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)


def harmonic_fill(values: np.ndarray, unknown: np.ndarray, *, iterations: int = 6) -> np.ndarray:
    """Fill ``unknown`` pixels by a harmonic (Laplace) interpolation of the known ones, coarse to fine.

    Args:
        values (`np.ndarray` of shape `(height, width, channels)`, float32): known values (others are ignored).
        unknown (`np.ndarray` of shape `(height, width)`, bool): pixels to fill.
        iterations: Jacobi sweeps per pyramid level.

    Returns:
        `(height, width, channels)` float32; known pixels unchanged. All zeros when nothing is known.
    """
    out = values.astype(np.float32, copy=True)
    if not unknown.any():
        return out
    if unknown.all():
        out[:] = 0
        return out
    # work on the bounding box of the unknown pixels plus a margin of known ones
    ys, xs = np.nonzero(unknown)
    margin = 4
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, unknown.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, unknown.shape[1])
    out[y0:y1, x0:x1] = _fill_pyramid(out[y0:y1, x0:x1], unknown[y0:y1, x0:x1], iterations)
    return out


def _fill_pyramid(values: np.ndarray, unknown: np.ndarray, iterations: int) -> np.ndarray:
    """Push-pull: average the known values down a pyramid, then fill unknown pixels from the coarser level and
    relax them with Jacobi sweeps of the 4-neighbour Laplace stencil. `(h, w, c)` float32 in and out."""
    h, w = unknown.shape
    channels = values.shape[-1]
    known = (~unknown).astype(np.float32)
    values = np.ascontiguousarray(values * known[..., None], dtype=np.float32)
    if min(h, w) > 2:
        size = ((w + 1) // 2, (h + 1) // 2)
        coarse_sum = cv2.resize(values, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], channels)
        coarse_known = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
        ok = coarse_known > 1e-6
        coarse = coarse_sum / np.maximum(coarse_known, 1e-6)[..., None]
        if not ok.all():
            coarse = _fill_pyramid(coarse, ~ok, iterations)
        up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
    else:
        up = np.broadcast_to(values.sum((0, 1)) / max(float(known.sum()), 1e-6), values.shape)
    where = np.broadcast_to(unknown[..., None], values.shape)
    np.copyto(values, up, where=where)
    for _ in range(iterations):
        smooth = cv2.filter2D(values, -1, _LAPLACE, borderType=cv2.BORDER_REPLICATE).reshape(h, w, channels)
        np.copyto(values, smooth, where=where)
    return values


def flow_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` for flow estimation: the frame scaled by ``scale``, enlarged so the short side is >= 32 px.

    OpenCV's DIS crashes (segfault) on small images with a long side, e.g. 16x100; 32 px short sides are safe.
    """
    h, w = height * scale, width * scale
    grow = max(1.0, _MIN_FLOW_SIDE / min(h, w))
    return max(int(round(h * grow)), _MIN_FLOW_SIDE), max(int(round(w * grow)), _MIN_FLOW_SIDE)


def _downscale_masks(masks: np.ndarray, size: tuple[int, int], grow: int) -> np.ndarray:
    """(T, H, W) bool -> (T, h, w) bool: any coverage counts, then grown by ``grow`` pixels."""
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8) if grow > 0 else None
    out = []
    for m in masks:
        small = cv2.resize(m.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) > 0
        if kernel is not None:
            small = cv2.dilate(small.astype(np.uint8), kernel) > 0
        out.append(small)
    return np.stack(out)


def _fit_affine(flow: np.ndarray, usable: np.ndarray, step: int = 4) -> np.ndarray | None:
    """The camera's motion ``p -> A @ [x, y, 1]`` from the usable flow vectors, by robust least squares.

    The simplest model that explains the vectors wins: no motion, a translation, or a full affine map, each kept
    only if it lowers the median residual by more than 10 % over the simpler one (so flow noise on a static
    camera never becomes a tiny drift that chained propagation would accumulate).

    Args:
        flow (`np.ndarray` of shape `(h, w, 2)`): a flow field.
        usable (`np.ndarray` of shape `(h, w)`, bool): background vectors to fit.

    Returns:
        `(2, 3)` float64, or None with fewer than 24 usable vectors.
    """
    ys, xs = np.nonzero(usable[::step, ::step])
    if len(ys) < 24:
        return None
    ys, xs = ys * step, xs * step
    design = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    vectors = flow[ys, xs].astype(np.float64)
    target = design[:, :2] + vectors
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    best, best_residual = identity, float(np.median(np.linalg.norm(vectors, axis=1)))
    # translation: the median vector
    shift = np.median(vectors, axis=0)
    residual = float(np.median(np.linalg.norm(vectors - shift, axis=1)))
    if residual < 0.9 * best_residual:
        best, best_residual = identity + np.array([[0, 0, shift[0]], [0, 0, shift[1]]]), residual
    # affine: least squares, refit once without outliers
    keep = np.ones(len(ys), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        errors = np.linalg.norm(design @ coef - target, axis=1)
        keep = errors < max(1.0, 2.0 * float(np.median(errors)))
        if keep.sum() < 24:
            break
    residual = float(np.median(np.linalg.norm(design @ coef - target, axis=1)))
    if residual < 0.9 * best_residual:
        best = coef.T
    return best


def _invert_affine(affine: np.ndarray) -> np.ndarray:
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _stabilised_flow(
    a: np.ndarray,
    b: np.ndarray,
    hole_a: np.ndarray,
    hole_b: np.ndarray,
    dis: cv2.DISOpticalFlow,
    affine: np.ndarray | None,
) -> np.ndarray:
    """Background flow from grey frame ``a`` to ``b`` (`(h, w)` uint8), completed inside the holes.

    ``affine`` is the camera's motion ``a -> b`` (see ``_fit_affine``); ``b`` is warped onto ``a`` with it, both holes (union, in ``a``'s coordinates) are filled with the same smooth surface in both frames, and
    DIS measures only the residual motion, which is completed harmonically inside the union. The result is the
    affine motion composed with the residual, so a rigid camera's motion is exact inside the hole.

    Returns:
        `(h, w, 2)` float32, the flow ``a -> b``.
    """
    h, w = a.shape
    if affine is None:  # too little background to fit a camera motion: plain flow, completed
        return harmonic_fill(dis.calc(a, b, None), hole_a | hole_b, iterations=4)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    b_on_a = cv2.warpAffine(b, affine, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    hole_b_on_a = cv2.warpAffine(hole_b.astype(np.uint8), affine, (w, h), flags=flags, borderValue=0) > 0
    hole = hole_a | hole_b_on_a
    pair = np.stack([a, b_on_a], axis=-1).astype(np.float32)
    pair = np.clip(np.rint(harmonic_fill(pair, hole, iterations=0)), 0, 255).astype(np.uint8)
    residual = dis.calc(np.ascontiguousarray(pair[..., 0]), np.ascontiguousarray(pair[..., 1]), None)
    residual = harmonic_fill(residual, hole, iterations=4)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    px, py = gx + residual[..., 0], gy + residual[..., 1]
    flow = np.empty((h, w, 2), np.float32)
    flow[..., 0] = affine[0, 0] * px + affine[0, 1] * py + affine[0, 2] - gx
    flow[..., 1] = affine[1, 0] * px + affine[1, 1] * py + affine[1, 2] - gy
    return flow


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _completed_flows(
    grey: np.ndarray, holes: np.ndarray, preset: FlowPreset
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Background flows between neighbouring frames, completed inside the holes (see ``_stabilised_flow``).

    Args:
        grey (`np.ndarray` of shape `(num_frames, h, w)`, uint8): downscaled grey frames.
        holes (`np.ndarray` of shape `(num_frames, h, w)`, bool): downscaled, grown masks.

    Returns:
        ``forward[t]`` (t → t+1, None for the last frame) and ``backward[t]`` (t → t-1, None for the first), each
        `(h, w, 2)` float32 in downscaled pixels; None as well where frame t has no hole (never needed).
    """
    num_frames = grey.shape[0]
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    forward: list[np.ndarray | None] = [None] * num_frames
    backward: list[np.ndarray | None] = [None] * num_frames
    for t in range(num_frames - 1):
        if not (holes[t].any() or holes[t + 1].any()):
            continue
        union = holes[t] | holes[t + 1]
        # the camera's motion, fitted once per pair on the background vectors
        affine = _fit_affine(dis.calc(grey[t], grey[t + 1], None), ~_grow(union, 4))
        if holes[t].any():
            forward[t] = _stabilised_flow(grey[t], grey[t + 1], holes[t], holes[t + 1], dis, affine)
        if holes[t + 1].any():
            inverse = _invert_affine(affine) if affine is not None else None
            backward[t + 1] = _stabilised_flow(grey[t + 1], grey[t], holes[t + 1], holes[t], dis, inverse)
    return forward, backward


# ----------------------------------------------------------------------------------------------- propagation
def _propagate_sources(
    masks: np.ndarray,
    holes_at: list[tuple[np.ndarray, np.ndarray]],
    flows: list[np.ndarray | None],
    order: range,
    step: int,
    scale: tuple[float, float],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One pass of chained propagation; returns, per frame, the hole pixels' sources.

    For frame t (in ``order``), hole pixel p follows ``flows[t]`` to frame n = t+step and inherits that position's
    source: the pixel itself if observed in n, else what n inherited. The state of frame n is an image of
    (source frame - n, source x - x, source y - y, valid): (0, 0, 0, 1) for observed pixels in every frame, so one
    buffer serves all frames and only the hole pixels are written and restored. Displacements, unlike absolute
    coordinates, vary slowly across the seams between regions inherited from different frames, so the nearest
    sample used at a seam is almost exact and errors do not build up along chains.

    Returns:
        ``sources[t]`` (`(n_t, 3)` float32: frame, x, y) and ``valid[t]`` (`(n_t,)` bool) for the hole pixels of
        frame t in row-major order (``np.nonzero(masks[t])``).
    """
    num_frames, height, width = masks.shape
    identity = np.zeros((height * width, 4), np.float32)
    identity[:, 3] = 1.0
    state = identity.copy()  # flat (height * width, 4)
    state_image = state.reshape(height, width, 4)
    flat_at = [ys * width + xs for ys, xs in holes_at]
    sources: list[np.ndarray] = [np.zeros((0, 3), np.float32)] * num_frames
    valid: list[np.ndarray] = [np.zeros(0, bool)] * num_frames
    first = order[0] + step  # the frame the pass starts from: only its observed pixels are sources
    n_first = len(flat_at[first])
    sources[first], valid[first] = np.zeros((n_first, 3), np.float32), np.zeros(n_first, bool)
    for t in order:
        ys, xs = holes_at[t]
        if not len(ys):
            continue
        n = t + step
        # the neighbour's state: its hole pixels carry what they inherited
        if len(flat_at[n]):
            inherited = np.empty((len(flat_at[n]), 4), np.float32)
            inherited[:, 0] = sources[n][:, 0] - n
            inherited[:, 1] = sources[n][:, 1] - holes_at[n][1]
            inherited[:, 2] = sources[n][:, 2] - holes_at[n][0]
            inherited[:, 3] = valid[n]
            state[flat_at[n]] = inherited
        # hole pixels as a (rows, cols) grid of points; the flow sampled there from the low-resolution field
        rows = -(-len(ys) // _COLS)
        px = np.zeros(rows * _COLS, np.float32)
        py = np.zeros(rows * _COLS, np.float32)
        px[: len(xs)], py[: len(ys)] = xs, ys
        px, py = px.reshape(rows, _COLS), py.reshape(rows, _COLS)
        flow = cv2.remap(
            flows[t],
            (px + 0.5) * scale[0] - 0.5,
            (py + 0.5) * scale[1] - 0.5,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        map_x = px + flow[..., 0] / scale[0]
        map_y = py + flow[..., 1] / scale[1]
        lin = cv2.remap(state_image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        near = cv2.remap(state_image, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if len(flat_at[n]):
            state[flat_at[n]] = identity[flat_at[n]]
        lin, near = lin.reshape(-1, 4)[: len(ys)], near.reshape(-1, 4)[: len(ys)]
        # bilinear coordinates are exact where all four neighbours share one source frame; otherwise take the nearest
        smooth = (lin[:, 3] > 0.999) & (np.abs(lin[:, 0] - near[:, 0]) < 1e-3)
        chosen = np.where(smooth[:, None], lin, near)
        chosen[:, 0] = np.rint(chosen[:, 0]) + n
        chosen[:, 1] += map_x.reshape(-1)[: len(ys)]
        chosen[:, 2] += map_y.reshape(-1)[: len(ys)]
        sources[t] = np.ascontiguousarray(chosen[:, :3])
        valid[t] = chosen[:, 3] > 0.5
    return sources, valid


def _sample_sources(frames: np.ndarray, masks: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Bilinear colours at ``src`` (`(n, 3)`: frame, x, y), using only observed (unmasked) neighbours.

    Mask-aware bilinear sampling is a remap of the premultiplied image ``(rgb * observed, observed)`` followed by a
    division; samples are grouped by source frame so each frame is remapped once.

    Returns `(n, 3)` float32.
    """
    n = len(src)
    out = np.zeros((n, 3), np.float32)
    frame_of = np.rint(src[:, 0]).astype(np.int16)
    order = np.argsort(frame_of, kind="stable")
    bounds = np.searchsorted(frame_of[order], np.arange(masks.shape[0] + 1))
    cols = _COLS
    for f in range(masks.shape[0]):
        sel = order[bounds[f] : bounds[f + 1]]
        if not len(sel):
            continue
        # only the bounding box of the requested points (plus the bilinear neighbours) is premultiplied
        height, width = masks.shape[1:]
        x0 = int(np.clip(np.floor(src[sel, 1].min()) - 1, 0, width - 1))
        x1 = int(np.clip(np.ceil(src[sel, 1].max()) + 2, x0 + 1, width))
        y0 = int(np.clip(np.floor(src[sel, 2].min()) - 1, 0, height - 1))
        y1 = int(np.clip(np.ceil(src[sel, 2].max()) + 2, y0 + 1, height))
        observed = (~masks[f, y0:y1, x0:x1]).astype(np.float32)
        crop = frames[f, y0:y1, x0:x1]
        premultiplied = np.dstack([crop.astype(np.float32) * observed[..., None], observed])
        rows = -(-len(sel) // cols)
        map_x = np.zeros(rows * cols, np.float32)
        map_y = np.zeros(rows * cols, np.float32)
        map_x[: len(sel)], map_y[: len(sel)] = src[sel, 1] - x0, src[sel, 2] - y0
        map_x, map_y = map_x.reshape(rows, cols), map_y.reshape(rows, cols)
        lin = cv2.remap(premultiplied, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lin = lin.reshape(-1, 4)[: len(sel)]
        near = cv2.remap(np.ascontiguousarray(crop), map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        near = near.reshape(-1, 3)[: len(sel)].astype(np.float32)
        weight = lin[:, 3:]
        out[sel] = np.where(weight > 1e-3, lin[:, :3] / np.maximum(weight, 1e-3), near)
    return out


def propagate_inpaint(
    frames: np.ndarray,
    masks: np.ndarray,
    *,
    flow_scale: float = 0.5,
    flow_preset: FlowPreset = "ultrafast",
    spatial_radius: int = 5,
    name: str = "clip",
) -> PropagationResult:
    """Fill ``masks`` in ``frames`` by bidirectional flow propagation, then spatial inpainting.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`): uint8 (or float in [0, 1]).
        masks (`np.ndarray` of shape `(num_frames, height, width)`): bool, True = fill.
        flow_scale: resolution factor for flow estimation (0 < s <= 1).
        flow_preset: DIS preset.
        spatial_radius: ``cv2.inpaint`` radius for pixels never observed.
        name: names the input in errors.

    Returns:
        A ``PropagationResult``; pixels outside ``masks`` equal the input bit for bit.
    """
    if not 0 < flow_scale <= 1:
        raise ValueError(f"flow_scale must be in (0, 1], got {flow_scale}")
    if flow_preset not in _PRESETS:
        raise ValueError(f"flow_preset must be one of {sorted(_PRESETS)}, got {flow_preset!r}")
    start = time.perf_counter()
    frames, masks = check_inputs(frames, masks, name=name)
    num_frames, height, width = masks.shape
    hole_pixels = int(masks.sum())
    observed = int(masks.size - hole_pixels)
    out = frames.copy()
    flags: list[str] = []

    if observed == 0:
        out[:] = 128
        report = PropagationReport(hole_pixels, 0, hole_pixels, 0.0, [NO_OBSERVED_BACKGROUND])
        report.elapsed_s = time.perf_counter() - start
        return PropagationResult(out, report)

    holes_at = [np.nonzero(m) for m in masks]  # (ys, xs) of each frame's hole, row-major
    filled_at = [np.zeros(len(ys), bool) for ys, _ in holes_at]
    if num_frames > 1:
        # 1-2. flows on downscaled grey frames, completed inside the holes
        h, w = flow_size(height, width, flow_scale)
        grey = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), cv2.INTER_AREA) for f in frames])
        holes = _downscale_masks(masks, (w, h), grow=_HOLE_GROW)
        forward, backward = _completed_flows(grey, holes, flow_preset)
        scale = (w / width, h / height)
        # 3. chained propagation, both directions
        src_a, ok_a = _propagate_sources(masks, holes_at, forward, range(num_frames - 2, -1, -1), +1, scale)
        src_b, ok_b = _propagate_sources(masks, holes_at, backward, range(1, num_frames), -1, scale)
        # 4. blend the two directions, weighted by temporal distance; one gather for the whole clip
        picks, weights, owners = [], [], []
        for t in range(num_frames):
            for src, ok in ((src_a[t], ok_a[t]), (src_b[t], ok_b[t])):
                if ok.any():
                    idx = np.nonzero(ok)[0]
                    picks.append(src[idx])
                    weights.append(1.0 / (1.0 + np.abs(src[idx, 0] - t)))
                    owners.append((t, idx))
        if picks:
            colours = _sample_sources(frames, masks, np.concatenate(picks))
            offset = 0
            acc = [np.zeros((len(ys), 3), np.float32) for ys, _ in holes_at]
            acc_w = [np.zeros(len(ys), np.float32) for ys, _ in holes_at]
            for (t, idx), wt in zip(owners, weights):
                acc[t][idx] += colours[offset : offset + len(idx)] * wt[:, None]
                acc_w[t][idx] += wt
                offset += len(idx)
            for t, (ys, xs) in enumerate(holes_at):
                got = acc_w[t] > 0
                if got.any():
                    value = acc[t][got] / acc_w[t][got, None]
                    out[t, ys[got], xs[got]] = np.clip(np.rint(value), 0, 255).astype(np.uint8)
                    filled_at[t] = got

    # 5. spatial inpainting of what no frame ever showed
    propagated = int(sum(int(f.sum()) for f in filled_at))
    spatial = hole_pixels - propagated
    for t, (ys, xs) in enumerate(holes_at):
        left = ~filled_at[t]
        if not left.any():
            continue
        if len(ys) == height * width and left.all():
            out[t] = np.rint(frames[~masks].reshape(-1, 3).mean(0)).astype(np.uint8)
            if FRAME_WITHOUT_BACKGROUND not in flags:
                flags.append(FRAME_WITHOUT_BACKGROUND)
            continue
        remaining = np.zeros((height, width), bool)
        remaining[ys[left], xs[left]] = True
        out[t, ys[left], xs[left]] = _spatial_fill(out[t], remaining, spatial_radius)[ys[left], xs[left]]
    if hole_pixels and spatial > 0.5 * hole_pixels:
        flags.append(MOSTLY_SPATIAL_FILL)

    # 6. only masked pixels were written: everything else is the input, bit for bit
    report = PropagationReport(hole_pixels, propagated, spatial, observed / masks.size, flags)
    report.elapsed_s = time.perf_counter() - start
    return PropagationResult(out, report)


def _spatial_fill(frame: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    """Telea inpainting of ``hole`` in one `(height, width, 3)` uint8 frame, on the hole's bounding box + margin."""
    ys, xs = np.nonzero(hole)
    margin = 2 * radius + 2
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, hole.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, hole.shape[1])
    out = frame.copy()
    crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = cv2.inpaint(crop, hole[y0:y1, x0:x1].astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return out


class PropagationEngine(InpaintEngine):
    """Bidirectional optical-flow propagation + spatial inpainting; removal only. See the module docstring.

    Args:
        flow_scale: flow is estimated at this fraction of the clip's resolution.
        flow_preset: DIS optical-flow preset (``ultrafast`` | ``fast`` | ``medium``).
        dilation_radius: extra mask dilation before filling, a radius in pixels (the masks given to ``run`` are
            usually dilated already).
        spatial_radius: ``cv2.inpaint`` radius for never-observed pixels.

    ``run`` returns the clip's ``PropagationReport`` (``as_dict``) as ``report`` and its flags as ``flags``.
    """

    engine_id = "propagation"
    edit_types = frozenset({"remove"})
    exclusive = False  # a pure function of its input on the CPU: several clips render at once

    def __init__(
        self,
        *,
        flow_scale: float = 0.5,
        flow_preset: FlowPreset = "ultrafast",
        dilation_radius: int = 0,
        spatial_radius: int = 5,
    ):
        if not 0 < flow_scale <= 1:
            raise ValueError(f"PropagationEngine: flow_scale must be in (0, 1], got {flow_scale}")
        if flow_preset not in _PRESETS:
            raise ValueError(f"PropagationEngine: flow_preset must be one of {sorted(_PRESETS)}, got {flow_preset!r}")
        if dilation_radius < 0 or spatial_radius < 1:
            raise ValueError(
                f"PropagationEngine: dilation_radius must be >= 0 and spatial_radius >= 1, got {dilation_radius}, "
                f"{spatial_radius}"
            )
        self.flow_scale = float(flow_scale)
        self.flow_preset = flow_preset
        self.dilation_radius = int(dilation_radius)
        self.spatial_radius = int(spatial_radius)

    @property
    def version(self) -> str:
        return f"{ALGORITHM_VERSION}+opencv-{cv2.__version__}"

    def params(self) -> dict:
        return {
            "flow_scale": self.flow_scale,
            "flow_preset": self.flow_preset,
            "dilation_radius": self.dilation_radius,
            "spatial_radius": self.spatial_radius,
        }

    def fill(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str,
        edit_type: str,
        seed: int,
        first_frame: np.ndarray | None,
    ) -> Inpainted:
        """Fill the (further dilated) mask; deterministic (``prompt``, ``seed`` and ``first_frame`` do not apply)."""
        filled = dilate_masks(masks, self.dilation_radius)
        result = propagate_inpaint(
            frames,
            filled,
            flow_scale=self.flow_scale,
            flow_preset=self.flow_preset,
            spatial_radius=self.spatial_radius,
        )
        report = result.report
        return Inpainted(result.frames, list(report.flags), report.as_dict(), filled=filled)
