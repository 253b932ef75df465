"""The dataset card (``README.md``) every export writes: what it holds, its schema, how to load it, its licences."""

from __future__ import annotations

import json
import shlex
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
    "decision": "accepted | rejected by the factory's quality gate (the latest `vpf rescore`, else the run's)",
    "gate_decision": "accepted | rejected by the quality gate when the pair was made",
    "review_verdict": "accepted | rejected by a person (`vpf review`); empty: not reviewed",
    "review_reason": "why the reviewer rejected the pair (object_left, effect_left, artefact, flicker, …)",
    "final_decision": "the review's verdict where there is one, else `decision`",
    "source_id": "id of the source video (content hash)",
    "license": "licence of the source video, from its manifest (empty: unknown)",
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


def _type_cell(type_: str) -> str:
    name, paren, note = type_.partition(" (")
    return f"`{name}`" + (f" ({note}" if paren else "")


def _option_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _counts(rows: pa.Table, column: str, splits: Sequence[str]) -> str:
    counter = Counter(zip(rows.column("split").to_pylist(), rows.column(column).to_pylist()))
    values = sorted({v for _, v in counter}, key=lambda v: (v is None, str(v)))
    body = [
        [v, *[counter.get((s, v), 0) for s in splits], sum(counter.get((s, v), 0) for s in splits)] for v in values
    ]
    return _table([column, *splits, "total"], body)


def _data_files(manifest: Mapping[str, Any], splits: Sequence[str]) -> list[dict[str, Any]]:
    """``datasets``' data files per split: only files the manifest lists (Parquet without embedded media: the split's
    metadata file, plus its media for the builder to pick the video folder loader; rows come from the metadata)."""
    fmt, options = manifest["format"], manifest["options"]
    if fmt == "csv":
        return []
    if fmt == "parquet" and options.get("embed_media") is False:
        return [{"split": s, "path": [f"data/{s}/metadata.parquet", f"data/{s}/media/**/*.mp4"]} for s in splits]
    return [{"split": s, "path": [f["path"] for f in manifest["files"] if f["split"] == s]} for s in splits]


def _front_matter(manifest: Mapping[str, Any], splits: Sequence[str], licenses: Sequence[str | None]) -> str:
    """YAML for the Hub and ``datasets.load_dataset(folder)``; ``splits``: those that have files."""
    meta: dict[str, Any] = {"tags": ["video", "video-editing", "videopainter-factory"]}
    known = sorted({lic for lic in licenses if lic})
    meta["license"] = known[0].lower() if len(known) == 1 and None not in licenses else "other"
    data_files = _data_files(manifest, splits)
    if data_files:
        meta["configs"] = [{"config_name": "default", "data_files": data_files}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _folder_line(location: str | None) -> str:
    """The snippets' first line: where the export lies (local: its absolute path)."""
    if location is None:
        return 'folder = "path/to/a/local/copy/of/this/folder"'
    return f"folder = {json.dumps(location)}  # this folder (change it if you move the folder)"


# DiffSynth-Studio's Wan trainer (examples/wanvideo/model_training/train.py) and the flags of its LoRA examples
# (examples/wanvideo/model_training/lora/Wan2.1-VACE-1.3B.sh, …/Wan2.1-Fun-1.3B-Control.sh), with the inputs each
# preset conditions on.
DIFFSYNTH_SCRIPT = "examples/wanvideo/model_training/train.py"
DIFFSYNTH_PRESETS: dict[str, dict[str, str]] = {
    "diffsynth-vace": {
        "title": "Wan2.1 VACE (video, vace_video, vace_video_mask)",
        "data_file_keys": "video,vace_video,vace_video_mask",
        "extra_inputs": "vace_video,vace_video_mask",
        "model": "Wan-AI/Wan2.1-VACE-1.3B",
        "files": "diffusion_pytorch_model*.safetensors,models_t5_umt5-xxl-enc-bf16.pth,Wan2.1_VAE.pth",
        "prefix": "pipe.vace.",
        "lora_base_model": "vace",
        "output": "./models/train/Wan2.1-VACE-1.3B_lora",
    },
    "diffsynth-control": {
        "title": "Wan2.1 Fun Control (video, control_video)",
        "data_file_keys": "video,control_video",
        "extra_inputs": "control_video",
        "model": "PAI/Wan2.1-Fun-1.3B-Control",
        "files": "diffusion_pytorch_model*.safetensors,models_t5_umt5-xxl-enc-bf16.pth,Wan2.1_VAE.pth,"
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
        "prefix": "pipe.dit.",
        "lora_base_model": "dit",
        "output": "./models/train/Wan2.1-Fun-1.3B-Control_lora",
    },
}
DEFAULT_SIZE = (480, 832, 81)  # height, width, frames when the rows say nothing


def diffsynth_size(rows: pa.Table) -> tuple[int, int, int]:
    """``--height``, ``--width`` (the most common clip size, down to multiples of 16) and ``--num_frames`` (the
    shortest clip, down to 4k + 1 as the Wan VAE needs) for DiffSynth-Studio."""
    sizes = Counter(
        (h, w)
        for h, w in zip(rows.column("clip_height").to_pylist(), rows.column("clip_width").to_pylist())
        if h and w
    )
    frames = [n for n in rows.column("clip_num_frames").to_pylist() if n]
    if not sizes or not frames:
        return DEFAULT_SIZE
    (height, width), _ = max(sizes.items(), key=lambda item: (item[1], item[0]))
    return max(16, height // 16 * 16), max(16, width // 16 * 16), (min(frames) - 1) // 4 * 4 + 1


def diffsynth_command(preset: str, split: str, location: str | None, size: tuple[int, int, int]) -> str:
    """The shell lines that train DiffSynth-Studio's Wan model on ``metadata_<split>.csv`` of this export."""
    p = DIFFSYNTH_PRESETS[preset]
    data = location or "/path/to/a/local/copy/of/this/folder"
    height, width, frames = size
    models = ",".join(f"{p['model']}:{f}" for f in p["files"].split(","))
    return f"""DATA={shlex.quote(data)}  # this folder, absolute: the paths in its metadata files are relative to it
cd DiffSynth-Studio  # a checkout: git clone https://github.com/modelscope/DiffSynth-Studio.git; pip install -e .
accelerate launch {DIFFSYNTH_SCRIPT} \\
  --dataset_base_path "$DATA" \\
  --dataset_metadata_path "$DATA/metadata_{split}.csv" \\
  --data_file_keys "{p["data_file_keys"]}" \\
  --extra_inputs "{p["extra_inputs"]}" \\
  --height {height} --width {width} --num_frames {frames} \\
  --dataset_repeat 1 \\
  --model_id_with_origin_paths "{models}" \\
  --learning_rate 1e-4 --num_epochs 5 \\
  --remove_prefix_in_ckpt "{p["prefix"]}" \\
  --output_path "{p["output"]}" \\
  --lora_base_model "{p["lora_base_model"]}" --lora_target_modules "q,k,v,o,ffn.0,ffn.2" --lora_rank 32 \\
  --use_gradient_checkpointing_offload"""


def _loading(
    manifest: Mapping[str, Any], splits: Sequence[str], location: str | None, size: tuple[int, int, int]
) -> str:
    fmt, preset, options = manifest["format"], manifest.get("preset"), manifest["options"]
    first = splits[0]
    folder = _folder_line(location)
    remote = (
        ""
        if location is not None
        else f"Copy the folder first (e.g. `fsspec`, `aws s3 sync {manifest.get('url', '')} …`); then:\n\n"
    )
    if fmt == "webdataset":
        mask_format = options.get("mask_format") or "mp4"
        mask = (
            'sample["mask.npy"]  # uint8 (T, H, W), 1 = edited'
            if mask_format == "npy"
            else 'decode(sample["mask.mp4"])[..., 0] >= 128  # bool (T, H, W), True = edited'
        )
        return f"""{remote}```python
import io, itertools, json, os
import av, numpy as np, torch, webdataset as wds

{folder}
manifest = json.load(open(os.path.join(folder, "manifest.json")))  # written last: its files are the export
shards = [os.path.join(folder, f["path"]) for f in manifest["files"] if f["split"] == "{first}"]


def decode(mp4: bytes) -> np.ndarray:  # (T, H, W, 3) uint8
    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


ds = wds.WebDataset(shards, shardshuffle=False).decode()  # json -> dict, txt -> str, npy -> array; mp4 stay bytes
sample = next(iter(ds))
src, tgt = decode(sample["src.mp4"]), decode(sample["tgt.mp4"])
mask = {mask}
instruction = sample["txt"]
batch = torch.utils.data.default_collate([s["json"] for s in itertools.islice(ds, 4)])  # tensors, lists of str
```

Each sample: `<key>.src.mp4`, `<key>.tgt.mp4`, `<key>.mask.{mask_format}`, `<key>.txt` (the instruction) and
`<key>.json` (the fields below). Shards are `<split>-NNNNNN.tar`; splits: {", ".join(splits)}.
`datasets.load_dataset(folder)` reads them too (the header above lists them; `json` is a struct column).
"""
    if fmt == "parquet":
        embedded = options.get("embed_media") is not False
        where = (
            "`data/<split>-NNNNN.parquet`, the mp4 bytes inside (each video column a struct `{bytes, path}`)"
            if embedded
            else "`data/<split>/metadata.parquet`; its `src_video_file_name`, `tgt_video_file_name` and "
            "`mask_video_file_name` columns name the mp4 copies relative to `data/<split>/`, which `datasets` "
            "resolves against that folder wherever it lies"
        )
        return f"""{remote}```python
import io
import av, datasets, numpy as np, torch

{folder}
ds = datasets.load_dataset(folder, split="{first}")  # splits: {", ".join(splits)}
videos = ["src_video", "tgt_video", "mask_video"]
for column in videos:  # the mp4 itself (bytes or a path); datasets.Video() decodes with torchcodec instead
    ds = ds.cast_column(column, datasets.Video(decode=False))


def frames(video: dict) -> np.ndarray:  # (T, H, W, 3) uint8
    with av.open(io.BytesIO(video["bytes"]) if video["bytes"] else video["path"]) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


row = ds[0]
src, tgt = frames(row["src_video"]), frames(row["tgt_video"])
mask = frames(row["mask_video"])[..., 0] >= 128  # bool (T, H, W), True = edited
meta = ds.remove_columns(videos).with_format("torch")
batch = torch.utils.data.default_collate([meta[i] for i in range(min(4, len(meta)))])  # tensors, lists of str
```

The files: {where}.
"""
    if preset in DIFFSYNTH_PRESETS:
        others = [s for s in splits if s != first]
        rest = f" (`metadata_<split>.csv` for {', '.join(others)})" if others else ""
        return f"""{remote}DiffSynth-Studio, {DIFFSYNTH_PRESETS[preset]["title"]}, LoRA on split `{first}`{rest}:

```bash
{diffsynth_command(preset, first, location, size)}
```

`--data_file_keys` loads each listed column as a video (from `--dataset_base_path`); `--extra_inputs` hands the
conditioning to the model. `--height`/`--width`/`--num_frames` fit these clips (multiples of 16; 4k + 1 frames).
"""
    return f"""{remote}```python
import os
import datasets, torch

{folder}
ds = datasets.load_dataset(
    "csv", data_files=os.path.join(folder, "metadata.csv"), split="train", keep_default_na=False
)  # every split in one table (see the split column); keep_default_na=False: "" stays a string
row = ds[0]
src_path = os.path.join(folder, row["src_video"])  # media paths are relative to the folder
batch = torch.utils.data.default_collate([ds.with_format("torch")[i] for i in range(min(4, len(ds)))])
```
"""


def review_counts(rows: pa.Table, withheld: int) -> dict[str, int]:
    """How people's reviews (``vpf review``) met the exported ``rows``: ``reviewed`` (pairs with a review),
    ``gate_agreed``/``gate_disagreed`` (the review's verdict is / is not the pair's gate ``decision``; an exported
    pair the gate rejected and a reviewer accepted is a disagreement) and ``withheld`` (pairs the selection took
    that a reviewer rejected, left out)."""
    verdicts = rows.column("review_verdict").to_pylist() if rows.num_rows else []
    decisions = rows.column("decision").to_pylist() if rows.num_rows else []
    reviewed = [(v, d) for v, d in zip(verdicts, decisions) if v is not None]
    agreed = sum(1 for v, d in reviewed if v == d)
    return {"reviewed": len(reviewed), "gate_agreed": agreed, "gate_disagreed": len(reviewed) - agreed,
            "withheld": withheld}  # fmt: skip


def _reviews_section(reviews: Mapping[str, int], rows: int) -> str:
    if not reviews["reviewed"] and not reviews["withheld"]:
        return "No exported pair was reviewed by a person; every decision is the quality gate's."
    return (
        f"{reviews['reviewed']} of the {rows} exported pairs were reviewed by a person (`vpf review`); on those the "
        f"quality gate agreed with the reviewer {reviews['gate_agreed']} times and disagreed "
        f"{reviews['gate_disagreed']} times (pairs the gate rejected and a reviewer accepted, included by "
        f"`include_reviewed_good`). {reviews['withheld']} pair(s) the selection took were left out because a "
        "reviewer rejected them: a reviewed-bad pair never leaves the factory."
    )


def dataset_card(
    rows: pa.Table,
    *,
    manifest: Mapping[str, Any],
    columns: Sequence[tuple[str, str]],
    splits: Sequence[str],
    local: bool = True,
) -> str:
    """The card's markdown. ``columns``: ``(name, type)`` of what a sample holds in this format (a type may end in a
    parenthesised note); ``splits``: every split asked for (those without files get no loader entry); ``local``:
    the export lies on this machine at ``manifest["url"]``, which the snippets name (else a local copy)."""
    fmt, preset = manifest["format"], manifest.get("preset")
    options = manifest["options"]
    title = f"Video editing pairs ({preset or fmt}), export {manifest['export_id']}"
    licenses = rows.column("license").to_pylist() if rows.num_rows else []
    with_files = {f["split"] for f in manifest["files"]}
    loadable = [s for s in splits if s in with_files] if None not in with_files else list(splits)
    location = manifest.get("url") if local else None
    parts = [_front_matter(manifest, loadable, licenses), f"# {title}\n"]
    parts.append(
        f"{rows.num_rows} (source, target, mask, instruction) video editing pairs exported from the VideoPainter "
        f"Factory catalog `{manifest['catalog']}` on {manifest['created_at']}. Each pair edits one object of one "
        "clip; a removal render gives two pairs, `remove` (original → inpainted) and `add` (inpainted → original)."
    )
    parts.append("\n## Selection\n")
    decisions = list(options.get("decisions") or [])
    if decisions == ["accepted"]:
        parts.append("Only pairs the factory's quality gate accepted.\n")
    elif decisions:
        parts.append(f"Pairs the factory's quality gate {' or '.join(decisions)} (see the `decision` field).\n")
    parts.append(_table(["option", "value"], [[k, _option_value(v)] for k, v in options.items()]))
    parts.append(
        f"\nSplits are assigned per {options.get('split_by')} (a hash of its id and the seed), so every pair of one "
        "source (or clip), both directions of a render included, is in exactly one split."
    )
    if "reviews" in manifest:
        parts.append("\n## Reviews\n")
        parts.append(_reviews_section(manifest["reviews"], rows.num_rows))
    parts.append("\n## Counts\n")
    parts.append(_table(["split", "pairs"], [[s, manifest["counts"].get(s, 0)] for s in splits]))
    if rows.num_rows:
        for column in ("decision", "edit_type", "engine"):
            parts.append("\n" + _counts(rows, column, splits))
    parts.append("\n## Schema\n")
    if preset is None:
        parts.append(
            'Metadata holds no nulls: strings (`""` when unknown), floats (NaN when unknown), integers; timestamps '
            'are ISO 8601 strings, lists JSON text. `ds.with_format("torch")` and `torch.utils.data.default_collate` '
            "take a batch as it is.\n"
        )
    parts.append(
        _table(["column", "type", "meaning"], [[n, _type_cell(t), COLUMN_NOTES.get(n, "")] for n, t in columns])
    )
    parts.append("\n## Loading\n")
    size = diffsynth_size(rows) if rows.num_rows else DEFAULT_SIZE
    parts.append(_loading(manifest, loadable or list(splits), location, size))
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
        "`manifest.json` is written last and lists every file of this export: `files` (the data files, with split, "
        "samples and size) and `media` (the video copies), and every pair id per split. Trust only the files it "
        "lists, as the snippets above do: a folder without `manifest.json` holds an export that did not finish. "
        f"`vpf export --since {manifest['export_id']}` exports only the pairs added after this export."
    )
    return "\n".join(parts) + "\n"
