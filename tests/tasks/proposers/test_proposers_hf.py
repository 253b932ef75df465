"""The transformers backend with a tiny random Llama loaded from a folder: fallback on garbage, constrained JSON."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.proposers import ProposalRequest, get_proposer
from tasks.proposers.hf import TransformersBackend
from tasks.proposers.llm import extract_json
from tests.tasks.proposers.llm_server import ForceText


def _requests(n: int, edit_types=("remove", "add")) -> list[ProposalRequest]:
    return [
        ProposalRequest(
            object_id=f"object_{i}",
            clip_id="clip_1",
            label="dog",
            caption="A brown dog runs along a sandy beach at sunset.",
            bbox=(10, 100, 60, 160),
            frame_size=(640, 360),
            edit_types=edit_types,
            seed=i,
        )
        for i in range(n)
    ]


VALID = {
    "proposals": [
        {
            "edit_type": "remove",
            "instruction": "Remove the brown dog running on the beach.",
            "instruction_long": (
                "Remove the brown dog that runs along the sandy beach on the left side of the frame, and fill the "
                "place where it was with wet sand and gentle waves, keeping the sunset light and all other details."
            ),
            "target_caption": "An empty sandy beach at sunset with gentle waves.",
            "region_caption": "wet sand and gentle waves in warm sunset light",
        },
        {
            "edit_type": "add",
            "instruction": "Add a brown dog running on the beach.",
            "instruction_long": (
                "Add a brown dog running along the sandy beach on the left side of the frame, lit by the warm sunset "
                "light with a matching shadow on the sand, and keep the waves and the sky exactly as they are."
            ),
            "source_caption": "An empty sandy beach at sunset with gentle waves.",
            "target_caption": "A brown dog runs along a sandy beach at sunset.",
            "region_caption": "a brown dog running on wet sand",
        },
    ]
}


def test_garbage_output_falls_back_to_template_and_is_recorded(tiny_lm, tmp_path) -> None:
    proposer = get_proposer(f"transformers:{tiny_lm}", max_tokens=24, batch_size=2, cache_url=str(tmp_path / "cat"))
    proposer.setup()
    outcomes = proposer.propose(_requests(3))
    assert proposer.requests_sent == 6  # 3 first answers + 3 repair turns, in batches
    for outcome in outcomes:
        assert [p.edit_type for p in outcome.proposals] == ["remove", "add"]
        assert {p.proposer for p in outcome.proposals} == {"template"}
        (failure,) = outcome.failures
        assert failure.stage == "propose" and failure.reason == "llm_invalid_output"
        assert failure.item_id == outcome.request.object_id
        assert "after one repair turn" in failure.message and "transformers:tiny-llama" in failure.message
    # the cache makes a resumed run free, and it falls back the same way
    again = get_proposer(f"transformers:{tiny_lm}", max_tokens=24, batch_size=2, cache_url=str(tmp_path / "cat"))
    assert [o.proposals for o in again.propose(_requests(3))] == [o.proposals for o in outcomes]
    assert again.requests_sent == 0


def test_constrained_decoding_output_is_parsed_into_proposals(tiny_lm) -> None:
    backend = TransformersBackend(tiny_lm)
    backend.setup()
    document = json.dumps(VALID)
    force = ForceText(backend.tokenizer, document)
    proposer = get_proposer(
        f"transformers:{tiny_lm}", max_tokens=len(document) + 1, generate_kwargs={"prefix_allowed_tokens_fn": force}
    )
    proposer.setup()
    outcomes = proposer.propose(_requests(2))
    assert proposer.requests_sent == 2  # valid at once: no repair turn
    for outcome in outcomes:
        assert outcome.failures == []
        remove, add = outcome.proposals
        assert remove.proposer == add.proposer == "transformers:tiny-llama"
        assert remove.prompt_version == "propose_v1"
        assert remove.instruction == VALID["proposals"][0]["instruction"]
        assert add.region_caption == VALID["proposals"][1]["region_caption"]
        # the reverse pair is tied together: add goes from the removal's target back to the real caption
        assert add.source_caption == remove.target_caption
        assert add.target_caption == remove.source_caption == "A brown dog runs along a sandy beach at sunset."
        row = remove.to_row(outcome.request.object_id, "clip_1", "run_1")
        assert row["proposer"] == "transformers:tiny-llama" and row["instruction_id"].startswith("instruction_")


def test_schema_violations_get_a_repair_turn_that_names_the_problem(tiny_lm) -> None:
    short = {"proposals": [dict(VALID["proposals"][0], instruction_long="Remove the dog.")]}  # 3 words, not 25
    backend = TransformersBackend(tiny_lm)
    backend.setup()
    document = json.dumps(short)
    force = ForceText(backend.tokenizer, document)
    proposer = get_proposer(
        f"transformers:{tiny_lm}", max_tokens=len(document) + 1, generate_kwargs={"prefix_allowed_tokens_fn": force}
    )
    (outcome,) = proposer.propose(_requests(1, ("remove",)))
    assert proposer.requests_sent == 2
    (failure,) = outcome.failures
    assert failure.reason == "llm_invalid_output"
    assert "instruction_long" in failure.message and "words" in failure.message
    assert [p.proposer for p in outcome.proposals] == ["template"]


def test_prompt_rendering_and_limits(tiny_lm) -> None:
    backend = TransformersBackend(tiny_lm, max_input_tokens=100)
    backend.setup()
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert backend.format_chat(conversation) == "<s>system: S</s>\n<s>user: U</s>\n<s>assistant: "
    backend.tokenizer.chat_template = None
    assert backend.format_chat(conversation) == "System: S\n\nUser: U\n\nAssistant:"
    proposer = get_proposer(f"transformers:{tiny_lm}", max_input_tokens=100)
    (outcome,) = proposer.propose(_requests(1, ("remove",)))
    assert [f.reason for f in outcome.failures] == ["prompt_too_long"]
    assert outcome.proposals[0].proposer == "template"


def test_extract_json_tolerates_chatter_and_fences() -> None:
    text = 'Sure! Here it is:\n```json\n{"proposals": [{"a": 1}]}\n```\nAnything else? {"x": 2}'
    assert extract_json(text) == {"proposals": [{"a": 1}]}
    assert extract_json('{bad {"ok": true}') == {"ok": True}


def test_cache_keys_tell_apart_models_in_same_named_folders(tiny_lm, tmp_path) -> None:
    import shutil

    other = shutil.copytree(tiny_lm, tmp_path / "elsewhere" / tiny_lm.name)
    assert TransformersBackend(other).params() == TransformersBackend(tiny_lm).params()
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (other / "config.json").write_text(json.dumps(config))
    assert TransformersBackend(other).model_id == TransformersBackend(tiny_lm).model_id
    assert TransformersBackend(other).params() != TransformersBackend(tiny_lm).params()


class _CrashOnCall:
    """An unconstrained ``prefix_allowed_tokens_fn`` that raises during the ``crash_on``-th generate call (a run
    killed mid-batch); steps of one call are told apart by the growing ``input_ids`` length."""

    def __init__(self, vocab_size: int, crash_on: int | None):
        self.allowed, self.crash_on, self.calls, self.last = list(range(vocab_size)), crash_on, 0, None

    def __call__(self, batch_id: int, input_ids) -> list[int]:
        if self.last is None or len(input_ids) <= self.last:
            self.calls += 1
        self.last = len(input_ids)
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("killed mid-batch")
        return self.allowed


def test_a_run_killed_mid_batch_resumes_without_resending_finished_requests(tiny_lm, tmp_path) -> None:
    import pytest

    catalog = str(tmp_path / "catalog")
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tiny_lm))
    options = {"max_tokens": 4, "batch_size": 1, "cache_url": catalog}
    killed = get_proposer(
        f"transformers:{tiny_lm}", generate_kwargs={"prefix_allowed_tokens_fn": _CrashOnCall(vocab, 3)}, **options
    )
    with pytest.raises(KeyboardInterrupt):
        killed.propose(_requests(3))  # answers 1 and 2 exist when the third generate call dies
    resumed = get_proposer(
        f"transformers:{tiny_lm}", generate_kwargs={"prefix_allowed_tokens_fn": _CrashOnCall(vocab, None)}, **options
    )
    outcomes = resumed.propose(_requests(3))
    assert resumed.requests_sent == 1 + 3  # the unfinished first answer, then the three repair turns
    assert all(o.proposals for o in outcomes)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(max_size=300),
        JSON_VALUES.map(json.dumps),
        JSON_VALUES.map(lambda v: json.dumps({"proposals": v})),
        st.lists(JSON_VALUES, max_size=3).map(
            lambda v: json.dumps({"proposals": [{"edit_type": "remove", "instruction": x} for x in v]})
        ),
        st.integers(1, 5000).map(lambda n: '{"proposals": ' + "[" * n),
    )
)
def test_any_model_answer_parses_or_raises_value_error(tiny_lm, answer: str) -> None:
    proposer = get_proposer(f"transformers:{tiny_lm}")  # parsing needs no loaded model
    request = _requests(1)[0]
    clean = proposer.safety.clean(request.label, request.caption)
    try:
        proposals = proposer.parse(answer, request, clean)
    except ValueError as exc:
        assert str(exc)
    else:
        assert list(proposals) == list(request.edit_types)
