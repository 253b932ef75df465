"""Exports read back: WebDataset shards (webdataset + tarfile), Parquet (datasets), CSV (csv)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from catalog.sql import SqlRejected
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


@pytest.fixture
def graph(catalog: Catalog) -> dict:
    return build_graph(catalog, n_renders=3)


def test_webdataset_shards_read_back(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import webdataset as wds

    summary = catalog.export("webdataset", str(tmp_path / "wds"), where="decision = 'accepted'", shard_size=3)
    accepted = [p for p in graph["pairs"] if p["decision"] == "accepted"]
    assert summary["rows"] == len(accepted) == 4
    assert [Path(f).name for f in summary["files"]] == ["shard-000000.tar", "shard-000001.tar"]
    samples = list(wds.WebDataset(summary["files"], shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == sorted(p["pair_id"] for p in accepted)
    by_id = {p["pair_id"]: p for p in accepted}
    for sample in samples:
        pair = by_id[sample["__key__"]]
        assert sample["src.mp4"] == catalog.read_media(pair["src_video_uri"])
        assert sample["tgt.mp4"] == catalog.read_media(pair["tgt_video_uri"])
        masks = np.load(io.BytesIO(sample["mask.npz"]))["masks"]
        assert masks.dtype == bool and masks.shape == (4, 16, 16)
        meta = json.loads(sample["json"])
        assert meta["instruction"] == pair["instruction"] and meta["clip_caption"] == "a street at dusk"
    with tarfile.open(summary["files"][1]) as tar:
        assert len(tar.getnames()) == 4  # one sample of four files in the last shard


def test_parquet_export_loads_with_datasets(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "pq"
    summary = catalog.export("parquet", str(out), shard_size=4)
    assert summary["rows"] == 6 and len(summary["files"]) == 2
    ds = datasets.load_dataset(
        "parquet", data_files=sorted(summary["files"]), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == 6
    row = next(r for r in ds if r["pair_id"] == graph["pairs"][0]["pair_id"])
    assert row["src_video"] == catalog.read_media(graph["pairs"][0]["src_video_uri"])
    assert row["instruction"] == graph["pairs"][0]["instruction"]
    assert Path(row["tgt_video_url"]).read_bytes() == row["tgt_video"]


def test_parquet_export_without_media_bytes(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    summary = catalog.export("parquet", str(tmp_path / "pq"), embed_media=False)
    table = pq.read_table(summary["files"][0])
    assert "src_video" not in table.column_names and "src_video_url" in table.column_names


def test_csv_export(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    summary = catalog.export("csv", str(tmp_path / "csv"), where="edit_type = 'remove'")
    with open(summary["files"][0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert list(rows[0]) == ["src_video", "tgt_video", "prompt"]
    removes = {p["instruction"]: p for p in graph["pairs"] if p["edit_type"] == "remove"}
    for row in rows:
        pair = removes[row["prompt"]]
        assert Path(row["src_video"]).is_absolute()
        assert Path(row["src_video"]).read_bytes() == catalog.read_media(pair["src_video_uri"])
        assert Path(row["tgt_video"]).read_bytes() == catalog.read_media(pair["tgt_video_uri"])


def test_export_to_object_store(catalog: Catalog, graph: dict, s3) -> None:
    out = s3.url("exports/wds")
    summary = catalog.export("webdataset", out, shard_size=10, storage_options=s3.storage_options)
    assert summary["files"] == [f"{out}/shard-000000.tar"]
    fs = s3.filesystem()
    data = fs.cat_file(summary["files"][0])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert len(names) == 6 * 4
    assert {n.split(".", 1)[1] for n in names} == {"src.mp4", "tgt.mp4", "mask.npz", "json"}


@pytest.mark.parametrize(
    "where",
    ["1=1; DROP VIEW pairs", "pair_id IN (SELECT content FROM read_text('/etc/passwd'))", "getenv('HOME') = ''"],
)
def test_where_goes_through_the_read_only_guard(catalog: Catalog, graph: dict, tmp_path: Path, where: str) -> None:
    with pytest.raises(SqlRejected):
        catalog.export("csv", str(tmp_path / "x"), where=where)
    assert not (tmp_path / "x").exists()
