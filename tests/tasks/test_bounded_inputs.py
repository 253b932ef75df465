"""Bounded by construction: provided masks longer or larger than their video are refused before they are allocated
(peak RSS measured in a subprocess), files of a mask are checked against the roots when opened, rows on a rejected
clip get their own outcome (and ingest returns what it records), manifests never hold an unbounded row.

The video is the corpus's good clip (40 frames of 64×96, one 17-frame clip); the big masks are compressed files of a
few hundred KB at most on disk."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.sources as sources_module
from catalog.store import Catalog
from tasks.config import SelectionOptions
from tasks.errors import InputError
from tasks.ingest import Annotation, IngestOptions, ingest_batch
from tasks.masks import MaskBounds, MaskRequest, encode_masks_rle, load_mask_frames
from tasks.segment import ProvidedSegmenter
from tasks.sources import discover_sources, within_roots
from tasks.steps.outputs import StepOutput
from tasks.types import SourceItem
from tests.corpus import CORPUS_GEOMETRY, GOOD_FPS, GOOD_FRAMES, OBJECT_ID, synth_clip, write_video


REPO = Path(__file__).resolve().parents[2]
CLIP_FRAMES = CORPUS_GEOMETRY.num_frames  # 17
HEIGHT, WIDTH = 64, 96


# ------------------------------------------------------------------------------------------------ hostile masks
def _labels(num_frames: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The good clip's labels for its frames, then empty frames up to ``num_frames``, at ``height`` × ``width``."""
    _, labels = synth_clip(GOOD_FRAMES, HEIGHT, WIDTH, seed=7)
    if (height, width) != (HEIGHT, WIDTH):
        labels = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_NEAREST) for f in labels])
    out = np.zeros((num_frames, height, width), np.uint8)
    out[: min(num_frames, GOOD_FRAMES)] = labels[:num_frames]
    return out


def _streamed_npz(path: Path, num_frames: int, height: int, width: int) -> str:
    """A VPData label map ``(num_frames, height, width)`` uint8 (the object on the first 40 frames at the video's
    size, else empty) written frame by frame into a deflated member: never held whole, small on disk."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (num_frames, height, width)})  # fmt: skip
    head = _labels(min(num_frames, GOOD_FRAMES)) if (height, width) == (HEIGHT, WIDTH) else None
    empty = bytes(height * width)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for t in range(num_frames):
                member.write(head[t].tobytes() if head is not None and t < len(head) else empty)
    return str(path)


def _png_folder(path: Path, num_frames: int, height: int, width: int) -> str:
    path.mkdir()
    labels = _labels(min(num_frames, GOOD_FRAMES), height, width) if height * width < 10**6 else None
    empty = cv2.imencode(".png", np.zeros((height, width), np.uint8))[1].tobytes()
    for t in range(num_frames):
        frame = labels[t] if labels is not None and t < len(labels) else None
        data = empty if frame is None else cv2.imencode(".png", frame)[1].tobytes()
        (path / f"{t:05d}.png").write_bytes(data)
    return str(path)


def _rle_json(path: Path, num_frames: int, height: int, width: int) -> str:
    """One object's COCO RLEs (``{"3": [...]}``), the object on the first frames, empty frames after."""
    head = _labels(min(num_frames, GOOD_FRAMES), height, width) == OBJECT_ID if height * width < 10**6 else None
    rles = encode_masks_rle(head) if head is not None else []
    empty = encode_masks_rle(np.zeros((1, height, width), bool))[0]
    rles += [empty] * (num_frames - len(rles))
    path.write_text(json.dumps({str(OBJECT_ID): rles}))
    return str(path)


WRITERS = {"npz": _streamed_npz, "png": _png_folder, "json": _rle_json}
FORMAT_SUFFIX = {"npz": ".npz", "png": "_pngs", "json": ".json"}


def _scaled(case: str) -> tuple[int, int, int, str]:
    """``(frames, height, width, reason)`` of a case ``<frames|size>x<factor>``: ``factor`` × the clip's frames (the
    video has 40), or about ``factor`` × its frame area (sides × round(√factor)) over the video's 40 frames."""
    what, factor = case.split("x")
    if what == "frames":
        return CLIP_FRAMES * int(factor), HEIGHT, WIDTH, "mask_too_long"
    side = round(math.sqrt(int(factor)))
    return GOOD_FRAMES, HEIGHT * side, WIDTH * side, "mask_too_large"


CHILD = """
import json, sys
args = json.loads(sys.argv[1])


def peak_kb():  # this interpreter's own peak: VmHWM starts afresh at exec, ru_maxrss keeps the forking parent's
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])


from catalog.store import Catalog
from tasks.ingest import IngestOptions, ingest_batch
from tasks.masks import load_masks
from tasks.segment import ProvidedSegmenter
from tasks.types import SourceItem
from tests.corpus import CORPUS_GEOMETRY

out = {}
if args["mode"] == "unbounded":  # the old loaders: the whole file, against 8 GiB only, then the label selected
    try:
        out["shape"] = list(load_masks(args["mask_uri"], args["mask_id"]).shape)
    except ValueError as exc:
        out["reason"] = getattr(exc, "reason", None)
else:
    catalog = Catalog(args["catalog"])
    item = SourceItem(uri=args["video"], mask_uri=args["mask_uri"], mask_id=args["mask_id"], label="object")
    result = ingest_batch([item], catalog, geometry=CORPUS_GEOMETRY, segmenter=ProvidedSegmenter(), run_id="rss",
                          options=IngestOptions(preset="ultrafast", record=True))
    out["maxrss_kb"] = peak_kb()  # the run's peak, before the check below
    out["failures"] = [[f.stage, f.item_kind, f.reason] for f in result.failures]
    out["objects"] = len(result.rows["objects"])
    out["table_failures"] = len(catalog.fragments("failures")) and catalog.query(
        "SELECT count(*) AS n FROM failures").to_pylist()[0]["n"]
out.setdefault("maxrss_kb", peak_kb())
print(json.dumps(out))
"""


def _child(mode: str, video: str, mask_uri: str, mask_id: int | None, catalog: Path) -> dict:
    """Run one ingest (or one unbounded load) in a fresh interpreter; its result and its own peak RSS (KiB, the
    kernel's ``VmHWM``: ``getrusage``'s ``ru_maxrss``, also ``RUSAGE_CHILDREN``, carries the pytest process's peak
    over ``fork``/``exec``, so a large test process would hide the child's)."""
    args = json.dumps({"mode": mode, "video": video, "mask_uri": mask_uri, "mask_id": mask_id,
                       "catalog": str(catalog)})  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CHILD, args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def good_rss(bad_corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same run on the good label map: its object, and the peak RSS the hostile runs are held to."""
    out = _child("ingest", bad_corpus["good"], bad_corpus["mask_id_absent"], OBJECT_ID,
                 tmp_path_factory.mktemp("rss-good"))  # fmt: skip
    assert out["objects"] == 1 and not out["failures"], out
    return out


CASES = [
    (fmt, case)
    for fmt in ("npz", "png", "json")
    for case in ("framesx10", "framesx1000", "sizex10", "sizex1000")
    if (fmt, case) != ("png", "framesx1000")  # 17,000 files: the npz and RLE cases cover 1000× frames
]


@pytest.mark.parametrize(("fmt", "case"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_a_mask_longer_or_larger_than_its_video_is_a_failure_row_at_flat_memory(
    fmt: str, case: str, bad_corpus: dict, good_rss: dict, tmp_path: Path
) -> None:
    """Negative control: before, a mask longer than its video was never refused (the ``framesx*`` cases made an
    object, as the unbounded load below still reads them) and a larger one was read whole against 8 GiB, with a
    stacked copy and a bool copy, before ``mask_shape_mismatch`` (``sizex1000``: hundreds of MB; the unbounded load
    of the npz case shows the measurement sees it)."""
    num_frames, height, width, reason = _scaled(case)
    mask = WRITERS[fmt](tmp_path / f"mask{FORMAT_SUFFIX[fmt]}", num_frames, height, width)
    out = _child("ingest", bad_corpus["good"], mask, OBJECT_ID, tmp_path / "catalog")
    assert out["failures"] == [["segment", "mask", reason]] and out["objects"] == 0, out
    assert out["table_failures"] == 1
    assert out["maxrss_kb"] <= 1.5 * good_rss["maxrss_kb"], (out["maxrss_kb"], good_rss["maxrss_kb"])
    if case == "framesx10":  # the old path: without the video's bounds the same file loads, and makes a mask
        labels, _ = load_mask_frames(mask, range(0, 33, 2), mask_id=OBJECT_ID)
        assert labels.shape == (CLIP_FRAMES, HEIGHT, WIDTH) and labels.any()
    if (fmt, case) == ("npz", "sizex1000"):  # the measurement sees a whole-file load of the same mask
        unbounded = _child("unbounded", bad_corpus["good"], mask, OBJECT_ID, tmp_path / "unbounded")
        assert unbounded["reason"] == "mask_id_absent"  # read whole (and searched) before the id was found absent
        assert unbounded["maxrss_kb"] > 1.5 * good_rss["maxrss_kb"], (unbounded, good_rss)


def test_the_bounds_follow_the_video_and_its_rotation() -> None:
    bounds = MaskBounds(num_frames=40, height=64, width=96, rotation=90)
    bounds.check("m", 40, 64, 96)
    bounds.check("m", 12, 96, 64)  # the coded orientation of a rotated video
    for frames, height, width, reason in ((41, 64, 96, "mask_too_long"), (40, 64, 97, "mask_too_large"),
                                          (40, 32, 48, "mask_shape_mismatch"), (10**9, 10**5, 10**5, "mask_too_large")):  # fmt: skip
        with pytest.raises(InputError) as err:
            bounds.check("m", frames, height, width)
        assert err.value.reason == reason
    with pytest.raises(InputError) as err:
        MaskBounds(40, 64, 96).check("m", 40, 96, 64)  # not rotated: the transposed size is another size
    assert err.value.reason == "mask_shape_mismatch"


def test_a_packed_vpf_mask_and_a_zip_directory_bomb_are_refused_before_reading(tmp_path: Path) -> None:
    from tasks.masks import encode_masks_npz

    bounds = MaskBounds(40, HEIGHT, WIDTH)
    long = tmp_path / "long_vpf.npz"
    long.write_bytes(encode_masks_npz(np.zeros((400, HEIGHT, WIDTH), bool)))
    with pytest.raises(InputError) as err:
        load_mask_frames(str(long), range(17), request=MaskRequest(bounds=bounds))
    assert err.value.reason == "mask_too_long"
    good = tmp_path / "vpf.npz"
    masks = _labels(40) == OBJECT_ID
    good.write_bytes(encode_masks_npz(masks))  # frames of 64×96 bits straddle bytes: read frame by frame
    picked, _ = load_mask_frames(str(good), range(3, 37, 2), request=MaskRequest(bounds=bounds))
    np.testing.assert_array_equal(picked, masks[3:37:2])
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("arr_0.npy", b"")
        for i in range(200):
            archive.writestr(f"x{i}", b"")
    (tmp_path / "bomb.npz").write_bytes(bomb.getvalue())
    with pytest.raises(InputError) as err:
        load_mask_frames(str(tmp_path / "bomb.npz"))
    assert err.value.reason == "bad_mask" and "201 members" in str(err.value)


# ------------------------------------------------------------------------------------------------ roots at open time
def _tree(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    """root/video.mp4 and root/outside-linked PNG folders; outside/ holds real PNG frames."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    frames, labels = synth_clip(GOOD_FRAMES, HEIGHT, WIDTH, seed=7)
    write_video(root / "video.mp4", frames, GOOD_FPS)
    masks = [((f == OBJECT_ID) * 255).astype(np.uint8) for f in labels]
    for t, mask in enumerate(masks):
        cv2.imwrite(str(outside / f"{t:05d}.png"), mask)
    return root, outside, masks


def test_a_png_folder_whose_files_link_outside_the_root_is_refused(tmp_path: Path) -> None:
    """Negative control: the folder itself lies inside the root (the only thing checked before), and the same folder
    with real files inside the root makes its object."""
    root, outside, masks = _tree(tmp_path)
    linked, copied = root / "linked_masks", root / "copied_masks"
    linked.mkdir()
    copied.mkdir()
    for t, mask in enumerate(masks):
        os.symlink(outside / f"{t:05d}.png", linked / f"{t:05d}.png")
        cv2.imwrite(str(copied / f"{t:05d}.png"), mask)
    manifest = root / "manifest.csv"
    manifest.write_text("uri,mask_uri,caption\nvideo.mp4,linked_masks,linked\nvideo.mp4,copied_masks,copied\n")
    items, failures = discover_sources(str(manifest), roots=[str(root)])
    assert not failures and len(items) == 2 and all(item.roots == (str(root),) for item in items)
    assert within_roots(str(linked), [str(root)])  # what was checked before: the folder
    result = ingest_batch(items, Catalog(tmp_path / "catalog"), geometry=CORPUS_GEOMETRY, run_id="roots",
                          segmenter=ProvidedSegmenter(), options=IngestOptions(preset="ultrafast"))  # fmt: skip
    (failure,) = result.failures
    assert (failure.stage, failure.item_kind, failure.reason) == ("segment", "mask", "outside_roots")
    assert "linked_masks" in failure.message
    (obj,) = result.rows["objects"]  # only the copied folder's object: no pair can come from the linked one
    assert obj["caption"] == "copied" and obj["qa_status"] == "ok"


def test_a_file_swapped_for_a_link_after_discovery_is_refused_when_opened(tmp_path: Path) -> None:
    """A sibling mask and a video that were inside the root at discovery, replaced by links leaving it before ingest
    opens them: both refused with ``outside_roots`` (before, only discovery checked them)."""
    root, outside, _ = _tree(tmp_path)
    _, labels = synth_clip(GOOD_FRAMES, HEIGHT, WIDTH, seed=7)
    np.savez_compressed(root / "video_masks.npz", labels)
    np.savez_compressed(outside / "elsewhere.npz", labels)
    items, failures = discover_sources(str(root), roots=[str(root)])
    assert not failures and items[0].mask_uri == str(root / "video_masks.npz")
    os.replace(root / "video_masks.npz", root / "old.npz")
    os.symlink(outside / "elsewhere.npz", root / "video_masks.npz")
    result = ingest_batch(items, Catalog(tmp_path / "catalog"), geometry=CORPUS_GEOMETRY, run_id="swap",
                          segmenter=ProvidedSegmenter(), options=IngestOptions(preset="ultrafast"))  # fmt: skip
    assert [(f.stage, f.reason) for f in result.failures] == [("segment", "outside_roots")]
    assert not result.rows["objects"]
    os.replace(root / "video.mp4", outside / "video.mp4")
    os.symlink(outside / "video.mp4", root / "video.mp4")
    result = ingest_batch(items, Catalog(tmp_path / "catalog2"), geometry=CORPUS_GEOMETRY, run_id="swap",
                          segmenter=ProvidedSegmenter(), options=IngestOptions(preset="ultrafast"))  # fmt: skip
    assert [(f.stage, f.item_kind, f.reason) for f in result.failures] == [("ingest", "source", "outside_roots")]
    assert not result.rows["clips"]


# ------------------------------------------------------------------------------------------------ rejected clips
def test_rows_on_a_rejected_clip_get_their_outcome_and_the_counts_match_the_table(tmp_path: Path) -> None:
    """A frozen clip (rejected: ``min_frame_diff`` asked for explicitly) with a good label map, a corrupt mask (named by
    two rows) and a mask of the wrong shape. Negative control: before, ``if not selected: break`` skipped every row
    of a rejected clip, so neither bad mask had a failure row and the good row had no outcome; and a failure met
    twice was returned twice but recorded once (its id is stage + item + reason), so the run's count exceeded the
    table."""
    from flows.build_pairs import RunTally

    frames, labels = synth_clip(GOOD_FRAMES, HEIGHT, WIDTH, seed=7)
    video = write_video(tmp_path / "frozen.mp4", np.repeat(frames[:1], GOOD_FRAMES, axis=0), GOOD_FPS)
    np.savez_compressed(tmp_path / "good.npz", labels)
    np.savez_compressed(tmp_path / "small.npz", labels[:, ::2, ::2])
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    items = [SourceItem(uri=video, mask_uri=str(tmp_path / name), mask_id=OBJECT_ID, caption=caption)
             for name, caption in (("good.npz", "good"), ("corrupt.npz", "a"), ("corrupt.npz", "b"),
                                   ("small.npz", "small"))]  # fmt: skip
    catalog = Catalog(tmp_path / "catalog")
    result = ingest_batch(items, catalog, geometry=CORPUS_GEOMETRY, segmenter=ProvidedSegmenter(), run_id="frozen",
                          annotation=Annotation(selection=SelectionOptions(min_frame_diff=1e-4)),
                          options=IngestOptions(preset="ultrafast", record=True))  # fmt: skip
    (clip,) = result.rows["clips"]
    assert clip["selection"] == "rejected" and clip["selection_reasons"][0] == "static_clip"
    got = sorted((f.stage, f.item_kind, f.reason, os.path.basename(f.item_id.split("#")[0])) for f in result.failures)
    assert [g[:3] for g in got] == [
        ("segment", "mask", "bad_mask"),  # both rows naming the corrupt mask: one failure
        ("segment", "mask", "mask_shape_mismatch"),
        ("select", "clip", "static_clip"),
        ("select", "object", "static_clip"),  # the good row's object, not made
    ]
    assert "corrupt.npz" == got[0][3] and "small.npz" == got[1][3]
    assert not result.rows["objects"]
    table = catalog.query("SELECT stage, item_kind, reason FROM failures WHERE run_id = 'frozen'").to_pylist()
    assert sorted((r["stage"], r["item_kind"], r["reason"]) for r in table) == [g[:3] for g in got]
    tally = RunTally("frozen")
    tally.ingested(StepOutput(rows=result.rows, failures=list(result.failures)))  # as tasks.steps.ingest returns
    assert tally.counts["failures"] == len(table) == 4


# ------------------------------------------------------------------------------------------------ manifests
def test_manifest_rows_are_bounded_and_one_bad_row_fails_alone(tmp_path: Path, monkeypatch) -> None:
    """An overlong CSV line, a cell over the csv module's field limit and an overlong JSONL line fail as their rows
    (``bad_row``); a Parquet row group declaring more than the limit fails its rows. Negative control: before, the
    CSV field error escaped ``discover_sources`` (the whole run stopped) and every manifest was read whole."""
    frames, _ = synth_clip(GOOD_FRAMES, HEIGHT, WIDTH, seed=7)
    write_video(tmp_path / "v.mp4", frames, GOOD_FPS)
    big = "x" * 200_000  # over csv.field_size_limit(), under a line's limit
    (tmp_path / "m.csv").write_text(f'uri,caption\nv.mp4,first\nv.mp4,"{big}"\nv.mp4,last\n')
    items, failures = discover_sources(str(tmp_path / "m.csv"))
    assert [i.caption for i in items] == ["first", "last"]
    assert [(f.reason, f.item_id.rsplit("#", 1)[1]) for f in failures] == [("bad_row", "row=1")]
    monkeypatch.setattr(sources_module, "MAX_MANIFEST_LINE_CHARS", 4096)
    (tmp_path / "m.csv").write_text(f"uri,caption\nv.mp4,first\nv.mp4,{'y' * 5000}\nv.mp4,last\n")
    items, failures = discover_sources(str(tmp_path / "m.csv"))
    assert [i.caption for i in items] == ["first", "last"]
    assert [(f.reason, f.item_id.rsplit("#", 1)[1]) for f in failures] == [("bad_row", "row=1")]
    (tmp_path / "m.jsonl").write_text('{"uri": "v.mp4", "caption": "a"}\n{"uri": "' + "z" * 5000 + '"}\n'
                                      '{"uri": "v.mp4", "caption": "b"}\n')  # fmt: skip
    items, failures = discover_sources(str(tmp_path / "m.jsonl"))
    assert [i.caption for i in items] == ["a", "b"] and [f.reason for f in failures] == ["bad_row"]
    table = pa.Table.from_pylist([{"uri": "v.mp4", "caption": f"row {i}"} for i in range(6)])
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=3)
    small = pq.ParquetFile(tmp_path / "m.parquet").metadata.row_group(0).total_byte_size
    monkeypatch.setattr(sources_module, "MAX_PARQUET_ROW_GROUP_BYTES", small - 1)
    items, failures = discover_sources(str(tmp_path / "m.parquet"))
    assert not items and [f.reason for f in failures] == ["bad_row", "bad_row"]  # one per refused row group
    monkeypatch.setattr(sources_module, "MAX_PARQUET_ROW_GROUP_BYTES", 1 << 20)
    items, failures = discover_sources(str(tmp_path / "m.parquet"))
    assert [i.caption for i in items] == [f"row {i}" for i in range(6)] and not failures
