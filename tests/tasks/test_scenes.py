"""tasks/scenes.py: PySceneDetect's content detector on real footage with cuts."""

from __future__ import annotations

import pytest

from tasks.errors import InputError
from tasks.scenes import detect_scenes


BIKES_CUTS = [30, 76, 137, 187, 242]


def test_finds_the_cuts_in_bikes(bikes: str) -> None:
    scenes = detect_scenes(bikes)
    cuts = [start for start, _ in scenes[1:]]
    assert len(cuts) == len(BIKES_CUTS)
    assert all(abs(found - expected) <= 2 for found, expected in zip(cuts, BIKES_CUTS)), cuts
    assert scenes[0][0] == 0 and scenes[-1][1] == 250
    assert all(a[1] == b[0] for a, b in zip(scenes, scenes[1:])), "scenes tile the video"


def test_min_scene_len_merges_short_scenes(bikes: str) -> None:
    scenes = detect_scenes(bikes, min_scene_len=50)
    assert all(end - start >= 50 for start, end in scenes[:-1])  # only the tail may be shorter
    assert len(scenes) < 6


def test_range_is_honoured(bikes: str) -> None:
    scenes = detect_scenes(bikes, start=50, end=200)
    assert scenes[0][0] == 50 and scenes[-1][1] == 200
    assert [s for s, _ in scenes[1:]] == pytest.approx([76, 137, 187], abs=2)


def test_single_shot_and_truncated_range(bunny: str, bad_corpus: dict) -> None:
    assert detect_scenes(bunny, end=60) == [(0, 60)]
    with pytest.raises(InputError) as err:
        detect_scenes(bad_corpus["good"], end=80)  # the file has 40 frames
    assert err.value.reason == "truncated_video" and bad_corpus["good"] in str(err.value)


@pytest.mark.parametrize("start, end, min_scene_len", [(0, 250, 15), (50, 200, 15), (0, 250, 50), (100, 160, 15)])
def test_scenes_of_decoded_frames_equal_the_videos(bikes: str, start: int, end: int, min_scene_len: int) -> None:
    from tasks.scenes import scenes_in_frames
    from tasks.video_io import iter_frames, probe_video

    fps = probe_video(bikes).fps
    decoded = scenes_in_frames(iter_frames(bikes, start, end), fps=fps, start=start, min_scene_len=min_scene_len)
    assert decoded == detect_scenes(bikes, start=start, end=end, min_scene_len=min_scene_len)
    assert len(decoded) > 1 or (start, end) == (100, 160)  # cuts were there to find


def test_scenes_of_no_frames_is_an_input_error() -> None:
    from tasks.scenes import scenes_in_frames

    with pytest.raises(InputError) as err:
        scenes_in_frames(iter([]), fps=25.0, uri="empty.mp4")
    assert err.value.reason == "too_few_frames" and "empty.mp4" in str(err.value)
