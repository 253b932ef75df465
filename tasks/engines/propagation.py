"""The ``propagation`` engine: flow-guided video inpainting on the CPU, with no learned weights.

DIS optical flow between neighbouring frames (grey, downscaled by ``flow_scale``) is completed inside the holes (the
camera's fitted affine motion plus a harmonic residual); hole pixels inherit sources (frame, x, y) along chained flows
in both time directions, blended by temporal distance; pixels no frame shows are filled spatially (a harmonic
interpolation of their surroundings by default, ``cv2.inpaint`` on request). Only
pixels inside the (optionally dilated) mask change; all others are returned bit-identical. Steps: docs/method.md.

Bad input raises ``InputError``. A clip whose masks cover every pixel is filled with neutral grey and flagged
``no_observed_background`` (see ``PropagationReport``), which the flow copies into ``pairs.quality_flags``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from tasks.engines.base import NO_OBSERVED_BACKGROUND, Inpainted, InpaintEngine, check_inputs
from tasks.masks import dilate_masks


# Bump whenever the output of the same inputs can change.
ALGORITHM_VERSION = "prop-3"

FlowPreset = Literal["ultrafast", "fast", "medium"]
SpatialMethod = Literal["harmonic", "telea"]
SPATIAL_METHODS = ("harmonic", "telea")
_SPATIAL_SWEEPS = 20  # Jacobi sweeps per pyramid level of the harmonic spatial fill
_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

_HOLE_GROW = 4  # flow-resolution pixels added around holes: DIS vectors there are disturbed by the object
# flow-resolution pixels of background around the holes on which the residual flow is measured; smaller margins lose
# quality inside the hole on zooming scenes (see docs/method.md)
_FLOW_MARGIN = 48
_MIN_FLOW_SIDE = 32
# a residual whose median length on the background around the hole is below this (flow-resolution pixels) is noise:
# the camera's fitted motion alone carries the hole (exact copies on a static camera)
_STILL_PX = 0.25
_MIN_GAIN_PX = 0.05  # a camera motion model must explain this much more than a simpler one (see _better)
_OBSERVED = np.array([0, 0, 0, 1], np.float32)  # an observed pixel's propagation state (see _propagate_sources)
_OBSERVED_CELL = _OBSERVED.view(np.complex128)[0]  # the same 16 bytes as one item
_COLS = 4096  # point lists are remapped as (rows, _COLS) images: OpenCV maps must stay under 32767 per side

# quality flags
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


def _points_box(ys: np.ndarray, xs: np.ndarray, margin: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the bounding box of the points ``(ys, xs)`` (not empty) grown by ``margin``, within a
    frame of ``shape`` ``(height, width)``."""
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, shape[0])
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, shape[1])
    return y0, y1, x0, x1


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
    y0, y1, x0, x1 = _points_box(*np.nonzero(unknown), 4, unknown.shape)
    out[y0:y1, x0:x1] = _fill_pyramid(out[y0:y1, x0:x1], unknown[y0:y1, x0:x1], iterations)
    return out


def _fill_pyramid(values: np.ndarray, unknown: np.ndarray, iterations: int) -> np.ndarray:
    """Push-pull: average the known values down a pyramid, then fill unknown pixels from the coarser level and
    relax them with Jacobi sweeps of the 4-neighbour Laplace stencil. `(h, w, c)` float32 in and out."""
    h, w = unknown.shape
    channels = values.shape[-1]
    known_mask, unknown_mask = (~unknown).view(np.uint8), unknown.view(np.uint8)
    known = known_mask.astype(np.float32)
    # the known values, zero elsewhere (OpenCV's masked copies are cheaper than numpy's ``where``)
    values = cv2.copyTo(np.ascontiguousarray(values, dtype=np.float32), known_mask).reshape(h, w, channels)
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
        up = np.ascontiguousarray(
            np.broadcast_to(values.sum((0, 1)) / max(float(known.sum()), 1e-6), values.shape), dtype=np.float32
        )
    values = cv2.copyTo(up, unknown_mask, values).reshape(h, w, channels)
    for _ in range(iterations):
        smooth = cv2.filter2D(values, -1, _LAPLACE, borderType=cv2.BORDER_REPLICATE)
        values = cv2.copyTo(smooth, unknown_mask, values).reshape(h, w, channels)
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
    only if it lowers the median residual by more than 10 % and ``_MIN_GAIN_PX`` over the simpler one (so flow noise
    on a static camera never becomes a tiny drift that chained propagation would accumulate).

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
    best, best_residual = identity, float(np.median(_lengths(vectors)))
    # translation: the median vector
    shift = np.median(vectors, axis=0)
    residual = float(np.median(_lengths(vectors - shift)))
    if _better(residual, best_residual):
        best, best_residual = identity + np.array([[0, 0, shift[0]], [0, 0, shift[1]]]), residual
    # affine: least squares, refit once without outliers; its residual is the median error of the last fit
    keep = np.ones(len(ys), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = float(np.median(errors := _lengths(design @ coef - target)))
        keep = errors < max(1.0, 2.0 * residual)
        if keep.sum() < 24:
            break
    if _better(residual, best_residual):
        best = coef.T
    return best


def _better(residual: float, simpler: float) -> bool:
    """Whether a motion model with median ``residual`` beats a simpler one with ``simpler`` (flow-resolution
    pixels): 10 % lower and lower by ``_MIN_GAIN_PX``, so that DIS noise on a still camera (median vectors of
    0.1-0.2 px) never becomes a drift that chained propagation accumulates."""
    return residual < 0.9 * simpler and simpler - residual > _MIN_GAIN_PX


def _lengths(vectors: np.ndarray) -> np.ndarray:
    """Euclidean lengths of `(n, 2)` vectors: ``np.linalg.norm(vectors, axis=1)`` bit for bit, without its overhead."""
    x, y = vectors[:, 0], vectors[:, 1]
    return np.sqrt(x * x + y * y)


def _invert_affine(affine: np.ndarray) -> np.ndarray:
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _crop_box(hole: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the bounding box of ``hole`` (`(h, w)` bool, not empty) grown by ``margin`` and to at
    least ``_MIN_FLOW_SIDE`` per side (DIS needs the room; see ``flow_size``), within the frame."""
    h, w = hole.shape
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    box = []
    for lo, hi, size in ((rows[0], rows[-1] + 1, h), (cols[0], cols[-1] + 1, w)):
        lo, hi = max(int(lo) - margin, 0), min(int(hi) + margin, size)
        short = _MIN_FLOW_SIDE - (hi - lo)
        if short > 0:  # grow both ways, then shift into the frame
            lo, hi = lo - short // 2, hi + short - short // 2
            lo, hi = (0, min(hi - lo, size)) if lo < 0 else (lo, hi)
            lo, hi = (max(size - (hi - lo), 0), size) if hi > size else (lo, hi)
        box += [lo, hi]
    return box[0], box[1], box[2], box[3]


@dataclass
class _Flow:
    """A completed flow on the window ``[y0:y0+h, x0:x0+w]`` of the flow-resolution frame: ``field`` `(h, w, 2)`
    float32 holds the displacement of each pixel of the window (in flow-resolution pixels)."""

    field: np.ndarray
    x0: int = 0
    y0: int = 0


def _stabilised_flow(
    a: np.ndarray,
    b: np.ndarray,
    hole_a: np.ndarray,
    hole_b: np.ndarray,
    dis: cv2.DISOpticalFlow,
    affine: np.ndarray | None,
) -> _Flow:
    """Background flow from grey frame ``a`` to ``b`` (`(h, w)` uint8), completed inside the holes, on the window
    around them that propagation reads (the holes' bounding box plus ``_FLOW_MARGIN``).

    ``affine`` is the camera's motion ``a -> b`` (see ``_fit_affine``); ``b`` is warped onto ``a``'s window with it,
    both holes (union, in ``a``'s coordinates) are filled with the same smooth surface in both frames, and DIS
    measures only the residual motion, which is completed harmonically inside the union. The result is the affine
    motion composed with the residual, so a rigid camera's motion is exact inside the hole.

    Returns:
        The flow ``a -> b`` on the window (see ``_Flow``).
    """
    if affine is None:  # too little background to fit a camera motion: plain flow, completed
        return _Flow(harmonic_fill(dis.calc(a, b, None), hole_a | hole_b, iterations=4))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # window of a; the affine map moved so that the window's corner is its origin
    y0, y1, x0, x1 = _crop_box(hole_a | hole_b, _FLOW_MARGIN)
    size = (x1 - x0, y1 - y0)
    shifted = affine.copy()
    shifted[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float64)
    b_on_a = cv2.warpAffine(b, shifted, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    hole_b_on_a = cv2.warpAffine(hole_b.view(np.uint8), shifted, size, flags=flags, borderValue=0) > 0
    hole = hole_a[y0:y1, x0:x1] | hole_b_on_a
    pair = np.empty((y1 - y0, x1 - x0, 2), np.float32)
    pair[..., 0], pair[..., 1] = a[y0:y1, x0:x1], b_on_a
    pair = np.clip(np.rint(harmonic_fill(pair, hole, iterations=0)), 0, 255).astype(np.uint8)
    residual = dis.calc(np.ascontiguousarray(pair[..., 0]), np.ascontiguousarray(pair[..., 1]), None)
    if hole.all() or _median_length(residual, ~hole) < _STILL_PX:
        # the camera's motion explains the background: its residual is noise, and things moving on their own (people
        # in the background) would drag the completed field; exact copies instead (a still camera's holes)
        residual[:] = 0
    else:
        residual = harmonic_fill(residual, hole, iterations=4)
    gx = np.arange(x0, x1, dtype=np.float32)[None, :]
    gy = np.arange(y0, y1, dtype=np.float32)[:, None]
    px, py = gx + residual[..., 0], gy + residual[..., 1]
    flow = np.empty_like(residual)
    flow[..., 0] = affine[0, 0] * px + affine[0, 1] * py + (affine[0, 2] - gx)
    flow[..., 1] = affine[1, 0] * px + affine[1, 1] * py + (affine[1, 2] - gy)
    return _Flow(flow, x0, y0)


def _median_length(vectors: np.ndarray, where: np.ndarray) -> float:
    """The median length of the `(h, w, 2)` ``vectors`` at the `(h, w)` bool ``where`` (not empty)."""
    return float(np.median(cv2.magnitude(vectors[..., 0], vectors[..., 1])[where]))


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _completed_flows(
    grey: np.ndarray, holes: np.ndarray, preset: FlowPreset
) -> tuple[list[_Flow | None], list[_Flow | None]]:
    """Background flows between neighbouring frames, completed inside the holes (see ``_stabilised_flow``).

    Args:
        grey (`np.ndarray` of shape `(num_frames, h, w)`, uint8): downscaled grey frames.
        holes (`np.ndarray` of shape `(num_frames, h, w)`, bool): downscaled, grown masks.

    Returns:
        ``forward[t]`` (t → t+1, None for the last frame) and ``backward[t]`` (t → t-1, None for the first), each a
        ``_Flow`` in downscaled pixels covering frame t's hole; None as well where frame t has no hole (never
        needed).
    """
    num_frames = grey.shape[0]
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    forward: list[_Flow | None] = [None] * num_frames
    backward: list[_Flow | None] = [None] * num_frames
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
def _as_grid(values: np.ndarray) -> np.ndarray:
    """`(n,)` values as a `(rows, _COLS)` float32 image (zero-padded) that OpenCV can use as a remap coordinate map;
    the first ``n`` entries of the flattened result are the values."""
    rows = -(-len(values) // _COLS)
    grid = np.zeros(rows * _COLS, np.float32)
    grid[: len(values)] = values
    return grid.reshape(rows, _COLS)


def _propagate_sources(
    masks: np.ndarray,
    holes_at: list[tuple[np.ndarray, np.ndarray]],
    flows: list[_Flow | None],
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
    state = np.tile(_OBSERVED, (height * width, 1))  # flat (height * width, 4)
    state_image = state.reshape(height, width, 4)
    cells = state.view(np.complex128).reshape(-1)  # each pixel's 4 floats as one 16-byte item: one copy per pixel
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
            cells[flat_at[n]] = inherited.view(np.complex128).reshape(-1)
        # hole pixels as a (rows, cols) grid of points; the flow sampled there from the low-resolution field
        px, py = _as_grid(xs), _as_grid(ys)
        window = flows[t]
        flow = cv2.remap(
            window.field,
            (px + 0.5) * scale[0] - 0.5 - window.x0,
            (py + 0.5) * scale[1] - 0.5 - window.y0,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        map_x = px + flow[..., 0] / scale[0]
        map_y = py + flow[..., 1] / scale[1]
        lin = cv2.remap(state_image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        near = cv2.remap(state_image, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if len(flat_at[n]):
            cells[flat_at[n]] = _OBSERVED_CELL
        lin, near = lin.reshape(-1, 4)[: len(ys)], near.reshape(-1, 4)[: len(ys)]
        # bilinear coordinates are exact where all four neighbours share one source frame; otherwise take the nearest
        smooth = (lin[:, 3] > 0.999) & (np.abs(lin[:, 0] - near[:, 0]) < 1e-3)
        chosen = np.where(smooth, lin.view(np.complex128)[:, 0], near.view(np.complex128)[:, 0])
        chosen = chosen.view(np.float32).reshape(-1, 4)
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

    Returns `(3, n)` float32, channel first: per-point arithmetic then runs on long rows (see docs/throughput.md).
    """
    n = len(src)
    frame_of = np.rint(src[:, 0]).astype(np.int16)
    order = np.argsort(frame_of, kind="stable")
    bounds = np.searchsorted(frame_of[order], np.arange(masks.shape[0] + 1))
    by_frame = np.take(src, order, axis=0)  # the points grouped by source frame: each frame's points are one slice
    colours = np.empty((3, n), np.float32)
    height, width = masks.shape[1:]
    for f in range(masks.shape[0]):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        if lo == hi:
            continue
        xs, ys = by_frame[lo:hi, 1], by_frame[lo:hi, 2]
        # only the bounding box of the requested points (plus the bilinear neighbours) is premultiplied
        x0 = int(np.clip(np.floor(xs.min()) - 1, 0, width - 1))
        x1 = int(np.clip(np.ceil(xs.max()) + 2, x0 + 1, width))
        y0 = int(np.clip(np.floor(ys.min()) - 1, 0, height - 1))
        y1 = int(np.clip(np.ceil(ys.max()) + 2, y0 + 1, height))
        observed = (~masks[f, y0:y1, x0:x1]).view(np.uint8)  # 0 or 1
        crop = frames[f, y0:y1, x0:x1]
        # exact in uint8, then as float32 for the interpolation
        channels = [crop[..., c] * observed for c in range(3)]
        premultiplied = cv2.merge([*channels, observed]).astype(np.float32)
        map_x, map_y = _as_grid(xs - x0), _as_grid(ys - y0)
        lin = cv2.remap(premultiplied, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lin = lin.reshape(-1, 4)[: hi - lo].T  # (4, points)
        weight = lin[3]
        np.divide(lin[:3], np.maximum(weight, 1e-3), out=colours[:, lo:hi])
        lonely = np.flatnonzero(weight <= 1e-3)  # no observed neighbour: the nearest pixel, masked or not
        if len(lonely):
            near = cv2.remap(
                np.ascontiguousarray(crop),
                _as_grid(xs[lonely] - x0),
                _as_grid(ys[lonely] - y0),
                cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_REPLICATE,
            )
            colours[:, lo + lonely] = near.reshape(-1, 3)[: len(lonely)].T
    back = np.empty(n, np.intp)  # each point's place in ``by_frame`` (a gather is faster than a scatter)
    back[order] = np.arange(n)
    return np.take(colours, back, axis=1)


def propagate_inpaint(
    frames: np.ndarray,
    masks: np.ndarray,
    *,
    flow_scale: float = 0.5,
    flow_preset: FlowPreset = "ultrafast",
    spatial_radius: int = 5,
    spatial_method: SpatialMethod = "harmonic",
    name: str = "clip",
) -> PropagationResult:
    """Fill ``masks`` in ``frames`` by bidirectional flow propagation, then spatial inpainting.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`): uint8 (or float in [0, 1]).
        masks (`np.ndarray` of shape `(num_frames, height, width)`): bool, True = fill.
        flow_scale: resolution factor for flow estimation (0 < s <= 1).
        flow_preset: DIS preset.
        spatial_radius: ``cv2.inpaint`` radius for pixels never observed (``spatial_method="telea"``).
        spatial_method: how pixels no frame shows are filled: ``harmonic`` (a push-pull harmonic interpolation of
            the pixels around them; measured better than Telea on real and synthetic frames, docs/method.md) or
            ``telea`` (``cv2.inpaint``).
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

    holes_at = [np.divmod(np.flatnonzero(m), width) for m in masks]  # (ys, xs) of each frame's hole, row-major
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
        # 4. blend the two directions, weighted by temporal distance; one gather for the whole clip. Colours are
        # channel first (3, points); ``idx`` None: every hole pixel of the frame has a source in that direction.
        picks, weights, owners = [], [], []
        for t in range(num_frames):
            for src, ok in ((src_a[t], ok_a[t]), (src_b[t], ok_b[t])):
                if ok.all() and len(ok):
                    idx = None
                elif ok.any():
                    idx = np.flatnonzero(ok)
                    src = np.take(src, idx, axis=0)
                else:
                    continue
                picks.append(src)
                weights.append(1.0 / (1.0 + np.abs(src[:, 0] - t)))
                owners.append((t, idx))
        if picks:
            colours = _sample_sources(frames, masks, np.concatenate(picks))
            offset = 0
            acc = [np.zeros((3, len(ys)), np.float32) for ys, _ in holes_at]
            acc_w = [np.zeros(len(ys), np.float32) for ys, _ in holes_at]
            for (t, idx), wt in zip(owners, weights):
                weighted = colours[:, offset : offset + len(wt)] * wt
                if idx is None:
                    acc[t] += weighted
                    acc_w[t] += wt
                else:
                    acc[t][:, idx] += weighted
                    acc_w[t][idx] += wt
                offset += len(wt)
            for t, (ys, xs) in enumerate(holes_at):
                got = acc_w[t] > 0
                if got.all():
                    value, at = acc[t] / acc_w[t], (ys, xs)
                elif got.any():
                    value, at = acc[t][:, got] / acc_w[t][got], (ys[got], xs[got])
                else:
                    continue
                out[t, at[0], at[1]] = np.clip(np.rint(value), 0, 255).astype(np.uint8).T
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
        out[t, ys[left], xs[left]] = _spatial_fill(out[t], ys[left], xs[left], spatial_radius, spatial_method)
    if hole_pixels and spatial > 0.5 * hole_pixels:
        flags.append(MOSTLY_SPATIAL_FILL)

    # 6. only masked pixels were written: everything else is the input, bit for bit
    report = PropagationReport(hole_pixels, propagated, spatial, observed / masks.size, flags)
    report.elapsed_s = time.perf_counter() - start
    return PropagationResult(out, report)


def _spatial_fill(
    frame: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int, method: SpatialMethod = "harmonic"
) -> np.ndarray:
    """Spatial inpainting of the pixels ``(ys, xs)`` (not empty) of one `(height, width, 3)` uint8 frame, on their
    bounding box + margin: ``harmonic`` (``harmonic_fill``, ``_SPATIAL_SWEEPS`` sweeps) or ``telea``
    (``cv2.inpaint`` with ``radius``). Returns their colours, `(n, 3)` uint8."""
    if method == "harmonic":
        y0, y1, x0, x1 = _points_box(ys, xs, 4, frame.shape[:2])
        hole = np.zeros((y1 - y0, x1 - x0), bool)
        hole[ys - y0, xs - x0] = True
        filled = harmonic_fill(frame[y0:y1, x0:x1].astype(np.float32), hole, iterations=_SPATIAL_SWEEPS)
        return np.clip(np.rint(filled[ys - y0, xs - x0]), 0, 255).astype(np.uint8)
    y0, y1, x0, x1 = _points_box(ys, xs, 2 * radius + 2, frame.shape[:2])
    hole = np.zeros((y1 - y0, x1 - x0), np.uint8)
    hole[ys - y0, xs - x0] = 1
    filled = cv2.inpaint(np.ascontiguousarray(frame[y0:y1, x0:x1]), hole, radius, cv2.INPAINT_TELEA)
    return filled[ys - y0, xs - x0]


class PropagationEngine(InpaintEngine):
    """Bidirectional optical-flow propagation + spatial inpainting; removal only. See the module docstring.

    Args:
        flow_scale: flow is estimated at this fraction of the clip's resolution.
        flow_preset: DIS optical-flow preset (``ultrafast`` | ``fast`` | ``medium``).
        dilation_radius: extra mask dilation before filling, a radius in pixels (the masks given to ``run`` are
            usually dilated already).
        spatial_radius: ``cv2.inpaint`` radius for never-observed pixels, with ``spatial_telea``.
        spatial_telea: fill never-observed pixels with ``cv2.inpaint`` (Telea) instead of the harmonic interpolation
            (the default, measured better: docs/method.md).

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
        spatial_telea: bool = False,
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
        self.spatial_telea = bool(spatial_telea)

    @property
    def version(self) -> str:
        return f"{ALGORITHM_VERSION}+opencv-{cv2.__version__}"

    def params(self) -> dict:
        return {
            "flow_scale": self.flow_scale,
            "flow_preset": self.flow_preset,
            "dilation_radius": self.dilation_radius,
            "spatial_radius": self.spatial_radius,
            "spatial_telea": self.spatial_telea,
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
            spatial_method="telea" if self.spatial_telea else "harmonic",
        )
        report = result.report
        return Inpainted(result.frames, list(report.flags), report.as_dict(), filled=filled)
