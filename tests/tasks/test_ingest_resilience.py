"""Ingest that survives its inputs: per-item isolation, per-clip durability, resume, and per-row captions/labels."""

from __future__ import annotations

import numpy as np
import pytest

import tasks.ingest as ingest_module
from catalog.store import Catalog
from tasks.ingest import IngestOptions, ingest_batch
from tasks.proposers import get_proposer
from tasks.segment import ProvidedSegmenter
from tasks.steps.propose import propose
from tasks.types import SourceItem
from tests.corpus import CORPUS_GEOMETRY, OBJECT_ID, OTHER_ID


def _ingest(items: list[SourceItem], catalog: Catalog, segmenter=None, **options):
    return ingest_batch(items, catalog, geometry=CORPUS_GEOMETRY, run_id="r", segmenter=segmenter or ProvidedSegmenter(),
                        options=IngestOptions(preset="ultrafast", **options))  # fmt: skip


def _raw_ids(catalog: Catalog, table: str) -> list[str]:
    import pyarrow.parquet as pq

    key = f"{table[:-1]}_id"
    return [
        v for p in catalog.fragments(table) for v in pq.read_table(catalog.fs.open(p, "rb")).column(key).to_pylist()
    ]


# ------------------------------------------------------------------------------------------------ per-row attributes
def test_rows_sharing_a_video_keep_their_own_caption_and_label(bad_corpus: dict, catalog: Catalog) -> None:
    """Two manifest rows on one video (one clip), different objects, captions and labels: each object carries its
    own row's caption and label, and the proposer is asked with that caption, not the first row's."""
    masks = bad_corpus["mask_id_absent"]  # the good clip's label map
    items = [
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="square", caption="a red square"),
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OTHER_ID, label="patch", caption="a blue patch"),
    ]
    result = _ingest(items, catalog)
    assert len(result.rows["clips"]) == 1 and not result.failures
    by_label = {r["label"]: r for r in result.rows["objects"]}
    assert by_label["square"]["caption"] == "a red square" and by_label["square"]["mask_id"] == OBJECT_ID
    assert by_label["patch"]["caption"] == "a blue patch" and by_label["patch"]["mask_id"] == OTHER_ID

    seen = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def propose(self, requests):
            seen.extend((r.label, r.caption) for r in requests)
            return self.inner.propose(requests)

    proposer = get_proposer("template")
    proposer.setup()
    out = propose(result.rows["objects"], result.rows["clips"], Recording(proposer), edit_types=["remove"], seed=0,
                  run_id="r")  # fmt: skip
    assert sorted(seen) == [("patch", "a blue patch"), ("square", "a red square")]
    by_object = {i["object_id"]: i for i in out.rows["instructions"]}
    assert by_object[by_label["square"]["object_id"]]["source_caption"] == "a red square"
    assert by_object[by_label["patch"]["object_id"]]["source_caption"] == "a blue patch"


def test_same_mask_with_different_labels_makes_one_object_per_row(bad_corpus: dict, catalog: Catalog) -> None:
    masks = bad_corpus["mask_id_absent"]
    items = [
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="square", caption="one"),
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="box", caption="two"),
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="box", caption="two"),  # repeat
    ]
    result = _ingest(items, catalog, record=True)
    rows = {r["object_id"]: (r["label"], r["caption"]) for r in result.rows["objects"]}
    assert sorted(rows.values()) == [("box", "two"), ("square", "one")]
    assert sorted(_raw_ids(catalog, "objects")) == sorted(rows)  # the identical repeat is the same object, once


# ------------------------------------------------------------------------------------------------ durability, resume
def test_each_clip_is_recorded_when_done_and_a_rerun_decodes_nothing(good_clips: dict, catalog: Catalog,
                                                                     monkeypatch) -> None:  # fmt: skip
    items = [
        SourceItem(uri=v, mask_uri=m, mask_id=OBJECT_ID, label="square", caption=f"clip {i}")
        for i, (v, m) in enumerate(zip(good_clips["videos"], good_clips["masks"], strict=True))
    ]
    recorded_at_clip: list[int] = []
    real_iter, real_detect = ingest_module.iter_clips, ingest_module.detect_scenes
    real_frames, real_scenes = ingest_module.iter_frames, ingest_module.scenes_in_frames

    def watching_iter(*args, **kwargs):  # how many clips the catalog holds when each next clip is decoded
        for clip in real_iter(*args, **kwargs):
            recorded_at_clip.append(len(_raw_ids(catalog, "clips")))
            yield clip

    monkeypatch.setattr(ingest_module, "iter_clips", watching_iter)
    first = _ingest(items, catalog, record=True)
    assert recorded_at_clip == [0, 1], "the first clip was not in the catalog before the second was decoded"
    assert len(_raw_ids(catalog, "clips")) == 2 and len(_raw_ids(catalog, "objects")) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("a source whose clips are all in the catalog was decoded again")

    monkeypatch.setattr(ingest_module, "iter_clips", no_decoding)
    monkeypatch.setattr(ingest_module, "detect_scenes", no_decoding)  # every clip of each plan is there: no split
    monkeypatch.setattr(ingest_module, "iter_frames", no_decoding)  # (short sources split on decoded frames)
    fragments = {t: len(catalog.fragments(t)) for t in ("sources", "clips", "objects")}
    second = _ingest(items, catalog, record=True)
    assert second.skipped_clips == 2 and not second.failures
    assert {t: len(catalog.fragments(t)) for t in fragments} == fragments, "a rerun wrote rows again"
    for table, key in (("clips", "clip_id"), ("objects", "object_id")):
        assert sorted(r[key] for r in second.rows[table]) == sorted(r[key] for r in first.rows[table])
    assert {r["caption"] for r in second.rows["objects"]} == {"clip 0", "clip 1"}

    # negative control: other scene settings are another plan, so the sources are split again (their clips, with
    # the same ids, are still not decoded)
    detected = []
    monkeypatch.setattr(
        ingest_module, "detect_scenes", lambda uri, **kw: detected.append(uri) or real_detect(uri, **kw)
    )
    monkeypatch.setattr(ingest_module, "iter_frames", real_frames)
    monkeypatch.setattr(
        ingest_module, "scenes_in_frames", lambda frames, **kw: detected.append(kw["uri"]) or real_scenes(frames, **kw)
    )
    third = _ingest(items, catalog, record=True, scene_threshold=30.0)
    assert sorted(detected) == sorted(good_clips["videos"]) and third.skipped_clips == 2


def test_a_resumed_clip_segments_only_the_rows_it_lacks(bad_corpus: dict, catalog: Catalog) -> None:
    masks = bad_corpus["mask_id_absent"]
    first_row = SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="square")
    second_row = SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OTHER_ID, label="patch")
    _ingest([first_row], catalog, record=True)  # as if killed before the second row's object was recorded

    class Counting(ProvidedSegmenter):
        calls: list[str | None] = []

        def segment(self, clip, *, video=None):
            Counting.calls.append(clip.item.label)
            return super().segment(clip, video=video)

    original = ingest_module.ProvidedSegmenter
    ingest_module.ProvidedSegmenter = Counting
    try:
        result = _ingest([first_row, second_row], catalog, record=True)
    finally:
        ingest_module.ProvidedSegmenter = original
    assert Counting.calls == ["patch"]
    assert sorted(r["label"] for r in result.rows["objects"]) == ["patch", "square"]
    assert len(_raw_ids(catalog, "clips")) == 1 and len(_raw_ids(catalog, "objects")) == 2


# ------------------------------------------------------------------------------------------------ isolation
def test_an_unexpected_exception_fails_only_its_item(bad_corpus: dict, good_clips: dict, catalog: Catalog,
                                                     monkeypatch) -> None:  # fmt: skip
    """A bug-like exception in one source (scene detection) and in one row's segmentation: failure rows naming the
    input, stage and exception; the other rows still give objects."""
    broken_video, fine_video = good_clips["videos"]
    real_scenes = ingest_module.scenes_in_frames

    def scenes(frames, **kwargs):  # (these short sources are split on the frames decoded for their clips)
        if kwargs["uri"] == broken_video:
            raise ZeroDivisionError("scene detector blew up")
        return real_scenes(frames, **kwargs)

    monkeypatch.setattr(ingest_module, "scenes_in_frames", scenes)
    monkeypatch.setattr(ingest_module, "detect_scenes", lambda *a, **k: pytest.fail("short sources: one pass"))
    real_segment = ProvidedSegmenter.segment

    def segment(self, clip, *, video=None):
        if clip.item.label == "cursed":
            raise KeyError("segmenter bug")
        return real_segment(self, clip, video=video)

    monkeypatch.setattr(ProvidedSegmenter, "segment", segment)
    masks = bad_corpus["mask_id_absent"]
    items = [
        SourceItem(uri=broken_video, mask_uri=good_clips["masks"][0], mask_id=OBJECT_ID),
        SourceItem(uri=fine_video, mask_uri=good_clips["masks"][1], mask_id=OBJECT_ID, label="fine"),
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OBJECT_ID, label="cursed"),
        SourceItem(uri=bad_corpus["good"], mask_uri=masks, mask_id=OTHER_ID, label="blessed"),
    ]
    result = _ingest(items, catalog, record=True)
    assert sorted(r["label"] for r in result.rows["objects"]) == ["blessed", "fine"]
    failures = {(f.stage, f.item_kind, f.reason, f.error_type): f for f in result.failures}
    assert set(failures) == {
        ("ingest", "source", "unexpected_error", "ZeroDivisionError"),
        ("segment", "mask", "unexpected_error", "KeyError"),
    }
    source_failure = failures[("ingest", "source", "unexpected_error", "ZeroDivisionError")]
    assert source_failure.item_id == broken_video and "scene detector blew up" in source_failure.message
    mask_failure = failures[("segment", "mask", "unexpected_error", "KeyError")]
    assert mask_failure.item_id == f"{masks}#mask_id={OBJECT_ID}" and "segmenter bug" in mask_failure.message
    recorded = catalog.query("SELECT stage, reason, item_id FROM failures").to_pylist()
    assert len(recorded) == 2 and {f["item_id"] for f in recorded} == {broken_video, mask_failure.item_id}


def test_a_catalog_that_cannot_be_written_fails_the_run(good_clips: dict, catalog: Catalog, monkeypatch) -> None:
    """Not an item's fault: storing media fails → the exception propagates (the task's I/O retries apply)."""

    def broken(*args, **kwargs):
        raise PermissionError("catalog is read-only")

    monkeypatch.setattr(catalog, "put_media", broken)
    item = SourceItem(uri=good_clips["videos"][0], mask_uri=good_clips["masks"][0], mask_id=OBJECT_ID)
    with pytest.raises(PermissionError, match="read-only"):
        _ingest([item], catalog)


def test_segmenter_that_fails_to_load_fails_the_run(good_clips: dict, catalog: Catalog) -> None:
    class Unloadable(ProvidedSegmenter):
        def setup(self) -> None:
            raise RuntimeError("no weights at /models/sam.pth")

    item = SourceItem(uri=good_clips["videos"][0])  # no mask: the segmenter is needed
    with pytest.raises(RuntimeError, match="no weights"):
        _ingest([item], catalog, segmenter=Unloadable())


def test_masks_are_never_unpickled(tmp_path, bad_corpus: dict, catalog: Catalog) -> None:
    """A mask npz holding a pickled object whose unpickling would leave a file: refused, the file never appears."""
    marker = tmp_path / "unpickled"
    array = np.empty(1, dtype=object)
    array[0] = _Trap(str(marker))
    path = tmp_path / "trap_masks.npz"
    np.savez(path, arr_0=array)  # np.savez pickles object arrays
    result = _ingest([SourceItem(uri=bad_corpus["good"], mask_uri=str(path), mask_id=1)], catalog)
    assert not marker.exists()
    (failure,) = result.failures
    assert (failure.stage, failure.reason) == ("segment", "bad_mask") and str(path) in failure.item_id
    assert "dtype object" in failure.message


class _Trap:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
