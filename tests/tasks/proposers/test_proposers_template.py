"""The template proposer: deterministic, varied, valid for 100 labels, coherent remove/add pairs."""

from __future__ import annotations

import pytest

from catalog.schema import EDIT_TYPES, INSTRUCTIONS
from catalog.store import Catalog
from tasks.proposers import Proposal, ProposalRequest, get_proposer
from tasks.proposers.base import MAX_REGION_WORDS, MIN_LONG_WORDS, word_count
from tasks.proposers.template import describe_region
from tests.tasks.proposers.labels import LABELS


def _request(
    label: str = "dog", caption: str = "A brown dog runs on the beach. Waves roll in.", **kw
) -> ProposalRequest:
    base = {"object_id": "object_1", "clip_id": "clip_1", "bbox": (10, 100, 60, 160), "frame_size": (640, 360)}
    base.update(kw)
    return ProposalRequest(label=label, caption=caption, **base)


def test_deterministic_for_a_seed_and_varied_across_seeds() -> None:
    proposer = get_proposer("template")
    request = _request(edit_types=EDIT_TYPES, seed=7)
    first = proposer.propose([request])[0].proposals
    again = get_proposer("template").propose([request])[0].proposals
    assert first == again
    other = proposer.propose([_request(edit_types=EDIT_TYPES, seed=8)])[0].proposals
    assert first != other


@pytest.mark.parametrize("edit_type", EDIT_TYPES)
def test_at_least_20_distinct_phrasings_per_edit_type(edit_type: str) -> None:
    proposer = get_proposer("template")
    shorts = set()
    for seed in range(400):
        (proposal,) = proposer.propose([_request(edit_types=(edit_type,), seed=seed)])[0].proposals
        # count phrasings, not substituted objects or colours: blank the part that varies with the seed
        text = proposal.instruction
        if edit_type == "replace":
            text = text.replace(proposal.region_caption.split(" in the same place")[0].split(" ", 1)[1], "<new>")
        if edit_type == "attribute":
            text = text.replace(proposal.region_caption.rsplit("now ", 1)[1], "<colour>")
        shorts.add(text)
    assert len(shorts) >= 20, sorted(shorts)


def test_valid_for_100_labels_and_every_edit_type() -> None:
    assert len(set(LABELS)) == 100
    proposer = get_proposer("template")
    requests = [
        _request(label, f"A {label} in a sunny park.", object_id=f"object_{i}", edit_types=EDIT_TYPES, seed=i)
        for i, label in enumerate(LABELS)
    ]
    outcomes = proposer.propose(requests)
    rows = []
    for label, outcome in zip(LABELS, outcomes):
        assert outcome.failures == []
        assert [p.edit_type for p in outcome.proposals] == list(EDIT_TYPES)
        for p in outcome.proposals:
            assert p.label == label
            assert word_count(p.instruction_long) >= MIN_LONG_WORDS
            assert word_count(p.region_caption) <= MAX_REGION_WORDS
            assert label in p.instruction or p.edit_type == "add" and label in p.instruction_long
            Proposal.model_validate(p.model_dump())  # round-trips through the schema
            rows.append(p.to_row(outcome.request.object_id, outcome.request.clip_id, "run_1"))
    assert set(rows[0]) == set(INSTRUCTIONS.names)
    assert len({r["instruction_id"] for r in rows}) == len(rows)


def test_rows_append_to_the_catalog(tmp_path) -> None:
    catalog = Catalog(str(tmp_path / "cat"))
    outcome = get_proposer("template").propose([_request(edit_types=EDIT_TYPES)])[0]
    rows = [p.to_row("object_1", "clip_1", "run_1") for p in outcome.proposals]
    assert catalog.append("instructions", rows) is not None
    table = catalog.to_table("instructions", rows)
    assert table.column("proposer").to_pylist() == ["template"] * 4


def test_remove_and_add_are_a_coherent_reverse_pair() -> None:
    outcome = get_proposer("template").propose([_request(edit_types=("remove", "add"))])[0]
    remove, add = outcome.proposals
    assert (remove.edit_type, add.edit_type) == ("remove", "add")
    assert remove.source_caption == add.target_caption == "A brown dog runs on the beach. Waves roll in."
    assert add.source_caption == remove.target_caption == "Waves roll in."
    assert "dog" not in remove.target_caption and "dog" not in remove.region_caption
    assert add.instruction.split()[0] in {"Add", "Insert", "Put", "Place", "Bring", "Include", "Make", "Introduce",
                                          "Show", "Let", "Draw", "Have", "Fill", "Populate"}  # fmt: skip
    assert "brown dog" in add.region_caption


def test_uses_position_and_size() -> None:
    proposer = get_proposer("template")
    small_left = proposer.propose([_request(bbox=(0, 150, 60, 210), frame_size=(640, 360))])[0].proposals[
        0
    ]  # 1.6% of frame
    assert "the small dog on the left" in small_left.instruction_long
    big_right = proposer.propose([_request(bbox=(300, 0, 640, 360), frame_size=(640, 360))])[0].proposals[0]
    assert "the large dog on the right" in big_right.instruction_long
    assert describe_region(_request(bbox=None, frame_size=None)).where == ""
    assert describe_region(_request(bbox=(0, 0, 64, 36), frame_size=(640, 360))).where == "in the upper left"


def test_replace_and_attribute_rewrite_the_caption() -> None:
    outcome = get_proposer("template").propose([_request(edit_types=("replace", "attribute"), seed=1)])[0]
    replace, attribute = outcome.proposals
    assert replace.target_caption != replace.source_caption
    assert "dog" not in replace.target_caption.split(".")[0]
    new_object = replace.region_caption.split(" in the same place")[0].split(" ", 1)[1]
    assert new_object in replace.target_caption and new_object in replace.instruction
    colour = attribute.region_caption.rsplit("now ", 1)[1]
    assert f"{colour} dog" in attribute.target_caption


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="edit_types"):
        _request(edit_types=("delete",))
    with pytest.raises(ValueError, match="edit_types"):
        _request(edit_types="remove")
    with pytest.raises(ValueError, match="frame_size"):
        _request(frame_size=(0, 10))
    with pytest.raises(ValueError, match="proposer spec"):
        get_proposer("gpt")
    with pytest.raises(ValueError, match="unknown keyword"):
        get_proposer("template", temperature=0.5)


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A brown dog runs on the beach at sunset.", "An empty scene on the beach at sunset."),
        ("A man walks his dog in the park.", "A man walks in the park."),
        ("Two cats and a dog sleep on a couch. The room is dim.", "Two cats sleep on a couch. The room is dim."),
        ("A woman with a dog walks down a street.", "A woman walks down a street."),
        ("A brown dog runs on the beach. Waves roll in.", "Waves roll in."),
        ("Dogs play.", "An empty view of the scene; the area on the left shows only the background."),
    ],
)
def test_removal_caption_drops_the_object(caption: str, expected: str) -> None:
    outcome = get_proposer("template").propose([_request(caption=caption, bbox=(10, 150, 60, 210))])[0]
    remove, add = outcome.proposals
    assert remove.target_caption == add.source_caption == expected
    assert add.target_caption == caption
