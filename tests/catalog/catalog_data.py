"""Catalog test data: a consistent little graph of real rows (sources → … → pairs) with real media, and full rows
of every table."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import av
import numpy as np
import pyarrow as pa

from catalog import ids
from catalog.schema import TABLES
from catalog.store import Catalog


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def tiny_mp4(seed: int, frames: int = 4, size: int = 16) -> bytes:
    """A real H.264 mp4: ``frames`` random ``size``×``size`` RGB frames (yuv420p needs even sides)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def tiny_mask_npz(seed: int, frames: int = 4, size: int = 16) -> bytes:
    """(frames, size, size) bool masks, npz."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, masks=rng.random((frames, size, size)) > 0.7)
    return buffer.getvalue()


def build_graph(catalog: Catalog, n_renders: int = 2, engine: str = "propagation", seed: int = 0) -> dict[str, Any]:
    """One source, one clip, one object, ``n_renders`` instructions/renders, and two pairs per render (remove and
    add), all with real media. Returns the rows written, by table."""
    src_bytes = tiny_mp4(seed)
    src_uri = catalog.put_media(src_bytes, "mp4")
    source = {
        "source_id": ids.source_id(ids.sha256_bytes(src_bytes)),
        "uri": f"file:///footage/{seed}.mp4",
        "width": 16,
        "height": 16,
        "fps": 8.0,
        "num_frames": 4,
    }
    geometry = {"width": 16, "height": 16, "fps": 8.0}
    clip = {
        "clip_id": ids.clip_id(source["source_id"], 0, 4, geometry),
        "source_id": source["source_id"],
        "start_frame": 0,
        "end_frame": 4,
        "frame_stride": 1,
        "num_frames": 4,
        "fps": 8.0,
        "width": 16,
        "height": 16,
        "caption": "a street at dusk",
        "video_uri": src_uri,
    }
    mask_bytes = tiny_mask_npz(seed)
    mask_uri = catalog.put_media(mask_bytes, "npz")
    obj = {
        "object_id": ids.object_id(clip["clip_id"], ids.sha256_bytes(mask_bytes)),
        "clip_id": clip["clip_id"],
        "label": "car",
        "mask_source": "provided",
        "mask_uri": mask_uri,
        "qa_status": "ok",
    }
    instructions, renders, pairs = [], [], []
    for k in range(n_renders):
        text = f"remove the car #{k}"
        instruction = {
            "instruction_id": ids.instruction_id(obj["object_id"], "remove", text, "template"),
            "object_id": obj["object_id"],
            "clip_id": clip["clip_id"],
            "edit_type": "remove",
            "instruction": text,
            "target_caption": "an empty street at dusk",
            "proposer": "template",
        }
        out_uri = catalog.put_media(tiny_mp4(seed * 1000 + k + 1), "mp4")
        render = {
            "render_id": ids.render_id(instruction["instruction_id"], engine, {}, k),
            "instruction_id": instruction["instruction_id"],
            "clip_id": clip["clip_id"],
            "object_id": obj["object_id"],
            "engine": engine,
            "engine_version": "1",
            "seed": k,
            "video_uri": out_uri,
            "mask_uri": mask_uri,
        }
        for direction, src, tgt, words in (("remove", src_uri, out_uri, text), ("add", out_uri, src_uri, "add a car")):
            pairs.append(
                {
                    "pair_id": ids.pair_id(render["render_id"], direction),
                    "render_id": render["render_id"],
                    "instruction_id": instruction["instruction_id"],
                    "clip_id": clip["clip_id"],
                    "object_id": obj["object_id"],
                    "edit_type": direction,
                    "instruction": words,
                    "src_video_uri": src,
                    "tgt_video_uri": tgt,
                    "mask_uri": mask_uri,
                    "engine": engine,
                    "psnr_bg": 30.0 + k,
                    "quality_flags": [],
                    "decision": "accepted" if k % 2 == 0 else "rejected",
                }
            )
        instructions.append(instruction)
        renders.append(render)
    rows = {
        "sources": [source],
        "clips": [clip],
        "objects": [obj],
        "instructions": instructions,
        "renders": renders,
        "pairs": pairs,
    }
    for table, table_rows in rows.items():
        catalog.append(table, table_rows)
    return rows


def full_row(table: str, i: int) -> dict[str, Any]:
    """A row of ``table`` with every column set to a value of its type (distinct per ``i``)."""
    row: dict[str, Any] = {}
    for field in TABLES[table]:
        t = field.type
        if pa.types.is_string(t):
            value: Any = f"{field.name}-{i}"
        elif pa.types.is_integer(t):
            value = i + 7
        elif pa.types.is_floating(t):
            value = i + 0.25
        elif pa.types.is_timestamp(t):
            value = T0 + timedelta(seconds=i)
        elif pa.types.is_list(t) and pa.types.is_string(t.value_type):
            value = [f"flag-{i}", "x"]
        elif pa.types.is_list(t):
            value = [i, i + 1, i + 2, i + 3]
        else:
            raise AssertionError(f"no test value for {table}.{field.name} of type {t}")
        row[field.name] = value
    return row
