"""Hypothesis-driven damaged inputs: mask files and manifests. Each one becomes a failure row naming it (or, when the
damage happens to leave a valid file, an object); nothing escapes as an exception, and the good row still gives its
object. Sized for CI: tiny clips (17×64×96) and a few dozen examples."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.store import Catalog
from tasks.errors import InputError
from tasks.ingest import IngestOptions, ingest_batch, item_row_key
from tasks.masks import MaskBounds, MaskRequest, encode_masks_npz, load_mask_frames, read_npz_masks
from tasks.segment import ProvidedSegmenter
from tasks.sources import discover_sources
from tasks.types import SourceItem
from tests.corpus import CORPUS_GEOMETRY, OBJECT_ID


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=True,  # the same examples on every CI run; a new damage kind is a new strategy, not luck
)


# ------------------------------------------------------------------------------------------------ damaged mask files
def _npy(header_dtype: str, shape: tuple, data: bytes) -> bytes:
    """A ``.npy`` member with any header (shape, dtype) and any data, whatever they claim."""
    header = {"descr": header_dtype, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _good_labels() -> np.ndarray:
    labels = np.zeros((4, 16, 24), np.uint8)  # small, so that damage lands in headers as often as in data
    labels[:, 4:10, 5:15] = OBJECT_ID
    return labels


def _saved(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=array, **kwargs)
    return buffer.getvalue()


GOOD_NPZ = _saved(_good_labels())

random_bytes = st.binary(min_size=0, max_size=2048).map(lambda b: ("random_bytes", b))
empty_file = st.just(("empty_file", b""))
zip_prefix_garbage = st.binary(max_size=512).map(lambda b: ("zip_magic_garbage", b"PK\x03\x04" + b))
truncated = st.integers(0, len(GOOD_NPZ) - 1).map(lambda n: ("truncated_archive", GOOD_NPZ[:n]))


def _flip(bits: set[int]) -> bytes:
    data = bytearray(GOOD_NPZ)
    for i in bits:
        data[i // 8] ^= 1 << (i % 8)
    return bytes(data)


bit_flips = st.sets(st.integers(0, len(GOOD_NPZ) * 8 - 1), min_size=1, max_size=8).map(
    lambda bits: ("bit_flips", _flip(bits))
)
wrong_members = st.dictionaries(
    st.sampled_from(["labels.npy", "arr_1.npy", "mask.npy", "readme.txt", "a/b.npy", "shape.npy"]),
    st.binary(max_size=64),
    max_size=3,
).map(lambda m: ("wrong_members", _zip(m)))
two_arrays = st.just(("ambiguous_members", _saved(_good_labels(), other=_good_labels())))
pickled = st.sampled_from([[1, 2], {"a": 1}, "labels"]).map(
    lambda v: ("pickled_object", _saved(np.array([v, None], dtype=object)))
)
wrong_dtype = st.sampled_from(["<f4", "<f8", "<c8", "<U4", "|S3", "<M8[s]", "|V8"]).map(
    lambda d: ("wrong_dtype", _zip({"arr_0.npy": _npy(d, (2, 4, 4), b"\0" * 2 * 4 * 4 * np.dtype(d).itemsize)}))
)
wrong_ndim = (
    st.lists(st.integers(1, 6), min_size=0, max_size=5)
    .filter(lambda s: len(s) != 3)
    .map(lambda s: ("wrong_shape", _zip({"arr_0.npy": _npy("|u1", tuple(s), b"\1" * int(np.prod(s)))})))
)
huge_dims = st.tuples(st.integers(10**5, 10**9), st.integers(10**4, 10**7), st.integers(10**4, 10**7)).map(
    lambda s: ("huge_declared_dims", _zip({"arr_0.npy": _npy("|u1", s, b"\3" * 64)}))
)
short_data = st.integers(0, 4 * 16 * 24 - 1).map(
    lambda n: ("short_data", _zip({"arr_0.npy": _npy("|u1", (4, 16, 24), b"\3" * n)}))
)
bad_packed = st.tuples(st.lists(st.integers(-5, 10**7), max_size=4), st.binary(max_size=32)).map(
    lambda p: ("bad_packed", _zip({
        "packed.npy": _npy("|u1", (len(p[1]),), p[1]),
        "shape.npy": _npy("<i8", (len(p[0]),), np.asarray(p[0], np.int64).tobytes()),
    }))
)  # fmt: skip

DAMAGED_MASKS = st.one_of(
    random_bytes, empty_file, zip_prefix_garbage, truncated, bit_flips, wrong_members, two_arrays, pickled,
    wrong_dtype, wrong_ndim, huge_dims, short_data, bad_packed,
)  # fmt: skip


@settings(FUZZ, max_examples=200)
@given(DAMAGED_MASKS)
def test_a_damaged_mask_file_is_refused_by_name_or_read_as_a_label_map(case: tuple[str, bytes]) -> None:
    kind, data = case
    try:
        labels = read_npz_masks(data, "fuzz://masks.npz")
    except InputError as exc:
        assert exc.input == "fuzz://masks.npz" and exc.reason in ("bad_mask", "mask_too_large"), (kind, exc)
        return
    # damage that can leave a well-formed archive may pass, and then only as a sane (frames, height, width) array
    assert kind not in ("empty_file", "pickled_object", "wrong_dtype", "wrong_shape", "huge_declared_dims"), kind
    assert labels.ndim == 3 and labels.dtype.kind in "biu"


@settings(FUZZ, max_examples=100)
@given(DAMAGED_MASKS)
def test_a_damaged_mask_read_against_its_video_is_refused_by_name_or_fits_it(case: tuple[str, bytes]) -> None:
    """The same damage read as ingest reads it: only a clip's frames, the header checked against the video's
    bounds (here the good map's 4 frames of 16×24) before anything is allocated."""
    kind, data = case
    bounds = MaskBounds(num_frames=4, height=16, width=24)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "masks.npz")
        Path(path).write_bytes(data)
        try:
            labels, _ = load_mask_frames(path, range(0, 4, 2), mask_id=OBJECT_ID, request=MaskRequest(bounds=bounds))
        except InputError as exc:
            reasons = ("bad_mask", "mask_too_large", "mask_too_long", "mask_shape_mismatch", "mask_frames_mismatch")
            assert exc.input == path and exc.reason in reasons, (kind, exc)
            return
    assert kind not in ("empty_file", "pickled_object", "wrong_dtype", "wrong_shape", "huge_declared_dims"), kind
    assert labels.shape == (2, 16, 24) and labels.dtype.kind in "biu"


def test_the_refusals_give_their_reason() -> None:
    cases = {
        "random_bytes": (b"\x93NUMPY garbage", "bad_mask"),
        "empty_file": (b"", "bad_mask"),
        "missing_member": (_zip({"labels.npy": b"x"}), "bad_mask"),
        "pickled": (_saved(np.array([{"a": 1}], dtype=object)), "bad_mask"),
        "float": (_zip({"arr_0.npy": _npy("<f4", (1, 2, 2), b"\0" * 16)}), "bad_mask"),
        "2-d": (_zip({"arr_0.npy": _npy("|u1", (2, 2), b"\0" * 4)}), "bad_mask"),
        "huge": (_zip({"arr_0.npy": _npy("|u1", (10**6, 10**5, 10**5), b"")}), "mask_too_large"),
        "short": (_zip({"arr_0.npy": _npy("|u1", (2, 4, 4), b"\0" * 5)}), "bad_mask"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(InputError) as info:
            read_npz_masks(data, f"mem://{name}.npz")
        assert info.value.reason == reason, (name, info.value)
    # negative controls: the formats we write and VPData writes are read
    assert read_npz_masks(GOOD_NPZ, "good").shape == (4, 16, 24)
    ones = np.ones((3, 4, 5), bool)
    assert (read_npz_masks(encode_masks_npz(ones), "vpf") == ones).all()


@pytest.fixture(scope="module")
def shared_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return Catalog(tmp_path_factory.mktemp("fuzz-catalog"))


@settings(FUZZ, max_examples=12)
@given(cases=st.lists(DAMAGED_MASKS, min_size=1, max_size=4))
def test_damaged_masks_become_failures_and_the_good_row_gives_its_object(
    cases: list[tuple[str, bytes]], bad_corpus: dict, shared_catalog: Catalog, tmp_path_factory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz-masks")
    items = [SourceItem(uri=bad_corpus["good"], mask_uri=bad_corpus["mask_id_absent"], mask_id=OBJECT_ID,
                        label="good", caption=f"good {uuid.uuid4().hex}")]  # fmt: skip
    for i, (kind, data) in enumerate(cases):
        path = folder / f"{i}_{kind}.npz"
        path.write_bytes(data)
        items.append(SourceItem(uri=bad_corpus["good"], mask_uri=str(path), mask_id=OBJECT_ID, label=f"fuzz {i}"))
    result = ingest_batch(items, shared_catalog, geometry=CORPUS_GEOMETRY, segmenter=ProvidedSegmenter(),
                          run_id="fuzz", options=IngestOptions(preset="ultrafast", record=True))  # fmt: skip
    keys = {r["row_key"] for r in result.rows["objects"]}
    assert item_row_key(items[0], ProvidedSegmenter()) in keys, "the good row lost its object"
    for item in items[1:]:
        named = [f for f in result.failures if item.mask_uri in f.item_id and item.mask_uri in f.message]
        assert named or item_row_key(item, ProvidedSegmenter()) in keys, (item.mask_uri, result.failures)
        assert all(f.stage == "segment" for f in named)


# ------------------------------------------------------------------------------------------------ damaged manifests
cell_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
numberish = st.one_of(
    st.none(), st.integers(-(10**20), 10**20).map(str), st.floats(allow_nan=True).map(str), cell_text,
    st.sampled_from(["0", "8", "17", "39", "1e400", "-1", "nan", "inf", "3.5"]),
)  # fmt: skip
URIS = ["good.mp4", "missing.mp4", "notes.mp4", "zero_byte.mp4", "", "../outside/elsewhere.mp4", "good_masks.npz"]
MASKS = ["good_masks.npz", "small_masks.npz", "full_frame.json", "empty_png_masks", "missing.npz", "notes.mp4", ""]
manifest_row = st.fixed_dictionaries(
    {
        "uri": st.one_of(st.sampled_from(URIS), cell_text),
        "start_frame": numberish,
        "end_frame": numberish,
        "caption": st.one_of(st.none(), cell_text),
        "mask_uri": st.one_of(st.sampled_from(MASKS), cell_text),
        "mask_id": numberish,
        "label": st.one_of(st.none(), cell_text),
        "box": st.one_of(st.none(), cell_text, st.just("1,2,30,40"), st.just("5,5,1,1")),
    }
)


@settings(FUZZ, max_examples=15)
@given(rows=st.lists(manifest_row, min_size=1, max_size=6))
def test_a_fuzzed_manifest_never_stops_the_batch(rows: list[dict], bad_corpus: dict, shared_catalog: Catalog) -> None:
    root = Path(bad_corpus["root"])
    manifest = root / f"fuzz_{uuid.uuid4().hex[:8]}.csv"
    good = {"uri": "good.mp4", "mask_uri": "good_masks.npz", "mask_id": str(OBJECT_ID), "label": "good",
            "caption": "the good row"}  # fmt: skip
    columns = ["uri", "start_frame", "end_frame", "caption", "mask_uri", "mask_id", "label", "box"]
    try:
        with manifest.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in [good, *rows]:
                writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
        items, discovered = discover_sources(str(manifest), roots=[str(root)])
        result = ingest_batch(items, shared_catalog, geometry=CORPUS_GEOMETRY, segmenter=ProvidedSegmenter(),
                              run_id="fuzz", options=IngestOptions(preset="ultrafast", record=True))  # fmt: skip
    finally:
        os.unlink(manifest)
    assert len(items) + len(discovered) == 1 + len(rows), "a manifest row is neither an item nor a failure"
    failures = discovered + result.failures
    keys = {r["row_key"] for r in result.rows["objects"]}
    good_items = [it for it in items if it.caption == "the good row" and it.label == "good"]
    assert good_items and item_row_key(good_items[0], ProvidedSegmenter()) in keys, "the good row lost its object"
    for item in items:  # every row that discovery let through: an object, or a failure naming its video or mask
        named = [f for f in failures if item.uri in f.item_id or (item.mask_uri and item.mask_uri in f.item_id)]
        assert item_row_key(item, ProvidedSegmenter()) in keys or named, (item, [f.message for f in failures])
    assert all(f.message and f.reason for f in failures)
