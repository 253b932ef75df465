"""`vpf gate report`, `vpf gate calibrate` and `vpf rescore` with a synthetic reviewer.

The pairs are the gate benchmark's candidates on tiny synthetic scenes (tasks/quality_bench.py): positives (the
ground truth, the propagation engine's fill) and negative controls (the unedited clip, black, flat, blurred,
shifted and ghosted fills), scored by the real gate. Their truth is known, so a reviewer who marks positives
accepted and negatives rejected is exact, and what the gate report says can be checked against it. Shuffled
controls are left out: on a near-static scene a frame shuffle of the clean background is the truth itself.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from catalog import ids
from catalog.reviews import review_row
from catalog.schema import PAIRS
from catalog.storage import now_utc
from catalog.store import Catalog
from flows import cli_gate
from tasks.accept import AcceptRule, threshold_checks
from tasks.calibrate import METRIC_COLUMNS, Confusion, decide_rows, wilson
from tasks.quality_bench import run_gate_benchmark


REASONS = {"original": "object_left", "ghost": "object_left", "black": "artefact", "flat": "artefact",
           "blur": "artefact", "shifted": "artefact"}  # fmt: skip
# a reviewed share of two thirds, the rest held out (never reviewed): the calibrated rule is judged on it
REVIEWED_SHARE = 2 / 3


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_gate.register(app)
    return app


def invoke(*args: str):
    return CliRunner().invoke(_app(), [str(a) for a in args])


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(str(tmp_path / "catalog"))


@pytest.fixture(scope="module")
def scored() -> list[dict]:
    """Gate columns and truth of 8 seeds x 5 scene motions x 8 candidates (tiny: 8 frames of 64x96, no codec)."""
    bench = run_gate_benchmark(seeds=tuple(range(8)), frames=8, height=64, width=96, encode=False)
    rows = [r for r in bench["rows"] if r["counted"] and r["kind"] != "shuffled"]
    assert {r["kind"] for r in rows} == {"ground_truth", "propagation", *REASONS}
    return rows


def write_pairs(catalog: Catalog, scored: list[dict], rule: AcceptRule, review: bool = True) -> dict[str, dict]:
    """One pairs row per scored candidate, decided by ``rule`` from its columns (two engines, alternately), and a
    review by the synthetic reviewer of a random two thirds. Returns the rows by pair id, with ``good`` (truth)
    and ``reviewed``."""
    rng = np.random.default_rng(0)
    reviewed = rng.random(len(scored)) < REVIEWED_SHARE
    pairs, reviews, out = [], [], {}
    at = now_utc()
    for i, s in enumerate(scored):
        pair_id = ids.make_id("pair", "synthetic", i)
        row = {
            "pair_id": pair_id, "render_id": f"render-{i}", "instruction_id": f"instruction-{i}",
            "clip_id": f"clip-{i}", "object_id": f"object-{i}", "edit_type": "remove", "instruction": "remove it",
            "src_video_uri": "media/s.mp4", "tgt_video_uri": "media/t.mp4", "mask_uri": "media/m.npz",
            "engine": ("propagation", "videopainter")[i % 2],
            **{k: s[k] for k in METRIC_COLUMNS if k in s and k in PAIRS.names},  # the columns this schema has
            "created_at": at,
        }  # fmt: skip
        row["decision"], row["decision_reason"] = decide_rows(rule, [row])[0]
        pairs.append(row)
        good = s["positive"]
        if review and reviewed[i]:
            verdict = "accepted" if good else "rejected"
            reason = None if good else REASONS[s["kind"]]
            reviews.append(review_row(pair_id, verdict, reviewer="synthetic", reason=reason, at=at + timedelta(1)))
        out[pair_id] = {**row, "good": good, "reviewed": bool(review and reviewed[i])}
    catalog.append("pairs", pairs)
    if reviews:
        catalog.append("reviews", reviews)
    return out


def truth_confusion(rows: list[dict], rule: AcceptRule | None = None) -> Confusion:
    decisions = [d for d, _ in decide_rows(rule, rows)] if rule else [r["decision"] for r in rows]
    return Confusion.of([d == "accepted" for d in decisions], [r["good"] for r in rows])


def test_wilson_interval_matches_the_closed_form_and_bounds() -> None:
    low, high = wilson(8, 10)  # the textbook example: 8 of 10, 95 %: [0.490, 0.943]
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0
    assert wilson(50, 100)[1] - wilson(50, 100)[0] > wilson(500, 1000)[1] - wilson(500, 1000)[0]  # more, narrower
    with pytest.raises(ValueError, match="k=11, n=10"):
        wilson(11, 10)


def test_report_recovers_the_known_precision_and_recall(catalog: Catalog, scored: list[dict]) -> None:
    rows = write_pairs(catalog, scored, AcceptRule())
    # a withdrawn review (an undo) counts as no review; a later review of the same pair wins
    undone, flipped = sorted(p for p, r in rows.items() if r["reviewed"])[:2]
    later = now_utc() + timedelta(days=2)
    catalog.append("reviews", [review_row(undone, "withdrawn", reviewer="synthetic", at=later)])
    verdict = "rejected" if rows[flipped]["good"] else "accepted"  # the reviewer changed their mind
    catalog.append("reviews", [review_row(flipped, verdict, reviewer="other", reason="other", at=later)])
    rows[undone]["reviewed"] = False
    rows[flipped]["good"] = not rows[flipped]["good"]

    result = invoke("gate", "report", "--catalog", catalog.url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reviewed = [r for r in rows.values() if r["reviewed"]]
    truth = truth_confusion(reviewed)
    assert report["reviewed"] == len(reviewed) == truth.n
    assert report["overall"]["matrix"] == {"tp": truth.tp, "fp": truth.fp, "fn": truth.fn, "tn": truth.tn}
    precision, recall = report["overall"]["precision"], report["overall"]["recall"]
    assert precision["value"] == pytest.approx(truth.tp / (truth.tp + truth.fp))
    assert recall["value"] == pytest.approx(truth.tp / (truth.tp + truth.fn))
    assert list(recall["ci95"]) == pytest.approx(wilson(truth.tp, truth.tp + truth.fn))
    # the reviewed sample's figures estimate the whole catalog's: the truth of every pair lies in the intervals
    everything = truth_confusion(list(rows.values()))
    for name, rate in (("precision", everything.precision), ("recall", everything.recall)):
        low, high = report["overall"][name]["ci95"]
        assert low <= rate.value <= high, (name, rate.value, low, high)
    # groups add up; the reviewer's reasons and the gate's failed checks are counted
    assert sum(g["n"] for g in report["by_engine"].values()) == truth.n
    assert set(report["by_engine"]) == {"propagation", "videopainter"}
    assert set(report["by_reason"]) <= {"object_left", "artefact", "other"}
    assert sum(r["n"] for r in report["by_reason"].values()) == truth.fp + truth.tn
    lost = report["disagreements"]["false_rejects_by_check"]
    assert report["disagreements"]["false_rejects"] == truth.fn and truth.fn > 0
    assert "seam_error" in lost  # on these tiny scenes, the check that loses most good pairs
    # --where narrows the reviewed pairs and the strata the weighted recall reads
    narrow = invoke("gate", "report", "--catalog", catalog.url, "--where", "engine = 'propagation'", "--json")
    assert narrow.exit_code == 0, narrow.output
    narrowed = json.loads(narrow.stdout)
    assert list(narrowed["by_engine"]) == ["propagation"]
    assert narrowed["overall"] == report["by_engine"]["propagation"]
    text = invoke("gate", "report", "--catalog", catalog.url)
    assert text.exit_code == 0 and "precision of accepted" in text.stdout and "seam_error" in text.stdout


# every enabled one-column check of the default rule opened wide (the mask-size checks aside): everything passes
WIDE_OPEN = {
    field: -1e6 if op == ">=" else 1e6
    for column, field, op in threshold_checks()
    if getattr(AcceptRule(), field) is not None and column != "mask_area_ratio"
}


@pytest.mark.parametrize(
    "bad",
    [
        {"max_seam_error": 0.05},  # far too strict: most good pairs lost
        WIDE_OPEN,  # far too loose: unedited, black, blurred and ghosted clips let through
    ],
    ids=["too-strict", "wide-open"],
)
def test_calibrate_moves_a_bad_threshold_back_on_held_out_pairs(
    catalog: Catalog, scored: list[dict], tmp_path: Path, bad: dict
) -> None:
    rule = dataclasses.replace(AcceptRule(), **bad)
    rows = write_pairs(catalog, scored, rule)
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    out = tmp_path / "rule.json"
    result = invoke("gate", "calibrate", "--catalog", catalog.url, "--accept-file", bad_file, "--target-precision", "0.95",
                    "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    proposed = AcceptRule(**json.loads(out.read_text()))
    assert summary["target_met"] and summary["changes"]
    held_out = [r for r in rows.values() if not r["reviewed"]]
    before, after = truth_confusion(held_out, rule), truth_confusion(held_out, proposed)
    # on pairs it never saw: precision at the target, and more good pairs than the bad rule keeps
    assert after.precision.value >= 0.95
    assert after.recall.value >= 0.75
    if bad is WIDE_OPEN:  # every opened threshold closed again, near the defaults the benchmark chose
        assert before.precision.value < 0.5 and after.tp >= before.tp * 0.75
        assert set(summary["changes"]) >= {"min_hole_change", "max_object_match", "max_ring_colour_gap"}
        assert 0.2 <= proposed.max_object_match <= 0.3 and 0.5 <= proposed.min_hole_change <= 3
    else:
        assert proposed.max_seam_error > 0.15 and after.recall.value > before.recall.value + 0.3
    # what it would change in the whole catalog
    impact = summary["catalog"]
    assert impact["pairs"] == len(rows)
    changed = sum(1 for r, (d, _) in zip(rows.values(), decide_rows(proposed, list(rows.values())))
                  if d != r["decision"])  # fmt: skip
    assert impact["newly_accepted"] + impact["newly_rejected"] == changed > 0


def test_calibrate_needs_reviews_of_both_verdicts(catalog: Catalog, scored: list[dict], tmp_path: Path) -> None:
    write_pairs(catalog, scored, AcceptRule(), review=False)
    result = invoke("gate", "calibrate", "--catalog", catalog.url, "--out", tmp_path / "r.json")
    assert result.exit_code == 1 and "both verdicts" in result.stderr and not (tmp_path / "r.json").exists()


def test_rescore_writes_decisions_that_pairs_full_shows(catalog: Catalog, scored: list[dict], tmp_path: Path) -> None:
    rows = write_pairs(catalog, scored, AcceptRule(), review=False)
    strict = tmp_path / "strict.yaml"
    strict.write_text("max_seam_error: 0.05\n")
    expected = {p: d for p, (d, _) in zip(rows, decide_rows(AcceptRule(max_seam_error=0.05), list(rows.values())))}
    newly_rejected = sum(1 for p, d in expected.items() if d != rows[p]["decision"])
    assert newly_rejected > 0

    dry = invoke("rescore", "--catalog", catalog.url, "--accept-file", strict, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["newly_rejected"] == newly_rejected and json.loads(dry.stdout)["written"] == 0
    assert catalog.query("SELECT count(*) AS n FROM decisions").to_pylist() == [{"n": 0}]

    done = invoke("rescore", "--catalog", catalog.url, "--accept-file", strict, "--json")
    assert done.exit_code == 0, done.output
    counts = json.loads(done.stdout)
    assert counts == {**counts, "pairs": len(rows), "newly_rejected": newly_rejected, "newly_accepted": 0}
    shown = catalog.query("SELECT pair_id, decision, gate_decision, rescored_at FROM pairs_full").to_pylist()
    assert {r["pair_id"]: r["decision"] for r in shown} == expected
    assert {r["pair_id"]: r["gate_decision"] for r in shown} == {p: r["decision"] for p, r in rows.items()}
    assert all(r["rescored_at"] is not None for r in shown)

    # a second rule, narrowed by --where: new rows, the old ones kept, the latest wins
    some = sorted(rows)[:5]
    where = "pair_id IN (" + ", ".join(f"'{p}'" for p in some) + ")"
    again = invoke("rescore", "--catalog", catalog.url, "--accept", "max_seam_error=10", "--where", where, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["pairs"] == 5, again.output
    assert catalog.query("SELECT count(*) AS n FROM decisions").to_pylist() == [{"n": len(rows) + 5}]
    loose = dict(zip(rows, (d for d, _ in decide_rows(AcceptRule(max_seam_error=10), list(rows.values())))))
    shown = {r["pair_id"]: r["decision"] for r in catalog.query("SELECT * FROM pairs_full").to_pylist()}
    assert shown == {p: loose[p] if p in some else expected[p] for p in rows}
    # rescoring under the same rule again rewrites the same ids (one row per pair and rule)
    invoke("rescore", "--catalog", catalog.url, "--accept-file", strict)
    assert catalog.query("SELECT count(*) AS n FROM decisions").to_pylist() == [{"n": len(rows) + 5}]
    assert {r["pair_id"]: r["decision"] for r in catalog.query("SELECT * FROM pairs_full").to_pylist()} == expected


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"min_psnr": 20}', "r.json", "unknown accept-rule key(s) ['min_psnr']"),
        ('{"min_psnr_bg": "high"}', "r.json", "min_psnr_bg: 'high' is not valid"),
        ("min_judge_quality: 2.5\n", "r.yaml", "min_judge_quality: 2.5 is not valid"),
        ("[1, 2]", "r.json", "expected a mapping of accept-rule fields"),
        ("{", "r.json", "not valid JSON"),
        (None, "missing.json", "cannot read the accept-rule file"),
        ('{"min_psnr_bg": 30.0' + " " * 70000 + "}", "big.json", "larger than 65536 characters"),
    ],
)
def test_a_bad_accept_file_is_a_usage_error(
    catalog: Catalog, scored: list[dict], tmp_path: Path, content: str | None, name: str, message: str
) -> None:
    write_pairs(catalog, scored[:10], AcceptRule())
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    for args in (
        ["rescore", "--accept-file", path],
        ["gate", "calibrate", "--accept-file", path, "--out", tmp_path / "o"],
    ):
        result = invoke(*args, "--catalog", catalog.url)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and str(path) in result.stderr and len(result.stderr.splitlines()) == 1
    assert catalog.query("SELECT count(*) AS n FROM decisions").to_pylist() == [{"n": 0}]


def test_usage_errors(catalog: Catalog, scored: list[dict], tmp_path: Path) -> None:
    write_pairs(catalog, scored[:10], AcceptRule())
    for args, message in (
        (["rescore", "--accept", "min_psnr=1"], "unknown accept-rule key(s) ['min_psnr']"),
        (["rescore"], "name the rule"),
        (["rescore", "--accept", "max_seam_error=1", "--where", "1; DROP TABLE pairs"], "rejected --where"),
        (["gate", "report", "--where", "no_such_column > 1"], "--where"),
    ):
        result = invoke(*args, "--catalog", catalog.url)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert invoke("gate", "report", "--catalog", tmp_path / "nowhere").exit_code == 2


def test_vpf_run_reads_an_accept_file_with_accept_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import cli_factory
    from tasks.config import ScoreConfig

    rule_file = tmp_path / "rule.json"
    rule_file.write_text(json.dumps({"max_seam_error": 0.4, "min_psnr_bg": 25.0, "reject_flags": []}))
    built = []

    def capture(config, **_):  # the configuration vpf run built; the run itself is not this test's
        built.append(config)
        raise RuntimeError("captured")

    monkeypatch.setattr(cli_factory, "run_factory", capture)
    app = typer.Typer()
    cli_factory.register(app)

    def run(*args: str):
        built.clear()
        result = CliRunner().invoke(app, ["run", "s.csv", "--catalog", str(tmp_path / "c"), *args])
        return result, built[0].score.accept_rule if built else None

    # --accept on top of the file, even a value equal to the default; fields neither names keep their defaults
    result, rule = run(
        "--accept-file", str(rule_file), "--accept", "min_psnr_bg=30", "--accept", "max_flicker_ratio=2"
    )
    assert "captured" in result.output, result.output
    assert (rule.max_seam_error, rule.min_psnr_bg, rule.max_flicker_ratio, rule.reject_flags) == (0.4, 30.0, 2.0, [])
    assert rule.max_object_match == AcceptRule().max_object_match
    _, rule = run("--accept-file", str(rule_file), "--set", "score.accept_rule.max_seam_error=0.2")
    assert (rule.max_seam_error, rule.min_psnr_bg) == (0.2, 25.0)
    # the render flow gets the rule, not the file (which a GPU worker may not have)
    sent = built[0].score.model_dump(mode="json")
    assert "accept_file" not in sent and ScoreConfig.model_validate(sent).accept_rule == rule
    _, rule = run("--accept", "min_psnr_bg=31")  # without a file: the defaults under --accept, as before
    assert rule == AcceptRule(min_psnr_bg=31.0)

    bad = tmp_path / "bad.json"
    bad.write_text('{"max_seam": 1}')
    result, _ = run("--accept-file", str(bad))
    assert result.exit_code == 2 and not built
    assert "unknown accept-rule key(s) ['max_seam']" in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_calibration_decides_exactly_as_the_accept_rule(scored: list[dict]) -> None:
    from tasks.calibrate import _Sample

    rows = [dict(r, edit_type=("remove", "add")[i % 2]) for i, r in enumerate(scored)]
    for i in range(0, len(rows), 7):  # absent columns: skipped, or rejected with reject_missing
        rows[i] = {**rows[i], "seam_error": None, "hole_change": None}
    for rule in (
        AcceptRule(),
        AcceptRule(max_seam_error=0.3, min_hole_change=1.5, max_flicker_ratio=None),
        AcceptRule(reject_missing=True, min_ssim_bg=0.9),
        AcceptRule(reject_flags=[], min_add_object_frames=0.99),
    ):
        sample = _Sample(rows, [r["positive"] for r in rows], rule)
        expected = [d == "accepted" for d, _ in decide_rows(rule, rows)]
        assert sample.accepted(rule).tolist() == expected and 0 < sum(expected) < len(rows)
