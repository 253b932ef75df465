"""catalog/gallery: the static site's data, media and server (the browser side is tests/e2e/test_gallery_browser.py)."""

from __future__ import annotations

import io
import json
import os
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from catalog.gallery import GalleryError, build_gallery, build_site, mask_array, select_rows, serve_in_thread
from catalog.store import Catalog
from tasks.masks import decode_masks_npz
from tests.catalog.gallery_data import NUM_FRAMES, clip_frames, make_small_catalog, synthetic_pair_rows


def read_js(path: Path, prefix: str, suffix: str = ";\n") -> object:
    text = path.read_text(encoding="ascii")  # the data files are plain ASCII
    assert text.startswith(prefix) and text.endswith(suffix), text[:80]
    return json.loads(text[len(prefix) : -len(suffix)])


def read_site(out: Path) -> tuple[dict, list[dict]]:
    """The site's index and its pairs in site order, read back from the JavaScript data files."""
    index = read_js(out / "data" / "index.js", "window.VPF_GALLERY_INDEX=")
    pairs: list[dict] = []
    for n in range(index["n_chunks"]):
        payload = read_js(out / "data" / "chunks" / f"{n:05d}.js", f"VPF_GALLERY_CHUNK({n},", ");\n")
        pairs.extend(payload)
    assert len(pairs) == index["total"]
    return index, pairs


def decode(path: Path) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of an mp4."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_small_catalog(str(tmp_path_factory.mktemp("gallery") / "cat"), n_renders=3)


def test_site_shows_every_pair_with_its_media(small, tmp_path: Path) -> None:
    index_html = build_gallery(small.catalog, None, tmp_path / "site", chunk_size=4)
    assert index_html == tmp_path / "site" / "index.html"
    for name in ("index.html", "app.js", "style.css"):
        assert (tmp_path / "site" / name).stat().st_size > 0
    index, pairs = read_site(tmp_path / "site")

    # Every pair once, oldest first; chunks of 4.
    assert [p["id"] for p in pairs] == [r["pair_id"] for r in small.pair_rows]
    assert index["n_chunks"] == 2
    # Facets as codes into dicts, in site order.
    for facet in ("edit_type", "decision", "engine"):
        decoded = [index["dicts"][facet][code] for code in index["columns"][facet]]
        assert decoded == [r[facet] for r in small.pair_rows]
    assert index["columns"]["psnr_bg"] == [r["psnr_bg"] for r in small.pair_rows]
    assert [m["name"] for m in index["metrics"]] == ["psnr_bg", "ssim_bg", "mask_area_ratio"]  # no all-null metric

    site = tmp_path / "site"
    for pair, row in zip(pairs, small.pair_rows):
        assert pair["instruction"] == row["instruction"] and pair["decision"] == row["decision"]
        # Videos are the catalog's bytes, at site-relative paths.
        assert (site / pair["src"]).read_bytes() == small.catalog.read_media(row["src_video_uri"])
        assert (site / pair["tgt"]).read_bytes() == small.catalog.read_media(row["tgt_video_uri"])
        # The npz mask became a playable video, white inside the mask.
        masks = decode_masks_npz(small.catalog.read_media(row["mask_uri"]))
        frames = decode(site / pair["mask"])
        assert frames.shape[:3] == masks.shape
        assert ((frames.mean(-1) > 127) == masks).mean() > 0.98
        assert "missing" not in pair


def test_remove_and_add_pairs_swap_source_and_target(small, tmp_path: Path) -> None:
    build_gallery(small.catalog, None, tmp_path / "site")
    _, pairs = read_site(tmp_path / "site")
    by_render: dict[str, dict[str, dict]] = {}
    for p in pairs:
        by_render.setdefault(p["render_id"], {})[p["edit_type"]] = p
    for both in by_render.values():
        assert both["remove"]["src"] == both["add"]["tgt"] and both["remove"]["tgt"] == both["add"]["src"]
        original = decode(tmp_path / "site" / both["remove"]["src"])
        assert original.shape[0] == NUM_FRAMES


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("edit_type = 'remove'", {"edit_type": "remove"}),
        ("decision = 'accepted' AND edit_type = 'add'", {"decision": "accepted", "edit_type": "add"}),
        ("engine = 'null'", {"engine": "null"}),
    ],
)
def test_where_selects_the_pairs(small, tmp_path: Path, where: str, expected: dict) -> None:
    build_gallery(small.catalog, where, tmp_path / "site", media="none")
    index, pairs = read_site(tmp_path / "site")
    assert [p["id"] for p in pairs] == [r["pair_id"] for r in small.pairs(**expected)]
    assert index["where"] == where


def test_where_can_use_metrics_and_joined_columns(small, tmp_path: Path) -> None:
    rows = select_rows(small.catalog, "psnr_bg >= 26 AND clip_caption LIKE '%clip 2' AND object_label IS NULL")
    assert rows.column("pair_id").to_pylist() == [r["pair_id"] for r in small.pair_rows if r["psnr_bg"] >= 26][-2:]


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP VIEW pairs",
        "no_such_column > 1",
        "psnr_bg >",
        "1=1) UNION SELECT * FROM pairs_full WHERE (1=1 -- ",
        "1=1 /* comment */",
        "getenv('HOME') IS NOT NULL",
        "pair_id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
    ],
)
def test_bad_or_unsafe_predicates_are_refused(small, tmp_path: Path, where: str) -> None:
    with pytest.raises(GalleryError, match="--where"):
        build_gallery(small.catalog, where, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_rebuild_replaces_the_data_and_reuses_media(small, tmp_path: Path) -> None:
    site = tmp_path / "site"
    build_gallery(small.catalog, None, site, chunk_size=2)
    assert len(list((site / "data" / "chunks").iterdir())) == 3
    media = {p: p.stat().st_mtime_ns for p in (site / "media").rglob("*") if p.is_file()}

    build_gallery(small.catalog, "edit_type = 'add'", site, chunk_size=2)
    index, pairs = read_site(site)
    assert index["total"] == 3 and len(list((site / "data" / "chunks").iterdir())) == 2  # stale chunk removed
    assert {p["edit_type"] for p in pairs} == {"add"}
    assert {p: p.stat().st_mtime_ns for p in media} == media  # media already there is not rewritten


def test_refuses_to_write_into_a_folder_that_is_not_a_gallery(small, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GalleryError, match="holds no gallery"):
        build_gallery(small.catalog, None, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_missing_media_is_reported_on_the_pairs_that_name_it(tmp_path: Path) -> None:
    small = make_small_catalog(str(tmp_path / "cat"), n_renders=2)
    gone = small.pair_rows[0]["tgt_video_uri"]  # the first render's inpainted clip
    Path(small.catalog.path(gone)).unlink()

    built = build_site(select_rows(small.catalog), tmp_path / "site", catalog=small.catalog)
    assert built.missing_media == [gone] and built.n_pairs == 4
    index, pairs = read_site(tmp_path / "site")
    assert index["missing_media"] == 1
    missing = {p["edit_type"]: p.get("missing") for p in pairs if p["render_id"] == small.pair_rows[0]["render_id"]}
    assert missing == {"remove": ["tgt"], "add": ["src"]}
    assert all("missing" not in p for p in pairs if p["render_id"] != small.pair_rows[0]["render_id"])


def test_link_mode_symlinks_and_none_mode_writes_no_media(small, tmp_path: Path) -> None:
    build_gallery(small.catalog, None, tmp_path / "linked", media="link")
    _, pairs = read_site(tmp_path / "linked")
    src = tmp_path / "linked" / pairs[0]["src"]
    assert src.is_symlink() and src.read_bytes() == small.catalog.read_media(small.pair_rows[0]["src_video_uri"])

    build_gallery(small.catalog, None, tmp_path / "bare", media="none")
    _, pairs = read_site(tmp_path / "bare")
    assert not (tmp_path / "bare" / "media").exists()
    assert all("src" not in p and "tgt" not in p and "mask" not in p for p in pairs)


def test_gallery_of_an_s3_catalog_copies_its_media(s3, tmp_path: Path) -> None:
    local = make_small_catalog(str(tmp_path / "local"), n_renders=1)
    remote = Catalog(s3.url(f"gallery-{uuid.uuid4().hex[:8]}"), storage_options=s3.storage_options)
    for row in local.pair_rows[:1]:
        for key in ("src_video_uri", "tgt_video_uri", "mask_uri"):
            remote.put_media(local.catalog.read_media(row[key]), row[key].rsplit(".", 1)[1])
    for table in ("clips", "instructions", "renders", "pairs"):
        remote.append(table, local.catalog.query(f"SELECT * FROM {table}"))

    with pytest.raises(GalleryError, match="local catalog"):
        build_gallery(remote, None, tmp_path / "linked", media="link")
    build_gallery(remote, None, tmp_path / "site")
    _, pairs = read_site(tmp_path / "site")
    assert len(pairs) == 2
    for pair, row in zip(pairs, local.pair_rows):
        assert (tmp_path / "site" / pair["src"]).read_bytes() == local.catalog.read_media(row["src_video_uri"])
        assert decode(tmp_path / "site" / pair["mask"]).shape[0] == NUM_FRAMES


def test_index_of_10000_pairs_is_compact_and_chunked(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "cat")
    rows = synthetic_pair_rows(10_000)
    catalog.append("pairs", rows)

    build_gallery(catalog, None, tmp_path / "site", media="none")
    index, pairs = read_site(tmp_path / "site")
    assert index["total"] == 10_000 and index["n_chunks"] == 100
    assert [p["id"] for p in pairs] == [r["pair_id"] for r in rows]
    counts = Counter(index["dicts"]["edit_type"][c] for c in index["columns"]["edit_type"])
    assert counts == Counter(r["edit_type"] for r in rows)
    warp = index["columns"]["temporal_warp_error"]
    assert [v is None for v in warp] == [r["temporal_warp_error"] is None for r in rows]
    # The index the page parses up front stays small: facets as small integer codes, metrics at 5 significant digits.
    assert (tmp_path / "site" / "data" / "index.js").stat().st_size < 60 * 10_000


def test_metrics_are_json_safe_and_text_is_ascii_escaped(tmp_path: Path) -> None:
    rows = synthetic_pair_rows(3)
    rows[0]["psnr_bg"] = float("inf")
    rows[1]["instruction"] = 'remove the "cat" </script><img src=x onerror=alert(1)> — café'
    catalog = Catalog(tmp_path / "cat")
    catalog.append("pairs", rows)
    build_gallery(catalog, None, tmp_path / "site", media="none")
    index, pairs = read_site(tmp_path / "site")  # read_js decodes as ASCII
    assert index["columns"]["psnr_bg"][0] is None
    assert pairs[1]["instruction"] == rows[1]["instruction"]


def test_mask_array_reads_the_factorys_and_plain_npz_layouts() -> None:
    _, masks, _ = clip_frames(1)
    from tasks.masks import encode_masks_npz

    assert np.array_equal(mask_array(encode_masks_npz(masks), "packed.npz"), masks)
    for kwargs in ({"masks": masks}, {"arr_0": masks.astype(np.uint8)}):
        buffer = io.BytesIO()
        np.savez(buffer, **kwargs)
        assert np.array_equal(mask_array(buffer.getvalue(), "plain.npz"), masks)
    with pytest.raises(ValueError, match="bad.npz: not a readable npz"):
        mask_array(b"not a zip", "bad.npz")
    buffer = io.BytesIO()
    np.savez(buffer, a=masks, b=masks)
    with pytest.raises(ValueError, match="two.npz: mask npz holds"):
        mask_array(buffer.getvalue(), "two.npz")


def test_server_answers_range_requests(small, tmp_path: Path) -> None:
    build_gallery(small.catalog, None, tmp_path / "site")
    _, pairs = read_site(tmp_path / "site")
    video = (tmp_path / "site" / pairs[0]["src"]).read_bytes()
    server, url = serve_in_thread(tmp_path / "site")
    try:
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(url + pairs[0]["src"], headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-199/{len(video)}"
            assert response.read() == video[100:200]
        with urllib.request.urlopen(url + pairs[0]["src"]) as response:
            assert response.status == 200 and response.read() == video
    finally:
        server.shutdown()
        server.server_close()
