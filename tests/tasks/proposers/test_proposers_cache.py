"""The response cache (any fsspec root) and batched generation consistency."""

from __future__ import annotations

from pathlib import Path

from tasks.proposers.cache import LLMCache, cache_key
from tasks.proposers.hf import TransformersBackend


MESSAGES = [{"role": "user", "content": "hello"}]


def test_keys_depend_on_every_input() -> None:
    base = cache_key("openai", "m", MESSAGES, {"temperature": 0.0, "seed": 1})
    assert base == cache_key("openai", "m", [dict(MESSAGES[0])], {"seed": 1, "temperature": 0.0})
    keys = {
        base,
        cache_key("transformers", "m", MESSAGES, {"temperature": 0.0, "seed": 1}),
        cache_key("openai", "m2", MESSAGES, {"temperature": 0.0, "seed": 1}),
        cache_key("openai", "m", [{"role": "user", "content": "hello!"}], {"temperature": 0.0, "seed": 1}),
        cache_key("openai", "m", MESSAGES, {"temperature": 0.0, "seed": 2}),
    }
    assert len(keys) == 5


def test_round_trip_on_local_and_object_store_roots(tmp_path: Path) -> None:
    key = cache_key("openai", "m", MESSAGES, {})
    for root in (str(tmp_path / "catalog"), "memory://vpf-proposer-cache-test"):
        cache = LLMCache(root)
        assert cache.get(key) is None
        cache.put(key, "answer ✓", {"model": "m"})
        assert LLMCache(root).get(key) == "answer ✓"
    stored = tmp_path / "catalog" / "cache" / "llm" / key[:2] / f"{key}.json"
    assert stored.is_file() and not list(stored.parent.glob(".tmp-*"))
    stored.write_text("{ damaged")  # a torn or damaged entry is a miss, and is rewritten
    cache = LLMCache(str(tmp_path / "catalog"))
    assert cache.get(key) is None and cache.misses == 1
    cache.put(key, "again")
    assert cache.get(key) == "again"


def test_batched_generation_matches_one_by_one(tiny_lm) -> None:
    backend = TransformersBackend(tiny_lm, batch_size=3)
    conversations = [[{"role": "user", "content": text}] for text in ("a", "a much longer prompt here", "mid size")]
    batched = backend.complete(conversations, temperature=0.0, max_tokens=12, seeds=[0, 1, 2])
    single = [backend.complete([c], temperature=0.0, max_tokens=12, seeds=[0])[0] for c in conversations]
    assert batched == single  # left padding + attention mask: padding does not change greedy output
    assert all(isinstance(t, str) and t for t in batched)
