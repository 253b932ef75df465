"""tasks/ingest.py end to end: the bad-input corpus, real footage, provided and SAM masks, catalog rows and media."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from catalog.ids import sha256_bytes, source_id
from catalog.store import Catalog
from tasks.ingest import IngestOptions, ingest_batch
from tasks.masks import decode_masks_npz
from tasks.segment import ProvidedSegmenter, SamSegmenter
from tasks.sources import discover_sources
from tasks.types import Geometry, SourceItem
from tasks.video_io import fit_frame, probe_video, read_frames
from tests.corpus import BAD_CORPUS_EXPECTED, CORPUS_GEOMETRY, OBJECT_ID, OTHER_ID
from tests.tasks.conftest import TINY, build_tiny_sam


@pytest.fixture(scope="module")
def corpus_run(bad_corpus: dict, tmp_path_factory: pytest.TempPathFactory):
    """Discover the corpus manifest (with roots) and ingest every row that discovery let through, in one batch."""
    catalog = Catalog(tmp_path_factory.mktemp("corpus-catalog"))
    items, discovery_failures = discover_sources(bad_corpus["manifest"], roots=[bad_corpus["root"]])
    result = ingest_batch(
        items,
        catalog,
        geometry=CORPUS_GEOMETRY,
        segmenter=ProvidedSegmenter(),
        run_id="run-corpus",
        options=IngestOptions(preset="ultrafast"),
    )
    return catalog, items, discovery_failures + result.failures, result


ROW_CASES = [name for name in BAD_CORPUS_EXPECTED if name not in ("extra_column", "missing_column")]


@pytest.mark.parametrize("name", ROW_CASES)
def test_each_bad_input_is_a_named_failure_or_is_handled(corpus_run, bad_corpus: dict, name: str) -> None:
    catalog, _, failures, result = corpus_run
    expected = BAD_CORPUS_EXPECTED[name]
    needle = os.path.basename(bad_corpus[name].split("#")[0].rstrip("/"))  # the file the error must name
    if expected is None:  # must be ingested: a clip and an accepted object
        (clip,) = [c for c in result.clips if os.path.basename(c.source_uri) == needle]
        objects = [o for o in result.objects if o.clip_id == clip.clip_id]
        assert objects and all(o.qa_ok for o in objects)
        assert not [f for f in failures if needle in f.message]
        return
    stage, reason = expected
    matches = [f for f in failures if f.reason == reason and needle in f.message]
    assert matches, (
        f"{name}: no {stage}/{reason} failure naming {needle}; got {[(f.reason, f.message) for f in failures]}"
    )
    assert all(f.stage == stage for f in matches)


def test_the_batch_goes_on_and_rows_fit_the_catalog(corpus_run, bad_corpus: dict) -> None:
    catalog, items, failures, result = corpus_run
    sources = {os.path.basename(r["uri"]) for r in result.rows["sources"]}
    assert sources == {"good.mp4", "odd_dims.mp4", "rotated.mp4", "too_short.mp4"}
    assert len(result.rows["clips"]) == 3  # good (shared by 5 rows), odd_dims, rotated
    statuses = sorted((r["qa_status"], r["qa_reason"]) for r in result.rows["objects"])
    assert statuses == [("ok", None)] * 3 + [("rejected", "empty_mask"), ("rejected", "full_frame_mask")]
    for table, rows in result.rows.items():
        assert catalog.append(table, rows)  # validates against catalog/schema.py
    good = bad_corpus["good"]
    with open(good, "rb") as f:
        assert result.rows["sources"][0]["source_id"] == source_id(sha256_bytes(f.read()))
    assert all(c.frames.shape[0] == 0 and c.frames.base is None for c in result.clips), "arrays released by default"
    assert all(o.masks.shape[0] == 0 and o.masks.base is None for o in result.objects)


def test_media_is_stored_before_rows_are_returned(corpus_run) -> None:
    catalog, _, _, result = corpus_run
    for row in result.rows["clips"]:
        info = probe_video(catalog.full_url(row["video_uri"]))
        assert (info.codec, info.num_frames, info.width, info.height, info.fps) == ("h264", 17, 96, 64, 8.0)
    for row in result.rows["objects"]:
        masks = decode_masks_npz(catalog.read_media(row["mask_uri"]))
        assert masks.shape == (17, 64, 96)
        assert row["area_ratio_mean"] == pytest.approx(masks.mean())


def test_rerun_gives_the_same_ids(bad_corpus: dict, tmp_path) -> None:
    item = SourceItem(uri=bad_corpus["good"], mask_uri=bad_corpus["mask_id_absent"], mask_id=OBJECT_ID)
    runs = [
        ingest_batch(
            [item],
            Catalog(tmp_path / name),
            geometry=CORPUS_GEOMETRY,
            segmenter=ProvidedSegmenter(),
            run_id=name,
            options=IngestOptions(preset="ultrafast"),
        )
        for name in ("a", "b")
    ]
    for table, key in (
        ("sources", "source_id"),
        ("clips", "clip_id"),
        ("clips", "video_uri"),
        ("objects", "object_id"),
    ):
        assert [r[key] for r in runs[0].rows[table]] == [r[key] for r in runs[1].rows[table]]


def test_rows_sharing_a_video_share_clips(bad_corpus: dict, catalog: Catalog) -> None:
    """VPData lists one row per object of a clip: decode once, one object per row."""
    items = [
        SourceItem(uri=bad_corpus["good"], mask_uri=bad_corpus["mask_id_absent"], mask_id=mask_id, label=str(mask_id))
        for mask_id in (OBJECT_ID, OTHER_ID)
    ]
    result = ingest_batch(
        items,
        catalog,
        geometry=CORPUS_GEOMETRY,
        segmenter=ProvidedSegmenter(),
        run_id="r",
        options=IngestOptions(keep_arrays=True),
    )
    assert len(result.rows["clips"]) == 1 and len(result.rows["objects"]) == 2
    assert {r["label"] for r in result.rows["objects"]} == {"3", "5"}
    small, big = sorted(result.objects, key=lambda o: o.masks.sum())
    assert small.label == "5" and small.masks.shape == (17, 64, 96)
    assert result.clips[0].frames.shape == (17, 64, 96, 3)


class CountingSam(SamSegmenter):
    setups = 0

    def setup(self) -> None:
        if not self._ready:
            CountingSam.setups += 1
        super().setup()


def test_real_footage_with_sam_box_prompts(bikes: str, catalog: Catalog, tmp_path) -> None:
    torch.set_num_threads(1)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(build_tiny_sam(seed=0).state_dict(), checkpoint)
    segmenter = CountingSam(str(checkpoint), config=TINY, min_iou=0.0)
    geometry = Geometry(num_frames=9, fps=8.0, height=64, width=96)
    items = [
        SourceItem(uri=bikes, start_frame=76, end_frame=187, box=(200, 60, 420, 250), label="cyclist"),
        SourceItem(uri=bikes, start_frame=0, end_frame=20),  # shorter than one window
    ]
    result = ingest_batch(
        items,
        catalog,
        geometry=geometry,
        segmenter=segmenter,
        run_id="r",
        options=IngestOptions(max_clips_per_source=2),
    )
    assert CountingSam.setups == 1
    starts = [(r["start_frame"], r["end_frame"], r["frame_stride"], r["scene_index"]) for r in result.rows["clips"]]
    assert starts == [(76, 101, 3, 0), (103, 128, 3, 0)]  # inside scene 76..137, back to back
    (obj,) = result.rows["objects"]
    assert (obj["mask_source"], obj["label"], obj["clip_id"]) == ("sam", "cyclist", result.rows["clips"][0]["clip_id"])
    reasons = sorted(f.reason for f in result.failures)
    assert "no_prompt" in reasons and "clip_too_short" in reasons  # second window: the box prompts the first only
    first = read_frames(catalog.full_url(result.rows["clips"][0]["video_uri"]), 0, 1)[0]
    assert np.abs(first.astype(int) - fit_frame(read_frames(bikes, 76, 77)[0], 64, 96).astype(int)).mean() < 8
    for table, rows in result.rows.items():
        catalog.append(table, rows)


def test_ingest_from_an_fsspec_url_with_a_seconds_range(good_clips: dict, catalog: Catalog) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/vpf-ingest/clips/v.mp4", open(good_clips["videos"][0], "rb").read())
    fs.pipe("/vpf-ingest/clips/v_masks.npz", open(good_clips["masks"][0], "rb").read())
    fs.pipe(
        "/vpf-ingest/clips/m.jsonl", b'{"uri": "v.mp4", "mask_uri": "v_masks.npz", "mask_id": 3, "start_s": 0.25}\n'
    )
    items, failures = discover_sources("memory://vpf-ingest/clips/m.jsonl", roots=["memory://vpf-ingest"])
    assert not failures and items[0].uri == "memory://vpf-ingest/clips/v.mp4"
    result = ingest_batch(items, catalog, geometry=CORPUS_GEOMETRY, segmenter=ProvidedSegmenter(), run_id="r")
    assert not result.failures
    (clip,) = result.rows["clips"]
    assert (clip["start_frame"], clip["end_frame"]) == (4, 37)  # 0.25 s at 16 fps, 17 frames at stride 2
    (obj,) = result.rows["objects"]
    assert obj["qa_status"] == "ok" and result.rows["sources"][0]["uri"] == "memory://vpf-ingest/clips/v.mp4"


def test_ingest_sources_and_catalog_on_s3(good_clips: dict) -> None:
    """A real S3 server (SeaweedFS): manifest, video and masks read through s3fs, media and rows written back."""
    from tests.s3server import s3_server

    with s3_server() as s3:
        fs = s3.filesystem()
        src = s3.url("src")
        fs.put_file(good_clips["videos"][1], f"{src}/v.mp4")
        fs.put_file(good_clips["masks"][1], f"{src}/v_masks.npz")
        fs.pipe_file(f"{src}/m.csv", b"uri,mask_uri,mask_id,label\nv.mp4,v_masks.npz,3,square\nmissing.mp4,,,\n")
        items, failures = discover_sources(f"{src}/m.csv", roots=[src], storage_options=s3.storage_options)
        assert [i.uri for i in items] == [f"{src}/v.mp4"] and [f.reason for f in failures] == ["not_found"]
        catalog = Catalog(s3.url("catalog"), storage_options=s3.storage_options)
        result = ingest_batch(
            items,
            catalog,
            geometry=CORPUS_GEOMETRY,
            segmenter=ProvidedSegmenter(s3.storage_options),
            run_id="s3",
            options=IngestOptions(preset="ultrafast", storage_options=s3.storage_options),
        )
        assert not result.failures and len(result.rows["clips"]) == 1
        (row,) = result.rows["objects"]
        assert row["qa_status"] == "ok"
        video = catalog.full_url(result.rows["clips"][0]["video_uri"])
        assert video.startswith("s3://")
        assert probe_video(video, storage_options=s3.storage_options).num_frames == 17
        for table, rows in result.rows.items():
            catalog.append(table, rows)


class _FakeCaptioner:
    """Stands in for ``VLMAnnotator`` (tested with a real tiny VLM in tests/tasks/annotate): counts its calls."""

    model_id = "fake:captioner"

    def __init__(self) -> None:
        self.calls = 0

    def setup(self) -> None:
        pass

    def caption(self, frames: np.ndarray) -> tuple[str | None, list]:
        self.calls += 1
        return f"a clip of {len(frames)} frames with a horse", []


def test_unlabelled_folder_with_sibling_masks_captions_and_selection(tmp_path, catalog: Catalog) -> None:
    """A folder of clips whose label maps lie next to them: one object per label, a caption from the captioner for
    clips without one, a still clip rejected when the static check is asked for (recorded, its masks read and each
    of its objects given a ``select`` failure, but no object row), every decision in the rows."""
    from tasks.annotate.selection import SelectionOptions
    from tasks.ingest import Annotation
    from tasks.synthetic import make_scene
    from tasks.video_io import encode_mp4

    folder = tmp_path / "footage"
    folder.mkdir()
    scene = make_scene("pan", num_frames=12, height=96, width=144, num_objects=2, seed=5)
    (folder / "moving.mp4").write_bytes(encode_mp4(scene.frames, fps=8.0))
    np.savez_compressed(folder / "moving_masks.npz", scene.label_map)
    still = np.repeat(scene.frames[:1], 12, axis=0)
    (folder / "still.mp4").write_bytes(encode_mp4(still, fps=8.0))
    np.savez_compressed(folder / "still.npz", scene.label_map[:1].repeat(12, axis=0))
    items, failures = discover_sources(str(folder))
    assert not failures and all(item.mask_uri for item in items)
    captioner = _FakeCaptioner()
    # the side check rejects all; the static check is asked for (clip filters skip provided masks by default)
    selection = SelectionOptions(min_area=0.001, max_area_change=5.0, min_side_px=200, min_frame_diff=1e-4)
    geometry = Geometry(num_frames=8, fps=8.0, height=96, width=144)
    result = ingest_batch(items, catalog, geometry=geometry, segmenter=ProvidedSegmenter(), run_id="r",
                          options=IngestOptions(preset="ultrafast"), annotation=Annotation(captioner=captioner, selection=selection))  # fmt: skip
    clips = {os.path.basename(c.source_uri): row for c, row in zip(result.clips, result.rows["clips"])}
    assert captioner.calls == 2
    assert clips["moving.mp4"]["caption"].startswith("a clip of 8 frames")
    assert clips["moving.mp4"]["caption_model"] == "fake:captioner"
    assert clips["moving.mp4"]["selection"] == "ok" and clips["moving.mp4"]["motion"] > 0.5
    assert clips["still.mp4"]["selection"] == "rejected"
    assert clips["still.mp4"]["selection_reasons"] == ["static_clip"]
    select = [(f.item_kind, f.reason) for f in result.failures if f.stage == "select"]
    assert select == [("clip", "static_clip"), ("object", "static_clip"), ("object", "static_clip")]  # its 2 labels
    objects = result.rows["objects"]
    assert {o["clip_id"] for o in objects} == {clips["moving.mp4"]["clip_id"]}  # the still clip was not segmented
    assert sorted(o["mask_id"] for o in objects) == [1, 2]  # one object per label of the sibling map
    assert all(o["qa_status"] == "rejected" and o["selection_reasons"] == ["object_too_small"] for o in objects)
    assert all(o["track_lost_frames"] == 0 and o["min_side_px"] < 200 for o in objects)
    for table, rows in result.rows.items():
        catalog.append(table, rows)
    rows = catalog.query(
        "SELECT qa_reason, count(*) AS n FROM objects GROUP BY ALL UNION ALL "
        "SELECT selection_reasons[1], count(*) FROM clips WHERE selection = 'rejected' GROUP BY ALL",
        read_only=True,
    ).to_pylist()
    assert sorted((r["qa_reason"], r["n"]) for r in rows) == [("object_too_small", 2), ("static_clip", 1)]
    # a rerun decodes neither clip again: the rejected one counts as done, its decision comes back from the catalog
    rerun = ingest_batch(items, catalog, geometry=geometry, segmenter=ProvidedSegmenter(), run_id="r2",
                         options=IngestOptions(preset="ultrafast"), annotation=Annotation(captioner=captioner, selection=selection))  # fmt: skip
    assert rerun.skipped_clips == 2 and captioner.calls == 2
    assert sorted(r["selection"] for r in rerun.rows["clips"]) == ["ok", "rejected"]
    # the same clips under the default thresholds: both objects are selected (the negative control of the above)
    again = ingest_batch(items[:1], Catalog(tmp_path / "other"), geometry=geometry, segmenter=ProvidedSegmenter(), run_id="r",
                         options=IngestOptions(preset="ultrafast"), annotation=Annotation(selection=SelectionOptions(max_area_change=5.0)))  # fmt: skip
    assert [o["qa_status"] for o in again.rows["objects"]] == ["ok", "ok"]
    assert again.rows["clips"][0]["caption_model"] is None
    # the still clip under the default thresholds: its sibling masks were given, so no clip filter drops it
    kept = ingest_batch(items, Catalog(tmp_path / "kept"), geometry=geometry, segmenter=ProvidedSegmenter(), run_id="r",
                        options=IngestOptions(preset="ultrafast"), annotation=Annotation(selection=SelectionOptions(max_area_change=5.0)))  # fmt: skip
    assert [(r["selection"], r["frame_diff"] > 0) for r in kept.rows["clips"]] == [("ok", True), ("ok", False)]
    assert len(kept.rows["objects"]) == 4 and not [f for f in kept.failures if f.stage == "select"]


def test_no_masks_and_no_segmenter_stops_before_ingest() -> None:
    from tasks.annotate.specs import NoMasksError, check_masks_or_segmenter

    bare = [SourceItem(uri="a.mp4"), SourceItem(uri="b.mp4")]
    with pytest.raises(NoMasksError, match="--segmenter detect\\+track:.*sam3:"):
        check_masks_or_segmenter(bare, "provided")
    check_masks_or_segmenter(bare, "sam3:/models/sam3")  # a segmenter: fine
    check_masks_or_segmenter([*bare, SourceItem(uri="c.mp4", mask_uri="c.npz")], "provided")  # some masks: fine
    check_masks_or_segmenter([], "provided")  # nothing discovered: the discovery failures say why


def test_a_short_range_is_decoded_once_and_cut_like_two_passes(bikes: str, tmp_path, monkeypatch) -> None:
    """Real footage with cuts: the one-pass path (scenes found on the frames decoded for the clips) gives the same
    scenes, windows, clips and pixels as scene detection on the file followed by decoding the windows."""
    import tasks.clips
    import tasks.ingest

    item = SourceItem(uri=bikes, label="bike")  # no mask: the object fails, the clips are what is compared

    def ingest(name: str):
        return ingest_batch([item], Catalog(tmp_path / name), geometry=CORPUS_GEOMETRY,
                            segmenter=ProvidedSegmenter(), run_id=name, options=IngestOptions(keep_arrays=True, preset="ultrafast"))  # fmt: skip

    two_pass = ingest("two")  # the file's scenes, then the windows decoded
    opened: list[str] = []
    iter_frames = tasks.ingest.iter_frames
    monkeypatch.setattr(
        tasks.ingest, "iter_frames", lambda uri, *a, **k: opened.append(uri) or iter_frames(uri, *a, **k)
    )
    monkeypatch.setattr(tasks.ingest, "detect_scenes", lambda *a, **k: pytest.fail("scenes detected on the file"))
    monkeypatch.setattr(tasks.clips, "iter_frames_at", lambda *a, **k: pytest.fail("the windows decoded again"))
    one_pass = ingest("one")
    assert opened == [bikes]  # one decoding pass
    clips = [(c["clip_id"], c["start_frame"], c["end_frame"], c["scene_index"]) for c in one_pass.rows["clips"]]
    assert clips == [
        (c["clip_id"], c["start_frame"], c["end_frame"], c["scene_index"]) for c in two_pass.rows["clips"]
    ]
    assert len({scene for *_, scene in clips}) > 1  # windows in several scenes: the cuts were found
    for a, b in zip(one_pass.clips, two_pass.clips, strict=True):
        assert np.array_equal(a.frames, b.frames)


def test_a_long_range_is_scanned_for_scenes_without_holding_its_frames(bikes: str, tmp_path, monkeypatch) -> None:
    import tasks.ingest

    monkeypatch.setattr(tasks.ingest, "ONE_PASS_BYTES", 64 * 96 * 3 * 100)  # bikes' 250 frames do not fit
    monkeypatch.setattr(tasks.ingest, "iter_frames", lambda *a, **k: pytest.fail("the range held in memory"))
    result = ingest_batch([SourceItem(uri=bikes, label="bike")], Catalog(tmp_path / "c"), geometry=CORPUS_GEOMETRY,
                          segmenter=ProvidedSegmenter(), run_id="r", options=IngestOptions(preset="ultrafast"))  # fmt: skip
    assert len({c["scene_index"] for c in result.rows["clips"]}) > 1
