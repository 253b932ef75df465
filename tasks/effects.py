"""Side effects of an object (its cast shadow, its reflection) found without weights, so removals can take them too.

An object changes the pixels around it: a shadow darkens the ground, a reflection brightens or tints it. Masks from
segmenters outline the object only, so a removal that fills the object's mask leaves its shadow behind. This module
finds the pixels outside the object whose appearance changes with the object's presence (:func:`find_effects`). A
camera whose frames all line up with the middle one within ``STILL_PX`` working pixels (features of the middle frame
tracked into each frame) is *still*; any other camera is *moving*. The two take different routes.

**Still cameras** (``static-background``):

1. **The background.** Per pixel, the median of the frames in which the object is far from it (its mask grown by
   ``FAR_SHARE`` of the frame's short side): the pixel as it looks without the object nearby.
2. **The change.** Pixels outside the object that differ from their background by more than the clip's noise
   (``NOISE_SIGMAS`` times a robust estimate) and than ``MIN_CHANGE`` of their brightness, darker or brighter.
3. **Moving with the object.** Changed regions must reach the object (connected components that come within
   ``REACH_SHARE`` of the frame's short side of it: a shadow touches it, a reflection may lie a little below it)
   and keep their place relative to it: a position (relative to the object's centroid) must be changed in at least
   ``MIN_CONSISTENCY`` of the frames (the object's *zone*), and a pixel must not change by itself: in at most
   ``MAX_OWN_CHANGE`` of the frames in which it lies outside the zone. Things moving on their own (people and cars
   in the background, a talking head) fail these.
4. **The whole effect.** Each frame's found core grows by up to ``_GROW_STEPS`` working pixels over pixels that
   change by half the limit (hysteresis), so the soft edge of a shadow is taken with it.

**Moving cameras** (``local-views``; unless ``moving_cameras=False``). A clip-wide background is wrong there: the
shot plays while the camera moves, and transforms chained over the whole clip drift. Each frame is compared with
*local views* instead (:func:`_local_residuals`):

1. **The camera.** Affine maps between neighbouring frames from their optical flow outside the object, chained
   (``tasks.camera_motion.camera_maps``): any frame can be looked at from
   any other over a short lag.
2. **The residual.** For each frame t and each pixel within ``NEAR_SHARE`` of the short side of the object (outside
   it and its edge ring): the nearest frame before and the nearest after in which that pixel's spot is clear of the
   object grown by ``LOCAL_FAR_SHARE`` (a view that shows neither the object nor its shadow), aligned onto t; the
   difference less the exposure change, shrunk by the background's own change over the same lag (that view against
   one as far again on the same side), zero where t lies between its two views, the smaller side otherwise.
3. **The zone.** In the object's frame of reference (relative to its centroid), per position, over the frames in
   which both sides were seen (something that arrives and stays differs from one side only): the mean residual must exceed ``MIN_CHANGE`` of the brightness and ``LOCAL_SIGMAS``
   standard errors, and at least ``LOCAL_CONSISTENCY`` of the samples must change that way (a background thing that
   passes by for a while gives a few strong samples, a shadow gives many). Positions measured in fewer than
   ``MIN_SEEN_SHARE`` of the frames are not judged.
4. **Per frame.** The zone placed at the object's centroid, on pixels whose own residual in that frame (from either
   side) has the zone's sign and exceeds half the limit, connected to the object (``REACH_SHARE``); joined by the
   zone's pixels around it that the frame does not contradict (where the background changes by itself, its residual
   is shrunk to nothing); grown as on still cameras. Pixels with no clear view are left out.

Everything runs at a working resolution of at most ``WORK_SIDE`` pixels on the long side; the effect mask is
resampled back to the clip's size and excludes the object's mask. Docs: docs/effects.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from tasks.camera_motion import box_of, camera_maps, grown_box
from tasks.errors import InputError


EffectSource = Literal["static-background", "local-views", "unreliable"]
EFFECT_SOURCES: tuple[str, ...] = ("static-background", "local-views", "unreliable")
# the finder's version, part of a render's identity whenever masks grow (``tasks.steps.render.render_params``): bump it
# when a change can grow a different mask, so renders made with another finder are not taken for this one's
FINDER_VERSION = "2"  # 2: moving cameras searched with local views (1: still cameras only)

WORK_SIDE = 360  # long side of the working resolution, in pixels
STILL_PX = 1.0  # largest corner displacement (working pixels) of any frame against the middle one for a still camera
FAR_SHARE = 0.1  # the object is far from a pixel beyond this share of the frame's short side
REACH_SHARE = 0.1  # changed regions must come this close to the object (share of the short side)
MIN_BACKGROUND_FRAMES = 3  # frames a pixel needs without the object near it to have a background
NOISE_SIGMAS = 4.0  # a change must exceed this many robust noise sigmas ...
MIN_CHANGE = 0.06  # ... and this share of the background's brightness (+ 10 grey levels)
MAX_OWN_CHANGE = 0.1  # share of the frames outside the object's zone in which an effect's pixel may change
MIN_CONSISTENCY = 0.3  # share of frames in which a position relative to the object must be changed
MIN_FEATURES = 20  # tracked features a still camera's middle frame needs
MAX_ALIGN_ERROR = 10.0  # median grey-level difference of aligned background views above which alignment failed
# moving cameras
LOCAL_FAR_SHARE = 0.2  # a view is clear of the object grown by this share of the short side (and of its shadow)
NEAR_SHARE = 0.2  # pixels within this share of the short side of the object are measured
LOCAL_SIGMAS = 3.0  # a zone position's mean residual exceeds this many standard errors ...
LOCAL_CONSISTENCY = 0.65  # ... and at least this share of its samples change that way (by half the limit)
MIN_SEEN_SHARE = 0.3  # a zone position is measured in at least this share of the frames used
_GROW_STEPS = 4  # working pixels the found core may grow over weaker change
_MAX_WEAK_SHARE = 0.5  # share of frames above which a pixel's weak change is its own, not the effect's
_EDGE_RING = 2  # working pixels around the object left out of the change (its feathered edge, mask jitter)
_EXPOSURE_STEP = 4  # the exposure change between two frames is measured on a grid of this step (working pixels)
_MIN_PIXELS = 12  # fewer working pixels to measure in a frame: the frame is not used


@dataclass
class EffectMasks:
    """What :func:`find_effects` found for one object.

    ``masks``: `(num_frames, height, width)` bool, the effect's pixels, never inside the object's mask (all False
    for ``unreliable``); ``area``: their share of all the clip's pixels; ``source``: how they were found
    (``static-background``: a still camera, against each pixel's median background; ``local-views``: a moving
    camera, against nearby frames aligned onto each frame; ``unreliable``: a moving camera not asked for, frames that
    do not line up, or an object that never leaves its place: nothing looked for); ``reason``: one line on the
    decision.
    """

    masks: np.ndarray
    area: float
    source: EffectSource
    reason: str


def _work_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, WORK_SIDE / max(height, width))
    return max(16, int(round(height * scale))), max(16, int(round(width * scale)))


def _is_still(grey: np.ndarray, objects: np.ndarray) -> bool:
    """Whether every frame lines up with the middle one within ``STILL_PX`` working pixels (corner shift of the
    similarity transform fitted to features of the middle frame tracked directly into each frame; chained transforms
    would add up their small errors)."""
    num_frames, h, w = grey.shape
    middle = num_frames // 2
    keep = (cv2.dilate(objects[middle].view(np.uint8), np.ones((9, 9), np.uint8)) == 0).view(np.uint8) * 255
    points = cv2.goodFeaturesToTrack(grey[middle], 400, 0.01, 6, mask=keep)
    if points is None or len(points) < MIN_FEATURES:
        return False
    for t in range(num_frames):
        if t == middle:
            continue
        moved, status, _ = cv2.calcOpticalFlowPyrLK(grey[middle], grey[t], points, None, winSize=(21, 21), maxLevel=3)
        ok = status.reshape(-1) == 1
        if ok.sum() < MIN_FEATURES:
            return False
        matrix, _ = cv2.estimateAffinePartial2D(moved[ok], points[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if matrix is None or _corner_shift(matrix, h, w) >= STILL_PX:
            return False
    return True


def _corner_shift(matrix: np.ndarray, h: int, w: int) -> float:
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    return float(np.abs(corners @ matrix.T - corners[:, :2]).max())


def _connected_to(candidates: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The pixels of the components of ``candidates`` (`(h, w)` bool) that touch ``seed`` (`(h, w)` bool)."""
    count, labels = cv2.connectedComponents(candidates.view(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(candidates)
    touching = np.unique(labels[seed & candidates])
    touching = touching[touching > 0]
    return np.isin(labels, touching)


def _consistent(changed: np.ndarray, raw: np.ndarray, objects: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """The changes that move with the object.

    A position relative to the object's centroid is in the object's *zone* when ``changed`` (`(T, h, w)` bool, the
    change touching the object) is there in at least ``MIN_CONSISTENCY`` of the frames that show the object
    (positions pooled over 3x3 working pixels). A pixel that changes by itself is not the object's effect: of the
    ``judged`` frames (`(T, h, w)` bool: aligned, with a background) in which the pixel lies outside the zone, it
    may show a ``raw`` change (`(T, h, w)` bool) in at most ``MAX_OWN_CHANGE`` (a shadow changes a pixel only while
    it is cast there; a talking head or swaying grass changes it all along).

    Returns:
        `(T, h, w)` bool: ``changed`` inside the zone, on pixels that do not change by themselves.
    """
    num_frames, h, w = changed.shape
    present = [t for t in range(num_frames) if objects[t].any()]
    if not present:
        return np.zeros_like(changed)
    counts = np.zeros((2 * h + 1, 2 * w + 1), np.float32)
    offsets = {}
    for t in present:
        ys, xs = np.nonzero(objects[t])
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        offsets[t] = (h - cy, w - cx)
        counts[h - cy : 2 * h - cy, w - cx : 2 * w - cx] += changed[t]
    counts = cv2.blur(counts, (3, 3)) / len(present)
    zone = np.zeros_like(changed)
    for t in present:
        dy, dx = offsets[t]
        zone[t] = counts[dy : dy + h, dx : dx + w] >= MIN_CONSISTENCY
    outside = judged & ~zone
    seen = outside.sum(0)
    own = (raw & outside).sum(0) > MAX_OWN_CHANGE * seen
    own &= seen >= MIN_BACKGROUND_FRAMES  # too few frames to judge: the zone decides
    return changed & zone & ~own[None]


# ----------------------------------------------------------------------------------------------- still cameras
def _still_effects(grey: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The effect on a still camera, against each pixel's median background (steps 1-4 of the module docstring).

    Args:
        grey (`np.ndarray` of shape `(T, h, w)`, uint8): the clip at working resolution.
        objects (`np.ndarray` of shape `(T, h, w)`, bool): the object.

    Returns:
        ``(found, why)``: `(T, h, w)` bool, the effect at working resolution, or None and why nothing can be said.
    """
    num_frames, h, w = grey.shape
    far_px = max(2, int(round(FAR_SHARE * min(h, w))))
    reach_px = REACH_SHARE * min(h, w)
    # per frame, the pixels far from the object (a background) and those near it (a change may reach them)
    usable, seed = _far_and_near(objects, far_px, reach_px)
    enough = usable.sum(0) >= MIN_BACKGROUND_FRAMES
    if not enough.any():
        return None, "the object is never far from its surroundings"
    background = _masked_median(grey, usable)
    background[~enough] = 0.0  # no background there: never a change
    difference = grey.astype(np.float32) - background[None]
    np.abs(difference, out=difference)  # only its size counts from here on
    # alignment and noise on the background seen without the object
    align_error = _median_of(difference[usable & enough[None]])
    if align_error > MAX_ALIGN_ERROR:
        return None, f"frames do not line up (median error {align_error:.1f})"
    sigma = 1.4826 * align_error

    # the change, outside the object and its edge ring, where a background exists
    ring = np.ones((2 * _EDGE_RING + 1, 2 * _EDGE_RING + 1), np.uint8)
    around = np.stack([cv2.dilate(o.view(np.uint8), ring) > 0 for o in objects])
    limit = np.maximum(NOISE_SIGMAS * sigma, MIN_CHANGE * (background + 10.0))
    changed = (difference > limit[None]) & enough[None] & ~around
    weak = (difference > 0.5 * limit[None]) & enough[None] & ~around  # half the limit
    opened = np.ones((3, 3), np.uint8)
    for t in range(num_frames):
        c = cv2.morphologyEx(changed[t].view(np.uint8), cv2.MORPH_OPEN, opened) > 0
        # moving with the object: reaching near it (a reflection may lie a little below it) ...
        changed[t] = _connected_to(c, seed[t]) if objects[t].any() else False
    # ... and in the same place relative to it
    found = _consistent(changed, weak, objects, np.broadcast_to(enough[None], changed.shape))
    # the whole effect: hysteresis from the found core over weaker change, but not over pixels that change that much
    # in most frames by themselves
    weak &= (weak.sum(0) < _MAX_WEAK_SHARE * np.maximum(enough * num_frames, 1))[None]
    found = np.stack([_hysteresis(f, k) for f, k in zip(found, weak)])
    if found.any():  # the edge ring next to a found effect belongs to it
        found = np.stack([(cv2.dilate(f.view(np.uint8), ring) > 0) & (a | f) & ~o
                          for f, a, o in zip(found, around, objects)])  # fmt: skip
    return found, ""


def _far_and_near(objects: np.ndarray, far: float, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the pixels farther than ``far`` from the object and those within ``near`` of it `(T, h, w)` bool
    each (working pixels; the 3x3 chamfer metric of ``cv2.distanceTransform``, ``DIST_L2``, mask 3; all pixels are
    far in frames without the object). Each frame's transform is taken on the object's box grown by more than both:
    a chamfer path from an object's pixel to a pixel of that box stays inside it, so the distances there are those of
    a transform over the whole frame (up to the last bit of their float sums), and all pixels beyond it are far."""
    is_far, is_near = np.ones(objects.shape, bool), np.zeros(objects.shape, bool)
    reach = int(np.ceil(max(far, near)))
    for t, o in enumerate(objects):
        box = box_of(o)
        if box[0] == box[1]:
            continue
        y0, y1, x0, x1 = grown_box(box, reach + 1, o.shape)
        distance = cv2.distanceTransform((~o[y0:y1, x0:x1]).view(np.uint8), cv2.DIST_L2, 3)
        is_far[t, y0:y1, x0:x1], is_near[t, y0:y1, x0:x1] = distance > far, distance <= near
    return is_far, is_near


def _masked_median(values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Per pixel, the median of ``values`` `(T, h, w)` uint8 over the frames where ``use`` `(T, h, w)` bool is set
    `(h, w)` float32 (the mean of the two middle values for an even count; 0 where no frame is used): what
    ``np.nanmedian`` gives with the unused values set to NaN, from one sort of the stack (the unused values, as 256,
    sort after all the used ones) and a pick by count."""
    num_frames, h, w = values.shape
    stack = values.reshape(num_frames, -1).T.astype(np.uint16)  # [pixel, frame]
    unused = ~use.reshape(num_frames, -1).T
    stack[unused] = 256
    stack.sort(axis=1)
    count = num_frames - unused.sum(1)
    pixel = np.arange(len(stack))
    low = stack[pixel, np.maximum(count - 1, 0) // 2].astype(np.float32)
    high = stack[pixel, count // 2].astype(np.float32)
    median = (low + high) / 2
    median[count == 0] = 0.0
    return median.reshape(h, w)


def _hysteresis(core: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """``core`` `(h, w)` bool grown geodesically by up to ``_GROW_STEPS`` pixels over ``weak`` `(h, w)` bool."""
    grown = core.view(np.uint8)
    step = np.ones((3, 3), np.uint8)
    for _ in range(_GROW_STEPS if core.any() else 0):
        grown = cv2.dilate(grown, step) & weak.view(np.uint8) | grown
    return grown > 0


# ----------------------------------------------------------------------------------------------- moving cameras
def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-d float32 array of at least 2 values, without its overhead (a partial sort around the
    middle, in place: ``values`` is reordered)."""
    middle = len(values) // 2
    values.partition((middle - 1, middle))
    return float(values[middle]) if len(values) % 2 else float((values[middle - 1] + values[middle]) / 2)


def _exposure_shifts(luma: np.ndarray, busy: np.ndarray, onto: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per pair of frames (t, r) of ``pairs`` `(T, T)` bool, frame t's exposure against frame r's `(T, T)`: the
    median grey-level difference over the background both show (``busy`` `(T, h, w)` uint8, 1 = not background) on a
    grid of ``_EXPOSURE_STEP`` pixels of frame t; 0 where they share fewer than ``_MIN_PIXELS`` grid points or the
    pair is not asked for. ``onto`` `(T, T, 3, 3)`: frame t's pixels -> frame r's. Frame by frame r, so that its
    pixels are read while in the cache."""
    num_frames, h, w = luma.shape
    grid = np.diag([_EXPOSURE_STEP, _EXPOSURE_STEP, 1.0])  # grid pixels -> frame pixels
    gh, gw = -(-h // _EXPOSURE_STEP), -(-w // _EXPOSURE_STEP)
    free_grid = np.stack([cv2.resize(b, (gw, gh), interpolation=cv2.INTER_NEAREST) == 0 for b in busy])
    luma_grid = np.ascontiguousarray(luma[:, ::_EXPOSURE_STEP, ::_EXPOSURE_STEP])
    shifts = np.zeros((num_frames, num_frames))
    for r in range(num_frames):
        seen_by = np.flatnonzero(pairs[:, r])
        if not len(seen_by):
            continue
        free = np.empty((len(seen_by), gh, gw), np.uint8)  # frame r's busy points seen from each frame t's grid
        views = np.empty((len(seen_by), gh, gw), np.float32)  # frame r's luma on each frame t's grid
        for i, coarse in enumerate((onto[seen_by, r] @ grid)[:, :2]):
            cv2.warpAffine(busy[r], coarse, (gw, gh), dst=free[i], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderValue=1)  # fmt: skip
            cv2.warpAffine(luma[r], coarse, (gw, gh), dst=views[i], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        shared = (free == 0) & free_grid[seen_by]
        values = (luma_grid[seen_by] - views)[shared]  # each frame t's values, one after the other
        counts = np.count_nonzero(shared.reshape(len(seen_by), -1), axis=1)
        for t, count, end in zip(seen_by.tolist(), counts.tolist(), np.cumsum(counts).tolist()):
            if count >= _MIN_PIXELS:
                shifts[t, r] = _median(values[end - count : end])
    return shifts


def _aligned_views(
    luma: np.ndarray,
    onto: np.ndarray,
    t: int,
    box: tuple[int, int, int, int],
    want_r: np.ndarray,
    want_y: np.ndarray,
    want_x: np.ndarray,
    pad: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per request i, frame ``want_r[i]`` aligned onto frame ``t`` (``onto`` `(T, T, 3, 3)`: frame t's pixels ->
    frame r's) at its pixel (``want_y[i]``, ``want_x[i]``): its luma and its low-passed luma (Gaussian, sigma 1.5
    working pixels), `(n,)` float32 each. Frame r is aligned and low-passed onto the part of frame t's ``box`` (y0,
    y1, x0, x1) that the requests of r need, grown by ``pad`` (the Gaussian's support; where the part meets the box's
    edge, the low pass sees that edge as a pass over the whole box would). Frame indices below 32,768."""
    by_frame = np.argsort(want_r.astype(np.int16), kind="stable")  # a radix sort for 16-bit keys
    sy, sx = want_y[by_frame].astype(np.int32), want_x[by_frame].astype(np.int32)
    counts = np.bincount(want_r, minlength=len(luma))
    frames = np.flatnonzero(counts)
    counts = counts[frames]
    starts = np.cumsum(counts) - counts
    top = np.maximum(np.minimum.reduceat(sy, starts) - pad, box[0])
    bottom = np.minimum(np.maximum.reduceat(sy, starts) + pad + 1, box[1])
    left = np.maximum(np.minimum.reduceat(sx, starts) - pad, box[2])
    right = np.minimum(np.maximum.reduceat(sx, starts) + pad + 1, box[3])
    parts = onto[t, frames, :2]  # [parts, 2, 3]: each part's pixels -> frame r's
    parts[:, :, 2] += parts[:, :, 0] * left[:, None] + parts[:, :, 1] * top[:, None]
    width = right - left
    flat = sy * np.repeat(width, counts) + sx - np.repeat(top * width + left, counts)  # into each request's part
    out_seen, out_low = np.empty(len(want_r), np.float32), np.empty(len(want_r), np.float32)  # in the sorted order
    size = int(((bottom - top) * width).max())
    scratch_seen, scratch_low = np.empty(size, np.float32), np.empty(size, np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    ends = (starts + counts).tolist()
    for matrix, r, rows, cols, start, end in zip(parts, frames.tolist(), (bottom - top).tolist(), width.tolist(),
                                                 starts.tolist(), ends):  # fmt: skip
        view, low = scratch_seen[: rows * cols], scratch_low[: rows * cols]
        cv2.warpAffine(luma[r], matrix, (cols, rows), dst=view.reshape(rows, cols), flags=flags,
                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        cv2.GaussianBlur(view.reshape(rows, cols), (0, 0), 1.5, dst=low.reshape(rows, cols))
        at = flat[start:end]
        view.take(at, out=out_seen[start:end])
        low.take(at, out=out_low[start:end])
    seen, low = np.empty(len(want_r), np.float32), np.empty(len(want_r), np.float32)
    seen[by_frame], low[by_frame] = out_seen, out_low
    return seen, low


def _median_of(values: np.ndarray) -> float:
    """``np.median`` of a 1-d float array of at least 1 value, faster on large arrays: the two middle values are
    selected among the values between two bounds taken from a sample (all of them when the bounds miss)."""
    n = len(values)
    middle = n // 2
    wanted = (middle - 1, middle) if n % 2 == 0 else (middle,)
    if n >= 4096:
        sample = values[:: n // 1024]  # 1,024 to 2,047 values
        at = (len(sample) * 45 // 100, len(sample) * 55 // 100)  # about the 45th and 55th percentiles
        low, high = np.partition(sample, at)[list(at)]
        below = int(np.count_nonzero(values < low))
        between = values[(values >= low) & (values <= high)]
        if below <= wanted[0] and below + len(between) > wanted[-1]:
            picked = np.partition(between, tuple(k - below for k in wanted))[[k - below for k in wanted]]
            return float(picked.mean())
    return float(np.mean(np.partition(values, wanted)[list(wanted)]))


def _local_residuals(
    luma: np.ndarray, near: np.ndarray, busy: np.ndarray, to_first: list[np.ndarray]
) -> tuple[dict[int, tuple[tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray]], float]:
    """Per frame, what each pixel of ``near`` shows that its own background, seen in nearby frames, does not.

    For each pixel of ``near[t]``: the nearest frame before t and the nearest after in which its spot is clear of
    ``busy``, aligned onto t by the camera maps ``to_first``. Each view's low-passed difference (Gaussian, sigma 1.5
    working pixels) less the change in exposure (the median difference over the background both frames show, on a
    grid of ``_EXPOSURE_STEP`` pixels) is shrunk towards zero by the background's own change over the same lag on
    the same side (that view against one as far again, where that one is clear too): a background that changes by
    itself (people, traffic, a talking head, water) changes as much between two views of it. The residual is the
    side that differs less, zero where t lies between its two views (darker than one, lighter than the other: the
    background's own trend; something that arrives and stays differs from one side only).

    Work, in three passes: (1) per frame t, which frames are clear at each pixel (one nearest-neighbour warp of
    ``busy`` per frame onto the box around ``near[t]``), then each pixel's nearest clear frame on each side at once
    (with the stop of a search frame by frame: once all but 5 % of the pixels have a view); (2) frame by frame r,
    the exposure changes of the frames that look at r (:func:`_exposure_shifts`); (3) per frame t and side, each
    view aligned and low-passed on the part of t's box its pixels need (:func:`_aligned_views`), the residuals.
    Only each frame's box is kept and returned (no whole-frame arrays). The results are those of a frame-by-frame
    search that aligns and low-passes each view over the whole box (up to the rounding of the warps' fixed-point
    coordinates).

    Args:
        luma (`np.ndarray` of shape `(T, h, w)`, float32): grey levels at working resolution.
        near, busy (`np.ndarray` of shape `(T, h, w)`, bool): pixels to measure; pixels a view must be clear of.
        to_first: per frame, the `(3, 3)` map from its pixels to the first frame's (``camera_maps``).

    Returns:
        ``(per_frame, align_error)``: per frame t with pixels to measure, ``(box, both, either, base)``: the box
        around them (y0, y1, x0, x1; nothing is measured outside it) and on it `(y1 - y0, x1 - x0)` float32 each,
        the residual in grey levels where both sides have a view (NaN elsewhere), the same where at least one side
        has (the one side's value where only one has; NaN where none has), and the brightness of the view it was
        measured against; and the median absolute difference (low-passed, before the background's own change is
        taken off) of all views used: how well the frames line up, in grey levels. Empty where no pixel has a view.
    """
    num_frames, h, w = luma.shape
    from_first = np.linalg.inv(np.stack(to_first))  # [num_frames, 3, 3]
    onto = np.stack([from_first @ m for m in to_first])  # [t, r, 3, 3]: frame t's pixels -> frame r's
    pad = 6  # working pixels around the box and around the pixels a view serves: the Gaussian's support
    busy_u8 = busy.view(np.uint8)

    # 1. per frame t and side, each pixel's view (its nearest clear frame) and the one as far again, where clear
    measured: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]] = {}  # t -> pixels
    # to measure (ys, xs), frame t low-passed there, the box around them (y0, y1, x0, x1)
    uses: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (t, side, pixels with a view
    # (indices into ys), their frames, those of them with a view as far again (indices into the former), its frames)
    for t in range(num_frames):
        ys, xs = np.nonzero(near[t])
        n_todo = len(ys)
        if n_todo < _MIN_PIXELS:
            continue
        y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
        in_box = (ys - y0) * (x1 - x0) + (xs - x0)  # the pixels to measure, as flat indices into the box
        here = cv2.GaussianBlur(luma[t, y0:y1, x0:x1], (0, 0), 1.5).reshape(-1)[in_box]  # low-passed, [n_todo]
        measured[t] = ys, xs, here, (y0, y1, x0, x1)
        box = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # box pixels -> frame t's pixels

        def clear_of(
            r: int, out: np.ndarray, t: int = t, box: np.ndarray = box, size: tuple[int, int] = (x1 - x0, y1 - y0)
        ) -> None:
            """Frame r's ``busy`` seen from frame t's box, written to ``out`` (the box's pixels, flat, uint8; 0:
            clear; 1 also beyond r)."""
            flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
            cv2.warpAffine(busy_u8[r], (onto[t, r] @ box)[:2], size, dst=out.reshape(size[::-1]), flags=flags,
                           borderValue=1)  # fmt: skip

        for side, direction in enumerate((-1, 1)):
            order = np.arange(t + direction, -1 if direction < 0 else num_frames, direction)  # nearest first
            if not len(order):
                continue
            # per frame of ``order`` (in growing chunks, until the search stops), which pixels' spots are clear of
            # ``busy`` there (0: clear); each pixel takes the nearest clear view, until all but 5 % of the pixels have
            # one (the nearest as the smallest of: a view's rank where it is clear, all bits set where not)
            warped = np.empty((len(order), (y1 - y0) * (x1 - x0)), np.uint8)
            rank_type = np.uint8 if len(order) < 255 else np.uint16
            none = np.iinfo(rank_type).max
            nearest = np.full(n_todo, none, rank_type)
            ready, stop = 0, None  # ranks warped so far; the rank after which the search stops
            while ready < len(order) and stop is None:
                upto = min(len(order), 2 * ready + 4)
                for k in range(ready, upto):
                    clear_of(order[k], warped[k])
                ranks = np.arange(ready, upto, dtype=rank_type)[:, None]
                nearest = np.minimum(nearest, ((warped[ready:upto].astype(rank_type) * none) | ranks).min(0)[in_box])
                ready = upto
                left = n_todo - np.cumsum(np.bincount(nearest[nearest != none], minlength=ready))[:ready]
                done = np.flatnonzero(left < 0.05 * n_todo)
                stop = int(done[0]) if len(done) else None
            seen = nearest != none
            if stop is not None:
                seen &= nearest <= stop
            idx = np.flatnonzero(seen)
            if not len(idx):
                continue
            k = nearest[idx].astype(np.int64)
            for rank in range(ready, min(len(order), 2 * int(k.max()) + 2)):  # the views as far again
                clear_of(order[rank], warped[rank])
            k2 = 2 * k + 1  # the frame as far again on the same side, where it exists and is clear too
            twice = np.flatnonzero(k2 < len(order))
            twice = twice[warped[k2[twice], in_box[idx[twice]]] == 0]
            uses.append((t, side, idx, order[k], twice, order[k2[twice]]))

    if not uses:  # no pixel has a clear view
        return {}, 0.0

    # 2. frame by frame (a frame's pixels are read while they are in the cache): exposure changes
    pairs = np.zeros((num_frames, num_frames), bool)  # [t, r]: frame r is seen from frame t
    for t, _, _, frame, _, frame2 in uses:
        pairs[t, frame] = pairs[t, frame2] = True
    shifts = _exposure_shifts(luma, busy_u8, onto, pairs)

    # 3. per frame t and side: its views aligned onto t, the residual on each side, then both sides together
    sides = {t: np.full((2, 2, len(m[0])), np.nan, np.float32) for t, m in measured.items()}  # [side, (residual,
    # brightness of the view), pixel]
    raw: list[np.ndarray] = []  # per view, its absolute differences on the pixels it measured
    for t, side, idx, frame, twice, frame2 in uses:
        ys, xs, here, box = measured[t]
        pixels = np.concatenate([idx, idx[twice]])
        seen, low = _aligned_views(luma, onto, t, box, np.concatenate([frame, frame2]), ys[pixels], xs[pixels], pad)
        shift = shifts[t, frame]
        diff = here[idx] - low[: len(idx)] - shift
        raw.append(np.abs(diff))
        if len(twice):
            own = np.abs(low[twice] - low[len(idx) :] - (shifts[t, frame2] - shift[twice]))
            diff[twice] = np.sign(diff[twice]) * np.maximum(np.abs(diff[twice]) - own, 0.0)
        sides[t][side, 0, idx], sides[t][side, 1, idx] = diff, seen[: len(idx)]
    found = {}
    for t, ((before, seen_before), (after, seen_after)) in sides.items():
        ys, xs, _, (y0, y1, x0, x1) = measured[t]
        closer = np.where(np.abs(before) <= np.abs(after), before, after)
        combined = np.where(before * after < 0, 0.0, closer)
        both, either, base = np.full((3, y1 - y0, x1 - x0), np.nan, np.float32)
        both[ys - y0, xs - x0] = np.where(np.isnan(before) | np.isnan(after), np.nan, combined)
        either[ys - y0, xs - x0] = np.where(np.isnan(before), after, np.where(np.isnan(after), before, combined))
        base[ys - y0, xs - x0] = np.where(np.isnan(seen_before), seen_after, seen_before)
        found[t] = (y0, y1, x0, x1), both, either, base
    align_error = _median_of(np.concatenate(raw)) if raw else 0.0
    return found, align_error


def _within(objects: np.ndarray, reaches: tuple[int, ...]) -> list[np.ndarray]:
    """Per reach of ``reaches`` (working pixels), the pixels whose Euclidean distance to the object is at most that
    `(T, h, w)` bool (none in frames without the object). Each frame's distance transform is taken on the object's
    box grown by more than the largest reach: the object's pixels nearest to a pixel of that box lie inside it."""
    masks = [np.zeros(objects.shape, bool) for _ in reaches]
    reach = max(reaches)
    for t, o in enumerate(objects):
        box = box_of(o)
        if box[0] == box[1]:
            continue
        y0, y1, x0, x1 = grown_box(box, reach + 1, o.shape)
        d = cv2.distanceTransform((~o[y0:y1, x0:x1]).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        for mask, r in zip(masks, reaches):
            mask[t, y0:y1, x0:x1] = d <= r
    return masks


def _local_effects(grey: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The effect on a moving camera, from local views (steps 1-4 of the module docstring's moving-camera route).

    Args:
        grey (`np.ndarray` of shape `(T, h, w)`, uint8): the clip's grey levels at working resolution.
        objects (`np.ndarray` of shape `(T, h, w)`, bool): the object.

    Returns:
        ``(found, why)``: `(T, h, w)` bool, the effect at working resolution in each frame's own coordinates, or None
        and why nothing can be said.
    """
    luma = grey.astype(np.float32)
    num_frames, h, w = luma.shape
    short = min(h, w)
    # the pixels within each distance used of the object, per frame (working pixels)
    reaches = tuple(max(2, round(share * short)) for share in (NEAR_SHARE, LOCAL_FAR_SHARE, REACH_SHARE))
    around, near, busy, seed = _within(objects, (_EDGE_RING, *reaches))
    near &= ~around
    views, align_error = _local_residuals(luma, near, busy, camera_maps(grey, seed))
    if not any(np.isfinite(either).any() for _, _, either, _ in views.values()):
        return None, "no frame shows the object's surroundings without it"
    if align_error > MAX_ALIGN_ERROR:
        return None, f"frames do not line up (median residual {align_error:.1f})"
    # per frame, on its box: the residual, the weakest change that counts (grey levels), the change on either side
    boxed = {t: (box, residual, MIN_CHANGE * (np.nan_to_num(base) + 10.0), either)
             for t, (box, residual, either, base) in views.items()}  # fmt: skip

    # the object's frame of reference: its centroid at (h, w) of a (2h, 2w) canvas. Per position: the residuals'
    # sum and sum of squares, the floors' sum, how many samples are darker and how many lighter by half the floor
    canvas = (2 * h, 2 * w)
    offsets: dict[int, tuple[int, int]] = {}  # per frame showing the object: where its centroid puts the canvas
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per frame used: canvas positions, values, floors
    for t in range(num_frames):
        ys, xs = np.nonzero(objects[t])
        if not len(ys):
            continue
        oy, ox = h - int(round(ys.mean())), w - int(round(xs.mean()))
        offsets[t] = (oy, ox)
        if t not in boxed:
            continue
        (y0, _, x0, _), residual, floor, _ = boxed[t]
        py, px = np.nonzero(np.isfinite(residual))
        if len(py) < _MIN_PIXELS:
            continue
        samples.append(((py + y0 + oy) * canvas[1] + px + x0 + ox, residual[py, px], floor[py, px]))
    used = len(samples)  # frames whose residuals count
    if used < MIN_BACKGROUND_FRAMES:
        return None, f"{used} frames show the object's surroundings without it on both sides"
    at = np.concatenate([a for a, _, _ in samples])
    values = np.concatenate([v for _, v, _ in samples]).astype(np.float64)
    limit = np.concatenate([f for _, _, f in samples])
    sums = [np.bincount(at, v, minlength=4 * h * w).astype(np.float64)
            for v in (values, values**2, limit, values < -0.5 * limit, values > 0.5 * limit, None)]  # fmt: skip
    count = sums[5].reshape(canvas)
    total, squares, limits, darker, lighter, n = (cv2.blur(s.reshape(canvas), (3, 3)) for s in sums)  # 3x3 pooled
    n = np.maximum(n, 1e-9)
    mean = total / n
    error = np.sqrt(np.maximum(squares / n - mean**2, 0.0) / n)
    zone = (count >= max(MIN_BACKGROUND_FRAMES, MIN_SEEN_SHARE * used)) & (np.abs(mean) > limits / n)
    zone &= np.abs(mean) > LOCAL_SIGMAS * error
    zone &= np.where(mean < 0, darker, lighter) >= LOCAL_CONSISTENCY * n  # many samples, not a few strong ones
    sign = np.sign(mean) * zone

    # per frame: the zone at the object's place, on pixels that change that way in this frame
    # (on the box of the frame's measured pixels: nothing is found, joined or grown beyond them)
    found = np.zeros((num_frames, h, w), bool)
    for t, (oy, ox) in offsets.items():
        if t not in boxed:
            continue
        (y0, y1, x0, x1), _, floor, change = boxed[t]  # change: np.nan where no side has a view, left out
        box = slice(y0, y1), slice(x0, x1)
        weak = np.isfinite(change) & (np.abs(change) > 0.5 * floor)
        here = sign[oy : oy + h, ox : ox + w][box]
        core = _connected_to(weak & (change * here > 0), seed[t][box])
        if core.any():
            # the zone's pixels this frame does not contradict (a view exists and does not change the other way),
            # joined to the core: where the background changes by itself its residual is shrunk to nothing
            uncontradicted = (here != 0) & np.isfinite(change) & ~(weak & (change * here < 0))
            core |= _connected_to(uncontradicted | core, core)
        dominant = np.sign(change[core].sum()) if core.any() else 0.0
        found[t][box] = _hysteresis(core, weak & (change * dominant > 0))
    return found, ""


def find_effects(
    frames: np.ndarray, object_masks: np.ndarray, *, moving_cameras: bool = True, name: str = "clip"
) -> EffectMasks:
    """Find the object's side effects (shadow, reflection): pixels outside it that change with its presence.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
        object_masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the object, True = object.
        moving_cameras: look for effects on moving cameras too (``local-views``; what renders do under
            ``effect_masks="auto"`` and ``"all"``); False: a moving camera is ``unreliable`` and nothing grows.
        name: names the input in errors.

    Returns:
        An ``EffectMasks``; its masks never overlap ``object_masks``. See the module docstring for the method.

    Raises:
        InputError: ``frames`` is not uint8 `(T, H, W, 3)` or the masks do not match it (``bad_shape``).
    """
    frames, object_masks = np.asarray(frames), np.asarray(object_masks)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(name, "bad_shape", f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if object_masks.shape != frames.shape[:3]:
        raise InputError(name, "bad_shape", f"object masks {object_masks.shape} do not match frames {frames.shape}")
    object_masks = object_masks.astype(bool, copy=False)
    num_frames, height, width = object_masks.shape

    def unreliable(why: str) -> EffectMasks:  # nothing looked for or found: nothing grows
        return EffectMasks(np.zeros_like(object_masks), 0.0, "unreliable", why)

    if num_frames < 2 * MIN_BACKGROUND_FRAMES or not object_masks.any():
        return unreliable(f"{num_frames} frames or an empty object: nothing to compare")
    h, w = _work_size(height, width)
    grey = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
                     for f in frames])  # fmt: skip
    objects = np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                        for m in object_masks])  # fmt: skip

    if _is_still(grey, objects):
        found, why = _still_effects(grey, objects)
        source: EffectSource = "static-background"
    elif moving_cameras:
        found, why = _local_effects(grey, objects)
        source = "local-views"
    else:
        return unreliable("moving camera: effects are looked for on still cameras only")
    if found is None:
        return unreliable(why)
    out = np.zeros_like(object_masks)
    for t in range(num_frames):
        if found[t].any():
            grown = cv2.resize(found[t].view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            np.greater(grown, object_masks[t], out=out[t])  # outside the object's mask
    area = np.count_nonzero(out) / out.size
    what = "still camera" if source == "static-background" else "moving camera, local views"
    return EffectMasks(out, area, source, f"{what}; effect {100 * area:.2f}% of the clip's pixels")
