"""A render's identity covers what made it: new weights render again, ``rerender`` forces a new generation, and an
unchanged rerun renders nothing. Under the Prefect test harness, on tiny synthetic scenes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from catalog.store import Catalog
from flows.build_pairs import build_pairs
from tasks.config import RunConfig
from tasks.engines.null import NullEngine
from tests.flows.conftest import TINY


@pytest.fixture
def weighted_null(tmp_path: Path, monkeypatch) -> Path:
    """The null engine with a 'checkpoint' whose content hash is part of its version, as VideoPainter's is."""
    checkpoint = tmp_path / "weights.bin"
    checkpoint.write_bytes(b"weights v1")
    monkeypatch.setattr(
        NullEngine,
        "version",
        property(lambda self: f"null-1+ckpt.{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}"),
    )
    return checkpoint


def test_new_weights_render_again_and_both_generations_stay(tiny_samples, tmp_path, weighted_null: Path) -> None:
    manifest, n_objects = tiny_samples
    catalog = str(tmp_path / "catalog")

    def run(**render) -> dict[str, int]:
        config = RunConfig(source=str(manifest), catalog=catalog, render={"engine": "null", **render},
                           score={"previews": False}, geometry=TINY, batch_size=4, gallery=False)  # fmt: skip
        summary = build_pairs(config)
        assert summary.status == "completed", summary
        return summary

    first = run()
    assert first.counts["renders"] == n_objects
    unchanged = run()
    assert unchanged.counts.get("renders", 0) == 0 and unchanged.counts["already_done"] == n_objects

    weighted_null.write_bytes(b"weights v2")  # new weights: every job renders again
    second = run()
    assert second.counts["renders"] == n_objects and second.counts.get("already_done", 0) == 0

    cat = Catalog(catalog)
    renders = cat.query("SELECT engine_version, instruction_id, generation FROM renders").to_pylist()
    versions = sorted({r["engine_version"] for r in renders})
    assert len(renders) == 2 * n_objects and len(versions) == 2, versions
    by_version = {v: {r["instruction_id"] for r in renders if r["engine_version"] == v} for v in versions}
    assert by_version[versions[0]] == by_version[versions[1]], "both generations cover the same instructions"
    assert all(r["generation"] is None for r in renders)
    pairs = cat.query("SELECT engine_version, count(*) n FROM pairs_full GROUP BY ALL").to_pylist()
    assert {p["engine_version"]: p["n"] for p in pairs} == dict.fromkeys(versions, 2 * n_objects)

    forced = run(rerender=True)  # same weights, on purpose: a third generation named after the run
    assert forced.counts["renders"] == n_objects
    generations = cat.query("SELECT generation, count(*) n FROM renders GROUP BY ALL").to_pylist()
    assert {g["generation"]: g["n"] for g in generations} == {None: 2 * n_objects, forced.run_id: n_objects}
    again = run()  # without --rerender the latest weights' renders are reused
    assert again.counts.get("renders", 0) == 0 and again.counts["already_done"] == n_objects


def test_an_engine_option_named_like_the_pipelines_dilation_renders_again(tiny_samples, tmp_path) -> None:
    """``PropagationEngine(dilation_radius=…)`` fills other pixels: a rerun with another value is new work, never
    "already done", and both renders stay, their parameters recorded apart from the pipeline's own dilation."""
    import json

    manifest, n_objects = tiny_samples
    catalog = str(tmp_path / "catalog")

    def run(radius: int) -> object:
        config = RunConfig(source=str(manifest), catalog=catalog, geometry=TINY, batch_size=4, gallery=False,
                           render={"engine": "propagation", "engine_options": {"dilation_radius": radius}},
                           score={"previews": False})  # fmt: skip
        return build_pairs(config)

    first, second = run(0), run(3)
    assert first.counts["renders"] == n_objects
    assert second.counts["renders"] == n_objects and second.counts.get("already_done", 0) == 0
    rows = Catalog(catalog).query("SELECT render_id, params_json, video_uri FROM renders").to_pylist()
    assert len({r["render_id"] for r in rows}) == 2 * n_objects
    params = [json.loads(r["params_json"]) for r in rows]
    assert {p["engine"]["dilation_radius"] for p in params} == {0, 3}
    assert len({p["pipeline"]["dilation_radius"] for p in params}) == 1  # the pipeline's own, unchanged
    assert len({r["video_uri"] for r in rows}) == 2 * n_objects  # other pixels, not only other ids
    assert run(3).counts.get("renders", 0) == 0  # and the same option again is resumed, not rendered
