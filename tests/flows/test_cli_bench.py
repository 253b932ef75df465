"""`vpf bench quality` on tiny scenes."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from flows import cli_bench


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_bench.register(app)

    @app.command()
    def version() -> None:  # a second command keeps `bench` a sub-command
        pass

    return app


def test_quality_json_last_line() -> None:
    args = ["bench", "quality", "--engine", "propagation", "--frames", "9", "--height", "64", "--width", "96"]
    result = CliRunner().invoke(_app(), [*args, "--scenes", "static,pan", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "cv2-inpaint" in result.output  # the baseline is in the table
    summary = json.loads(lines[-1])
    assert summary["engine"] == "propagation"
    assert [r["scene"] for r in summary["results"]] == ["static", "pan"]
    for r in summary["results"] + summary["baseline"]:
        assert r["psnr_hole"] > 10 and 0 < r["ssim_hole"] <= 1


def test_auto_reports_the_engine_it_resolved(monkeypatch) -> None:
    monkeypatch.delenv("VPF_VIDEOPAINTER_BASE", raising=False)
    args = ["bench", "quality", "--frames", "5", "--height", "48", "--width", "64", "--scenes", "static", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["engine"] == "propagation"


def test_bad_arguments_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(_app(), ["bench", "quality", "--engine", "magic"]).exit_code == 2
    assert runner.invoke(_app(), ["bench", "quality", "--scenes", "dolly"]).exit_code == 2


def test_gate_real_json_last_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPF_CACHE", str(tmp_path))
    args = ["bench", "gate", "--real", "--scenes", "static", "--frames", "9", "--height", "64", "--width", "96"]
    result = CliRunner().invoke(_app(), [*args, "--no-encode", "--json"])
    assert result.exit_code == 0, result.output
    assert "tune accepted" in result.output and "heldout accepted" in result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["halves"]) == {"tune", "heldout"}
    for half in summary["halves"].values():
        # 3 clips x 1 camera x 3 effects; each half scores the truth on each of its cases
        assert half["counts"]["ground_truth"][1] in (3, 6)
        assert "effect_left" in half["counts"] and "garbled" in half["counts"]
    assert summary["s_per_pair"] > 0


def test_gate_real_bad_camera_exits_2() -> None:
    result = CliRunner().invoke(_app(), ["bench", "gate", "--real", "--scenes", "occlusion"])
    assert result.exit_code == 2
    assert "static, pan, zoom, handheld" in result.output
