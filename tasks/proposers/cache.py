"""A response cache for language-model requests, stored under the catalog root.

Key: sha256 of the canonical JSON of ``(backend, model, messages, parameters)``; value: the raw response text.
Files live at ``<catalog>/cache/llm/<aa>/<sha256>.json`` (any fsspec root), written atomically (temporary name +
rename locally, one PUT on object stores), so a resumed run finds every completed request and never sends it again.
Only completed responses are stored: transport errors, timeouts and HTTP errors are not cached. API keys are never
part of a key or a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from catalog.store import Catalog


def cache_key(backend: str, model: str, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
    material = {"backend": backend, "model": model, "messages": messages, "params": dict(params)}
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class LLMCache:
    """``get``/``put`` raw responses by key under ``<catalog>/cache/llm/``."""

    def __init__(self, catalog_url: str, storage_options: Mapping[str, Any] | None = None):
        self.catalog = Catalog(catalog_url, storage_options=storage_options)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> str:
        return self.catalog.path(f"cache/llm/{key[:2]}/{key}.json")

    def get(self, key: str) -> str | None:
        fs, path = self.catalog.fs, self.path(key)
        try:
            with fs.open(path, "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.misses += 1  # a damaged entry is treated as absent and rewritten
            return None
        self.hits += 1
        return record["response"]

    def put(self, key: str, response: str, meta: Mapping[str, Any] | None = None) -> None:
        record = {
            "key": key,
            "response": response,
            "meta": dict(meta or {}),
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        fs, target = self.catalog.fs, self.path(key)
        parent = target.rsplit("/", 1)[0]
        if self.catalog.is_local:
            fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        else:
            fs.pipe_file(target, data)
