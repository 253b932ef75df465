"""`vpf score` on files the factory did not make, `vpf eval` and `vpf bench gate` on tiny scenes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from flows import cli_bench, cli_quality
from tasks.masks import encode_masks_rle
from tasks.synthetic import make_scene


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_quality.register(app)
    cli_bench.register(app)
    return app


def _write(path: Path, frames: np.ndarray, codec: str) -> str:
    """Encode with PyAV directly (not the factory's encoder): VP9 in WebM, MPEG-4 part 2 in QuickTime."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "4", "b:v": "0"} if codec == "libvpx-vp9" else {"qscale": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("foreign")
    scene = make_scene("pan", num_frames=17, height=144, width=216, seed=2)
    truth = scene.background
    # masks as a PNG folder (0/255) and as COCO RLE json, the object's own mask
    png = out / "masks"
    png.mkdir()
    for t, m in enumerate(scene.masks):
        cv2.imwrite(str(png / f"{t:04d}.png"), m.astype(np.uint8) * 255)
    (out / "masks.json").write_text(json.dumps(encode_masks_rle(scene.masks)))
    return {
        "source": _write(out / "source.webm", scene.frames, "libvpx-vp9"),
        "removed": _write(out / "removed.mov", truth, "mpeg4"),
        "unedited": _write(out / "unedited.mov", scene.frames, "mpeg4"),
        "short": _write(out / "short.webm", scene.frames[:9], "libvpx-vp9"),
        "png": str(png),
        "rle": str(out / "masks.json"),
        "garbage": str(out / "garbage.mp4"),
    }


def _score(*args: str) -> tuple[int, dict | str]:
    result = CliRunner().invoke(_app(), ["score", *args, "--json"])
    if result.exit_code == 0:
        return 0, json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, result.output


@pytest.mark.parametrize("mask", ["png", "rle"])
def test_score_foreign_files(files, mask) -> None:
    code, good = _score("--source", files["source"], "--target", files["removed"], "--mask", files[mask])
    assert code == 0, good
    assert good["decision"] == "accepted", good["decision_reason"]
    assert good["psnr_bg"] < 100 and good["dilation_radius"] == 5  # the run's default at 216 px wide
    code, bad = _score("--source", files["source"], "--target", files["unedited"], "--mask", files[mask])
    assert code == 0 and bad["decision"] == "rejected"
    assert "hole_change" in bad["decision_reason"] and "object_match" in bad["decision_reason"]


def test_score_prints_checks_and_decision(files) -> None:
    result = CliRunner().invoke(
        _app(), ["score", "--source", files["source"], "--target", files["unedited"], "--mask", files["png"]]
    )
    assert result.exit_code == 0, result.output
    assert "object_match" in result.output and "rejected:" in result.output
    assert "clip_label_src" in result.output and "absent (no CLIP weights configured)" in result.output


def test_score_bad_inputs_exit_2(files) -> None:
    Path(files["garbage"]).write_bytes(b"not a video at all")
    cases = [
        (["--target", files["short"], "--mask", files["png"]], "frames"),  # frame counts differ
        (["--target", files["garbage"], "--mask", files["png"]], "garbage.mp4"),  # unreadable
        (["--target", files["removed"], "--mask", files["png"] + "-missing"], "missing"),  # no such mask
    ]
    for args, named in cases:
        code, output = _score("--source", files["source"], *args)
        assert code == 2, output
        assert "error:" in output and named in output, output
    code, output = _score("--source", files["source"], "--target", files["removed"], "--mask", files["png"],
                          "--accept", "min_nonsense=1")  # fmt: skip
    assert code == 2


def test_score_with_a_reseg_segmenter(files, tmp_path) -> None:
    """``--reseg-segmenter`` fills both re-segmentation columns (a tiny SAM3 of random weights: any IoU in [0, 1]);
    a spec that is not open-vocabulary and a folder that holds no model exit 2 naming them."""
    from tests.tasks.annotate import tiny_models

    sam3 = tiny_models.build_sam3_video(tmp_path / "sam3")
    triple = ["--source", files["source"], "--target", files["removed"], "--mask", files["png"], "--label", "horse"]
    code, out = _score(*triple, "--reseg-segmenter", f"sam3:{sam3}")
    assert code == 0, out
    assert 0 <= out["reseg_iou_src"] <= 1 and 0 <= out["reseg_iou_tgt"] <= 1
    assert out["details"]["reseg"]["segmenter"] == f"sam3:{sam3}"
    code, out = _score(*triple)
    assert code == 0 and out["reseg_iou_tgt"] is None
    assert out["details"]["absent"]["reseg_iou_tgt"] == "no re-segmentation segmenter configured"
    code, output = _score(*triple, "--reseg-segmenter", "sam:/models/sam_vit_b.pth")
    assert code == 2 and "open-vocabulary" in output, output
    code, output = _score(*triple, "--reseg-segmenter", f"sam3:{tmp_path / 'nothing'}")
    assert code == 2 and "error:" in output and str(tmp_path / "nothing") in output, output


def test_eval_one_row_per_engine() -> None:
    args = ["eval", "--engine", "propagation", "--engine", "null", "--scenes", "pan,occlusion", "--frames", "9",
            "--height", "64", "--width", "96", "--json"]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    rows = {r["requested"]: r for r in summary["engines"]}
    assert set(rows) == {"propagation", "null"} and all(r["clips"] == 2 for r in rows.values())
    assert rows["propagation"]["psnr_in"] > rows["null"]["psnr_in"]  # a real fill beats a flat colour
    for r in rows.values():
        assert r["psnr_out"] == 100.0 and r["clip_text_sim"] is None  # engines keep the background; no CLIP
    assert "clip_text_sim" in summary["absent"]
    assert "clip_text_sim" not in result.output.splitlines()[1]  # absent columns are not printed as values


def test_eval_on_a_ground_truth_folder(tmp_path) -> None:
    from tasks.synthetic import write_samples

    write_samples(tmp_path, cameras=("static",), num_frames=9, height=64, width=96)
    result = CliRunner().invoke(_app(), ["eval", "--engine", "propagation", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])["engines"][0]
    assert row["clips"] == 1 and row["psnr_in"] > 20
    (tmp_path / "ground_truth" / next(p.name for p in (tmp_path / "ground_truth").iterdir())).unlink()
    result = CliRunner().invoke(_app(), ["eval", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no ground truth" in result.output


def test_bench_gate_json() -> None:
    args = ["bench", "gate", "--scenes", "pan", "--frames", "17", "--height", "144", "--width", "216", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["rates"]) == {"ground_truth", "propagation", "original", "black", "flat", "blur", "shuffled",
                                     "shifted", "ghost"}  # fmt: skip
    assert summary["rates"]["ground_truth"] == 1.0 and summary["rates"]["original"] == 0.0
    assert summary["s_per_pair"] > 0 and "ghost" in result.output
    assert CliRunner().invoke(_app(), ["bench", "gate", "--scenes", "dolly"]).exit_code == 2


def test_eval_with_local_clip_weights(tmp_path) -> None:
    from tests.tasks.test_gate import _tiny_clip

    weights = _tiny_clip(tmp_path)
    args = ["eval", "--engine", "propagation", "--scenes", "static", "--frames", "5", "--height", "48", "--width",
            "64", "--clip-weights", weights, "--json"]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    row = summary["engines"][0]
    assert 0 <= row["clip_text_sim"] <= 100 and -100 <= row["clip_temporal"] <= 100
    assert summary["absent"] == {}
    missing = CliRunner().invoke(_app(), [*args[:-3], "--clip-weights", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "CLIP weights not found" in missing.output
