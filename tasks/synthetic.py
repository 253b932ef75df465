"""Synthetic ground-truth scenes: real stills filmed by a virtual camera, with moving cut-out objects.

A scene is a real scikit-image still (coffee, rocket, astronaut, …) seen through a moving or still camera window
(:func:`make_scene`), with one to three foreground objects of real shapes (the ``horse`` silhouette, a ball, a star)
textured with other stills moving across it. Because the clean background video is rendered separately, an
inpainting engine's output can be compared with the truth inside the hole (``tasks.quality_bench``). Everything is
deterministic for a seed; :func:`write_samples` writes the scenes as the ingest path reads them (H.264 mp4 clips,
VPData-style ``.npz`` label maps, a manifest CSV with one row per object).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np


Camera = Literal["static", "pan", "zoom", "handheld", "occlusion"]
CAMERAS: tuple[Camera, ...] = ("static", "pan", "zoom")  # the original three (benchmarks loop over these)
MOTIONS: tuple[Camera, ...] = (*CAMERAS, "handheld", "occlusion")  # every kind ``make_scene`` renders

# still name -> what it shows (used in captions)
BACKGROUNDS: dict[str, str] = {
    "coffee": "a cup of coffee on a table",
    "rocket": "a rocket on its launch pad",
    "astronaut": "a portrait of an astronaut in front of a flag",
    "chelsea": "a tabby cat looking at the camera",
    "stereo_motorcycle": "a motorcycle in a workshop",
    "immunohistochemistry": "a stained tissue sample under a microscope",
}
# object label -> (shape, texture still)
OBJECTS: dict[str, tuple[str, str]] = {
    "horse": ("horse", "chelsea"),
    "ball": ("ellipse", "coffee"),
    "star": ("star", "astronaut"),
}
_CAMERA_PHRASES = {
    "static": "A static shot of",
    "pan": "A camera panning across",
    "zoom": "A camera zooming in on",
    "handheld": "A handheld shot of",
    "occlusion": "A static shot of",
}


@dataclass
class SyntheticScene:
    """A clip with known masks and its clean background.

    Attributes:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the clip with the objects.
        background (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the same clip without them.
        label_map (`np.ndarray` of shape `(num_frames, height, width)`, int32): 0 = background, k = object k (1-based).
        labels: the object names, ``labels[k - 1]`` for label ``k``.
    """

    name: str
    camera: Camera
    background_name: str
    caption: str
    frames: np.ndarray
    background: np.ndarray
    label_map: np.ndarray
    labels: list[str]
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """Union of the objects, `(num_frames, height, width)` bool."""
        return self.label_map > 0

    def object_masks(self) -> np.ndarray:
        """Per-object visible masks, `(num_objects, num_frames, height, width)` bool."""
        return np.stack([self.label_map == k for k in range(1, len(self.labels) + 1)])


@lru_cache(maxsize=16)
def _still(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _shape_alpha(shape: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A binary silhouette of shape `(height, width)`."""
    if shape == "horse":
        import skimage.data

        horse = ~skimage.data.horse()  # the still is True on the background
        ys, xs = np.nonzero(horse)
        horse = horse[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
        if rng.random() < 0.5:
            horse = horse[:, ::-1]
        return cv2.resize(horse, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    alpha = np.zeros((height, width), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(alpha, (width // 2, height // 2), (width // 2 - 1, height // 2 - 1), 0, 0, 360, 1, -1)
    elif shape == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, np.pi)
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.22)
        points = np.stack(
            [width / 2 + radii * width * np.cos(angles), height / 2 + radii * height * np.sin(angles)], 1
        )
        cv2.fillPoly(alpha, [np.round(points).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown object shape {shape!r}; known: horse, ellipse, star")
    return alpha.astype(bool)


def _camera_maps(
    camera: Camera, still_hw: tuple[int, int], num_frames: int, height: int, width: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], float]:
    """Per-frame 2×3 affine matrices mapping output pixels to still coordinates, and the pan's screen speed.

    The speed is the horizontal motion of the background on screen, in output pixels per frame (0 unless panning).
    """
    sh, sw = still_hw
    # output pixels per still pixel is 1/scale; leave room for the camera to move
    pan_speed = rng.uniform(2.0, 3.5)  # drawn for every camera: scenes of a seed stay what they were
    travel = pan_speed * (num_frames - 1) * width / 720 if camera == "pan" else 0.0
    room = 1.08 if camera == "handheld" else 1.02
    scale = min(sh / (height * room), sw / ((width + travel) * room))  # still pixels per output pixel
    zoom_end = rng.uniform(0.72, 0.82) if camera == "zoom" else 1.0
    direction = rng.choice([-1.0, 1.0])
    # handheld: a random walk of the rotation (degrees) and translation (output pixels), pulled back to the centre
    angle, offset = np.zeros(num_frames), np.zeros((num_frames, 2))
    if camera == "handheld":
        for t in range(1, num_frames):
            angle[t] = 0.8 * angle[t - 1] + rng.normal(0.0, 0.35)
            offset[t] = 0.8 * offset[t - 1] + rng.normal(0.0, 2.0 * width / 720, size=2)
    matrices = []
    for t in range(num_frames):
        u = t / max(num_frames - 1, 1)
        s = scale * (1.0 + (zoom_end - 1.0) * u)
        shift = direction * travel * (u - 0.5) * scale
        cx, cy = sw / 2 + shift + offset[t, 0] * s, sh / 2 + offset[t, 1] * s
        c, r = np.cos(np.deg2rad(angle[t])), np.sin(np.deg2rad(angle[t]))
        # output (x, y) -> still: rotate about the frame centre, scale, then centre on (cx, cy)
        linear = s * np.array([[c, -r], [r, c]])
        origin = np.array([cx, cy]) - linear @ np.array([width / 2, height / 2])
        matrices.append(np.hstack([linear, origin[:, None]]).astype(np.float64))
    return matrices, -direction * travel / max(num_frames - 1, 1)


def _draw_occluder(
    frames: np.ndarray, clean: np.ndarray, label_map: np.ndarray, track: dict, rng: np.random.Generator
) -> dict:
    """Draw a tall post in front of everything, across the first object's path, into ``frames``
    and ``clean`` (it belongs to the scene) and clear its pixels from ``label_map`` (the object behind it is not
    visible there). Returns its track."""
    num_frames, height, width = label_map.shape
    oh, ow = track["size"]
    ph = max(4, int(height * rng.uniform(0.45, 0.6)))
    pw = max(3, int(width * rng.uniform(0.07, 0.11)))
    alpha = _shape_alpha("ellipse", ph, pw, rng)
    texture = _still(str(rng.choice(["rocket", "immunohistochemistry"])))
    patch = cv2.resize(texture[: texture.shape[0] // 2, : texture.shape[1] // 2], (pw, ph), cv2.INTER_AREA)
    # standing where the object is half-way through the clip
    x = int(round(track["x0"] + track["vx"] * (num_frames - 1) / 2 + ow / 2 - pw / 2))
    y = int(round(np.clip(track["y0"] + oh / 2 - ph / 2, 0, max(height - ph, 0))))
    for t in range(num_frames):
        y1, x1, y2, x2 = max(y, 0), max(x, 0), min(y + ph, height), min(x + pw, width)
        if y2 <= y1 or x2 <= x1:
            continue
        a = alpha[y1 - y : y2 - y, x1 - x : x2 - x]
        for target in (frames, clean):
            target[t, y1:y2, x1:x2][a] = patch[y1 - y : y2 - y, x1 - x : x2 - x][a]
        label_map[t, y1:y2, x1:x2][a] = 0
    return {"label": "post (occluder, part of the scene)", "shape": "ellipse", "size": [ph, pw], "vx": 0.0}


def make_scene(
    camera: Camera,
    *,
    num_frames: int = 49,
    height: int = 480,
    width: int = 720,
    num_objects: int | None = None,
    background: str | None = None,
    seed: int = 0,
) -> SyntheticScene:
    """Render one ground-truth scene.

    Args:
        camera: ``static``, ``pan`` (sideways, 2–3.5 px per frame at 720 px width), ``zoom`` (in, to 72–82 %),
            ``handheld`` (a random walk of about 0.35° and 2 px per frame at 720 px, pulled back to the centre) or
            ``occlusion`` (static; the first object moves on its own and passes *behind* a post that belongs to the
            scene: only that object is labelled, by its visible part, and the clean background keeps the post).
        num_objects: 1–3 moving objects; drawn from the seed when None.
        background: a key of ``BACKGROUNDS``; drawn from the seed when None.
        seed: everything (background, objects, paths) is a function of the arguments.
    """
    if camera not in MOTIONS:
        raise ValueError(f"camera must be one of {MOTIONS}, got {camera!r}")
    if num_frames < 2 or height < 16 or width < 16:
        raise ValueError(f"scene too small: {num_frames} frames of {height}x{width} (need >= 2 frames, >= 16 px)")
    rng = np.random.default_rng([seed, MOTIONS.index(camera)])
    bg_name = background or str(rng.choice(list(BACKGROUNDS)))
    if bg_name not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {bg_name!r}")
    still = _still(bg_name)
    matrices, background_vx = _camera_maps(camera, still.shape[:2], num_frames, height, width, rng)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    clean = np.stack(
        [cv2.warpAffine(still, m, (width, height), flags=flags, borderMode=cv2.BORDER_REFLECT101) for m in matrices]
    )

    n = int(num_objects) if num_objects is not None else int(rng.integers(1, 4))
    if not 1 <= n <= 3:
        raise ValueError(f"num_objects must be 1..3, got {n}")
    labels = [str(x) for x in rng.choice(list(OBJECTS), size=n, replace=False)]
    frames = clean.copy()
    label_map = np.zeros((num_frames, height, width), np.int32)
    tracks = []
    for k, label in enumerate(labels, start=1):
        shape, texture_name = OBJECTS[label]
        oh = max(4, int(height * rng.uniform(0.28, 0.4)))
        ow = max(4, int(oh * rng.uniform(0.9, 1.3)))
        alpha = _shape_alpha(shape, oh, ow, rng)
        texture = _still(texture_name)
        ty = int(rng.integers(0, texture.shape[0] - texture.shape[0] // 2))
        tx = int(rng.integers(0, texture.shape[1] - texture.shape[1] // 2))
        patch = texture[ty : ty + texture.shape[0] // 2, tx : tx + texture.shape[1] // 2]
        patch = cv2.resize(patch, (ow, oh), interpolation=cv2.INTER_AREA)
        # a straight path with a gentle vertical wobble, moving 3-6 px/frame (at 720 px width) relative to the
        # background, so the background behind it shows at some time
        speed = rng.uniform(3.0, 6.0) * width / 720
        vx = background_vx + speed * rng.choice([-1.0, 1.0])
        length = abs(vx) * (num_frames - 1)
        x0 = rng.uniform(0, max(width - ow - length, 0)) + (length if vx < 0 else 0)
        y0 = rng.uniform(0.1 * height, max(0.9 * height - oh, 0.1 * height + 1))
        wobble, phase = rng.uniform(0, 0.05 * height), rng.uniform(0, 2 * np.pi)
        tracks.append({"label": label, "shape": shape, "size": [oh, ow], "vx": float(vx), "x0": x0, "y0": y0})
        for t in range(num_frames):
            x = int(round(x0 + vx * t))
            y = int(round(y0 + wobble * np.sin(phase + 2 * np.pi * t / num_frames)))
            y1, x1 = max(y, 0), max(x, 0)
            y2, x2 = min(y + oh, height), min(x + ow, width)
            if y2 <= y1 or x2 <= x1:
                continue
            a = alpha[y1 - y : y2 - y, x1 - x : x2 - x]
            frames[t, y1:y2, x1:x2][a] = patch[y1 - y : y2 - y, x1 - x : x2 - x][a]
            label_map[t, y1:y2, x1:x2][a] = k
    if camera == "occlusion":
        occluder = _draw_occluder(frames, clean, label_map, tracks[0], rng)
        tracks.append(occluder)
    objects = " and ".join(f"a {label}" for label in labels)
    caption = f"{_CAMERA_PHRASES[camera]} {BACKGROUNDS[bg_name]}, with {objects} moving across."
    return SyntheticScene(
        name=f"{camera}_{bg_name}_s{seed}",
        camera=camera,
        background_name=bg_name,
        caption=caption,
        frames=frames,
        background=clean,
        label_map=label_map,
        labels=labels,
        seed=seed,
        meta={"objects": tracks, "camera_matrices": np.stack(matrices), "background_vx": background_vx},
    )


def write_samples(
    out_dir: str | Path,
    *,
    cameras: tuple[Camera, ...] | list[Camera] = CAMERAS,
    num_frames: int = 49,
    height: int = 480,
    width: int = 720,
    fps: float = 8.0,
    seed: int = 0,
    write_background: bool = True,
) -> Path:
    """Write one scene per camera as ingest reads it; returns the manifest path.

    Layout under ``out_dir``::

        <name>.mp4                     the clip (H.264)
        <name>_masks.npz               label map, ``arr_0`` of shape (frames, height, width) int32, as VPData
        ground_truth/<name>_background.mp4   the clean background (when ``write_background``)
        manifest.csv                   uri, caption, mask_uri, mask_id, label (one row per object)
        scenes.json                    scene metadata (camera, background, labels, seed)
    """
    from tasks.video_io import encode_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, meta = [], []
    for camera in cameras:
        scene = make_scene(camera, num_frames=num_frames, height=height, width=width, seed=seed)
        (out / f"{scene.name}.mp4").write_bytes(encode_mp4(scene.frames, fps=fps))
        np.savez_compressed(out / f"{scene.name}_masks.npz", scene.label_map)
        if write_background:
            (out / "ground_truth").mkdir(exist_ok=True)
            (out / "ground_truth" / f"{scene.name}_background.mp4").write_bytes(encode_mp4(scene.background, fps=fps))
        for k, label in enumerate(scene.labels, start=1):
            rows.append(
                {
                    "uri": f"{scene.name}.mp4",
                    "caption": scene.caption,
                    "mask_uri": f"{scene.name}_masks.npz",
                    "mask_id": k,
                    "label": label,
                }
            )
        meta.append(
            {
                "name": scene.name,
                "camera": camera,
                "background": scene.background_name,
                "labels": scene.labels,
                "seed": seed,
                "fps": fps,
            }
        )
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri", "caption", "mask_uri", "mask_id", "label"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "scenes.json").write_text(json.dumps(meta, indent=2))
    return manifest
