"""Exports as the trainers' own clients read them: the card's python snippets, extracted from the generated README.md
and run from ``/`` on a moved export folder; metadata that ``with_format("torch")`` and ``default_collate`` take
as it is; and DiffSynth-Studio's own dataset class built from the card's training command as its trainer does."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from catalog.export import ExportConfig, export
from catalog.gallery.media import mask_array
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


@pytest.fixture
def graphs(catalog: Catalog) -> list[dict]:
    """Three sources (one with a licence and an attribution, two without), two renders each."""
    graphs = [build_graph(catalog, n_renders=2, seed=s) for s in range(3)]
    catalog.append("sources", [{**graphs[0]["sources"][0], "license": "CC-BY-4.0", "attribution": "Jane Doe"}])
    return graphs


def run_export(catalog: Catalog, out: Path, **options) -> dict:
    return export(catalog, str(out), ExportConfig(**options))


def move(out: Path, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out, to)
    return to


# Runs in a fresh interpreter whose working directory is ``/``: for each (name, README.md, folder), every fenced
# python block of the card in turn, its ``folder = …`` line pointed at the folder; prints what the blocks made.
SNIPPETS = textwrap.dedent(
    """
    import json, re, sys
    import numpy as np, torch

    def describe(value):
        if isinstance(value, (torch.Tensor, np.ndarray)):
            return {"type": type(value).__name__, "dtype": str(value.dtype), "shape": list(value.shape)}
        if isinstance(value, list):
            return {"type": "list", "items": sorted({type(v).__name__ for v in value}), "len": len(value)}
        return {"type": type(value).__name__}

    results = {}
    for name, readme, folder in json.loads(sys.argv[1]):
        blocks = re.findall(r"```python\\n(.*?)```", open(readme).read(), re.S)
        namespace = {}
        for block in blocks:
            code, n = re.subn(r"^folder = .*$", f"folder = {folder!r}", block, count=1, flags=re.M)
            assert n == 1, (name, "no folder line")
            exec(compile(code, f"{name}/README.md", "exec"), namespace)
        results[name] = {
            "blocks": len(blocks),
            "batch": {k: describe(v) for k, v in namespace["batch"].items()},
            **{k: describe(namespace[k]) for k in ("src", "tgt", "mask") if k in namespace},
        }
    print(json.dumps(results))
    """
)

EXPORTS = {
    "webdataset": {"format": "webdataset", "shard_size": 4},
    "webdataset-npy": {"format": "webdataset", "mask_format": "npy"},
    "parquet": {"format": "parquet", "shard_size": 4},
    "parquet-paths": {"format": "parquet", "embed_media": False},
    "csv": {"format": "csv"},
}


def test_the_cards_snippets_run_from_anywhere_on_a_moved_export(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    jobs = []
    for name, options in EXPORTS.items():
        out = tmp_path / "exported" / name
        run_export(catalog, out, **options)
        assert f"folder = {json.dumps(str(out))}" in (out / "README.md").read_text()  # the folder, absolute
        moved = move(out, tmp_path / "moved" / "elsewhere" / name)
        jobs.append((name, str(moved / "README.md"), str(moved)))
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", SNIPPETS, json.dumps(jobs)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    frames = {"type": "ndarray", "dtype": "uint8", "shape": [4, 16, 16, 3]}
    for name in EXPORTS:
        result = results[name]
        assert result["blocks"] == 1, name
        batch = result["batch"]
        assert batch["pair_id"] == {"type": "list", "items": ["str"], "len": 4}, name
        if name == "csv":
            assert batch["license"] == {"type": "list", "items": ["str"], "len": 4}
            continue
        assert result["src"] == result["tgt"] == frames, name
        mask_type = "uint8" if name == "webdataset-npy" else "bool"
        assert result["mask"] == {"type": "ndarray", "dtype": mask_type, "shape": [4, 16, 16]}, name
        for column in ("created_at", "instruction", "license", "judge_reason", "quality_flags"):  # ISO, "" for null
            assert batch[column] == {"type": "list", "items": ["str"], "len": 4}, (name, column)
        for column, dtype in (("psnr_bg", "float"), ("judge_quality", "float"), ("clip_width", "int64")):
            # numbers are tensors (datasets' torch format makes float64 float32)
            assert batch[column]["type"] == "Tensor" and batch[column]["shape"] == [4], (name, column)
            assert batch[column]["dtype"].startswith(f"torch.{dtype}"), (name, column)


def test_exported_metadata_has_no_nulls_iso_timestamps_and_no_catalog_uris(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    parquet = run_export(catalog, tmp_path / "pq", format="parquet", embed_media=False)
    table = pq.read_table(parquet["files"][0])
    assert not {"src_video_uri", "tgt_video_uri", "mask_uri", "preview_uri"} & set(table.column_names)
    assert all(table.column(c).null_count == 0 for c in table.column_names)
    assert table.schema.field("created_at").type == "string" and table.schema.field("judge_quality").type == "double"
    created = table.column("created_at").to_pylist()
    assert all(c.endswith("+00:00") and "T" in c for c in created)
    wds = run_export(catalog, tmp_path / "wds", format="webdataset")
    with tarfile.open(wds["files"][0]) as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert sorted(metas[0]) == sorted(c for c in table.column_names if not c.endswith("_file_name"))
    for meta in metas:
        assert None not in meta.values() and meta["created_at"] in created
        assert math.isnan(meta["judge_quality"]) and meta["license"] in ("", "CC-BY-4.0")
    card = (tmp_path / "pq" / "README.md").read_text()
    assert (
        "| created_at | `string` (ISO 8601, UTC) |" in card
        and "| judge_quality | `double` (NaN when unknown) |" in card
    )


# ------------------------------------------------------------------------------------------------ DiffSynth-Studio
def wan_parser() -> argparse.ArgumentParser:
    """``wan_parser()`` of DiffSynth-Studio's examples/wanvideo/model_training/train.py, the trainer the card names
    (https://github.com/modelscope/DiffSynth-Studio; that script is not part of the ``diffsynth`` package)."""
    from diffsynth.diffusion.parsers import add_general_config, add_video_size_config

    parser = argparse.ArgumentParser(description="Simple example of a training script.")
    parser = add_general_config(parser)
    parser = add_video_size_config(parser)
    parser.add_argument("--tokenizer_path", type=str, default=None)
    parser.add_argument("--audio_processor_path", type=str, default=None)
    parser.add_argument("--max_timestep_boundary", type=float, default=1.0)
    parser.add_argument("--min_timestep_boundary", type=float, default=0.0)
    parser.add_argument("--initialize_model_on_cpu", default=False, action="store_true")
    parser.add_argument("--framewise_decoding", default=False, action="store_true")
    return parser


def wan_dataset(args: argparse.Namespace):
    """The dataset as that script's ``__main__`` builds it (without its ``input_audio`` operator, which needs
    librosa and reads a column these exports do not have)."""
    from diffsynth.core import UnifiedDataset
    from diffsynth.core.data.operators import ImageCropAndResize, LoadVideo, ToAbsolutePath

    return UnifiedDataset(
        base_path=args.dataset_base_path,
        metadata_path=args.dataset_metadata_path,
        repeat=args.dataset_repeat,
        data_file_keys=args.data_file_keys.split(","),
        main_data_operator=UnifiedDataset.default_video_operator(
            base_path=args.dataset_base_path,
            max_pixels=args.max_pixels,
            height=args.height,
            width=args.width,
            height_division_factor=16,
            width_division_factor=16,
            num_frames=args.num_frames,
            time_division_factor=4 if not args.framewise_decoding else 1,
            time_division_remainder=1 if not args.framewise_decoding else 0,
        ),
        special_operator_map={
            "animate_face_video": ToAbsolutePath(args.dataset_base_path)
            >> LoadVideo(args.num_frames, 4, 1, frame_processor=ImageCropAndResize(512, 512, None, 16, 16)),
            "wantodance_music_path": ToAbsolutePath(args.dataset_base_path),
        },
    )


def card_command(card: str, data: Path) -> tuple[str, list[str]]:
    """The card's bash block: the ``DATA=`` value it states and the trainer's argv with ``$DATA`` set to ``data``."""
    [block] = re.findall(r"```bash\n(.*?)```", card, re.S)
    lines = block.replace("\\\n", " ").splitlines()
    [stated] = [shlex.split(line, comments=True)[0].split("=", 1)[1] for line in lines if line.startswith("DATA=")]
    [command] = [line for line in lines if line.startswith("accelerate launch ")]
    return stated, shlex.split(command.replace("$DATA", str(data)))


@pytest.mark.parametrize(
    ("preset", "conditioning"),
    [("diffsynth-vace", ["vace_video", "vace_video_mask"]), ("diffsynth-control", ["control_video"])],
)
def test_diffsynth_builds_its_dataset_from_the_cards_command(
    catalog: Catalog, graphs: list[dict], tmp_path: Path, preset: str, conditioning: list[str]
) -> None:
    pytest.importorskip("diffsynth")
    out = tmp_path / "exported" / preset
    summary = run_export(catalog, out, preset=preset, prompt_from="target_caption")
    stated, argv = card_command((out / "README.md").read_text(), data=tmp_path / "moved")
    assert stated == str(out)  # absolute: the one directory every path is relative to
    moved = move(out, tmp_path / "moved")
    assert argv[:3] == ["accelerate", "launch", "examples/wanvideo/model_training/train.py"]
    args = wan_parser().parse_args(argv[3:])
    assert args.extra_inputs.split(",") == conditioning
    assert set(conditioning) < set(args.data_file_keys.split(","))  # loaded as videos, not handed on as paths
    assert (args.height, args.width, args.num_frames) == (16, 16, 1)  # the clips' size; 4 frames -> 4k + 1
    dataset = wan_dataset(args)
    assert len(dataset) == summary["rows"] == 6
    masks = {  # by (target, source): the test graphs reuse a video across sources
        (p["tgt_video_uri"], p["src_video_uri"]): mask_array(catalog.read_media(p["mask_uri"]), "m")
        for g in graphs
        for p in g["pairs"]
    }
    for i in range(len(dataset)):
        data = dataset[i]
        video = data["video"]
        assert len(video) == args.num_frames and video[0].size == (args.width, args.height)
        for key in conditioning:  # what the trainer's parse_extra_inputs hands the pipeline: frames, as the video's
            assert len(data[key]) == len(video) and all(f.size == video[0].size for f in data[key]), key
        assert isinstance(data["prompt"], str) and data["prompt"]
        if "vace_video_mask" in data:
            row = dataset.data[i]
            expected = masks[row["video"], row["vace_video"]][: len(video)]
            assert np.array_equal(np.stack([np.asarray(f)[..., 0] >= 128 for f in data["vace_video_mask"]]), expected)
    assert str(moved) == args.dataset_base_path


def test_datasets_reads_the_webdataset_shards_the_header_lists(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    import datasets
    import torch

    out = tmp_path / "wds"
    summary = run_export(catalog, out, format="webdataset", shard_size=4)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(ds["__key__"]) == sorted(json.loads((out / "manifest.json").read_text())["pairs"]["train"])
    assert len(summary["files"]) == 2
    meta = ds.select_columns(["json", "txt"]).with_format("torch")
    batch = torch.utils.data.default_collate([meta[i] for i in range(4)])
    assert isinstance(batch["json"]["judge_quality"], torch.Tensor) and len(batch["json"]["created_at"]) == 4
