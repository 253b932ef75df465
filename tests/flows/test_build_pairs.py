"""``build_pairs`` in-process under the Prefect test harness, on tiny synthetic scenes with provided masks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.store import Catalog
from flows.build_pairs import build_pairs
from tasks.config import RunConfig
from tests.flows.conftest import TINY


def _raw_ids(cat: Catalog, table: str, column: str) -> list[str]:
    return [
        v for path in cat.fragments(table) for v in pq.read_table(cat.fs.open(path, "rb")).column(column).to_pylist()
    ]


@pytest.fixture(scope="module")
def first_run(tiny_samples, tmp_path_factory):
    manifest, n_objects = tiny_samples
    catalog = str(tmp_path_factory.mktemp("catalog"))
    summary = build_pairs(
        RunConfig(source=str(manifest), catalog=catalog, render={"engine": "null"}, geometry=TINY, batch_size=2)
    )
    return summary, Catalog(catalog), manifest, n_objects


def test_removal_renders_yield_remove_and_add_pairs(first_run) -> None:
    summary, cat, _, n_objects = first_run
    assert summary.status == "completed", summary
    assert summary.counts["pairs"] == 2 * n_objects
    pairs = cat.query(
        "SELECT p.edit_type, p.src_video_uri, p.tgt_video_uri, p.mask_uri, p.preview_uri, p.instruction, "
        "c.video_uri AS clip_uri, r.video_uri AS render_uri FROM pairs p JOIN clips c USING (clip_id) "
        "JOIN renders r USING (render_id)"
    ).to_pylist()
    assert sorted(p["edit_type"] for p in pairs) == ["add"] * n_objects + ["remove"] * n_objects
    for p in pairs:
        if p["edit_type"] == "remove":  # original → inpainted
            assert (p["src_video_uri"], p["tgt_video_uri"]) == (p["clip_uri"], p["render_uri"])
        else:  # inpainted → original: the target is real footage
            assert (p["src_video_uri"], p["tgt_video_uri"]) == (p["render_uri"], p["clip_uri"])
        for uri in (p["src_video_uri"], p["tgt_video_uri"], p["mask_uri"], p["preview_uri"]):
            assert cat.fs.exists(cat.path(uri)), f"{uri} named by a pair row is missing"
    assert summary.previews and all(Path(u).exists() for u in summary.previews)


def test_runs_row_records_counts(first_run) -> None:
    summary, cat, _, n_objects = first_run
    runs = cat.query("SELECT run_id, status, n_pairs, n_failures, finished_at FROM runs").to_pylist()
    assert len(runs) == 1 and runs[0]["run_id"] == summary.run_id
    assert runs[0]["status"] == "completed" and runs[0]["n_pairs"] == 2 * n_objects and runs[0]["n_failures"] == 0
    assert runs[0]["finished_at"] is not None
    assert len(_raw_ids(cat, "runs", "run_id")) == 2  # "running", then "completed": the view keeps the latest


def test_rerun_skips_recorded_work_and_duplicates_nothing(first_run) -> None:
    summary, cat, manifest, n_objects = first_run
    tables = ("sources", "clips", "objects", "instructions", "renders", "pairs")
    before = {t: sorted(_raw_ids(cat, t, f"{t[:-1]}_id")) for t in tables}
    again = build_pairs(
        RunConfig(source=str(manifest), catalog=cat.url, render={"engine": "null"}, geometry=TINY, batch_size=2)
    )
    assert again.status == "completed" and again.run_id != summary.run_id
    assert again.counts["already_done"] == n_objects and again.counts.get("pairs", 0) == 0
    after = {t: sorted(_raw_ids(cat, t, f"{t[:-1]}_id")) for t in before}
    assert after == before


def test_edit_types_the_engine_cannot_render_are_skipped_with_a_reason(tiny_samples, tmp_path) -> None:
    manifest, n_objects = tiny_samples
    summary = build_pairs(
        RunConfig(
            source=str(manifest),
            catalog=str(tmp_path / "cat"),
            render={"engine": "propagation"},
            score={"previews": False},
            edit_types=["remove", "add", "replace"],
            geometry=TINY,
            batch_size=4,
        )
    )
    assert summary.status == "completed", summary  # a skip is a recorded decision, not a failure
    assert summary.counts["skipped"] == n_objects and summary.counts["pairs"] == 2 * n_objects
    cat = Catalog(str(tmp_path / "cat"))
    skipped = cat.query("SELECT stage, reason, item_kind, message FROM failures").to_pylist()
    assert len(skipped) == n_objects
    assert {(f["stage"], f["reason"], f["item_kind"]) for f in skipped} == {
        ("render", "unsupported_edit_type", "instruction")
    }
    assert all("replace" in f["message"] for f in skipped)


def test_each_run_links_a_gallery_of_its_pairs(first_run) -> None:
    summary, cat, _, n_objects = first_run
    assert summary.gallery and summary.gallery.startswith("file://")
    index = Path(summary.gallery.removeprefix("file://"))
    assert index.name == "index.html" and index.parent == Path(cat.path(f"galleries/{summary.run_id}"))
    data = (index.parent / "data" / "index.js").read_text()
    gallery_index = json.loads(data.removeprefix("window.VPF_GALLERY_INDEX=").rstrip().removesuffix(";"))
    assert gallery_index["total"] == 2 * n_objects  # exactly this run's pairs
    # media are linked from the catalog, so every pair's videos resolve from the site
    linked = list((index.parent / "media").rglob("*.mp4"))
    assert linked and all(p.resolve().exists() for p in linked)
