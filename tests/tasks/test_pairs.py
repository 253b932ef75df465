"""Pair assembly: one removal render gives a remove pair and an add pair, rows valid against the schema."""

from __future__ import annotations

import numpy as np
import pytest

from catalog import ids
from catalog.store import Catalog
from tasks import gate, pairs


@pytest.fixture
def quality() -> dict:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 16, 24, 3), dtype=np.uint8)
    masks = np.zeros((3, 16, 24), bool)
    masks[:, 4:10, 6:14] = True
    return gate.score_render(frames, frames, masks, flags=["mostly_spatial_fill"])


def _render() -> dict:
    return pairs.renders_table_row(
        instruction_id="instruction_a",
        clip_id="clip_a",
        object_id="object_a",
        engine="propagation",
        engine_version="prop-1",
        params={"flow_scale": 0.5, "dilation_radius": 8},
        seed=0,
        video_uri="media/ab/edited.mp4",
        mask_uri="media/cd/mask.npz",
        device="cpu",
        elapsed_s=1.5,
    )


JOB = {
    "instruction_id": "instruction_a",
    "object_id": "object_a",
    "clip_id": "clip_a",
    "edit_type": "remove",
    "instruction": "Remove the horse.",
    "instruction_long": "Remove the brown horse walking across the field, leaving the grass behind it intact.",
    "clip_video_uri": "media/ef/original.mp4",
    "mask_uri": "media/gh/undilated.npz",
    "add_instruction_id": "instruction_b",
    "add_instruction": "Add a horse.",
    "add_instruction_long": None,
}


def test_render_row_id_is_deterministic() -> None:
    row = _render()
    params = {"flow_scale": 0.5, "dilation_radius": 8}
    assert row["render_id"] == ids.render_id("instruction_a", "propagation", params, 0, version="prop-1")
    assert _render() == row


def test_render_id_covers_engine_version_params_seed_and_generation() -> None:
    """New weights (a new engine version), other pixel-changing options, another seed or a deliberate new generation
    each make another render; the same inputs always the same one."""
    params = {"flow_scale": 0.5, "dilation_radius": 8}
    base = ids.render_id("instruction_a", "propagation", params, 0, version="prop-1")
    variants = [
        ids.render_id("instruction_a", "propagation", params, 0, version="prop-1+ckpt.abc"),
        ids.render_id("instruction_a", "propagation", {**params, "dilation_radius": 9}, 0, version="prop-1"),
        ids.render_id("instruction_a", "propagation", params, 1, version="prop-1"),
        ids.render_id("instruction_a", "propagation", params, 0, version="prop-1", generation="run_x"),
        ids.render_id("instruction_a", "videopainter", params, 0, version="prop-1"),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    assert base == ids.render_id("instruction_a", "propagation", dict(params), 0, version="prop-1")
    row = pairs.renders_table_row(
        instruction_id="instruction_a", clip_id="c", object_id="o", engine="propagation", engine_version="prop-1",
        params=params, seed=0, video_uri="media/x.mp4", mask_uri=None, generation="run_x",
    )  # fmt: skip
    assert row["render_id"] == variants[3] and row["generation"] == "run_x"


def test_a_removal_yields_remove_and_add_pairs(quality: dict) -> None:
    render = _render()
    decision = gate.decide(quality)
    rows = pairs.pair_rows(render, JOB, quality=quality, decision=decision, preview_uri="media/p.mp4", run_id="r1")
    remove, add = rows
    assert [remove["edit_type"], add["edit_type"]] == ["remove", "add"]
    assert remove["pair_id"] == ids.pair_id(render["render_id"], "remove")
    assert add["pair_id"] == ids.pair_id(render["render_id"], "add")
    assert (remove["src_video_uri"], remove["tgt_video_uri"]) == ("media/ef/original.mp4", "media/ab/edited.mp4")
    assert (add["src_video_uri"], add["tgt_video_uri"]) == ("media/ab/edited.mp4", "media/ef/original.mp4")
    assert (remove["instruction_id"], add["instruction_id"]) == ("instruction_a", "instruction_b")
    assert add["instruction"] == "Add a horse."
    assert remove["mask_uri"] == add["mask_uri"] == "media/cd/mask.npz"  # the mask actually inpainted
    assert remove["quality_flags"] == ["mostly_spatial_fill"]
    assert remove["decision"] == decision[0] and remove["decision_reason"] == decision[1]
    # the rows match catalog/schema.py exactly
    table = Catalog("memory://pairs-test").to_table("pairs", rows)
    assert table.num_rows == 2
    Catalog("memory://pairs-test").to_table("renders", [render])


def test_other_edits_and_removals_without_add_give_one_pair(quality: dict) -> None:
    job = {**JOB, "add_instruction_id": None}
    assert len(pairs.pair_rows(_render(), job, quality=quality, decision=("accepted", "ok"))) == 1
    job = {**JOB, "edit_type": "replace"}
    rows = pairs.pair_rows(_render(), job, quality=quality, decision=("accepted", "ok"))
    assert [r["edit_type"] for r in rows] == ["replace"]


def test_add_id_without_text_is_an_error(quality: dict) -> None:
    with pytest.raises(ValueError, match="add_instruction"):
        pairs.pair_rows(_render(), {**JOB, "add_instruction": None}, quality=quality, decision=("accepted", "ok"))
