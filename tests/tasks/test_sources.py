"""tasks/sources.py: folders, globs, manifests (CSV/JSONL/Parquet), VPData CSVs, roots, bad rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.errors import InputError
from tasks.sources import discover_sources, resolve_within_roots, within_roots
from tests.corpus import BAD_CORPUS_EXPECTED


@pytest.fixture
def video_tree(tmp_path: Path, good_clips: dict) -> Path:
    """root/a.mp4, root/sub/b.mov, root/notes.txt."""
    (tmp_path / "sub").mkdir()
    shutil.copy(good_clips["videos"][0], tmp_path / "a.mp4")
    shutil.copy(good_clips["videos"][1], tmp_path / "sub" / "b.mov")
    (tmp_path / "notes.txt").write_text("not a video")
    return tmp_path


def test_folder_glob_and_single_file(video_tree: Path) -> None:
    items, failures = discover_sources(str(video_tree))
    assert [Path(i.uri).name for i in items] == ["a.mp4", "b.mov"] and not failures
    items, _ = discover_sources(str(video_tree / "**" / "*.mov"))
    assert [Path(i.uri).name for i in items] == ["b.mov"]
    items, _ = discover_sources(str(video_tree / "a.mp4"))
    assert len(items) == 1 and items[0].uri == str(video_tree / "a.mp4")
    items, failures = discover_sources(str(video_tree / "nothing-*.mp4"))
    assert not items and failures[0].reason == "not_found"


def test_folder_on_an_fsspec_url(good_clips: dict) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/vpf-src/clips/x.mp4", Path(good_clips["videos"][0]).read_bytes())
    fs.pipe("/vpf-src/clips/deep/y.mp4", Path(good_clips["videos"][1]).read_bytes())
    items, failures = discover_sources("memory://vpf-src/clips")
    assert [i.uri for i in items] == ["memory://vpf-src/clips/deep/y.mp4", "memory://vpf-src/clips/x.mp4"]
    assert not failures


def test_csv_manifest_resolves_relative_paths(good_clips: dict) -> None:
    items, failures = discover_sources(good_clips["manifest"])
    assert not failures and len(items) == 2
    folder = os.path.dirname(good_clips["manifest"])
    assert items[0].uri == os.path.join(folder, "good_0.mp4")
    assert items[0].mask_uri == os.path.join(folder, "good_0_masks.npz")
    assert (items[0].mask_id, items[0].label, items[0].row_index) == (3, "square", 0)
    assert items[1].manifest_uri == good_clips["manifest"]


def test_jsonl_and_parquet_manifests(tmp_path: Path, good_clips: dict) -> None:
    shutil.copy(good_clips["videos"][0], tmp_path / "v.mp4")
    rows = [
        {"uri": "v.mp4", "start_frame": 2, "end_frame": 30, "box": [1, 2, 30, 40], "caption": "c"},
        {"uri": "v.mp4", "start_s": 0.5, "end_s": 1.5, "box": "4,5,20,30"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items, failures = discover_sources(str(tmp_path / "m.jsonl"))
    assert not failures
    assert (items[0].start_frame, items[0].end_frame, items[0].box) == (2, 30, (1, 2, 30, 40))
    assert (items[1].start_s, items[1].end_s, items[1].box) == (0.5, 1.5, (4, 5, 20, 30))
    pq.write_table(pa.Table.from_pylist([{"uri": "v.mp4", "mask_id": 3, "label": "cat"}]), tmp_path / "m.parquet")
    items, failures = discover_sources(str(tmp_path / "m.parquet"))
    assert not failures and items[0].uri == str(tmp_path / "v.mp4") and items[0].mask_id == 3


def test_bad_rows_fail_alone(tmp_path: Path, good_clips: dict) -> None:
    shutil.copy(good_clips["videos"][0], tmp_path / "v.mp4")
    (tmp_path / "m.csv").write_text(
        "uri,start_frame,end_frame,start_s,box,mask_id\n"
        "v.mp4,,,,,\n"
        "v.mp4,10,5,,,\n"
        "v.mp4,1,,0.5,,\n"
        "v.mp4,,,,1;2;3;4,\n"
        "v.mp4,,,,,three\n"
        "v.mp4,,,,,,surplus\n"
        "v.mp4,0,8,,,\n"
    )
    items, failures = discover_sources(str(tmp_path / "m.csv"))
    assert [(i.row_index, i.start_frame, i.end_frame) for i in items] == [(0, None, None), (6, 0, 8)]
    assert [f.reason for f in failures] == ["bad_row"] * 5
    messages = " | ".join(f.message for f in failures)
    for fragment in ("end_frame (5) must be greater", "not both", "box must be", "mask_id must be", "more cells"):
        assert fragment in messages
    assert all(f.stage == "ingest" and f.item_kind == "source" for f in failures)


@pytest.mark.parametrize("name", ["extra_column", "missing_column"])
def test_manifest_columns_are_checked(bad_corpus: dict, name: str) -> None:
    items, failures = discover_sources(bad_corpus[name])
    assert not items and len(failures) == 1
    assert failures[0].reason == BAD_CORPUS_EXPECTED[name][1] and failures[0].item_id == bad_corpus[name]
    assert ("colour" if name == "extra_column" else "no 'uri' column") in failures[0].message


def test_corpus_manifest_with_roots(bad_corpus: dict) -> None:
    items, failures = discover_sources(bad_corpus["manifest"], roots=[bad_corpus["root"]])
    by_reason = {f.reason: f for f in failures}
    assert set(by_reason) == {"missing_uri", "not_found", "outside_roots"}
    assert "elsewhere.mp4" in by_reason["outside_roots"].message
    assert by_reason["not_found"].item_id == bad_corpus["missing_object"]
    assert len(items) == 25  # every other row goes on to ingest (15, and 10 rows with damaged mask files)
    items, failures = discover_sources(bad_corpus["manifest"])  # no roots: the outside file is fine
    assert {f.reason for f in failures} == {"missing_uri", "not_found"}


def test_missing_url_is_a_failure(bad_corpus: dict) -> None:
    items, failures = discover_sources(bad_corpus["missing_object_url"])
    assert not items and failures[0].reason == "not_found" and failures[0].item_id == bad_corpus["missing_object_url"]


def test_roots_resolve_dot_dot_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "secret.mp4", root / "link.mp4")
    assert within_roots(str(root / "a.mp4"), [str(root)])
    assert not within_roots(str(root / ".." / "secret.mp4"), [str(root)])
    assert not within_roots(str(root / "link.mp4"), [str(root)])
    assert not within_roots(str(tmp_path / "root2" / "a.mp4"), [str(root)])
    assert within_roots("s3://bucket/data/x.mp4", ["s3://bucket/data"])
    assert not within_roots("s3://bucket/data/../other/x.mp4", ["s3://bucket/data"])
    assert not within_roots("memory://bucket/data/x.mp4", ["s3://bucket/data"])


def test_resolve_within_roots_gives_the_real_path_to_open(tmp_path: Path) -> None:
    """The check made when a file is opened: the real path for local files (what is opened is what was checked), a
    URL unchanged; a link leaving the roots, or a path whose folder was swapped for one, is refused."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(root / "sub" / "a.png", root / "inner.png")
    os.symlink(tmp_path / "secret.png", root / "sub" / "outer.png")
    assert resolve_within_roots(str(root / "inner.png"), [str(root)]) == str(root / "sub" / "a.png")
    assert resolve_within_roots(f"file://{root / 'sub' / '..' / 'inner.png'}", (str(root),)) == str(root / "sub/a.png")
    assert resolve_within_roots(str(tmp_path / "secret.png"), None) == str(tmp_path / "secret.png")
    assert resolve_within_roots("s3://bucket/data/x.png", ["s3://bucket/data"]) == "s3://bucket/data/x.png"
    for outside in (str(root / "sub" / "outer.png"), "s3://bucket/data/../x.png"):
        with pytest.raises(InputError) as err:
            resolve_within_roots(outside, [str(root), "s3://bucket/data"])
        assert err.value.reason == "outside_roots"
    items, _ = discover_sources(str(tmp_path / "nothing-*.mp4"), roots=[str(root)])
    assert not items
    (root / "v.mp4").write_bytes(b"x")
    (items, _), (bare, _) = discover_sources(str(root), roots=[str(root)]), discover_sources(str(root))
    assert items[0].roots == (str(root),) and bare[0].roots is None  # carried to where masks are opened


def test_vpdata_csv_with_both_path_conventions(tmp_path: Path, good_clips: dict) -> None:
    """VPData rows: videos in per-id folders, masks under video_inpainting/<kind>/ or <kind>/."""
    video = Path(good_clips["videos"][0]).read_bytes()
    labels = np.zeros((40, 64, 96), np.uint8)
    videvo = tmp_path / "videovo" / "raw_video" / "000005000" / "000005000000.0.mp4"
    pexels = tmp_path / "pexels" / "raw_video" / "000000000" / "000000000000_852038.mp4"
    for path in (videvo, pexels):
        path.parent.mkdir(parents=True)
        path.write_bytes(video)
    # inference layout for the Videvo clip, training layout for the Pexels one
    for folder in (
        tmp_path / "video_inpainting" / "videovo" / "000005000000",
        tmp_path / "pexels" / "000000000000_852038",
    ):
        folder.mkdir(parents=True)
        np.savez_compressed(folder / "all_masks.npz", labels)
    (tmp_path / "our_video_inpaint.csv").write_text(
        "path,mask_id,start_frame,end_frame,fps,video_inpainting_prompt,image_inpainting_prompt,type\n"
        "000005000000.0.mp4,1,0,40,16,a river at dusk,a boat,object\n"
        "000000000000_852038.mp4,2,5,35,16,a city street,a car,object\n"
        "000000000001_1.mp4,1,0,40,16,missing,x,object\n"
    )  # fmt: skip
    items, failures = discover_sources(str(tmp_path / "our_video_inpaint.csv"))
    assert [i.uri for i in items] == [str(videvo), str(pexels)]
    assert items[0].mask_uri == str(tmp_path / "video_inpainting/videovo/000005000000/all_masks.npz")
    assert items[1].mask_uri == str(tmp_path / "pexels/000000000000_852038/all_masks.npz")
    assert (items[1].mask_id, items[1].start_frame, items[1].end_frame, items[1].caption) == (
        2,
        5,
        35,
        "a city street",
    )
    assert len(failures) == 1 and failures[0].reason == "not_found" and "tried" in failures[0].message


def test_folder_sources_find_their_sibling_masks(tmp_path: Path, good_clips: dict) -> None:
    """Each layout is found, the first match wins, a video without masks has none, masks outside roots fail."""
    video = Path(good_clips["videos"][0]).read_bytes()
    root = tmp_path / "footage"
    layout = {
        "a.mp4": "a_masks.npz",  # <stem>_masks.npz (also beats <stem>.npz)
        "b.mp4": "b.npz",
        "c.mp4": "c/all_masks.npz",  # VPData per-video folder
        "d_1.mp4": "video_inpainting/pexels/d_1/all_masks.npz",  # VPData tree under the searched folder
        "e.mp4": "e_masks/00000.png",  # PNG sequence
        "f.mp4": None,
        "g.mp4": "g/readme.txt",  # a same-name folder without PNGs is not a mask (negative control)
    }
    for name, mask in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(video)
        if mask:
            (root / mask).parent.mkdir(parents=True, exist_ok=True)
            (root / mask).write_bytes(b"x")
    (root / "a.npz").write_bytes(b"x")
    items, failures = discover_sources(str(root))
    found = {Path(i.uri).name: i.mask_uri for i in items}
    assert not failures
    assert found == {
        "a.mp4": str(root / "a_masks.npz"),
        "b.mp4": str(root / "b.npz"),
        "c.mp4": str(root / "c" / "all_masks.npz"),
        "d_1.mp4": str(root / "video_inpainting" / "pexels" / "d_1" / "all_masks.npz"),
        "e.mp4": str(root / "e_masks"),
        "f.mp4": None,
        "g.mp4": None,
    }
    # a single file and a glob look next to the video too
    assert discover_sources(str(root / "b.mp4"))[0][0].mask_uri == str(root / "b.npz")
    assert [i.mask_uri for i in discover_sources(str(root / "a*.mp4"))[0]] == [str(root / "a_masks.npz")]
    # on an object store, from one listing
    fs = fsspec.filesystem("memory")
    fs.pipe("/vpf-sib/x.mp4", video)
    fs.pipe("/vpf-sib/x_masks.npz", b"x")
    items, _ = discover_sources("memory://vpf-sib")
    assert items[0].mask_uri == "memory://vpf-sib/x_masks.npz"
    # masks must lie within the roots like the videos
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "h.mp4").write_bytes(video)
    os.symlink(outside, root / "h")
    (outside / "all_masks.npz").write_bytes(b"x")
    items, failures = discover_sources(str(root / "h.mp4"), roots=[str(root)])
    assert not items and [f.reason for f in failures] == ["outside_roots"]
    assert discover_sources(str(root / "h.mp4"))[0][0].mask_uri == str(root / "h" / "all_masks.npz")
