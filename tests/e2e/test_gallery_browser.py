"""The gallery in real headless Chromium (Debian's ``chromium``, driven by Playwright's Python package).

Served over HTTP with Range support and opened from ``file://``: the page loads with no console errors, shows the
expected pairs, filters/sorts/pages change what is shown, and the three videos of a pair play in sync.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.gallery import build_gallery, serve_in_thread
from catalog.store import Catalog
from tests.catalog.gallery_data import make_small_catalog, synthetic_pair_rows


pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N_RENDERS = 4  # 8 pairs: remove + add per render


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is needed for the gallery's browser tests: apt-get install -y chromium (or make test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("gallery-browser")
    small = make_small_catalog(str(base / "cat"), n_renders=N_RENDERS)
    index = build_gallery(small.catalog, None, base / "site", chunk_size=3)  # pages span several chunks
    server, url = serve_in_thread(index.parent)
    yield small, index, url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def big_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("gallery-10k")
    rows = synthetic_pair_rows(10_000)
    catalog = Catalog(base / "cat")
    catalog.append("pairs", rows)
    index = build_gallery(catalog, None, base / "site", media="none")
    server, url = serve_in_thread(index.parent)
    yield rows, url
    server.shutdown()
    server.server_close()


class Page:
    """A Playwright page that records console errors and uncaught exceptions."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.wait()

    def wait(self) -> None:
        self.page.wait_for_function("window.vpfGallery && window.vpfGallery.ready()", timeout=20_000)

    def choose(self, name: str, value: str) -> None:
        self.page.select_option(f"#controls [name={name}]", value)
        self.wait()

    def fill(self, name: str, value: str) -> None:
        self.page.fill(f"#controls [name={name}]", value)
        self.page.dispatch_event(f"#controls [name={name}]", "change")
        self.wait()

    def cards(self) -> list[dict]:
        return self.page.eval_on_selector_all(".card", "cards => cards.map(c => ({...c.dataset}))")

    def summary(self) -> str:
        return self.page.text_content("#summary")


@pytest.fixture
def page(browser) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.page.close()


def test_served_gallery_filters_sorts_and_plays_pairs_in_sync(small_site, page: Page, tmp_path: Path) -> None:
    small, _, url = small_site
    page.open(url + "index.html")
    assert page.summary().startswith(f"{2 * N_RENDERS} of {2 * N_RENDERS} pairs")
    # Newest first by default.
    assert [c["pairId"] for c in page.cards()] == [r["pair_id"] for r in reversed(small.pair_rows)]

    page.choose("edit_type", "remove")
    assert sorted(c["pairId"] for c in page.cards()) == sorted(r["pair_id"] for r in small.pairs(edit_type="remove"))
    page.choose("decision", "rejected")
    expected = small.pairs(edit_type="remove", decision="rejected")
    assert sorted(c["pairId"] for c in page.cards()) == sorted(r["pair_id"] for r in expected)
    assert page.summary().startswith(f"{len(expected)} of {2 * N_RENDERS} pairs")
    page.choose("edit_type", "")
    page.choose("decision", "")
    page.choose("engine", "null")
    assert {c["engine"] for c in page.cards()} == {"null"}

    # Metric range and sort.
    page.choose("engine", "")
    page.choose("metric", "psnr_bg")
    page.fill("min", "26")
    page.choose("sort", "psnr_bg")
    page.choose("order", "asc")
    expected = sorted((r for r in small.pair_rows if r["psnr_bg"] >= 26), key=lambda r: r["psnr_bg"])
    assert [c["pairId"] for c in page.cards()] == [r["pair_id"] for r in expected]
    # The view is in the URL: reloading it restores the same selection.
    page.page.reload()
    page.wait()
    assert [c["pairId"] for c in page.cards()] == [r["pair_id"] for r in expected]

    # Play the first card: source, mask and target load (readyState >= 2), advance, and stay in sync.
    first = page.page.locator(".card").first
    first.locator("button.play").click()
    videos = ".card:first-child video"
    page.page.wait_for_function(
        f"Array.from(document.querySelectorAll('{videos}')).every(v => v.readyState >= 2 && v.currentTime > 0.3)",
        timeout=20_000,
    )
    first.locator("button.play").click()  # pause: followers align to the leader
    states = page.page.eval_on_selector_all(
        videos, "vs => vs.map(v => ({cls: v.className, ready: v.readyState, t: v.currentTime, paused: v.paused}))"
    )
    assert [s["cls"] for s in states] == ["src", "mask", "tgt"]
    assert all(s["ready"] >= 2 and s["paused"] for s in states), states
    times = [s["t"] for s in states]
    assert max(times) - min(times) < 0.1, states
    shot = tmp_path / "gallery.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_gallery_works_from_file_urls(small_site, page: Page) -> None:
    small, index, _ = small_site
    page.open(index.resolve().as_uri())
    assert len(page.cards()) == 2 * N_RENDERS
    page.choose("edit_type", "add")
    assert {c["editType"] for c in page.cards()} == {"add"}
    page.page.wait_for_function(
        "Array.from(document.querySelectorAll('.card:first-child video')).every(v => v.readyState >= 1)",
        timeout=20_000,
    )
    page.page.locator(".card button.play").first.click()
    page.page.wait_for_function(
        "Array.from(document.querySelectorAll('.card:first-child video')).every(v => v.readyState >= 2)",
        timeout=20_000,
    )
    assert page.errors == []


def test_10000_pairs_page_filter_and_sort(big_site, page: Page) -> None:
    rows, url = big_site
    started = time.perf_counter()
    page.open(url + "index.html")
    loaded = time.perf_counter() - started
    assert page.summary().startswith("10000 of 10000 pairs")
    assert page.page.text_content(".page-label") == "page 1 of 417"
    first_page = [c["pairId"] for c in page.cards()]
    assert first_page == [r["pair_id"] for r in rows[::-1][:24]]

    page.page.locator(".pager button[data-step='1']").first.click()
    page.wait()
    assert [c["pairId"] for c in page.cards()] == [r["pair_id"] for r in rows[::-1][24:48]]

    started = time.perf_counter()
    page.choose("edit_type", "add")
    page.choose("sort", "psnr_bg")
    filtered = time.perf_counter() - started
    adds = [r for r in rows if r["edit_type"] == "add"]
    assert page.summary().startswith(f"{len(adds)} of 10000 pairs")
    assert page.page.text_content(".page-label") == f"page 1 of {-(-len(adds) // 24)}"  # filtering returns to page 1
    shown = [c["pairId"] for c in page.cards()]
    psnr = {r["pair_id"]: float(f"{r['psnr_bg']:.5g}") for r in rows}  # the index keeps 5 significant digits
    assert [psnr[i] for i in shown] == sorted((psnr[i] for i in shown), reverse=True)
    assert psnr[shown[0]] == max(psnr[r["pair_id"]] for r in adds)

    page.choose("size", "96")
    page.page.locator(".pager button[data-step='1']").first.click()
    page.wait()
    assert len(page.cards()) == 96
    assert page.errors == []
    print(f"10k pairs: first page in {loaded:.2f} s, filter + sort in {filtered:.2f} s")


def test_empty_selection_shows_a_message_not_an_error(small_site, page: Page, tmp_path: Path) -> None:
    small, _, _ = small_site
    index = build_gallery(small.catalog, "psnr_bg > 1000", tmp_path / "empty", media="none")
    page.open(index.resolve().as_uri())
    assert page.summary().startswith("0 of 0 pairs")
    assert page.cards() == [] and page.page.is_visible("#empty")
    assert page.errors == []
