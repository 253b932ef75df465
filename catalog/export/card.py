"""The dataset card (``README.md``) every export writes: what it holds, its schema, how to load it, its licences."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import yaml


COLUMN_NOTES: dict[str, str] = {
    "pair_id": "id of the pair (the catalog's `pairs.pair_id`); the WebDataset key",
    "split": "the split the pair belongs to (all pairs of one source, or clip, share it)",
    "edit_type": "direction of the pair: remove | add | replace | attribute",
    "instruction": "the short edit instruction (the prompt of an instruction-based editor)",
    "target_caption": "caption of the target clip (the prompt of a caption-conditioned inpainter)",
    "engine": "the engine that rendered the edited clip",
    "decision": "accepted | rejected by the factory's quality gate",
    "source_id": "id of the source video (content hash)",
    "license": "licence of the source video, from its manifest (null: unknown)",
    "attribution": "who to credit for the source video, from its manifest",
    "src_video": "the clip before the edit (mp4)",
    "tgt_video": "the clip after the edit (mp4)",
    "mask_video": "the edited region, white on black (lossless mp4: threshold at 128)",
    "video": "the target clip (what the trainer learns to produce)",
    "vace_video": "the conditioning clip (the source, before the edit)",
    "vace_video_mask": "the region to edit, white on black (lossless mp4)",
    "control_video": "the conditioning clip (the source, before the edit)",
    "prompt": "the text prompt",
}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _counts(rows: pa.Table, column: str, splits: Sequence[str]) -> str:
    counter = Counter(zip(rows.column("split").to_pylist(), rows.column(column).to_pylist()))
    values = sorted({v for _, v in counter}, key=lambda v: (v is None, str(v)))
    body = [
        [v, *[counter.get((s, v), 0) for s in splits], sum(counter.get((s, v), 0) for s in splits)] for v in values
    ]
    return _table([column, *splits, "total"], body)


def _front_matter(fmt: str, splits: Sequence[str], licenses: Sequence[str | None]) -> str:
    """YAML for the Hub and ``datasets.load_dataset(folder)``; ``splits``: those that have files."""
    meta: dict[str, Any] = {"tags": ["video", "video-editing", "videopainter-factory"]}
    known = sorted({lic for lic in licenses if lic})
    meta["license"] = known[0].lower() if len(known) == 1 and None not in licenses else "other"
    if fmt == "parquet":
        meta["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _loading(fmt: str, preset: str | None, splits: Sequence[str], mask_format: str) -> str:
    first = splits[0]
    if fmt == "webdataset":
        mask = (
            "np.load(io.BytesIO(sample['mask.npy']))  # uint8 (T, H, W), 1 = edited"
            if mask_format == "npy"
            else "decode(sample['mask.mp4'])[..., 0] >= 128  # bool (T, H, W)"
        )
        return f"""```python
import glob, io
import av, numpy as np, webdataset as wds

def decode(mp4: bytes) -> np.ndarray:  # (T, H, W, 3) uint8
    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

ds = wds.WebDataset(sorted(glob.glob("{first}-*.tar")), shardshuffle=False)
for sample in ds:
    src, tgt = decode(sample["src.mp4"]), decode(sample["tgt.mp4"])
    mask = {mask}
    instruction = sample["txt"].decode()
```

Each sample: `<key>.src.mp4`, `<key>.tgt.mp4`, `<key>.mask.{mask_format}`, `<key>.txt` (the instruction) and
`<key>.json` (every other field below). Shards are `<split>-NNNNNN.tar`.
"""
    if fmt == "parquet":
        return f"""```python
import io
import av, datasets, numpy as np

ds = datasets.load_dataset("path/to/this/folder", split="{first}")  # splits: {", ".join(splits)}
# The video columns are typed datasets.Video (decoded with torchcodec where installed). To get the raw mp4 bytes:
ds = ds.cast_column("src_video", datasets.Video(decode=False))
row = ds[0]
with av.open(io.BytesIO(row["src_video"]["bytes"])) as c:  # or open(root / row["src_video"]["path"])
    src = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
```

With `pyarrow`: `pyarrow.parquet.read_table("data/{first}-00000.parquet")`; each video column is a struct
`{{bytes, path}}`: `bytes` holds the mp4 when the media were embedded, else `path` is relative to this folder.
"""
    if preset == "diffsynth-vace":
        return f"""DiffSynth-Studio (Wan VACE), from this folder:

```bash
accelerate launch examples/wanvideo/model_training/train.py --dataset_base_path . \\
  --dataset_metadata_path metadata_{first}.csv --data_file_keys "video,vace_video,vace_video_mask" ...
```
"""
    if preset == "diffsynth-control":
        return f"""DiffSynth-Studio (Wan with a control video), from this folder:

```bash
accelerate launch examples/wanvideo/model_training/train.py --dataset_base_path . \\
  --dataset_metadata_path metadata_{first}.csv --data_file_keys "video,control_video" ...
```
"""
    return """```python
import csv
rows = list(csv.DictReader(open("metadata.csv", newline="")))  # media paths are relative to this folder
```
"""


def dataset_card(
    rows: pa.Table,
    *,
    manifest: Mapping[str, Any],
    columns: Sequence[tuple[str, str]],
    splits: Sequence[str],
    splits_with_files: Sequence[str] | None = None,
) -> str:
    """The card's markdown. ``columns``: ``(name, type)`` of what a sample holds in this format; ``splits``: every
    split asked for; ``splits_with_files``: those that got files (an empty split has none to load)."""
    fmt, preset = manifest["format"], manifest.get("preset")
    options = manifest["options"]
    title = f"Video editing pairs ({preset or fmt}), export {manifest['export_id']}"
    licenses = rows.column("license").to_pylist() if rows.num_rows else []
    loadable = list(splits if splits_with_files is None else splits_with_files)
    parts = [_front_matter(fmt, loadable, licenses), f"# {title}\n"]
    parts.append(
        f"{rows.num_rows} (source, target, mask, instruction) video editing pairs exported from the VideoPainter "
        f"Factory catalog `{manifest['catalog']}` on {manifest['created_at']}. Each pair edits one object of one "
        "clip; a removal render gives two pairs, `remove` (original → inpainted) and `add` (inpainted → original)."
    )
    parts.append("\n## Selection\n")
    parts.append(
        _table(
            ["option", "value"],
            [[k, "" if v is None else f"`{v}`"] for k, v in options.items()],
        )
    )
    parts.append(
        f"\nSplits are assigned per {options.get('split_by')} (a hash of its id and the seed), so every pair of one "
        "source (or clip), both directions of a render included, is in exactly one split."
    )
    parts.append("\n## Counts\n")
    parts.append(_table(["split", "pairs"], [[s, manifest["counts"].get(s, 0)] for s in splits]))
    if rows.num_rows:
        for column in ("edit_type", "engine"):
            parts.append("\n" + _counts(rows, column, splits))
    parts.append("\n## Schema\n")
    parts.append(_table(["column", "type", "meaning"], [[n, f"`{t}`", COLUMN_NOTES.get(n, "")] for n, t in columns]))
    parts.append("\n## Loading\n")
    parts.append(_loading(fmt, preset, loadable or list(splits), options.get("mask_format", "mp4")))
    parts.append("## Licences and attributions\n")
    if rows.num_rows:
        sources: dict[tuple, int] = Counter(
            zip(
                rows.column("source_uri").to_pylist(),
                rows.column("license").to_pylist(),
                rows.column("attribution").to_pylist(),
            )
        )
        parts.append(
            "Each source video keeps its own licence; the pairs derived from it are under the same terms.\n\n"
            + _table(
                ["source", "licence", "attribution", "pairs"],
                [[u, lic or "unknown", att or "", n] for (u, lic, att), n in sorted(sources.items(), key=str)],
            )
        )
    else:
        parts.append("No pairs.")
    parts.append("\n## Files\n")
    parts.append(
        "`manifest.json` lists every file written (size, split, samples) and every pair id per split; "
        f"`vpf export --since {manifest['export_id']}` exports only the pairs added after this export."
    )
    return "\n".join(parts) + "\n"
