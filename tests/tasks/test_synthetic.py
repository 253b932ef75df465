"""Synthetic ground-truth scenes and the samples written for `vpf samples`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tasks.masks import load_label_map, select_label
from tasks.synthetic import BACKGROUNDS, MOTIONS, make_scene, write_samples
from tasks.video_io import probe_video, read_frames


SIZE = {"num_frames": 9, "height": 64, "width": 96}


@pytest.mark.parametrize("camera", MOTIONS)
def test_scene_is_consistent_with_its_ground_truth(camera: str) -> None:
    scene = make_scene(camera, seed=3, **SIZE)
    assert scene.frames.shape == scene.background.shape == (9, 64, 96, 3)
    assert scene.label_map.shape == (9, 64, 96)
    assert 1 <= len(scene.labels) <= 3 and scene.background_name in BACKGROUNDS
    # the clip differs from the clean background exactly where an object is
    differs = (scene.frames != scene.background).any(-1)
    assert not differs[~scene.masks].any()
    assert differs[scene.masks].mean() > 0.9
    objects = scene.object_masks()
    assert objects.shape == (len(scene.labels), 9, 64, 96)
    assert np.array_equal(objects.any(0), scene.masks)
    for k in range(len(scene.labels)):
        assert objects[k].any(axis=(1, 2)).sum() >= 5  # each object is on screen most of the time


def test_cameras_move_as_named() -> None:
    static = make_scene("static", seed=0, **SIZE).background
    assert all(np.array_equal(static[0], f) for f in static)
    pan = make_scene("pan", seed=0, **SIZE).background
    assert not np.array_equal(pan[0], pan[-1])
    zoom = make_scene("zoom", seed=0, num_frames=9, height=64, width=96)
    assert zoom.meta["camera_matrices"][-1][0, 0] < zoom.meta["camera_matrices"][0][0, 0]  # zooming in


def test_deterministic_for_a_seed() -> None:
    a, b = make_scene("pan", seed=5, **SIZE), make_scene("pan", seed=5, **SIZE)
    assert np.array_equal(a.frames, b.frames) and a.labels == b.labels and a.caption == b.caption
    assert not np.array_equal(a.frames, make_scene("pan", seed=6, **SIZE).frames)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="camera"):
        make_scene("dolly")
    with pytest.raises(ValueError, match="num_objects"):
        make_scene("static", num_objects=4, **SIZE)
    with pytest.raises(ValueError, match="background"):
        make_scene("static", background="moon", **SIZE)


def test_write_samples_in_the_ingest_format(tmp_path) -> None:
    manifest = write_samples(tmp_path, cameras=("static", "pan"), fps=8, seed=1, **SIZE)
    rows = list(csv.DictReader(manifest.open()))
    assert rows and set(rows[0]) == {"uri", "caption", "mask_uri", "mask_id", "label"}
    assert {r["uri"].split("_")[0] for r in rows} == {"static", "pan"}
    scenes = json.loads((tmp_path / "scenes.json").read_text())
    for row in rows:
        video = tmp_path / row["uri"]
        info = probe_video(str(video))
        assert (info.num_frames, info.height, info.width) == (9, 64, 96)
        labels = load_label_map(str(tmp_path / row["mask_uri"]))
        assert labels.shape == (9, 64, 96) and np.issubdtype(labels.dtype, np.integer)
        mask = select_label(labels, int(row["mask_id"]), row["mask_uri"])
        assert mask.any()
        scene = next(s for s in scenes if f"{s['name']}.mp4" == row["uri"])
        assert scene["labels"][int(row["mask_id"]) - 1] == row["label"]
        assert row["label"] in row["caption"]
    ground_truth = sorted((tmp_path / "ground_truth").glob("*_background.mp4"))
    assert len(ground_truth) == 2
    assert read_frames(str(ground_truth[0])).shape == (9, 64, 96, 3)


def test_handheld_camera_shakes_a_little_every_frame() -> None:
    scene = make_scene("handheld", seed=0, **SIZE)
    matrices = scene.meta["camera_matrices"]
    angles = np.degrees(np.arctan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    assert np.abs(np.diff(angles)).max() > 0.01 and np.abs(angles).max() < 3  # small rotations, changing
    shifts = np.abs(np.diff(matrices[:, :, 2], axis=0)).max(axis=1)
    assert (shifts > 0).mean() > 0.5  # the frame moves almost every frame
    assert not np.array_equal(scene.background[0], scene.background[4])


def test_occlusion_object_passes_behind_a_post_that_stays() -> None:
    scene = make_scene("occlusion", seed=0, num_frames=25, height=96, width=144)
    post = scene.meta["objects"][-1]
    assert "occluder" in post["label"] and post["label"] not in scene.labels
    # the post is part of the clean background: it is there, unmasked, in every frame of both clips
    still = (scene.background == scene.background[0]).all(axis=(0, 3))
    post_pixels = still & ~(scene.frames != scene.background).any(axis=(0, 3))
    assert post_pixels.any()
    # the first object's visible area shrinks while it is behind the post
    area = (scene.label_map == 1).sum(axis=(1, 2))
    assert area.min() < 0.8 * area.max()
