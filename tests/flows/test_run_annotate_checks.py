"""``vpf run`` on raw footage, checked before it starts: a wrong annotation option is a one-line usage error (exit 2)
before any catalog write; the models and the vocabulary are part of what resumes (another detector or vocabulary
annotates again, the same ones are skipped); raw footage without ``--vocab`` uses the built-in vocabulary."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tasks.annotate.vocab import DEFAULT_VOCABULARY
from tests.flows import test_run_annotate as base
from tests.flows.test_run_annotate import PERMISSIVE, TINY_ARGS, VPF, _query


env, footage, models = base.env, base.footage, base.models  # the module fixtures of tests/flows/test_run_annotate.py


def _run(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([VPF, "run", *args], env=env, capture_output=True, text=True, timeout=600)
    return result, time.perf_counter() - started


def _dt(models: dict[str, Path], detector: str = "gdino", tracker: str = "sam2", options: str = "") -> str:
    return f"detect+track:{models[detector]}#tracker=sam2:{models[tracker]}&threshold=0&max_objects=2{options}"


def test_bad_annotation_options_exit_2_in_one_line_before_any_write(env, footage, models, tmp_path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("horse\n")
    unsafe = tmp_path / "unsafe.txt"
    unsafe.write_text("horse\n<script>ball</script>\n")
    missing = tmp_path / "no-such-model"
    spec_errors = [  # refused by the spec's own validation as the options are read (typer's usage-error box)
        (["--segmenter", _dt(models, options="&threshold=2")], "--segmenter"),
        (["--segmenter", _dt(models, options="&dtype=float64")], "--segmenter"),
    ]
    checked = [  # refused by check_annotation before the flow starts: one line
        (["--segmenter", f"detect+track:{missing}#tracker=sam2:{models['sam2']}"], "--segmenter"),
        (["--segmenter", _dt(models, tracker="gdino")], "--segmenter"),  # a detector as the tracker
        (["--segmenter", f"sam3:{models['gdino']}"], "--segmenter"),  # a detector as SAM3
        (["--segmenter", _dt(models, tracker="sam3")], "--segmenter"),  # SAM3 as tracker=sam2:
        (["--segmenter", f"sam3:{models['sam3']}", "--vocab", str(unsafe)], "--vocab"),
        (["--segmenter", f"sam3:{models['sam3']}", "--vocab", str(tmp_path / "none.txt")], "--vocab"),
        (["--segmenter", f"sam3:{models['sam3']}", "--vocab", str(vocab), "--tagger", f"transformers:{missing}"],
         "--tagger"),
    ]  # fmt: skip
    for args, option in spec_errors + checked:
        catalog = tmp_path / "cat"
        result, seconds = _run(env, str(footage), "--catalog", str(catalog), *args, *TINY_ARGS)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr[-3000:])
        assert option in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        if (args, option) in checked:
            assert len(lines) == 1 and lines[0].startswith(f"vpf run: {option}: "), (args, result.stderr)
        assert not catalog.exists(), args  # no runs row, no other write
        assert seconds < 5, (args, seconds)  # no model loaded, no flow run started (the process start included)


def test_rerun_with_another_vocabulary_or_detector_annotates_again(env, footage, models, tmp_path) -> None:
    """Raw footage without --vocab uses the built-in vocabulary; another vocabulary, then another detector, each
    add a generation of objects on the same catalog; the same ones again are skipped."""
    catalog = tmp_path / "cat"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("horse\nball\nstar\n")
    common = [str(footage), "--catalog", str(catalog), "--set", "annotate.vocab_from_caption=false", *PERMISSIVE,
              *TINY_ARGS, "--json"]  # fmt: skip
    generations = [
        ["--segmenter", _dt(models)],  # no --vocab: the built-in vocabulary
        ["--segmenter", _dt(models), "--vocab", str(vocab)],  # another vocabulary
        ["--segmenter", _dt(models, detector="owlv2"), "--vocab", str(vocab)],  # another detector
    ]
    for i, args in enumerate(generations):
        result, _ = _run(env, *args, *common)
        assert result.returncode in (0, 3), (i, result.stderr[-3000:])
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        rows = _query(catalog, f"SELECT label, vocab_source FROM objects WHERE run_id = '{summary['run_id']}'")
        assert rows, (i, summary)  # this generation annotated
        if i == 0:
            assert {r["vocab_source"] for r in rows} == {"builtin"}
            assert {r["label"] for r in rows} <= set(DEFAULT_VOCABULARY)
            failures = _query(catalog, "SELECT count(*) AS n FROM failures WHERE reason = 'no_vocabulary'")
            assert failures[0]["n"] == 0
        else:
            assert {r["label"] for r in rows} <= {"horse", "ball", "star"} and {r["vocab_source"] for r in rows} == {
                "file"
            }
    keys = _query(catalog, "SELECT count(DISTINCT row_key) AS keys, count(DISTINCT run_id) AS runs FROM objects")[0]
    assert keys == {"keys": 3, "runs": 3}  # every generation stays queryable
    before = _query(catalog, "SELECT count(*) AS n FROM objects")[0]["n"]
    result, _ = _run(env, *generations[-1], *common)  # the same models and vocabulary: nothing to annotate
    assert result.returncode in (0, 3), result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert _query(catalog, "SELECT count(*) AS n FROM objects")[0]["n"] == before
    assert not _query(catalog, f"SELECT object_id FROM objects WHERE run_id = '{summary['run_id']}'")
    assert summary["counts"]["objects"] > 0  # the resumed generation's objects, read back from the catalog


def test_the_flow_checks_before_any_write(footage, models, tmp_path) -> None:
    """A run started without the CLI (a deployment, prefect.yaml) checks the same options first."""
    from flows.build_pairs import build_pairs
    from tasks.annotate.specs import AnnotationSpecError
    from tasks.config import RunConfig

    catalog = tmp_path / "cat"
    config = RunConfig(source=str(footage), catalog=str(catalog), segmenter=f"sam3:{models['gdino']}")
    with pytest.raises(AnnotationSpecError, match="--segmenter: .*grounding-dino"):
        build_pairs(config=config)
    assert not catalog.exists()
