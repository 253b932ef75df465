"""tasks/clips.py: window planning, strides, ranges, normalisation of real and odd footage, ids."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.ids import clip_id
from tasks.clips import check_geometry, frame_stride, item_range, iter_clips, plan_windows
from tasks.errors import InputError
from tasks.types import Geometry, SourceItem, VideoInfo
from tasks.video_io import fit_frame, probe_video, read_frames


G17 = Geometry(num_frames=17, fps=8.0, height=64, width=96)


def info(num_frames: int = 250, fps: float = 25.0) -> VideoInfo:
    return VideoInfo(uri="v.mp4", codec="h264", width=640, height=272, fps=fps, num_frames=num_frames, duration_s=10)


@pytest.mark.parametrize("fps, stride", [(25.0, 3), (30.0, 3), (29.97, 3), (60.0, 7), (16.0, 2), (8.0, 1), (6.0, 1)])
def test_stride_is_fps_floor_div_8(fps: float, stride: int) -> None:
    assert frame_stride(fps, Geometry(49, 8.0, 480, 720)) == stride


def test_windows_stay_inside_scenes_and_range() -> None:
    scenes = [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242), (242, 250)]
    windows = plan_windows(scenes, 0, 250, 3, G17, uri="v.mp4")  # 17 frames stride 3 = 49 native frames
    assert [(w.start_frame, w.end_frame, w.scene_index) for w in windows] == [
        (76, 125, 2),
        (137, 186, 3),
        (187, 236, 4),
    ]
    assert all(len(w.indices) == 17 for w in windows)
    windows = plan_windows([(0, 250)], 10, 250, 3, G17, uri="v.mp4")
    assert [w.start_frame for w in windows] == [10, 61, 112, 163]  # back to back: 17 * 3 apart
    assert len(plan_windows([(0, 250)], 0, 250, 3, G17, uri="v.mp4", max_clips=2)) == 2
    with pytest.raises(InputError) as err:
        plan_windows(scenes[:2], 0, 76, 3, G17, uri="v.mp4")
    assert err.value.reason == "clip_too_short" and "49 native frames" in str(err.value)


def test_item_range_in_frames_and_seconds() -> None:
    assert item_range(SourceItem(uri="v"), info()) == (0, 250)
    assert item_range(SourceItem(uri="v", start_frame=20, end_frame=400), info()) == (20, 250)
    assert item_range(SourceItem(uri="v", start_s=1.0, end_s=2.5), info()) == (25, 62)
    with pytest.raises(InputError) as err:
        item_range(SourceItem(uri="v", start_frame=300), info())
    assert err.value.reason == "bad_range"


def test_geometry_must_be_even() -> None:
    with pytest.raises(ValueError, match="even"):
        check_geometry(Geometry(49, 8.0, 63, 720))
    with pytest.raises(ValueError, match="resize_mode"):
        check_geometry(Geometry(49, 8.0, 480, 720, resize_mode="stretch"))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["resize", "crop"])
def test_clips_from_720p_footage(bunny: str, mode: str) -> None:
    geometry = Geometry(num_frames=9, fps=8.0, height=48, width=64, resize_mode=mode)
    source = probe_video(bunny)
    windows = plan_windows([(0, 132)], 40, 132, frame_stride(source.fps, geometry), geometry, uri=bunny, max_clips=1)
    (clip,) = iter_clips(SourceItem(uri=bunny, caption="bunny"), source, windows, geometry, "source_x")
    assert clip.frames.shape == (9, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert (clip.start_frame, clip.end_frame, clip.frame_stride, clip.fps) == (40, 65, 3, 8.0)
    assert clip.clip_id == clip_id("source_x", 40, 65, geometry.as_dict()) and clip.caption == "bunny"
    expected = fit_frame(read_frames(bunny, 64, 65)[0], 48, 64, mode)
    np.testing.assert_array_equal(clip.frames[-1], expected)


def test_clip_ids_depend_on_geometry() -> None:
    assert clip_id("s", 0, 49, G17.as_dict()) != clip_id("s", 0, 49, Geometry(17, 8.0, 64, 96, "crop").as_dict())


def test_rotated_and_odd_sources(bad_corpus: dict) -> None:
    for name, displayed in (("rotation", (96, 64)), ("odd_dims", (49, 65))):
        source = probe_video(bad_corpus[name])
        assert (source.height, source.width) == displayed
        windows = plan_windows([(0, source.num_frames)], 0, source.num_frames, 2, G17, uri=source.uri)
        (clip,) = iter_clips(SourceItem(uri=source.uri), source, windows, G17, "s")
        assert clip.frames.shape == (17, 64, 96, 3)
        upright = fit_frame(read_frames(source.uri, 0, 1)[0], 64, 96)
        np.testing.assert_array_equal(clip.frames[0], upright)
