"""Cut sources into clip windows of the model's geometry and normalise their frames.

A window takes ``geometry.num_frames`` native frames ``stride`` apart, ``stride = max(1, int(fps // geometry.fps))``
(VideoPainter's ``fps // 8``), inside one scene and inside the item's ``start``/``end`` range; windows follow each
other without overlap from the start of each scene. The clip is encoded at ``geometry.fps`` (a 25 fps source at
stride 3 plays 4% slower, as the model was trained). Each frame is rotated as the file's display matrix says, then
fitted to ``geometry.height`` × ``geometry.width`` by :func:`tasks.video_io.fit_frame` (``resize`` or centre ``crop``);
masks go through the same transform with nearest-neighbour sampling (:func:`tasks.masks.resample_masks`). The
geometry must have even height and width (H.264 yuv420p); odd source sizes are fine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog.ids import clip_id as make_clip_id
from tasks.errors import InputError
from tasks.types import Clip, Geometry, SourceItem, VideoInfo
from tasks.video_io import fit_frame, iter_frames_at


@dataclass(frozen=True)
class ClipWindow:
    """Native frames ``start_frame, start_frame + stride, …`` (``num_frames`` of them) of one scene."""

    start_frame: int
    end_frame: int  # exclusive: last used frame + 1
    stride: int
    scene_index: int

    @property
    def indices(self) -> range:
        return range(self.start_frame, self.end_frame, self.stride)


def check_geometry(geometry: Geometry) -> None:
    """Raise ``ValueError`` for a geometry the encoder or the windowing cannot honour."""
    if geometry.num_frames < 1 or geometry.fps <= 0:
        raise ValueError(f"geometry needs num_frames >= 1 and fps > 0, got {geometry}")
    if geometry.height < 2 or geometry.width < 2 or geometry.height % 2 or geometry.width % 2:
        raise ValueError(
            f"geometry height and width must be even (H.264 yuv420p), got {geometry.width}x{geometry.height}"
        )
    if geometry.resize_mode not in ("resize", "crop"):
        raise ValueError(f"geometry.resize_mode must be 'resize' or 'crop', got {geometry.resize_mode!r}")


def frame_stride(fps: float, geometry: Geometry) -> int:
    """Native frames between two clip frames: ``max(1, int(fps // geometry.fps))``."""
    return max(1, int(fps // geometry.fps))


def item_range(item: SourceItem, info: VideoInfo) -> tuple[int, int]:
    """The item's native frame range ``[start, end)`` clipped to the video; raises ``InputError`` ``bad_range``."""
    if item.start_s is not None or item.end_s is not None:
        start = round((item.start_s or 0.0) * info.fps)
        end = info.num_frames if item.end_s is None else round(item.end_s * info.fps)
    else:
        start = item.start_frame or 0
        end = info.num_frames if item.end_frame is None else item.end_frame
    end = min(end, info.num_frames)
    if start >= end:
        raise InputError(
            item.uri, "bad_range", f"range {start}..{end} is empty for a video of {info.num_frames} frames"
        )
    return start, end


def plan_windows(
    scenes: list[tuple[int, int]],
    start: int,
    end: int,
    stride: int,
    geometry: Geometry,
    *,
    uri: str,
    max_clips: int | None = None,
) -> list[ClipWindow]:
    """Non-overlapping windows of ``geometry.num_frames`` frames, ``stride`` apart, inside scenes ∩ ``[start, end)``.

    Raises ``InputError`` ``clip_too_short`` when no scene part is long enough for one window.
    """
    span = (geometry.num_frames - 1) * stride + 1
    windows: list[ClipWindow] = []
    longest = 0
    for scene_index, (scene_start, scene_end) in enumerate(scenes):
        lo, hi = max(scene_start, start), min(scene_end, end)
        longest = max(longest, hi - lo)
        first = lo
        while first + span <= hi:
            if max_clips is not None and len(windows) >= max_clips:
                return windows
            windows.append(ClipWindow(first, first + span, stride, scene_index))
            first += geometry.num_frames * stride
    if not windows:
        raise InputError(
            uri,
            "clip_too_short",
            f"no scene in frames {start}..{end} is long enough for {geometry.num_frames} frames at stride {stride} "
            f"({span} native frames needed, longest scene part has {longest})",
        )
    return windows


def iter_clips(
    item: SourceItem,
    info: VideoInfo,
    windows: list[ClipWindow],
    geometry: Geometry,
    source_id: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    fitted: Mapping[int, np.ndarray] | None = None,
) -> Iterator[Clip]:
    """Decode the ``windows`` of one source in a single forward pass and yield one normalised :class:`Clip` at a time
    (``frames`` ``(geometry.num_frames, geometry.height, geometry.width, 3)`` uint8).

    ``fitted``: native frame index → that frame already decoded and fitted to the geometry, for every frame of the
    windows (nothing is decoded then)."""
    check_geometry(geometry)
    indices = (i for window in windows for i in window.indices)
    decoded = iter(()) if fitted is not None else iter_frames_at(item.uri, indices, storage_options=storage_options)
    for window in windows:
        frames = np.empty((geometry.num_frames, geometry.height, geometry.width, 3), np.uint8)
        for slot, expected in enumerate(window.indices):
            if fitted is not None:
                frames[slot] = fitted[expected]
                continue
            index, image = next(decoded)
            if index != expected:  # iter_frames_at yields exactly the wanted indices; anything else is a bad file
                raise InputError(item.uri, "corrupt_video", f"expected frame {expected}, decoded frame {index}")
            frames[slot] = fit_frame(image, geometry.height, geometry.width, geometry.resize_mode)
        yield Clip(
            clip_id=make_clip_id(source_id, window.start_frame, window.end_frame, geometry.as_dict()),
            source_id=source_id,
            source_uri=item.uri,
            start_frame=window.start_frame,
            end_frame=window.end_frame,
            frame_stride=window.stride,
            fps=geometry.fps,
            frames=frames,
            caption=item.caption,
            scene_index=window.scene_index,
            resize_mode=geometry.resize_mode,
            item=item,
        )
