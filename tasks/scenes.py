"""Shot boundaries with PySceneDetect's content detector: from a video (``detect_scenes``, decoding through PyAV), or
from frames already decoded (``scenes_in_frames``, the same detector on the same downscaled frames)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import av
import cv2
import fsspec
import numpy as np

from tasks.errors import InputError


# PySceneDetect logs one INFO line per video ("Detecting scenes..."): thousands per run, drowning progress output.
_SCENEDETECT_LOG = logging.getLogger("pyscenedetect")


def detect_scenes(
    uri: str,
    *,
    start: int = 0,
    end: int | None = None,
    threshold: float = 27.0,
    min_scene_len: int = 15,
    storage_options: Mapping[str, Any] | None = None,
) -> list[tuple[int, int]]:
    """Split native frames ``[start, end)`` of a video into scenes → ``[(first, end_exclusive), …]`` covering the range.

    ``threshold`` is ContentDetector's (HSV-change score, 27 by default); ``min_scene_len`` (native frames) merges
    cuts closer than that. Frames are downscaled before detection, so a long 720p video costs little more than
    decoding it. Raises ``InputError``: ``corrupt_video`` when the video cannot be decoded, ``truncated_video`` when
    decoding stops more than one frame before an explicit ``end`` (pass the indexed frame count to catch files cut
    short).
    """
    from scenedetect import ContentDetector, SceneManager
    from scenedetect.backends.pyav import VideoStreamAv

    if _SCENEDETECT_LOG.getEffectiveLevel() < logging.WARNING:  # set per call: logging set-ups (Prefect's) reset it
        _SCENEDETECT_LOG.setLevel(logging.WARNING)
    uri = str(uri)
    local = "://" not in uri or uri.startswith("file://")
    with contextlib.ExitStack() as stack:
        if local:
            source: Any = uri[len("file://") :] if uri.startswith("file://") else uri
        else:
            source = stack.enter_context(fsspec.open(uri, "rb", **dict(storage_options or {})))
        try:
            video = VideoStreamAv(source, name=uri, suppress_output=True)
            manager = SceneManager()
            manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_scene_len))
            if start:
                video.seek(start)
            manager.detect_scenes(video, end_time=end, show_progress=False)
            scenes = [(a.frame_num, b.frame_num) for a, b in manager.get_scene_list(start_in_scene=True)]
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
            raise InputError(uri, "corrupt_video", f"scene detection could not decode the video ({exc})") from None
    if not scenes:
        raise InputError(uri, "too_few_frames", f"no frame decoded in range {start}..{end}")
    if end is not None and scenes[-1][1] < end - 1:
        raise InputError(
            uri, "truncated_video", f"frames {start}..{end} were expected but decoding stopped at {scenes[-1][1]}"
        )
    return scenes


def scenes_in_frames(
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    start: int = 0,
    threshold: float = 27.0,
    min_scene_len: int = 15,
    uri: str = "frames",
) -> list[tuple[int, int]]:
    """:func:`detect_scenes` on frames the caller decodes: native frames ``start, start + 1, …`` (``(H, W, 3)`` uint8
    RGB, consecutive) → ``[(first, end_exclusive), …]`` covering them.

    The frames are downscaled as PySceneDetect's scene manager does (to about 256 px wide, bilinear) and handed to
    its ``ContentDetector`` in BGR, so a video gives the same scenes either way. A caller that decodes the frames
    anyway saves the second decoding pass. Raises ``InputError`` ``too_few_frames`` for no frames (``uri`` names
    the input).
    """
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.scene_manager import DEFAULT_MIN_WIDTH, compute_downscale_factor, get_scenes_from_cuts

    detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
    cuts: list[Any] = []
    count = 0
    size = None
    for image in frames:
        if size is None:
            factor = compute_downscale_factor(max(image.shape[:2]), DEFAULT_MIN_WIDTH)
            height, width = image.shape[:2]
            size = (width, height) if factor <= 1 else (max(1, round(width / factor)), max(1, round(height / factor)))
        small = image if size == image.shape[1::-1] else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        bgr = np.ascontiguousarray(small[..., ::-1])
        cuts += detector.process_frame(FrameTimecode(start + count, fps), bgr)
        count += 1
    if not count:
        raise InputError(uri, "too_few_frames", f"no frame decoded from frame {start}")
    cuts += detector.post_process(FrameTimecode(start + count - 1, fps))
    scenes = get_scenes_from_cuts(
        sorted(set(cuts)), start_pos=FrameTimecode(start, fps), end_pos=FrameTimecode(start + count, fps)
    )
    return [(a.frame_num, b.frame_num) for a, b in scenes]
