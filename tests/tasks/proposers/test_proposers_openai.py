"""The openai backend against a real HTTP server on 127.0.0.1 serving the tiny model: success, cache, faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.proposers import ProposalRequest, get_proposer
from tasks.proposers.openai_compat import OpenAIBackend
from tests.tasks.proposers.llm_server import TinyChatServer


REMOVE = {
    "edit_type": "remove",
    "instruction": "Remove the red car on the right.",
    "instruction_long": (
        "Remove the red car parked on the right side of the street in every frame, and fill its place with the "
        "asphalt and curb behind it, keeping the other cars, the trees and the lighting unchanged."
    ),
    "target_caption": "A quiet street lined with trees.",
    "region_caption": "grey asphalt and a stone curb",
}
DOCUMENT = json.dumps({"proposals": [REMOVE]})


def _requests(n: int) -> list[ProposalRequest]:
    return [
        ProposalRequest(
            object_id=f"object_{i}",
            clip_id="clip_1",
            label="car",
            caption="A red car is parked on a quiet street lined with trees.",
            bbox=(500, 150, 620, 230),
            frame_size=(640, 360),
            edit_types=("remove",),
            seed=i,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def server(tiny_lm):
    with TinyChatServer(tiny_lm, force_text=DOCUMENT, delay_s=2.0) as server:
        yield server


@pytest.fixture
def fresh(server):
    server.faults.clear()
    server.bodies.clear()
    server.headers.clear()
    return server


def _proposer(server: TinyChatServer, **kwargs):
    options = {"max_tokens": len(DOCUMENT) + 1, "backoff_s": 0.01, "max_retries": 2, "timeout_s": 300.0}  # loaded CI
    options.update(kwargs)
    return get_proposer(f"openai:{server.url}#tiny-llama", **options)


def test_success_then_cache_sends_zero_requests(fresh, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPF_OPENAI_API_KEY", "sk-test-secret-123")
    catalog = str(tmp_path / "catalog")
    proposer = _proposer(fresh, cache_url=catalog, max_concurrency=2)
    proposer.setup()
    outcomes = proposer.propose(_requests(2))
    assert fresh.requests == 2
    for outcome in outcomes:
        assert outcome.failures == []
        (proposal,) = outcome.proposals
        assert proposal.proposer == "openai:tiny-llama"
        assert proposal.instruction == REMOVE["instruction"]
        assert proposal.source_caption == "A red car is parked on a quiet street lined with trees."
    body = fresh.bodies[0]
    assert body["model"] == "tiny-llama" and body["messages"][0]["role"] == "system"
    assert "<<<DATA" in body["messages"][1]["content"]
    assert all(h.get("Authorization") == "Bearer sk-test-secret-123" for h in fresh.headers)
    # a resumed run: everything comes from <catalog>/cache/llm, nothing is sent
    again = _proposer(fresh, cache_url=catalog)
    assert [o.proposals for o in again.propose(_requests(2))] == [o.proposals for o in outcomes]
    assert fresh.requests == 2 and again.requests_sent == 0
    cached = list(Path(catalog, "cache", "llm").rglob("*.json"))
    assert len(cached) == 2
    assert all("sk-test-secret" not in p.read_text() for p in cached)
    assert "sk-test" not in repr(again.model)


def test_a_500_and_a_429_are_retried(fresh) -> None:
    fresh.faults[:] = ["500", "429"]
    proposer = _proposer(fresh, json_mode=True)
    (outcome,) = proposer.propose(_requests(1))
    assert fresh.requests == 3 and proposer.model.http_requests == 3
    assert fresh.bodies[-1]["response_format"] == {"type": "json_object"}
    assert outcome.failures == [] and outcome.proposals[0].proposer == "openai:tiny-llama"


def test_persistent_500_falls_back_and_is_recorded(fresh) -> None:
    fresh.faults[:] = ["500", "500", "500"]
    proposer = _proposer(fresh, max_retries=2)
    (outcome,) = proposer.propose(_requests(1))
    assert fresh.requests == 3  # 1 + 2 retries; a transport failure gets no repair turn
    (failure,) = outcome.failures
    assert failure.reason == "llm_http_500" and "after 3 attempts" in failure.message
    assert outcome.proposals[0].proposer == "template"


def test_timeouts_are_retried_then_recorded(fresh) -> None:
    fresh.faults[:] = ["timeout", "timeout"]  # the server sits on each request for 2 s
    proposer = _proposer(fresh, timeout_s=0.3, max_retries=1)
    (outcome,) = proposer.propose(_requests(1))
    assert fresh.requests == 2
    (failure,) = outcome.failures
    assert failure.reason == "llm_timeout" and "0.3s" in failure.message and "after 2 attempts" in failure.message
    assert outcome.proposals[0].proposer == "template"


def test_malformed_body_is_not_retried_and_falls_back(fresh) -> None:
    fresh.faults[:] = ["malformed"]
    proposer = _proposer(fresh)
    (outcome,) = proposer.propose(_requests(1))
    assert fresh.requests == 1
    (failure,) = outcome.failures
    assert failure.reason == "llm_bad_response" and "malformed completion body" in failure.message
    assert outcome.proposals[0].proposer == "template"


def test_spec_and_model_name() -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1#m1")
    assert (backend.base_url, backend.model_id) == ("http://127.0.0.1:9/v1", "m1")
    assert OpenAIBackend("http://h:8000/v1/", model="m2").base_url == "http://h:8000/v1"
    assert OpenAIBackend("http://h:8000/v1", model="m", rate_limit=True).rate_limit_name == "llm:h:8000"
    with pytest.raises(ValueError, match="no model name"):
        get_proposer("openai:http://h:8000/v1")
    with pytest.raises(ValueError, match="not an http"):
        get_proposer("openai:ftp://h/v1#m")
    with pytest.raises(ValueError, match="unknown keyword"):
        get_proposer("openai:http://h:8000/v1#m", device="cuda")
