"""The judge over real HTTP: frames sent as image data URLs, scores parsed and clamped, failures recorded."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from catalog.schema import PAIRS
from tasks.judge import JudgeRequest, get_judge, image_data_url, sample_frames
from tests.tasks.proposers.llm_server import ForceText, TinyChatServer


VERDICT = {"compliance": 3, "consistency": 5, "quality": 2, "reason": "The dog is gone; a faint outline remains."}


@pytest.fixture(scope="module")
def server(tiny_lm):
    with TinyChatServer(tiny_lm, force_text=json.dumps(VERDICT)) as server:
        yield server


def _request(pair_id: str = "pair_1") -> JudgeRequest:
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)  # 9 frames of 64x48
    edited = source.copy()
    edited[:, 10:30, 20:40] = 128  # the edited region
    return JudgeRequest(
        pair_id, "Remove the dog on the left.", "remove", source, edited, "A dog on a lawn.", "A lawn."
    )


def test_scores_are_parsed_clamped_and_cached(server, tmp_path) -> None:
    catalog = str(tmp_path / "catalog")
    spec = f"openai:{server.url}#tiny-vlm"
    judge = get_judge(spec, cache_url=catalog, num_frames=3, image_size=32, max_tokens=128, timeout_s=300.0)
    judge.setup()
    (verdict,) = judge.judge([_request()])
    assert (verdict.compliance, verdict.consistency, verdict.quality) == (3, 3, 2)
    assert verdict.reason == VERDICT["reason"] and verdict.model == "openai:tiny-vlm"
    (clamp,) = verdict.failures
    assert clamp.stage == "judge" and clamp.reason == "judge_scores_clamped" and clamp.item_id == "pair_1"
    assert "consistency 5" in clamp.message
    columns = verdict.columns()
    assert set(columns) <= set(PAIRS.names) and columns["judge_consistency"] == 3

    # the request carries the frames as the chat API expects: image_url parts with base64 PNG data URLs
    (body,) = server.bodies
    system, user = body["messages"]
    assert "consistency and quality may not exceed" in system["content"]
    images = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    assert len(images) == 6  # 3 source + 3 edited frames
    assert user["content"][0]["type"] == "text" and "<<<DATA" in user["content"][0]["text"]
    first = Image.open(io.BytesIO(base64.b64decode(images[0].removeprefix("data:image/png;base64,"))))
    assert first.size == (32, 24)
    last_edited = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[5].split(",", 1)[1]))))
    expected = np.asarray(Image.fromarray(_request().edited_frames[8]).resize((32, 24), Image.BICUBIC))
    np.testing.assert_array_equal(last_edited, expected)

    again = get_judge(spec, cache_url=catalog, num_frames=3, image_size=32, max_tokens=128)
    (cached,) = again.judge([_request()])
    assert again.requests_sent == 0 and len(server.bodies) == 1
    assert cached.columns() == columns


def test_unusable_answers_get_one_repair_then_no_scores(server) -> None:
    server.force_text, server.bodies[:] = None, []  # the random model's own gibberish
    try:
        judge = get_judge(f"openai:{server.url}#tiny-vlm", num_frames=2, image_size=16, max_tokens=12, timeout_s=300.0)
        (verdict,) = judge.judge([_request("pair_2")])
    finally:
        server.force_text = json.dumps(VERDICT)
    assert len(server.bodies) == 2 and judge.requests_sent == 2
    assert verdict.columns()["judge_compliance"] is None and verdict.reason is None
    (failure,) = verdict.failures
    assert failure.reason == "judge_invalid_output" and "after one repair turn" in failure.message


def test_local_vision_model_judges_from_the_frames(tiny_vlm) -> None:
    import torch

    from tasks.proposers.hf import TransformersVisionBackend, _hf_vision_messages

    backend = TransformersVisionBackend(tiny_vlm)
    backend.setup()
    document = json.dumps(VERDICT)
    judge = get_judge(
        f"transformers:{tiny_vlm}",
        num_frames=2,
        image_size=32,
        max_tokens=len(document) + 1,
        batch_size=2,
        generate_kwargs={"prefix_allowed_tokens_fn": ForceText(backend.tokenizer, document)},
    )
    verdicts = judge.judge([_request("pair_a"), _request("pair_b")])
    for verdict in verdicts:
        assert (verdict.compliance, verdict.consistency, verdict.quality) == (3, 3, 2)
        assert verdict.model == "transformers:tiny-llava"
        assert [f.reason for f in verdict.failures] == ["judge_scores_clamped"]

    # the frames reach the model: decoded from the data URLs at the judge's size, and they change its logits
    free = get_judge(f"transformers:{tiny_vlm}", num_frames=2, image_size=32, max_tokens=16)
    changed = _request("pair_c")
    changed.edited_frames[:] = 255 - changed.edited_frames
    messages = _hf_vision_messages(free.conversation(changed))
    images = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
    assert len(images) == 4 and images[0].size == (32, 24)
    expected = Image.fromarray(changed.edited_frames[-1]).resize((32, 24), Image.BICUBIC)
    np.testing.assert_array_equal(np.asarray(images[-1]), np.asarray(expected))
    logits = []
    for request in (_request("pair_a"), changed):
        inputs = backend.processor.apply_chat_template(
            [_hf_vision_messages(free.conversation(request))],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        ).to(backend.device)
        assert inputs["pixel_values"].shape[0] == 4  # 2 source + 2 edited frames
        with torch.no_grad():
            logits.append(backend.model(**inputs).logits[0, -1])
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    # batching (left padding) gives the answers of one-by-one generation
    conversations = [free.conversation(_request("pair_a")), free.conversation(changed)]
    single = [free.model.complete([c], temperature=0.0, max_tokens=16, seeds=[0])[0] for c in conversations]
    batched = TransformersVisionBackend(tiny_vlm, batch_size=2).complete(
        conversations, temperature=0.0, max_tokens=16, seeds=[0, 0]
    )
    assert batched == single


def test_backends_without_vision_are_refused(tiny_lm) -> None:
    with pytest.raises(ValueError, match="templates cannot judge"):
        get_judge("template")
    with pytest.raises(ValueError, match="needs a vision-language model.*text-only model \\(LlamaForCausalLM\\)"):
        get_judge(f"transformers:{tiny_lm}")
    with pytest.raises(ValueError, match="unknown keyword"):
        get_judge("openai:http://h:1/v1#m", batch_size=3)


def test_frames_and_request_validation() -> None:
    frames = np.arange(10)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3).astype(np.uint8)
    assert sample_frames(frames, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert len(sample_frames(frames[:2], 4)) == 2
    assert image_data_url(frames[0], 64).startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match="same clip length"):
        JudgeRequest("p", "i", "remove", frames, frames[:5])
    with pytest.raises(ValueError, match="edit_type"):
        JudgeRequest("p", "i", "delete", frames, frames)
    with pytest.raises(ValueError, match="edited_frames"):
        JudgeRequest("p", "i", "remove", frames, frames.astype(np.float32))
