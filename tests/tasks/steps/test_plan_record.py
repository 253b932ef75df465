"""The plan step (jobs from instructions) and the record step (each id written once), which resume relies on."""

from __future__ import annotations

import pyarrow.parquet as pq

from catalog import ids
from catalog.store import Catalog
from tasks.masks import default_dilation_radius
from tasks.steps.plan import RenderJob, plan
from tasks.steps.record import failure_rows, record_tables
from tasks.types import Failure


def _instruction(object_id: str, edit_type: str, text: str) -> dict:
    return {
        "instruction_id": ids.instruction_id(object_id, edit_type, text, "template"),
        "object_id": object_id,
        "clip_id": "clip_1",
        "edit_type": edit_type,
        "instruction": text,
        "instruction_long": text + " in detail",
        "target_caption": "an empty street",
    }


CLIPS = [{"clip_id": "clip_1", "video_uri": "media/aa/clip.mp4", "fps": 8.0, "width": 96, "height": 64}]
OBJECTS = [
    {"object_id": "object_1", "clip_id": "clip_1", "mask_uri": "media/bb/m1.npz", "dilation_radius": 0},
    {"object_id": "object_2", "clip_id": "clip_1", "mask_uri": "media/bb/m2.npz", "dilation_radius": 0},
]


def test_add_instructions_ride_on_their_objects_removal_render() -> None:
    instructions = [
        _instruction("object_1", "remove", "remove the dog"),
        _instruction("object_1", "add", "add a dog"),
        _instruction("object_2", "remove", "remove the cat"),  # no add instruction: one pair only
        _instruction("object_2", "replace", "turn the cat into a fox"),
    ]
    jobs = plan(instructions, OBJECTS, CLIPS, dilation_radius=None, effect_masks="auto")
    assert [(j.object_id, j.edit_type) for j in jobs] == [
        ("object_1", "remove"),
        ("object_2", "remove"),
        ("object_2", "replace"),
    ]
    dog = jobs[0]
    assert dog.add_instruction == "add a dog" and dog.add_instruction_id == instructions[1]["instruction_id"]
    assert dog.directions() == ["remove", "add"]
    assert jobs[1].directions() == ["remove"] and jobs[2].directions() == ["replace"]
    assert (
        {j.dilation_radius for j in jobs} == {default_dilation_radius(96)} == {2}
    )  # 16 px at 720 wide, in proportion
    assert {j.dilation_radius for j in plan(instructions, OBJECTS, CLIPS, dilation_radius=9, effect_masks="auto")} == {
        9
    }
    # A job is JSON all the way: what run_deployment sends to a gpu worker.
    assert RenderJob.model_validate_json(dog.model_dump_json()) == dog


def test_record_tables_writes_each_id_once_across_calls_and_within_a_call(tmp_path) -> None:
    cat = Catalog(str(tmp_path / "cat"))
    bad = [Failure("ingest", "source", "a.mp4", "truncated_video", "a.mp4: the file ends early", "InputError")]
    rows = failure_rows(bad + bad, "run_1")
    assert rows[0]["failure_id"] == ids.failure_id("ingest", "a.mp4", "truncated_video")
    assert record_tables(cat, {"failures": rows}) == {"failures": 1}
    again = failure_rows(bad, "run_2")  # a rerun meets the same bad input
    assert record_tables(cat, {"failures": again}) == {"failures": 0}
    written = [pq.read_table(p).column("failure_id").to_pylist() for p in cat.fragments("failures")]
    assert written == [[rows[0]["failure_id"]]]
