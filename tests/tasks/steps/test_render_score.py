"""The render step's identity (one builder, engine and pipeline parameters kept apart) and the pairs a score yields."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from catalog import ids
from catalog.store import Catalog
from tasks import gate
from tasks.engines.propagation import PropagationEngine
from tasks.engines.registry import get_engine
from tasks.steps.plan import RenderJob
from tasks.steps.render import Rendered, render_id_of, render_params
from tasks.steps.score import pair_row


JOB = RenderJob(
    instruction_id="instruction_a",
    object_id="object_a",
    clip_id="clip_a",
    edit_type="remove",
    instruction="Remove the horse.",
    instruction_long="Remove the brown horse walking across the field, leaving the grass behind it intact.",
    clip_video_uri="media/ef/original.mp4",
    mask_uri="media/gh/undilated.npz",
    fps=8.0,
    dilation_radius=8,
    add_instruction_id="instruction_b",
    add_instruction="Add a horse.",
)


def test_an_engine_option_named_like_a_pipeline_setting_changes_the_render_id() -> None:
    """The defect this fixes: the pipeline's dilation was written over the engine's own ``dilation_radius``, so two
    engines that fill different pixels shared one render id and a rerun skipped the second as done."""
    narrow, wide = PropagationEngine(dilation_radius=0), PropagationEngine(dilation_radius=8)
    assert render_id_of(JOB, narrow, 0) != render_id_of(JOB, wide, 0)
    assert render_params(JOB, wide) == {"engine": wide.params(), "pipeline": {"dilation_radius": 8}}
    # negative control: the flat form the old code hashed cannot tell them apart
    flat = [{**e.params(), "dilation_radius": JOB.dilation_radius} for e in (narrow, wide)]
    assert flat[0] == flat[1]


@pytest.mark.parametrize("name", ["propagation", "cv2-inpaint", "null", "sleep"])
def test_every_recorded_engine_parameter_and_the_pipelines_own_change_the_id(name: str) -> None:
    engine = get_engine(name)
    base = render_id_of(JOB, engine, 0)
    assert base == render_id_of(JOB, get_engine(name), 0)  # deterministic
    for key, value in engine.params().items():
        other = _changed(value)
        changed = get_engine(name, **{key: other})
        assert changed.params()[key] == other, (name, key)
        assert render_id_of(JOB, changed, 0) != base, (name, key)
    assert render_id_of(JOB.model_copy(update={"dilation_radius": 9}), engine, 0) != base
    assert render_id_of(JOB, engine, 1) != base and render_id_of(JOB, engine, 0, "run_x") != base


def _changed(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value / 2  # stays in every float option's range (scales in (0, 1], seconds >= 0)
    if isinstance(value, int):
        return value + 1
    if value == "telea":
        return "ns"
    if isinstance(value, str):
        return {"fast": "medium", "medium": "fast", "ultrafast": "fast"}.get(value, value)
    return value


@pytest.fixture
def rendered() -> Rendered:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 16, 24, 3), dtype=np.uint8)
    masks = np.zeros((3, 16, 24), bool)
    masks[:, 4:10, 6:14] = True
    engine = PropagationEngine()
    row = {
        "render_id": render_id_of(JOB, engine, 0),
        "instruction_id": JOB.instruction_id,
        "clip_id": JOB.clip_id,
        "object_id": JOB.object_id,
        "engine": engine.engine_id,
        "engine_version": engine.version,
        "params_json": json.dumps(render_params(JOB, engine), sort_keys=True),
        "seed": 0,
        "generation": None,
        "video_uri": "media/ab/edited.mp4",
        "mask_uri": "media/cd/mask.npz",
        "device": "cpu",
        "elapsed_s": 1.5,
        "run_id": "r1",
    }
    return Rendered(JOB, row, frames, frames, masks, masks, ["mostly_spatial_fill"])


def test_a_removal_yields_remove_and_add_pairs_valid_against_the_schema(rendered: Rendered) -> None:
    quality = gate.score_render(rendered.frames, rendered.edited, rendered.masks, flags=rendered.flags)
    media = {"preview_uri": "media/p.mp4", "contact_sheet_uri": None}
    remove, add = (pair_row(rendered, d, quality, media, run_id="r1") for d in JOB.directions())
    render_id = rendered.row["render_id"]
    assert (remove["pair_id"], add["pair_id"]) == (ids.pair_id(render_id, "remove"), ids.pair_id(render_id, "add"))
    assert (remove["src_video_uri"], remove["tgt_video_uri"]) == ("media/ef/original.mp4", "media/ab/edited.mp4")
    assert (add["src_video_uri"], add["tgt_video_uri"]) == ("media/ab/edited.mp4", "media/ef/original.mp4")
    assert (remove["instruction_id"], add["instruction_id"]) == ("instruction_a", "instruction_b")
    assert add["instruction"] == "Add a horse."
    assert remove["mask_uri"] == add["mask_uri"] == "media/cd/mask.npz"  # the mask actually inpainted
    assert remove["quality_flags"] == ["mostly_spatial_fill"]
    for row in (remove, add):
        row["decision"], row["decision_reason"] = "accepted", "ok"
    assert Catalog("memory://pairs-test").to_table("pairs", [remove, add]).num_rows == 2
    assert Catalog("memory://pairs-test").to_table("renders", [rendered.row]).num_rows == 1


def test_an_add_pair_needs_its_instruction_text(rendered: Rendered) -> None:
    broken = dataclasses.replace(rendered, job=JOB.model_copy(update={"add_instruction": None}))
    with pytest.raises(ValueError, match="add_instruction"):
        pair_row(broken, "add", {}, {}, run_id=None)
    assert JOB.model_copy(update={"add_instruction_id": None}).directions() == ["remove"]
    assert JOB.model_copy(update={"edit_type": "replace"}).directions() == ["replace"]
