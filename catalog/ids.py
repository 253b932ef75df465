"""Deterministic ids: hashes of their inputs, so re-running work produces the same ids (docs/architecture.md, "Ids").

- source      = sha256 of the source bytes
- clip        = source + frame range + geometry
- object      = clip + mask bytes
- instruction = object + edit type + text + proposer
- render      = instruction + engine id + params + seed
- pair        = render + direction
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, BinaryIO


ID_HEX_CHARS = 32


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def make_id(kind: str, *parts: Any) -> str:
    """``"<kind>_<32 hex>"``: sha256 over the kind and the canonical JSON of ``parts``."""
    digest = hashlib.sha256(_canonical([kind, *parts]).encode()).hexdigest()
    return f"{kind}_{digest[:ID_HEX_CHARS]}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(chunk_size):
        h.update(chunk)
    return h.hexdigest()


def source_id(content_sha256: str) -> str:
    return f"source_{content_sha256[:ID_HEX_CHARS]}"


def clip_id(source_id: str, start_frame: int, end_frame: int, geometry: dict[str, Any]) -> str:
    return make_id("clip", source_id, int(start_frame), int(end_frame), geometry)


def object_id(clip_id: str, mask_sha256: str) -> str:
    return make_id("object", clip_id, mask_sha256)


def instruction_id(object_id: str, edit_type: str, text: str, proposer: str) -> str:
    return make_id("instruction", object_id, edit_type, text, proposer)


def render_id(instruction_id: str, engine: str, params: dict[str, Any], seed: int) -> str:
    return make_id("render", instruction_id, engine, params, int(seed))


def pair_id(render_id: str, direction: str) -> str:
    return make_id("pair", render_id, direction)


def failure_id(stage: str, item_id: str, reason: str) -> str:
    return make_id("failure", stage, item_id, reason)
