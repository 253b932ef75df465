"""``vpf run`` as a user runs it: a subprocess, killed and resumed, fed bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.store import Catalog
from tests.conftest import kill_tree
from tests.corpus import BAD_CORPUS_EXPECTED, write_bad_corpus, write_good_clips


VPF = str(Path(sys.executable).parent / "vpf")
TINY_ARGS = ["--engine", "null", "--frames", "17", "--height", "64", "--width", "96", "--fps", "8"]
MEDIA_COLUMNS = {
    "clips": ["video_uri"],
    "objects": ["mask_uri"],
    "renders": ["video_uri", "mask_uri"],
    "pairs": ["src_video_uri", "tgt_video_uri", "mask_uri", "preview_uri", "contact_sheet_uri"],
}


def _raw(cat: Catalog, table: str, column: str) -> list:
    return [
        v for path in cat.fragments(table) for v in pq.read_table(cat.fs.open(path, "rb")).column(column).to_pylist()
    ]


def test_usage_errors_exit_2(vpf_env, tmp_path) -> None:
    for bad in (["--segmenter", "magic"], ["--height", "63"], ["--engine", "gpt"]):
        result = subprocess.run([VPF, "run", str(tmp_path), *bad], env=vpf_env, capture_output=True, text=True)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)


def test_a_missing_source_exits_2_in_one_line_and_writes_nothing(vpf_env, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    for source in (str(tmp_path / "missing.csv"), str(tmp_path / "empty" / "*.mp4")):
        catalog = tmp_path / "catalog"
        result = subprocess.run(
            [VPF, "run", source, "--catalog", str(catalog), *TINY_ARGS], env=vpf_env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"vpf run: no source at {source} ("), result.stderr
        assert not catalog.exists(), "a missing source created the catalog folder"


def test_discover_raises_for_a_missing_source_only(tmp_path) -> None:
    from tasks.config import RunConfig
    from tasks.steps.discover import SourceNotFoundError, discover

    (tmp_path / "empty").mkdir()
    for source, detail in (
        (tmp_path / "missing.csv", "manifest not found"),
        (tmp_path / "missing", "no such file, folder or object"),
        (tmp_path / "empty", "the folder holds no video file"),
        (tmp_path / "empty" / "*.mp4", "the glob matches no video file"),
    ):
        with pytest.raises(SourceNotFoundError) as info:
            discover(RunConfig(source=str(source), catalog=str(tmp_path / "cat")))
        assert str(info.value) == f"no source at {source} ({detail})"
    # negative control: a manifest that exists and names a missing video is a source; its row is a failure
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri\nmissing.mp4\n")
    items, failures = discover(RunConfig(source=str(manifest), catalog=str(tmp_path / "cat")))
    assert items == [] and [f.reason for f in failures] == ["not_found"]


def test_bad_inputs_become_failure_rows_and_exit_3(vpf_env, tmp_path) -> None:
    corpus = write_bad_corpus(tmp_path / "corpus")
    catalog = tmp_path / "catalog"
    result = subprocess.run(
        [VPF, "run", corpus["manifest"], "--catalog", str(catalog), "--root", corpus["root"], *TINY_ARGS, "--json"],
        env=vpf_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed_with_failures"

    cat = Catalog(str(catalog))
    pairs = cat.query(
        "SELECT p.edit_type, s.uri FROM pairs p JOIN clips USING (clip_id) JOIN sources s USING (source_id)"
    )
    for name in ("good.mp4", "odd_dims.mp4", "rotated.mp4"):  # every good row among the damaged ones gives pairs
        made = [p["edit_type"] for p in pairs.to_pylist() if p["uri"].endswith(name)]
        assert sorted(made) == ["add", "remove"], f"the good row of {name} lost its pairs"

    failures = cat.query("SELECT stage, reason, item_id, message FROM failures").to_pylist()
    row_cases = {k: v for k, v in BAD_CORPUS_EXPECTED.items() if v and k not in ("extra_column", "missing_column")}
    assert len(row_cases) >= 12, "the acceptance corpus holds a dozen kinds of damage"
    missing = {}
    for name, (stage, reason) in row_cases.items():  # a failure row of the right kind that names the input
        needle = os.path.basename(corpus[name].split("#")[0].rstrip("/"))
        if not [
            f for f in failures
            if (f["stage"], f["reason"]) == (stage, reason) and (needle in f["item_id"] or needle in f["message"])
        ]:  # fmt: skip
            missing[name] = (stage, reason, needle)
    assert not missing, f"bad inputs without a failure row naming them: {missing}\nrecorded: {failures}"
    for f in failures:
        assert f["message"] and len(f["message"]) > 10, f
    assert summary["counts"]["failures"] == len(failures)

    status = subprocess.run(
        [VPF, "status", "--catalog", str(catalog), "--json"], env=vpf_env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["runs"][0]["status"] == "completed_with_failures"
    assert sum(f["count"] for f in report["failures"]) == len(failures)


def test_sigkill_then_rerun_records_every_pair_exactly_once(vpf_env, tmp_path) -> None:
    good = write_good_clips(tmp_path / "clips", 8)
    manifest = Path(good["manifest"])
    with manifest.open("a", newline="") as f:  # a bad row: its failure must be recorded once across both runs
        csv.writer(f).writerow(["missing.mp4", "", "", "", ""])
    catalog = tmp_path / "catalog"
    args = [VPF, "run", str(manifest), "--catalog", str(catalog), *TINY_ARGS, "--batch-size", "1"]

    cat = Catalog(str(catalog))
    proc = subprocess.Popen(args, env=vpf_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not cat.fragments("pairs"):
            time.sleep(0.2)
        assert proc.poll() is None, f"vpf run ended ({proc.returncode}) before it could be killed mid-run"
        assert cat.fragments("pairs"), "no pair was recorded within 240 s"
    finally:
        kill_tree(proc.pid)
    first_pairs = set(_raw(cat, "pairs", "pair_id"))
    assert 0 < len(first_pairs) < 2 * 8, "the kill did not land mid-run"
    assert cat.query("SELECT status FROM runs").column(0).to_pylist() == ["running"]

    rerun = subprocess.run(args, env=vpf_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 3, rerun.stdout + rerun.stderr  # the missing file is still a failure

    pair_ids = _raw(cat, "pairs", "pair_id")
    assert len(pair_ids) == len(set(pair_ids)) == 2 * 8, "a pair is missing or recorded twice"
    assert first_pairs <= set(pair_ids)
    for table in ("sources", "clips", "objects", "instructions", "renders", "failures"):
        ids = _raw(cat, table, f"{table[:-1]}_id")
        assert len(ids) == len(set(ids)), f"{table}: a row was written twice"
    failures = cat.query("SELECT reason FROM failures").column(0).to_pylist()
    assert failures == ["not_found"]
    for table, columns in MEDIA_COLUMNS.items():
        for column in columns:
            for uri in _raw(cat, table, column):
                assert uri is None or cat.fs.exists(cat.path(uri)), f"{table}.{column} names missing media {uri}"
    statuses = sorted(cat.query("SELECT status FROM runs").column(0).to_pylist())
    assert statuses == ["completed_with_failures", "running"]  # the killed run stays as it was left


def test_set_reaches_any_run_setting_and_bad_ones_are_usage_errors() -> None:
    import typer

    from flows.cli_factory import build_config

    config = build_config(
        {"source": "clips/", "catalog": "memory://x", "render": {"engine": "null", "seed": 1}},
        [("max_failure_ratio", 0.1), ("render.gpu_slots", 2), ("score.accept_rule.min_psnr_bg", 25)],
    )
    assert (config.max_failure_ratio, config.render.gpu_slots, config.render.seed) == (0.1, 2, 1)
    assert config.render.engine == "null" and config.score.accept_rule.min_psnr_bg == 25
    for bad, hint in ((("colour", "red"),), ["--set"]), ((("render.seed", "x"),), ["--seed"]):
        with pytest.raises(typer.BadParameter) as info:
            build_config({"source": "clips/", "catalog": "memory://x"}, bad)
        assert info.value.param_hint == hint  # the option's flags, as typer names an option
