"""Exports read back with the real client libraries: WebDataset shards (webdataset, tarfile), Parquet (datasets,
pyarrow), CSV and DiffSynth-Studio metadata (csv); leak-free splits, quality-first caps, ``since``, provenance, and
only accepted pairs unless rejected ones are asked for."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from catalog.export import ExportConfig, ExportError, export, parse_split
from catalog.export.select import split_of
from catalog.gallery.media import mask_array
from catalog.sql import SqlRejected
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


def decode(data: bytes) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an mp4."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def graph(catalog: Catalog) -> dict:
    return build_graph(catalog, n_renders=3)


@pytest.fixture
def many(catalog: Catalog) -> list[dict]:
    """Eight sources, two renders each (four pairs per source)."""
    return [build_graph(catalog, n_renders=2, seed=s) for s in range(8)]


BOTH = ["accepted", "rejected"]


def _pairs(graphs: list[dict]) -> dict[str, dict]:
    return {p["pair_id"]: p for g in graphs for p in g["pairs"]}


def run_export(catalog: Catalog, out: Path | str, storage_options: dict | None = None, **options) -> dict:
    """``catalog.export.export`` with an ``ExportConfig`` of ``options``."""
    return export(catalog, str(out), ExportConfig(**options), storage_options=storage_options)


def test_webdataset_shards_read_back_and_decode(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import webdataset as wds

    summary = run_export(catalog, tmp_path / "wds", format="webdataset", shard_size=3)  # accepted only: the default
    accepted = [p for p in graph["pairs"] if p["decision"] == "accepted"]
    assert summary["rows"] == len(accepted) == 4
    assert [Path(f).name for f in summary["files"]] == ["train-000000.tar", "train-000001.tar"]
    samples = list(wds.WebDataset(summary["files"], shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == sorted(p["pair_id"] for p in accepted)
    by_id = {p["pair_id"]: p for p in accepted}
    mask = mask_array(catalog.read_media(graph["pairs"][0]["mask_uri"]), "m")
    for sample in samples:
        pair = by_id[sample["__key__"]]
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {
            "src.mp4",
            "tgt.mp4",
            "mask.mp4",
            "txt",
            "json",
        }
        assert sample["src.mp4"] == catalog.read_media(pair["src_video_uri"])
        assert sample["tgt.mp4"] == catalog.read_media(pair["tgt_video_uri"])
        src, tgt, mask_video = decode(sample["src.mp4"]), decode(sample["tgt.mp4"]), decode(sample["mask.mp4"])
        assert src.shape == tgt.shape == mask_video.shape == (4, 16, 16, 3)
        assert np.array_equal(mask_video[..., 0] >= 128, mask)  # lossless: the stored mask exactly
        assert sample["txt"].decode() == pair["instruction"]
        meta = json.loads(sample["json"])
        assert meta["split"] == "train" and meta["clip_caption"] == "a street at dusk"
    with tarfile.open(summary["files"][1]) as tar:
        assert len(tar.getnames()) == 5  # one sample of five files in the last shard


def test_webdataset_mask_npy_and_byte_sized_shards(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import webdataset as wds

    one = run_export(catalog, tmp_path / "one", format="webdataset", mask_format="npy", decisions=BOTH)
    sample_bytes = Path(one["files"][0]).stat().st_size // 6
    summary = run_export(
        catalog, tmp_path / "wds", format="webdataset", mask_format="npy", decisions=BOTH,
        shard_mb=sample_bytes * 2.5 / (1 << 20),
    )  # fmt: skip
    sizes = [Path(f).stat().st_size for f in summary["files"]]
    assert len(sizes) >= 3 and max(sizes) <= sample_bytes * 2.5 + 2048  # + the tar end blocks
    samples = list(wds.WebDataset(summary["files"], shardshuffle=False, empty_check=False).decode())
    assert len(samples) == 6
    expected = mask_array(catalog.read_media(graph["pairs"][0]["mask_uri"]), "m")
    for sample in samples:
        assert sample["mask.npy"].dtype == np.uint8 and sample["mask.npy"].shape == (4, 16, 16)
        assert np.array_equal(sample["mask.npy"].astype(bool), expected)


def test_parquet_export_loads_with_datasets_by_split(catalog: Catalog, many: list[dict], tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "pq"
    summary = run_export(catalog, out, format="parquet", split="train=0.5,val=0.25,test=0.25", shard_size=5)
    assert summary["rows"] == 16 and sum(summary["splits"].values()) == 16  # the accepted half
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))  # splits from the card's configs
    assert {s: loaded[s].num_rows for s in loaded} == {s: n for s, n in summary["splits"].items() if n}
    split = max(summary["splits"], key=summary["splits"].get)
    ds = loaded[split]
    assert isinstance(ds.features["src_video"], datasets.Video)
    for column in ("src_video", "tgt_video", "mask_video"):
        ds = ds.cast_column(column, datasets.Video(decode=False))
    pairs = _pairs(many)
    for row in ds.select(range(3)):
        pair = pairs[row["pair_id"]]
        assert row["split"] == split and row["instruction"] == pair["instruction"]
        assert row["src_video"]["bytes"] == catalog.read_media(pair["src_video_uri"])
        src, tgt, mask = (
            decode(row["src_video"]["bytes"]),
            decode(row["tgt_video"]["bytes"]),
            decode(row["mask_video"]["bytes"]),
        )
        assert src.shape == tgt.shape == mask.shape
        assert np.array_equal(mask[..., 0] >= 128, mask_array(catalog.read_media(pair["mask_uri"]), "m"))


def test_parquet_without_embedded_media_names_copies_beside_one_metadata_file_per_split(
    catalog: Catalog, many: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "pq"
    summary = run_export(catalog, out, format="parquet", embed_media=False, split="train=0.5,val=0.5", shard_size=1)
    assert sorted(Path(f).relative_to(out).as_posix() for f in summary["files"]) == [
        f"data/{s}/metadata.parquet" for s in sorted(summary["splits"])
    ]  # one per split: shard options do not apply
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["shard_size"] is None and manifest["options"]["embed_media"] is False
    pairs = _pairs(many)
    for f in summary["files"]:
        folder = Path(f).parent
        table = pq.read_table(f)
        assert table.num_rows == summary["splits"][folder.name] and "src_video_uri" not in table.column_names
        for row in table.to_pylist():
            pair = pairs[row["pair_id"]]
            for column in ("src_video_file_name", "tgt_video_file_name", "mask_video_file_name"):
                path = folder / row[column]  # relative to the metadata file's folder, inside it
                assert not Path(row[column]).is_absolute() and ".." not in row[column]
                assert (path.relative_to(out).as_posix()) in manifest["media"]
            assert (folder / row["src_video_file_name"]).read_bytes() == catalog.read_media(pair["src_video_uri"])
            assert decode((folder / row["mask_video_file_name"]).read_bytes()).shape == (4, 16, 16, 3)


def test_no_source_in_two_splits(catalog: Catalog, many: list[dict], tmp_path: Path) -> None:
    spec = "train=0.5,val=0.25,test=0.25"
    summary = run_export(catalog, tmp_path / "wds", format="webdataset", split=spec, decisions=BOTH)
    split_of_pair = {}
    for f in summary["files"]:
        with tarfile.open(f) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    assert Path(f).name.startswith(meta["split"] + "-")
                    split_of_pair[meta["pair_id"]] = (meta["split"], meta["source_id"], meta["render_id"])
    assert len(split_of_pair) == 32
    by_source, by_render = defaultdict(set), defaultdict(set)
    for split, source, render in split_of_pair.values():
        by_source[source].add(split)
        by_render[render].add(split)
    assert all(len(s) == 1 for s in by_source.values())  # no source in two splits
    assert all(len(s) == 1 for s in by_render.values())  # both directions of a render together
    assert len({s for (s,) in by_source.values()}) >= 2  # and the sources did spread over the splits
    # deterministic from ids and seed; another seed moves some source
    again = run_export(catalog, tmp_path / "pq", format="parquet", split=spec, decisions=BOTH)
    rows = {}
    for f in again["files"]:
        for r in pq.read_table(f, columns=["pair_id", "split"]).to_pylist():
            rows[r["pair_id"]] = r["split"]
    assert rows == {p: v[0] for p, v in split_of_pair.items()}
    sources = sorted(by_source)
    moved = [s for s in sources if split_of(s, parse_split(spec), 0) != split_of(s, parse_split(spec), 1)]
    assert moved


def test_split_by_clip_keeps_each_clip_whole(catalog: Catalog, many: list[dict], tmp_path: Path) -> None:
    summary = run_export(catalog, tmp_path / "csv", format="csv", split="a=0.5,b=0.5", split_by="clip")
    with open(summary["files"][0], newline="") as f:
        rows = list(csv.DictReader(f))
    pairs = _pairs(many)
    clips = defaultdict(set)
    for row in rows:
        clips[pairs[row["pair_id"]]["clip_id"]].add(row["split"])
    assert len(clips) == 8 and all(len(s) == 1 for s in clips.values())


def test_cap_per_group_takes_the_best_first(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    summary = run_export(catalog, tmp_path / "cap", format="csv", balance=["edit_type"], cap=1, decisions=BOTH)
    with open(summary["files"][0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary["rows"] == 2 and sorted(r["edit_type"] for r in rows) == ["add", "remove"]
    # accepted before rejected, then the highest psnr: render k=2 (accepted, 32 dB) beats k=1 (rejected, 31 dB)
    best = {p["pair_id"] for p in graph["pairs"] if p["psnr_bg"] == 32.0}
    assert {r["pair_id"] for r in rows} == best
    # no groups and a cap: the best N overall; no cap and no groups: everything
    assert run_export(catalog, tmp_path / "top", format="csv", cap=3, decisions=BOTH)["rows"] == 3
    assert run_export(catalog, tmp_path / "all", format="csv", decisions=BOTH)["rows"] == 6
    assert run_export(catalog, tmp_path / "accepted", format="csv")["rows"] == 4


def test_balance_without_cap_cuts_groups_to_the_smallest(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    summary = run_export(catalog, tmp_path / "bal", format="csv", balance=["decision"], decisions=BOTH)
    with open(summary["files"][0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["decision"] for r in rows) == ["accepted", "accepted", "rejected", "rejected"]
    with pytest.raises(ExportError, match="balance"):
        run_export(catalog, tmp_path / "bad", format="csv", balance=["no_such_column"])


def test_since_exports_only_pairs_added_after(catalog: Catalog, tmp_path: Path) -> None:
    first_graph = build_graph(catalog, n_renders=2, seed=1)
    first = run_export(catalog, tmp_path / "v1", format="webdataset")
    accepted = [p["pair_id"] for p in first_graph["pairs"] if p["decision"] == "accepted"]
    assert first["rows"] == len(accepted) == 2
    manifest = json.loads(Path(first["manifest"]).read_text())
    assert sorted(manifest["pairs"]["train"]) == sorted(accepted)
    assert manifest["files"][0]["samples"] == 2 and manifest["files"][0]["path"] == "train-000000.tar"
    second_graph = build_graph(catalog, n_renders=1, seed=2)
    second = run_export(catalog, tmp_path / "v2", format="csv", since=first["export_id"])
    with open(second["files"][0], newline="") as f:
        ids = {r["pair_id"] for r in csv.DictReader(f)}
    assert ids == {p["pair_id"] for p in second_graph["pairs"]}
    # an export folder works as well as an id; nothing new since the second export
    assert run_export(catalog, tmp_path / "v3", format="csv", since=str(tmp_path / "v2"))["rows"] == 0
    with pytest.raises(ExportError, match="since"):
        run_export(catalog, tmp_path / "v4", format="csv", since="no-such-export")


def _license(catalog: Catalog, graph: dict, license: str, attribution: str) -> None:
    catalog.append("sources", [{**graph["sources"][0], "license": license, "attribution": attribution}])


def test_provenance_flows_into_every_format_and_filters(catalog: Catalog, tmp_path: Path) -> None:
    import webdataset as wds

    open_graph, closed_graph = build_graph(catalog, n_renders=1, seed=1), build_graph(catalog, n_renders=1, seed=2)
    _license(catalog, open_graph, "CC-BY-4.0", "Jane Doe, Vimeo")
    _license(catalog, closed_graph, "proprietary", "ACME Corp")
    summary = run_export(catalog, tmp_path / "wds", format="webdataset", licenses=["CC-BY-4.0"])
    samples = list(wds.WebDataset(summary["files"], shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == sorted(p["pair_id"] for p in open_graph["pairs"])
    assert {json.loads(s["json"])["attribution"] for s in samples} == {"Jane Doe, Vimeo"}
    card = Path(summary["card"]).read_text()
    assert "CC-BY-4.0" in card and "Jane Doe, Vimeo" in card and "ACME" not in card
    table = pq.read_table(run_export(catalog, tmp_path / "pq", format="parquet")["files"][0])
    assert set(table.column("license").to_pylist()) == {"CC-BY-4.0", "proprietary"}
    assert run_export(catalog, tmp_path / "none", format="csv", licenses=["unknown"])["rows"] == 0
    assert run_export(catalog, tmp_path / "w", format="csv", where="license = 'proprietary'")["rows"] == 2


@pytest.mark.parametrize(
    ("preset", "columns"),
    [
        ("diffsynth-vace", ["video", "vace_video", "vace_video_mask", "prompt", "decision"]),
        ("diffsynth-control", ["video", "control_video", "prompt", "decision"]),
    ],
)
def test_diffsynth_presets(catalog: Catalog, graph: dict, tmp_path: Path, preset: str, columns: list[str]) -> None:
    out = tmp_path / preset
    summary = run_export(catalog, out, preset=preset, where="edit_type = 'remove'", prompt_from="target_caption")
    assert [Path(f).name for f in summary["files"]] == ["metadata_train.csv"]
    with open(summary["files"][0], newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == columns and len(rows) == 2  # the accepted removals
    assert {row["decision"] for row in rows} == {"accepted"}  # said in the file the trainer reads, not only the card
    by_tgt = {p["tgt_video_uri"]: p for p in graph["pairs"] if p["edit_type"] == "remove"}
    for row in rows:
        pair = by_tgt[row["video"]]
        conditioning = row.get("vace_video") or row["control_video"]
        assert (out / conditioning).read_bytes() == catalog.read_media(pair["src_video_uri"])
        assert (out / row["video"]).read_bytes() == catalog.read_media(pair["tgt_video_uri"])
        assert row["prompt"] == "an empty street at dusk"
        if "vace_video_mask" in row:
            mask = decode((out / row["vace_video_mask"]).read_bytes())
            assert mask.shape == decode((out / row["video"]).read_bytes()).shape
            assert np.array_equal(mask[..., 0] >= 128, mask_array(catalog.read_media(pair["mask_uri"]), "m"))


def test_csv_export_lists_relative_media_and_a_quoted_prompt(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    summary = run_export(catalog, out, format="csv", where="edit_type = 'remove'", decisions=BOTH)
    with open(summary["files"][0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert list(rows[0])[:6] == ["pair_id", "split", "src_video", "tgt_video", "mask_video", "prompt"]
    removes = {p["instruction"]: p for p in graph["pairs"] if p["edit_type"] == "remove"}
    for row in rows:
        pair = removes[row["prompt"]]
        assert not Path(row["src_video"]).is_absolute()
        assert (out / row["src_video"]).read_bytes() == catalog.read_media(pair["src_video_uri"])
        assert (out / row["tgt_video"]).read_bytes() == catalog.read_media(pair["tgt_video_uri"])
        assert decode((out / row["mask_video"]).read_bytes()).shape == (4, 16, 16, 3)


def test_every_export_writes_a_card_and_a_manifest(catalog: Catalog, many: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "wds"
    summary = run_export(
        catalog, out, format="webdataset", split="train=0.5,val=0.25,test=0.25", where="edit_type = 'remove'"
    )
    card = (out / "README.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export_id"] == summary["export_id"] and manifest["counts"] == summary["splits"]
    assert sum(f["samples"] for f in manifest["files"]) == summary["rows"] == 8
    assert {f["path"] for f in manifest["files"]} == {Path(f).name for f in summary["files"]}
    for split, n in summary["splits"].items():
        assert f"| {split} | {n} |" in card
    assert "| remove |" in card and "| propagation |" in card and "webdataset" in card
    assert "## Licences and attributions" in card and "unknown" in card
    assert (Path(catalog.path(f"exports/{summary['export_id']}/manifest.json"))).exists()


def test_export_to_object_store(catalog: Catalog, graph: dict, s3) -> None:
    out = s3.url("exports/wds")
    summary = run_export(catalog, out, storage_options=s3.storage_options, format="webdataset")
    assert summary["files"] == [f"{out}/train-000000.tar"]
    fs = s3.filesystem()
    data = fs.cat_file(summary["files"][0])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert len(names) == 4 * 5  # the accepted pairs
    assert {n.split(".", 1)[1] for n in names} == {"src.mp4", "tgt.mp4", "mask.mp4", "txt", "json"}
    assert fs.exists(f"{out}/README.md") and fs.exists(f"{out}/manifest.json")


@pytest.mark.parametrize(
    "where",
    ["1=1; DROP VIEW pairs", "pair_id IN (SELECT content FROM read_text('/etc/passwd'))", "getenv('HOME') = ''"],
)
def test_where_goes_through_the_read_only_guard(catalog: Catalog, graph: dict, tmp_path: Path, where: str) -> None:
    with pytest.raises(SqlRejected):
        run_export(catalog, tmp_path / "x", format="csv", where=where)
    assert not (tmp_path / "x").exists()


def test_parquet_with_an_empty_split_still_loads(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "pq"
    summary = run_export(catalog, out, format="parquet", split="train=0.5,val=0.5")  # one source: one split has all
    assert sorted(summary["splits"].values()) == [0, 4]
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert [(s, loaded[s].num_rows) for s in loaded] == [(s, n) for s, n in summary["splits"].items() if n]


def test_only_accepted_pairs_leave_unless_rejected_ones_are_asked_for(
    catalog: Catalog, graph: dict, tmp_path: Path
) -> None:
    decision = {p["pair_id"]: p["decision"] for p in graph["pairs"]}
    assert sorted(decision.values()).count("rejected") == 2

    def exported(summary: dict) -> dict[str, str]:
        with open(summary["files"][0], newline="") as f:
            return {r["pair_id"]: r["decision"] for r in csv.DictReader(f)}

    default = run_export(catalog, tmp_path / "default", format="csv")
    assert exported(default) == {p: d for p, d in decision.items() if d == "accepted"}
    both = run_export(catalog, tmp_path / "both", format="csv", decisions=["rejected", "accepted"])
    assert exported(both) == decision
    rejected = run_export(catalog, tmp_path / "rejected", format="csv", decisions=["rejected"])
    assert set(exported(rejected).values()) == {"rejected"}
    # ``where`` narrows the decision filter, it does not widen it
    where = run_export(catalog, tmp_path / "where", format="csv", where="decision = 'rejected'")
    assert where["rows"] == 0
    # the manifest and the card record the filter used
    for summary, decisions, sentence in (
        (default, ["accepted"], "Only pairs the factory's quality gate accepted."),
        (both, ["accepted", "rejected"], "quality gate accepted or rejected"),
    ):
        manifest = json.loads(Path(summary["manifest"]).read_text())
        assert manifest["options"]["decisions"] == decisions
        card = Path(summary["card"]).read_text()
        assert sentence in card and "| decisions | " + ", ".join(f"`{d}`" for d in decisions) + " |" in card


def test_manifest_options_are_the_config(catalog: Catalog, graph: dict, tmp_path: Path) -> None:
    config = ExportConfig(format="webdataset", split={"train": 0.75, "val": 0.25}, cap=5, seed=3)
    summary = export(catalog, str(tmp_path / "wds"), config)
    options = json.loads(Path(summary["manifest"]).read_text())["options"]
    assert set(options) == set(ExportConfig.model_fields) - {"format", "preset"}
    assert options["split"] == "train=0.75,val=0.25" and options["cap"] == 5 and options["seed"] == 3
    assert options["embed_media"] is None and options["prompt_from"] is None  # parquet's, csv's: not this format's
    assert options["shard_mb"] == 512.0 and options["mask_format"] == "mp4"
