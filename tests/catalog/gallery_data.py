"""A small catalog of real pairs for the gallery tests: tiny H.264 clips, bit-packed npz masks, the rows linking them.

Each "render" is a removal of a moving square; like the factory, one render yields a ``remove`` pair (original →
inpainted) and an ``add`` pair (inpainted → original). Facets and metrics vary deterministically with the index so
tests can predict what a filter shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from catalog import ids
from catalog.store import Catalog
from tasks.masks import encode_masks_npz
from tasks.video_io import encode_mp4


NUM_FRAMES, HEIGHT, WIDTH, FPS = 9, 48, 64, 8.0  # H.264 yuv420p: even sides
ENGINES = ("propagation", "null")


@dataclass
class SmallCatalog:
    catalog: Catalog
    pair_rows: list[dict]

    def pairs(self, **where) -> list[dict]:
        return [r for r in self.pair_rows if all(r[k] == v for k, v in where.items())]


def clip_frames(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frames ``(T, H, W, 3)`` uint8 of a square moving over a gradient, its masks ``(T, H, W)`` bool, the
    inpainted frames (the square replaced by the gradient's mean colour)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, 40 + 20 * (seed % 8))], -1).astype(
        np.uint8
    )
    frames = np.repeat(base[None], NUM_FRAMES, axis=0)
    masks = np.zeros((NUM_FRAMES, HEIGHT, WIDTH), dtype=bool)
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    for t in range(NUM_FRAMES):
        x0, y0 = 6 + 3 * t, 10 + (seed % 3) * 4
        masks[t, y0 : y0 + 16, x0 : x0 + 16] = True
        frames[t][masks[t]] = colour
    inpainted = frames.copy()
    inpainted[masks] = base.reshape(-1, 3).mean(0).astype(np.uint8)
    return frames, masks, inpainted


def make_small_catalog(root: str, n_renders: int = 3, *, run_id: str = "run-gallery-test") -> SmallCatalog:
    """``2 * n_renders`` pairs with media in a catalog at ``root``."""
    catalog = Catalog(root)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    clips, instructions, renders, pairs = [], [], [], []
    for k in range(n_renders):
        frames, masks, inpainted = clip_frames(k)
        src_uri = catalog.put_media(encode_mp4(frames, FPS, preset="ultrafast"), "mp4")
        out_uri = catalog.put_media(encode_mp4(inpainted, FPS, preset="ultrafast"), "mp4")
        mask_uri = catalog.put_media(encode_masks_npz(masks), "npz")
        source_id = ids.source_id(ids.sha256_bytes(f"source {k}".encode()))
        geometry = {"num_frames": NUM_FRAMES, "height": HEIGHT, "width": WIDTH, "fps": FPS}
        clip_id = ids.clip_id(source_id, 0, NUM_FRAMES, geometry)
        object_id = ids.object_id(clip_id, ids.sha256_bytes(encode_masks_npz(masks)))
        text = f"remove the square number {k}"
        instruction_id = ids.instruction_id(object_id, "remove", text, "template")
        engine = ENGINES[k % len(ENGINES)]
        render_id = ids.render_id(instruction_id, engine, {}, 0)
        clips.append(
            {
                "clip_id": clip_id,
                "source_id": source_id,
                "start_frame": 0,
                "end_frame": NUM_FRAMES,
                "frame_stride": 1,
                "num_frames": NUM_FRAMES,
                "fps": FPS,
                "width": WIDTH,
                "height": HEIGHT,
                "caption": f"a square over a gradient, clip {k}",
                "video_uri": src_uri,
                "run_id": run_id,
            }
        )
        instructions.append(
            {
                "instruction_id": instruction_id,
                "object_id": object_id,
                "clip_id": clip_id,
                "edit_type": "remove",
                "instruction": text,
                "target_caption": "a gradient",
                "label": "square",
                "proposer": "template",
                "run_id": run_id,
            }
        )
        renders.append(
            {
                "render_id": render_id,
                "instruction_id": instruction_id,
                "clip_id": clip_id,
                "object_id": object_id,
                "engine": engine,
                "engine_version": "1",
                "seed": 0,
                "video_uri": out_uri,
                "mask_uri": mask_uri,
                "run_id": run_id,
            }
        )
        for direction, src, tgt, instr in (
            ("remove", src_uri, out_uri, text),
            ("add", out_uri, src_uri, f"add the square number {k}"),
        ):
            i = len(pairs)
            pairs.append(
                {
                    "pair_id": ids.pair_id(render_id, direction),
                    "render_id": render_id,
                    "instruction_id": instruction_id,
                    "clip_id": clip_id,
                    "object_id": object_id,
                    "edit_type": direction,
                    "instruction": instr,
                    "src_video_uri": src,
                    "tgt_video_uri": tgt,
                    "mask_uri": mask_uri,
                    "engine": engine,
                    "psnr_bg": 20.0 + 3.0 * i,
                    "ssim_bg": 0.5 + 0.05 * i,
                    "mask_area_ratio": float(masks.mean()),
                    "decision": "accepted" if k % 2 == 0 else "rejected",
                    "decision_reason": None if k % 2 == 0 else "psnr_bg below threshold",
                    "created_at": start + timedelta(minutes=i),
                    "run_id": run_id,
                }
            )
    catalog.append("clips", clips)
    catalog.append("instructions", instructions)
    catalog.append("renders", renders)
    catalog.append("pairs", pairs)
    return SmallCatalog(catalog, pairs)


def synthetic_pair_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs rows naming media that does not exist (for index-only builds)."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        render_id = ids.make_id("render", "synthetic", i)
        edit_type = ("remove", "add", "replace", "attribute")[i % 4]
        rows.append(
            {
                "pair_id": ids.pair_id(render_id, edit_type),
                "render_id": render_id,
                "instruction_id": ids.make_id("instruction", "synthetic", i),
                "clip_id": ids.make_id("clip", "synthetic", i // 2),
                "object_id": ids.make_id("object", "synthetic", i // 2),
                "edit_type": edit_type,
                "instruction": f"{edit_type} object {i}",
                "src_video_uri": f"media/00/{i:064x}.mp4",
                "tgt_video_uri": f"media/01/{i:064x}.mp4",
                "mask_uri": f"media/02/{i:064x}.npz",
                "engine": ENGINES[i % 2],
                "psnr_bg": float(rng.uniform(15, 45)),
                "ssim_bg": float(rng.uniform(0.4, 1.0)),
                "temporal_warp_error": None if i % 7 == 0 else float(rng.uniform(0, 0.1)),
                "decision": "accepted" if i % 3 else "rejected",
                "created_at": start + timedelta(seconds=i),
                "run_id": f"run-{i // 1000}",
            }
        )
    return rows
