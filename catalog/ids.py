"""Deterministic ids: hashes of their inputs, so re-running work produces the same ids (docs/architecture.md, "Ids").

- source      = sha256 of the source bytes
- clip        = source + frame range + geometry
- object      = clip + mask bytes (+ the key of the manifest row that asked for it: its caption, label, box, …)
- instruction = object + edit type + text + proposer
- render      = instruction + engine id + engine version + checkpoint hashes + pixel-changing params + seed
                (+ a generation: ``vpf run --rerender`` makes a new one on purpose)
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


def object_id(clip_id: str, mask_sha256: str, row_key: str | None = None) -> str:
    """``row_key`` (:func:`row_key`) keeps what a manifest row says attached to that row's own object: two rows
    with the same mask but different captions or labels make two objects. Without it: clip + mask bytes only."""
    if row_key is None:
        return make_id("object", clip_id, mask_sha256)
    return make_id("object", clip_id, mask_sha256, row_key)


def row_key(
    *,
    segmenter: str,
    mask_id: int | None,
    label: str | None,
    caption: str | None,
    box: Any = None,
) -> str:
    """What a work row asks of segmentation, without file paths (moving the files keeps the key): the segmenter that
    makes its masks, the object id in a label map, its label, caption and prompt box."""
    return make_id(
        "row",
        segmenter,
        None if mask_id is None else int(mask_id),
        label,
        caption,
        None if box is None else [int(v) for v in box],
    )


def instruction_id(object_id: str, edit_type: str, text: str, proposer: str) -> str:
    return make_id("instruction", object_id, edit_type, text, proposer)


def render_id(
    instruction_id: str,
    engine: str,
    params: dict[str, Any],
    seed: int,
    *,
    version: str | None = None,
    generation: str | None = None,
) -> str:
    """``version``: the engine's code and checkpoint identity (``InpaintEngine.version``, which hashes the weights'
    content), so new weights render again instead of being skipped; ``params``: the options that change pixels;
    ``generation``: set to force a new render of the same instruction on purpose (``vpf run --rerender``)."""
    parts: list[Any] = [instruction_id, engine, params, int(seed)]
    if version is not None:
        parts.append({"version": version})
    if generation is not None:
        parts.append({"generation": generation})
    return make_id("render", *parts)


def pair_id(render_id: str, direction: str) -> str:
    return make_id("pair", render_id, direction)


def failure_id(stage: str, item_id: str, reason: str) -> str:
    return make_id("failure", stage, item_id, reason)
