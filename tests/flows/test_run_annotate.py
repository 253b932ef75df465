"""``vpf run`` on raw footage: sibling masks, fail-fast without masks, and the open-vocabulary segmenters with tiny
models of the real transformers classes (detect+track with Grounding DINO + SAM2 video, SAM3 video), a VLM
captioner, and every selection decision in SQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.store import Catalog
from tasks.annotate.caption import make_vlm
from tests.tasks.annotate import tiny_models
from tests.tasks.proposers.conftest import build_tiny_vlm


VPF = str(Path(sys.executable).parent / "vpf")
TINY_ARGS = ["--engine", "null", "--frames", "17", "--height", "64", "--width", "96", "--fps", "8", "--no-gallery"]
# random weights make random masks: these thresholds let them through (the checks themselves are tested on
# synthetic scenes in tests/tasks/annotate/test_annotation_glue.py); the clip checks stay at their defaults
PERMISSIVE = ["--select", "max_area=1.0", "--select", "max_area_change=1000", "--select", "max_reappearances=null",
              "--select", "min_side_px=null", "--select", "min_area=0"]  # fmt: skip


@pytest.fixture(scope="module")
def env(annotate_env: dict[str, str]) -> dict[str, str]:
    return annotate_env


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic clips as a user's raw footage: no manifest, no captions, no masks."""
    from tasks.synthetic import make_scene
    from tasks.video_io import encode_mp4

    folder = tmp_path_factory.mktemp("footage")
    for i, camera in enumerate(("pan", "zoom")):
        scene = make_scene(camera, num_frames=17, height=64, width=96, num_objects=1, seed=i)
        (folder / f"{camera}.mp4").write_bytes(encode_mp4(scene.frames, fps=8.0))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "gdino": tiny_models.build_grounding_dino(root / "grounding-dino"),
        "owlv2": tiny_models.build_owlv2(root / "owlv2"),  # the other detector (test_run_annotate_checks.py)
        "sam2": tiny_models.build_sam2_video(root / "sam2"),
        "sam3": tiny_models.build_sam3_video(root / "sam3"),
        "vlm": build_tiny_vlm(root / "vlm"),
    }


def _vpf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VPF, "run", *args], env=env, capture_output=True, text=True, timeout=600)


def _query(catalog: Path, sql: str) -> list[dict]:
    return Catalog(str(catalog)).query(sql, read_only=True).to_pylist()


def test_samples_folder_with_sibling_masks_gives_pairs_without_a_manifest(env, tmp_path) -> None:
    from tasks.synthetic import write_samples

    manifest = write_samples(tmp_path / "samples", cameras=("pan",), write_background=False, num_frames=17,
                             height=64, width=96)  # fmt: skip
    result = _vpf(env, str(manifest.parent), "--catalog", str(tmp_path / "cat"), *TINY_ARGS, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["counts"]["pairs"] > 0 and summary["counts"]["objects"] >= 1


def test_no_masks_and_no_segmenter_fails_fast_naming_the_fix(env, footage, tmp_path) -> None:
    catalog = tmp_path / "cat"
    result = _vpf(env, str(footage), "--catalog", str(catalog), *TINY_ARGS)
    assert result.returncode == 2
    assert "--segmenter detect+track:" in result.stderr and "sam3:" in result.stderr
    assert not catalog.exists()  # stopped before ingesting anything


def test_detect_track_and_sam3_label_objects_from_the_vocabulary(env, footage, models, tmp_path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("horse\nball\nstar\n")
    specs = {
        "detect+track": f"detect+track:{models['gdino']}#tracker=sam2:{models['sam2']}&threshold=0&max_objects=2",
        "sam3": f"sam3:{models['sam3']}#max_objects=2",
    }
    for name, spec in specs.items():
        catalog = tmp_path / f"cat-{name}"
        result = _vpf(
            env, str(footage), "--catalog", str(catalog), "--segmenter", spec, "--vocab", str(vocab),
            "--captioner", f"transformers:{models['vlm']}", "--set", "annotate.vocab_from_caption=false",
            *PERMISSIVE, *TINY_ARGS, "--json",
        )  # fmt: skip
        assert result.returncode in (0, 3), (name, result.stderr[-3000:])
        labels = _query(catalog, "SELECT label, mask_source, count(*) AS n FROM objects GROUP BY ALL")
        assert labels and {r["label"] for r in labels} <= {"horse", "ball", "star"}, labels
        assert {r["mask_source"] for r in labels} == {name}
        objects = _query(catalog, "SELECT score, vocab_source, qa_status, selection_reasons, track_lost_frames, "
                                  "prompt_frame, first_frame FROM objects")  # fmt: skip
        assert all(0 <= o["score"] <= 1 and o["vocab_source"] == "file" for o in objects)
        assert all(0 <= o["prompt_frame"] < 17 for o in objects)  # the frame whose detection started the track
        assert all(o["first_frame"] is None or 0 <= o["first_frame"] < 17 for o in objects)  # None: never visible
        assert all(o["track_lost_frames"] is not None and o["selection_reasons"] is not None for o in objects)
        clips = _query(catalog, "SELECT caption, caption_model, selection, motion, sharpness FROM clips")
        assert len(clips) == 2 and all(c["selection"] == "ok" and c["motion"] > 0 for c in clips)
        fingerprint = make_vlm(f"transformers:{models['vlm']}").identity.rsplit("@", 1)[1]
        assert len(fingerprint) == 16  # the folder's content hash, not only its name
        assert all(c["caption_model"] == f"transformers:vlm@{fingerprint}" for c in clips if c["caption"])
        counts = _query(catalog, "SELECT (SELECT count(*) FROM instructions) AS i, (SELECT count(*) FROM renders) AS r,"
                                 " (SELECT count(*) FROM pairs) AS p")[0]  # fmt: skip
        assert counts["i"] > 0 and counts["r"] > 0 and counts["p"] > 0, (name, counts)
        instructions = _query(catalog, "SELECT instruction FROM instructions")
        assert any(word in i["instruction"] for i in instructions for word in ("horse", "ball", "star"))
        # the gate re-segmented each render with the run's own segmenter (no option needed)
        pairs = _query(catalog, "SELECT reseg_iou_src, reseg_iou_tgt, metrics_json FROM pairs")
        assert all(0 <= p["reseg_iou_src"] <= 1 and 0 <= p["reseg_iou_tgt"] <= 1 for p in pairs), pairs
        assert all(json.loads(p["metrics_json"])["reseg"]["segmenter"] == spec for p in pairs)


def test_annotation_options_are_validated_and_name_the_option(tmp_path) -> None:
    import typer

    from flows.cli_factory import build_config

    config = build_config({"source": str(tmp_path), "segmenter": "sam3:/m#threshold=0.4",
                           "annotate": {"vocab": "v.txt", "select": {"min_track_iou": 0.3}}},
                          [("annotate.select.min_motion", 0.5)])  # fmt: skip
    assert config.annotate.select.min_motion == 0.5 and config.annotate.select.min_track_iou == 0.3
    assert config.recorded()["annotate"]["vocab"] == "v.txt"
    assert config.score.reseg_segmenter == "sam3:/m#threshold=0.4"  # the gate re-segments with the run's segmenter
    off = build_config({"source": str(tmp_path), "segmenter": "sam3:/m"}, [("score.reseg_segmenter", None)])
    assert off.score.reseg_segmenter is None  # --set score.reseg_segmenter=null
    for settings, option in (
        ({"annotate": {"select": {"min_blur": 3}}}, "--select"),
        ({"annotate": {"select": {"min_area": 0.5, "max_area": 0.1}}}, "--select"),
        ({"segmenter": "sam3:/m#colour=red"}, "--segmenter"),
        ({"segmenter": "detect+track:/m"}, "--segmenter"),
        ({"annotate": {"captioner": "llava:/m"}}, "--captioner"),
        ({"annotate": {"aesthetic_clip": "/clip"}}, "--aesthetic-clip"),  # options of their own now
        ({"score": {"reseg_segmenter": "sam:/m.pth"}}, "--reseg-segmenter"),
        ({"colour": 1}, "--set"),  # no option holds it
    ):
        with pytest.raises(typer.BadParameter) as err:
            build_config({"source": str(tmp_path), **settings})
        assert err.value.param_hint == [option], settings
