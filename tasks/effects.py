"""Side effects of an object (its cast shadow, its reflection) found without weights, so removals can take them too.

An object changes the pixels around it: a shadow darkens the ground, a reflection brightens or tints it. Masks from
segmenters outline the object only, so a removal that fills the object's mask leaves its shadow behind. This module
finds the pixels outside the object whose appearance changes with the object's presence (:func:`find_effects`):

1. **The camera.** Features tracked between neighbouring frames (outside the object) give each frame's similarity
   transform to the middle frame. A camera whose frames all line up with the middle one within ``STILL_PX`` pixels
   (features of the middle frame tracked directly into each frame) is a still camera
   (``static-background``); otherwise, with ``moving_cameras=True``, every frame is warped onto the middle one
   (``stabilised``). A moving camera without it, too few tracked features, too few inliers, or frames that do not
   line up after warping (parallax, a zoom through depth, a cut) make the clip ``unreliable``: no effect is looked
   for and the mask is not grown.
2. **The background.** Per pixel, the median of the frames in which the object is far from it (its mask grown by
   a tenth of the frame's short side): the pixel as it looks without the object nearby.
3. **The change.** Pixels outside the object that differ from their background by more than the clip's noise
   (``NOISE_SIGMAS`` times a robust estimate) and than ``MIN_CHANGE`` of their brightness, darker or brighter.
4. **Moving with the object.** Changed regions must reach the object (connected components that come within
   ``REACH_SHARE`` of the frame's short side of it: a shadow touches it, a reflection may lie a little below it)
   and keep their place relative to it: a position (relative to the object's centroid) must be changed in at least
   ``MIN_CONSISTENCY`` of the frames (the object's *zone*), and a pixel must not change by itself: in at most
   ``MAX_OWN_CHANGE`` of the frames in which it lies outside the zone. Things moving on their own (people and cars
   in the background, a talking head) fail these.
5. **The whole effect.** Each frame's found core grows by up to ``_GROW_STEPS`` working pixels over pixels that
   change by half the limit (hysteresis), so the soft edge of a shadow is taken with it.

Everything runs at a working resolution of at most ``WORK_SIDE`` pixels on the long side; the effect mask is
resampled back to the clip's size and excludes the object's mask. Docs: docs/effects.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from tasks.errors import InputError


EffectSource = Literal["static-background", "stabilised", "unreliable"]
EFFECT_SOURCES: tuple[str, ...] = ("static-background", "stabilised", "unreliable")

WORK_SIDE = 360  # long side of the working resolution, in pixels
STILL_PX = 1.0  # largest corner displacement (working pixels) of any frame against the middle one for a still camera
FAR_SHARE = 0.1  # the object is far from a pixel beyond this share of the frame's short side
REACH_SHARE = 0.1  # changed regions must come this close to the object (share of the short side)
MIN_BACKGROUND_FRAMES = 3  # frames a pixel needs without the object near it to have a background
NOISE_SIGMAS = 4.0  # a change must exceed this many robust noise sigmas ...
MIN_CHANGE = 0.06  # ... and this share of the background's brightness (+ 10 grey levels)
MAX_OWN_CHANGE = 0.1  # share of the frames outside the object's zone in which an effect's pixel may change
MIN_CONSISTENCY = 0.3  # share of frames in which a position relative to the object must be changed
MIN_FEATURES = 20  # tracked features (and inliers) a frame pair needs for the camera's motion
MIN_INLIER_SHARE = 0.3
MAX_ALIGN_ERROR = 10.0  # median grey-level difference of aligned background frames above which alignment failed
_GROW_STEPS = 4  # working pixels the found core may grow over weaker change
_MAX_WEAK_SHARE = 0.5  # share of frames above which a pixel's weak change is its own, not the effect's
_EDGE_RING = 2  # working pixels around the object left out of the change (its feathered edge, mask jitter)


@dataclass
class EffectMasks:
    """What :func:`find_effects` found for one object.

    ``masks``: `(num_frames, height, width)` bool, the effect's pixels, never inside the object's mask (all False
    for ``unreliable``); ``area``: their share of all the clip's pixels; ``source``: how they were found
    (``static-background``: a still camera; ``stabilised``: a moving camera, compensated; ``unreliable``: the camera
    could not be compensated or the object never leaves its place, nothing looked for); ``reason``: one line on the
    decision.
    """

    masks: np.ndarray
    area: float
    source: EffectSource
    reason: str


def _work_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, WORK_SIDE / max(height, width))
    return max(16, int(round(height * scale))), max(16, int(round(width * scale)))


def _similarity_to_middle(grey: np.ndarray, objects: np.ndarray) -> tuple[list[np.ndarray] | None, str]:
    """Each frame's `(2, 3)` similarity transform onto the middle frame (chained between neighbours), or None and
    why the camera's motion cannot be compensated."""
    num_frames, h, w = grey.shape
    exclude = np.ones((9, 9), np.uint8)
    steps = []  # steps[t]: frame t -> t + 1, as 3x3
    for t in range(num_frames - 1):
        keep = (cv2.dilate((objects[t] | objects[t + 1]).view(np.uint8), exclude) == 0).view(np.uint8) * 255
        points = cv2.goodFeaturesToTrack(grey[t], 400, 0.01, 6, mask=keep)
        if points is None or len(points) < MIN_FEATURES:
            return None, f"frame {t}: {0 if points is None else len(points)} trackable background features"
        moved, status, _ = cv2.calcOpticalFlowPyrLK(grey[t], grey[t + 1], points, None, winSize=(21, 21), maxLevel=3)
        ok = status.reshape(-1) == 1
        if ok.sum() < MIN_FEATURES:
            return None, f"frame {t}: {int(ok.sum())} features tracked to the next frame"
        matrix, inliers = cv2.estimateAffinePartial2D(
            points[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0
        )
        if matrix is None or inliers.sum() < max(MIN_FEATURES, MIN_INLIER_SHARE * ok.sum()):
            got = 0 if inliers is None else int(inliers.sum())
            return None, f"frame {t}: {got} of {int(ok.sum())} tracks fit one camera motion"
        steps.append(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    middle = num_frames // 2
    to_middle = [np.eye(3) for _ in range(num_frames)]
    for t in range(middle - 1, -1, -1):  # t -> t+1 -> ... -> middle
        to_middle[t] = to_middle[t + 1] @ steps[t]
    for t in range(middle + 1, num_frames):  # t -> t-1 -> ... -> middle
        to_middle[t] = to_middle[t - 1] @ np.linalg.inv(steps[t - 1])
    return [m[:2] for m in to_middle], ""


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


def find_effects(
    frames: np.ndarray, object_masks: np.ndarray, *, moving_cameras: bool = False, name: str = "clip"
) -> EffectMasks:
    """Find the object's side effects (shadow, reflection): pixels outside it that change with its presence.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip.
        object_masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the object, True = object.
        moving_cameras: look for effects on moving cameras too (stabilised); False: a moving camera is
            ``unreliable`` (on the real-footage cases stabilised results grew masks over things moving on their own
            and cost up to 10 dB of whole-frame PSNR on clips without effects: docs/effects.md).
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
    object_masks = object_masks.astype(bool)
    num_frames, height, width = object_masks.shape
    empty = np.zeros_like(object_masks)
    if num_frames < 2 * MIN_BACKGROUND_FRAMES or not object_masks.any():
        return EffectMasks(empty, 0.0, "unreliable", f"{num_frames} frames or an empty object: nothing to compare")
    h, w = _work_size(height, width)
    grey = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
                     for f in frames])  # fmt: skip
    objects = np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                        for m in object_masks])  # fmt: skip

    # 1. the camera
    still = _is_still(grey, objects)
    if not still and not moving_cameras:
        return EffectMasks(empty, 0.0, "unreliable", "moving camera: effects are looked for on still cameras only")
    valid = np.ones((num_frames, h, w), bool)
    transforms: list[np.ndarray] = []
    if not still:
        transforms, why = _similarity_to_middle(grey, objects)
        if transforms is None:
            return EffectMasks(empty, 0.0, "unreliable", f"camera motion not compensated: {why}")
        flags = cv2.INTER_LINEAR
        for t, m in enumerate(transforms):
            grey[t] = cv2.warpAffine(grey[t], m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            objects[t] = cv2.warpAffine(objects[t].view(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
            valid[t] = cv2.warpAffine(np.ones((h, w), np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
        valid = np.stack([cv2.erode(v.view(np.uint8), np.ones((5, 5), np.uint8)) > 0 for v in valid])
    source = "static-background" if still else "stabilised"

    # 2. the background: per pixel, the median of the frames in which the object is far
    far_px = max(2, int(round(FAR_SHARE * min(h, w))))
    # each pixel's distance to the object, per frame (working pixels)
    distance = np.stack([cv2.distanceTransform((~o).view(np.uint8), cv2.DIST_L2, 3) for o in objects])
    usable = valid & (distance > far_px)
    samples = np.where(usable, grey.astype(np.float32), np.nan)
    enough = usable.sum(0) >= MIN_BACKGROUND_FRAMES
    if not enough.any():
        return EffectMasks(empty, 0.0, "unreliable", "the object is never far from its surroundings")
    samples[:, ~enough] = 0.0  # no background there: never a change (nanmedian of all-nan warns)
    background = np.nanmedian(samples, axis=0).astype(np.float32)
    difference = grey.astype(np.float32) - background[None]
    # alignment and noise on the background seen without the object
    residual = np.abs(difference[usable & enough[None]])
    if not len(residual):
        return EffectMasks(empty, 0.0, "unreliable", "no background seen without the object")
    align_error = float(np.median(residual))
    if align_error > MAX_ALIGN_ERROR:
        return EffectMasks(empty, 0.0, "unreliable", f"frames do not line up (median error {align_error:.1f})")
    sigma = 1.4826 * align_error

    # 3. the change, outside the object and its edge ring, where a background exists
    ring = np.ones((2 * _EDGE_RING + 1, 2 * _EDGE_RING + 1), np.uint8)
    around = np.stack([cv2.dilate(o.view(np.uint8), ring) > 0 for o in objects])
    limit = np.maximum(NOISE_SIGMAS * sigma, MIN_CHANGE * (background + 10.0))
    changed = (np.abs(difference) > limit[None]) & valid & enough[None]
    changed &= ~around
    weak = (np.abs(difference) > 0.5 * limit[None]) & valid & enough[None] & ~around  # half the limit
    opened = np.ones((3, 3), np.uint8)
    seed = distance <= REACH_SHARE * min(h, w)  # near the object: a reflection may lie a little below it
    for t in range(num_frames):
        c = cv2.morphologyEx(changed[t].view(np.uint8), cv2.MORPH_OPEN, opened) > 0
        # 4. moving with the object: reaching near it ...
        changed[t] = _connected_to(c, seed[t]) if objects[t].any() else False
    # ... and in the same place relative to it
    found = _consistent(changed, weak, objects, valid & enough[None])
    # 5. the whole effect: hysteresis from the found core over weaker change, but not over pixels that change that
    # much in most frames by themselves
    weak &= (weak.sum(0) < _MAX_WEAK_SHARE * np.maximum((valid & enough[None]).sum(0), 1))[None]
    step = np.ones((3, 3), np.uint8)
    for t in range(num_frames):
        core = found[t].view(np.uint8)
        for _ in range(_GROW_STEPS if core.any() else 0):  # geodesic: at most _GROW_STEPS pixels from the core
            core = cv2.dilate(core, step) & weak[t].view(np.uint8) | core
        found[t] = core > 0
    if found.any():  # the edge ring next to a found effect belongs to it
        found = np.stack([(cv2.dilate(f.view(np.uint8), ring) > 0) & (a | f) & ~o
                          for f, a, o in zip(found, around, objects)])  # fmt: skip

    # back to each frame's own coordinates and the clip's size
    out = np.zeros_like(object_masks)
    for t in range(num_frames):
        if not found[t].any():
            continue
        f = found[t].view(np.uint8)
        if not still:
            f = cv2.warpAffine(f, transforms[t], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        out[t] = cv2.resize(f, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    out &= ~object_masks
    area = float(out.mean())
    what = "still camera" if still else "camera motion compensated"
    return EffectMasks(out, area, source, f"{what}; effect {100 * area:.2f}% of the clip's pixels")
