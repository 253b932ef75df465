"""Reviews and rescores flow into the data: ``pairs_full``'s decisions, compaction, ``check``, exports and their
card, the views ``vpf sql`` lists."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.export import ExportConfig, export
from catalog.reviews import record_review, review_row
from catalog.storage import now_utc
from catalog.store import Catalog
from catalog.views import view_names
from tests.catalog.catalog_data import build_graph


@pytest.fixture
def graph(catalog: Catalog) -> dict:
    """Three renders, six pairs: renders 0 and 2 accepted by the gate, render 1 rejected (both directions)."""
    return build_graph(catalog, n_renders=3)


def _full(catalog: Catalog) -> dict[str, dict]:
    return {r["pair_id"]: r for r in catalog.query("SELECT * FROM pairs_full").to_pylist()}


def _by_decision(graph: dict, decision: str) -> list[str]:
    return sorted(p["pair_id"] for p in graph["pairs"] if p["decision"] == decision)


def test_pairs_full_shows_the_reviewed_and_the_rescored_decision_beside_the_gates(
    catalog: Catalog, graph: dict
) -> None:
    accepted, rejected = _by_decision(graph, "accepted"), _by_decision(graph, "rejected")
    full = _full(catalog)
    assert all(r["review_verdict"] is None and r["final_decision"] == r["decision"] == r["gate_decision"]
               for r in full.values())  # fmt: skip
    t = now_utc()
    catalog.append("reviews", [
        review_row(accepted[0], "rejected", reviewer="ann", reason="object_left", at=t),
        review_row(rejected[0], "accepted", reviewer="ann", at=t),
        review_row(rejected[1], "rejected", reviewer="ann", reason="flicker", at=t),
        review_row(rejected[1], "withdrawn", reviewer="ann", at=t + timedelta(seconds=1)),  # undone: not reviewed
        review_row(accepted[1], "accepted", reviewer="ann", at=t),
        review_row(accepted[1], "rejected", reviewer="bob", reason="artefact", note="a smear", at=t + timedelta(1)),
    ])  # fmt: skip
    full = _full(catalog)
    assert (full[accepted[0]]["review_verdict"], full[accepted[0]]["review_reason"]) == ("rejected", "object_left")
    assert full[accepted[0]]["final_decision"] == "rejected" and full[accepted[0]]["decision"] == "accepted"
    assert full[rejected[0]]["final_decision"] == "accepted" and full[rejected[0]]["reviewer"] == "ann"
    assert full[rejected[1]]["review_verdict"] is None and full[rejected[1]]["final_decision"] == "rejected"
    latest = full[accepted[1]]  # the latest review wins, whoever wrote it
    assert (latest["review_verdict"], latest["reviewer"], latest["review_note"]) == ("rejected", "bob", "a smear")
    assert latest["reviewed_at"] is not None
    assert catalog.query("SELECT count(*) AS n FROM reviewed").to_pylist() == [{"n": 3}]

    # a rescore newer than the pair row is the effective gate decision; the gate's own stays queryable
    pair = graph["pairs"][0]
    catalog.append("decisions", [{"decision_id": "decision_x", "pair_id": pair["pair_id"], "decision": "rejected",
                                  "decision_reason": "seam_error 0.2 > 0.1", "rule_json": "{}"}])  # fmt: skip
    row = _full(catalog)[pair["pair_id"]]
    assert (row["decision"], row["gate_decision"], row["decision_reason"]) == (
        "rejected", pair["decision"], "seam_error 0.2 > 0.1"
    )  # fmt: skip
    assert row["rescored_at"] is not None and row["rescore_rule_json"] == "{}"
    # a later run scoring the pair again (a newer pair row) decides it again
    catalog.append("pairs", [{**pair, "decision": "accepted", "decision_reason": "all checks passed"}])
    row = _full(catalog)[pair["pair_id"]]
    assert (row["decision"], row["rescored_at"]) == ("accepted", None)
    assert len(_full(catalog)) == len(graph["pairs"])  # joins never duplicate a pair


def test_compaction_keeps_every_review_and_decision(catalog: Catalog, graph: dict) -> None:
    pair_ids = [p["pair_id"] for p in graph["pairs"]]
    for i, pair_id in enumerate(pair_ids):
        record_review(catalog, pair_id, "accepted" if i % 2 else "rejected", reviewer="ann",
                      reason=None if i % 2 else "artefact")  # fmt: skip
    record_review(catalog, pair_ids[0], "accepted", reviewer="bob")  # a second opinion, later: it wins
    catalog.append("decisions", [{"decision_id": f"decision_{i}", "pair_id": p, "decision": "rejected",
                                  "rule_json": "{}"} for i, p in enumerate(pair_ids)])  # fmt: skip
    before = (catalog.query("SELECT * FROM reviews ORDER BY review_id").to_pylist(),
              catalog.query("SELECT * FROM reviewed ORDER BY pair_id").to_pylist(),
              catalog.query("SELECT * FROM decisions ORDER BY decision_id").to_pylist())  # fmt: skip
    assert len(before[0]) == len(pair_ids) + 1 and len(before[1]) == len(pair_ids)
    merged = catalog.compact()
    assert merged["reviews"]["rows_out"] == len(pair_ids) + 1  # append-only: nothing deduplicated away
    after = (catalog.query("SELECT * FROM reviews ORDER BY review_id").to_pylist(),
             catalog.query("SELECT * FROM reviewed ORDER BY pair_id").to_pylist(),
             catalog.query("SELECT * FROM decisions ORDER BY decision_id").to_pylist())  # fmt: skip
    assert after == before
    assert _full(catalog)[pair_ids[0]]["reviewer"] == "bob"


def test_check_names_reviews_and_decisions_of_unknown_pairs(catalog: Catalog, graph: dict) -> None:
    record_review(catalog, graph["pairs"][0]["pair_id"], "accepted", reviewer="ann")
    assert [p for p in catalog.check() if p.kind == "dangling_reference"] == []
    record_review(catalog, "pair_unknown", "accepted", reviewer="ann")
    catalog.append("decisions", [{"decision_id": "d", "pair_id": "pair_gone", "decision": "accepted",
                                  "rule_json": "{}"}])  # fmt: skip
    dangling = {(p.table, p.message.split("=")[-1].split(" ")[0]) for p in catalog.check()
                if p.kind == "dangling_reference"}  # fmt: skip
    assert dangling == {("reviews", "pair_unknown"), ("decisions", "pair_gone")}


def _exported(summary: dict) -> set[str]:
    with open(summary["files"][0], newline="") as f:
        return {r["pair_id"] for r in csv.DictReader(f)}


def test_an_export_after_reviews_holds_no_reviewed_bad_pair(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    accepted, rejected = _by_decision(graph, "accepted"), _by_decision(graph, "rejected")
    bad, good_by_review = accepted[0], rejected[0]
    record_review(catalog, bad, "rejected", reviewer="ann", reason="object_left")
    record_review(catalog, good_by_review, "accepted", reviewer="ann")
    record_review(catalog, accepted[1], "accepted", reviewer="ann")

    default = export(catalog, str(tmp_path / "default"), ExportConfig(format="csv"))
    assert _exported(default) == set(accepted) - {bad}
    both = export(catalog, str(tmp_path / "both"), ExportConfig(format="csv", decisions=["accepted", "rejected"]))
    assert _exported(both) == set(accepted + rejected) - {bad}  # whatever the selection
    where = export(catalog, str(tmp_path / "where"), ExportConfig(format="csv", where=f"pair_id = '{bad}'"))
    assert where["rows"] == 0
    switch = export(catalog, str(tmp_path / "switch"), ExportConfig(format="csv", include_reviewed_good=True))
    assert _exported(switch) == set(accepted) - {bad} | {good_by_review}  # the gate's reject, overruled

    manifest = json.loads(Path(switch["manifest"]).read_text())
    assert manifest["options"]["include_reviewed_good"] is True
    assert manifest["reviews"] == {"reviewed": 2, "gate_agreed": 1, "gate_disagreed": 1, "withheld": 1}
    card = Path(switch["card"]).read_text()
    assert "## Reviews" in card and f"2 of the {len(accepted)} exported pairs were reviewed" in card
    assert "agreed with the reviewer 1 times and disagreed 1 times" in card and "1 pair(s)" in card
    plain = json.loads(Path(default["manifest"]).read_text())["reviews"]
    assert plain == {"reviewed": 1, "gate_agreed": 1, "gate_disagreed": 0, "withheld": 1}


def test_an_export_without_reviews_says_so(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    summary = export(catalog, str(tmp_path / "out"), ExportConfig(format="csv"))
    assert "No exported pair was reviewed by a person" in Path(summary["card"]).read_text()


def test_the_new_views_are_catalog_views(catalog: Catalog, graph: dict) -> None:
    assert {"reviews", "decisions", "reviewed", "latest_decisions", "pairs_full"} <= set(view_names())
    for name in ("reviewed", "latest_decisions"):
        assert catalog.query(f"SELECT count(*) AS n FROM {name}", read_only=True).to_pylist() == [{"n": 0}]


def test_exports_carry_the_verdict_but_not_who_reviewed(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    pair_id = _by_decision(graph, "accepted")[0]
    record_review(catalog, pair_id, "accepted", reviewer="zq-reviewer-7", note="zq-note: fine")
    summary = export(catalog, str(tmp_path / "pq"), ExportConfig(format="parquet"))
    table = pq.read_table(summary["files"][0])
    assert {"review_verdict", "review_reason", "final_decision", "gate_decision"} <= set(table.column_names)
    assert not {"reviewer", "review_note"} & set(table.column_names)
    verdicts = dict(zip(table.column("pair_id").to_pylist(), table.column("review_verdict").to_pylist()))
    assert verdicts[pair_id] == "accepted" and set(verdicts.values()) == {"accepted", ""}
    assert "zq-" not in Path(summary["card"]).read_text() + Path(summary["manifest"]).read_text()
