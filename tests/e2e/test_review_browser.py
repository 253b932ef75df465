"""``vpf review`` in real headless Chromium: pairs are reviewed with the keyboard and the rows land in ``reviews``.

The app is served over a small catalog with real media (``tests/catalog/gallery_data.py``); the browser is the one
the gallery's browser tests use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.review import QueueFilter, ReviewSession, build_queue, serve_in_thread
from catalog.reviews import latest_reviews
from tests.catalog.gallery_data import make_small_catalog
from tests.e2e.test_gallery_browser import browser  # noqa: F401 - the shared Chromium fixture


pytestmark = pytest.mark.slow

N_RENDERS = 3  # 6 pairs


@pytest.fixture
def app(tmp_path: Path):
    small = make_small_catalog(str(tmp_path / "cat"), n_renders=N_RENDERS)
    queue = build_queue(small.catalog, QueueFilter())
    server = serve_in_thread(ReviewSession(small.catalog, queue, "tester"))
    yield small, [r["pair_id"] for r in queue.rows], server.url
    server.shutdown()
    server.server_close()


class ReviewPage:
    """A Playwright page on the review app that records console errors and every URL it requests."""

    def __init__(self, browser, url: str):  # noqa: F811 - the fixture's value
        self.url = url
        # The app's Content-Security-Policy forbids eval; Playwright's wait_for_function needs it for its predicates.
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.wait()

    def wait(self) -> None:
        self.page.wait_for_function("window.vpfReview && window.vpfReview.ready()", timeout=20_000)

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.wait()

    def pair_id(self) -> str:
        return self.page.evaluate("window.vpfReview.pairId()")

    def counts(self) -> dict:
        return self.page.evaluate("window.vpfReview.counts()")

    def wait_counts(self, **expected: int) -> None:
        condition = " && ".join(f"window.vpfReview.counts().{k} === {v}" for k, v in expected.items())
        self.page.wait_for_function(condition, timeout=10_000)
        self.wait()


@pytest.fixture
def page(browser, app) -> Iterator[ReviewPage]:  # noqa: F811 - the fixture
    p = ReviewPage(browser, app[2])
    yield p
    p.page.close()


def test_review_pairs_with_the_keyboard(app, page: ReviewPage, tmp_path: Path) -> None:
    small, queue, url = app
    assert page.pair_id() == queue[0]
    assert f"pair 1 of {len(queue)}" in page.page.text_content("#progress")
    assert page.page.text_content("#reviewer") == "reviewer: tester"

    # space plays the three videos on one clock; space again pauses them at one position.
    page.press(" ")
    page.page.wait_for_function(
        "Array.from(document.querySelectorAll('#videos video')).every(v => v.readyState >= 2 && v.currentTime > 0.3)",
        timeout=20_000,
    )
    page.press(" ")
    states = page.page.eval_on_selector_all(
        "#videos video", "vs => vs.map(v => ({cls: v.className, t: v.currentTime, paused: v.paused}))"
    )
    clock = page.page.evaluate("window.vpfReview.clock()")
    assert [s["cls"] for s in states] == ["src", "mask", "tgt"] and not clock["playing"]
    assert all(s["paused"] and abs(s["t"] - clock["t"]) < 0.1 for s in states), (states, clock)

    # One scrub position: moving the bar to the middle moves the clock and the three videos there.
    page.page.eval_on_selector("#scrub", "s => { s.value = '500'; s.dispatchEvent(new Event('input')); }")
    page.page.wait_for_function(
        "(() => { const c = window.vpfReview.clock();"
        " return Array.from(document.querySelectorAll('#videos video')).every("
        "v => !v.seeking && Math.abs(v.currentTime - c.t) < 0.05); })()",
        timeout=10_000,
    )
    clock = page.page.evaluate("window.vpfReview.clock()")
    assert abs(clock["t"] - clock["duration"] / 2) < 0.01 and clock["duration"] > 0.5, clock

    # n / → and p / ← move without writing.
    page.press("n")
    assert page.pair_id() == queue[1]
    page.press("ArrowRight")
    assert page.pair_id() == queue[2]
    page.press("ArrowLeft")
    page.press("p")
    assert page.pair_id() == queue[0]

    page.press("a")  # accept the first pair: the app moves on to the next
    page.wait_counts(accepted=1, session=1)
    assert page.pair_id() == queue[1]

    page.press("r")  # reject the second: the reason menu opens, 2 = effect (shadow/reflection) left
    assert page.page.is_visible("#reasons") and page.page.evaluate("window.vpfReview.rejecting()")
    page.press("2")
    page.wait_counts(rejected=1, session=2)
    assert page.pair_id() == queue[2] and not page.page.is_visible("#reasons")

    page.press("u")  # undo: the rejection is withdrawn and the app goes back to that pair
    page.wait_counts(rejected=0, session=1)
    assert page.pair_id() == queue[1]
    assert page.page.text_content("#verdict") == "not reviewed"

    page.press("s")  # skip: nothing written, on to the next pair without a review
    assert page.pair_id() == queue[2]

    page.press("c")  # a note, typed without triggering the keys (the "a" and "r" in it write nothing)
    page.page.keyboard.type("a ghost of the square remains")
    page.press("Enter")
    assert page.counts()["session"] == 1
    page.press("r")
    page.press("Escape")  # a reject can be cancelled
    assert not page.page.is_visible("#reasons") and page.counts()["rejected"] == 0
    page.press("r")
    page.press("3")  # artefact
    page.wait_counts(rejected=1, accepted=1, session=2)
    assert page.pair_id() == queue[3]  # on to the next pair with no review

    rows = small.catalog.query("SELECT * FROM reviews ORDER BY created_at").to_pylist()
    assert [(r["pair_id"], r["verdict"], r["reason"], r["note"], r["reviewer"]) for r in rows] == [
        (queue[0], "accepted", None, None, "tester"),
        (queue[1], "rejected", "effect_left", None, "tester"),
        (queue[1], "withdrawn", None, None, "tester"),
        (queue[2], "rejected", "artefact", "a ghost of the square remains", "tester"),
    ]
    latest = {r["pair_id"]: r["verdict"] for r in latest_reviews(small.catalog).to_pylist()}
    assert latest == {queue[0]: "accepted", queue[2]: "rejected"}

    shot = tmp_path / "review.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert all(u.startswith(url) for u in page.requests), [u for u in page.requests if not u.startswith(url)]
    assert page.errors == []


def test_reasons_can_be_picked_from_the_menu(app, page: ReviewPage) -> None:
    small, queue, _ = app
    page.press("r")
    page.page.click("#reasons button[data-reason='wrong_object']")
    page.wait_counts(rejected=1)
    rows = small.catalog.query("SELECT pair_id, verdict, reason FROM reviews").to_pylist()
    assert rows == [{"pair_id": queue[0], "verdict": "rejected", "reason": "wrong_object"}]
    assert page.errors == []
