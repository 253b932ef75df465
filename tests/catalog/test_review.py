"""``vpf review``'s queue (filters, stratified sampling) and its JSON API over HTTP (validation, writes, undo, media)."""

from __future__ import annotations

import io
import json
import random
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from catalog.review import (
    QueueFilter,
    ReviewError,
    ReviewServer,
    ReviewSession,
    allocate,
    build_queue,
    byte_range,
    serve_in_thread,
    stratified_sample,
)
from catalog.review.server import RangeNotSatisfiable
from catalog.reviews import latest_reviews
from catalog.schema import REVIEW_REASONS
from flows.cli import app
from tests.catalog.gallery_data import NUM_FRAMES, make_small_catalog


N_RENDERS = 4  # 8 pairs: k even -> accepted/propagation, k odd -> rejected/null; remove + add each


# ------------------------------------------------------------------------------------------------ sampling
def strata_rows(sizes: dict[tuple[str, str], int]) -> list[dict]:
    rows = []
    for (decision, engine), n in sizes.items():
        rows += [
            {"pair_id": f"pair_{decision}_{engine}_{i:04d}", "decision": decision, "engine": engine} for i in range(n)
        ]
    return rows


def test_allocation_is_proportional_with_one_per_stratum_where_n_allows() -> None:
    assert allocate([60, 30, 10], 10) == [6, 3, 1]
    assert allocate([50, 50], 7) in ([4, 3], [3, 4]) and sum(allocate([50, 50], 7)) == 7
    # A tiny stratum still gets one when n allows (proportional would give it 0.1), taken from the largest.
    assert allocate([97, 2, 1], 10) == [8, 1, 1]
    # n >= everything: every pair; n below the number of strata: n pairs, never more than a stratum holds.
    assert allocate([3, 0, 2], 50) == [3, 0, 2]
    two = allocate([5, 5, 5], 2)
    assert sum(two) == 2 and max(two) == 1
    assert allocate([0, 4], 3) == [0, 3]
    with pytest.raises(ReviewError, match="sample size"):
        allocate([1, 2], -1)


def test_stratified_sample_is_reproducible_and_proportional() -> None:
    rows = strata_rows({("accepted", "propagation"): 60, ("rejected", "propagation"): 25, ("accepted", "null"): 15})
    sample = stratified_sample(rows, 20, seed=3)
    assert len(sample) == len({r["pair_id"] for r in sample}) == 20
    by_stratum = Counter((r["decision"], r["engine"]) for r in sample)
    assert by_stratum == {("accepted", "propagation"): 12, ("rejected", "propagation"): 5, ("accepted", "null"): 3}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)  # the order rows arrive in does not matter, only the seed
    assert [r["pair_id"] for r in stratified_sample(shuffled, 20, seed=3)] == [r["pair_id"] for r in sample]
    # Negative control: another seed draws another sample.
    assert {r["pair_id"] for r in stratified_sample(rows, 20, seed=4)} != {r["pair_id"] for r in sample}
    with pytest.raises(ReviewError, match="positive"):
        stratified_sample(rows, 0)


def test_every_pair_of_a_stratum_is_equally_likely_to_be_drawn() -> None:
    rows = strata_rows({("accepted", "a"): 30, ("rejected", "a"): 10})
    draws = Counter(r["pair_id"] for seed in range(600) for r in stratified_sample(rows, 8, seed=seed))
    # 6 of 30 and 2 of 10 per draw: each pair is drawn with probability 0.2, 120 times expected in 600 draws.
    # Binomial(600, 0.2) has sd ~9.8: 5 sd either side keeps this test from flaking while catching a bias.
    assert len(draws) == 40
    assert all(70 <= n <= 170 for n in draws.values()), sorted(draws.values())


# ------------------------------------------------------------------------------------------------ queue
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_small_catalog(str(tmp_path_factory.mktemp("review") / "cat"), n_renders=N_RENDERS)


def ids(rows: list[dict]) -> set[str]:
    return {r["pair_id"] for r in rows}


def test_filters_select_the_pairs(small) -> None:
    assert ids(build_queue(small.catalog, QueueFilter()).rows) == ids(small.pair_rows)
    for field, column, value in (
        ("engine", "engine", "null"),
        ("decision", "decision", "rejected"),
        ("edit_type", "edit_type", "add"),
    ):
        got = build_queue(small.catalog, QueueFilter(**{field: value})).rows
        assert ids(got) == ids(small.pairs(**{column: value})) and got
    assert build_queue(small.catalog, QueueFilter(run="no-such-run")).rows == []
    assert ids(build_queue(small.catalog, QueueFilter(run="run-gallery-test")).rows) == ids(small.pair_rows)
    both = build_queue(small.catalog, QueueFilter(where="psnr_bg >= 32", edit_type="remove")).rows
    assert ids(both) == {r["pair_id"] for r in small.pair_rows if r["psnr_bg"] >= 32 and r["edit_type"] == "remove"}


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP VIEW pairs",
        "no_such_column > 1",
        "1=1) UNION SELECT * FROM pairs_full WHERE (1=1 -- ",
        "getenv('HOME') IS NOT NULL",
        "pair_id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
    ],
)
def test_bad_or_unsafe_where_is_refused(small, where: str) -> None:
    with pytest.raises(ReviewError, match="--where"):
        build_queue(small.catalog, QueueFilter(where=where))


def test_a_queue_keeps_at_most_max_pairs_and_counts_the_rest(small) -> None:
    queue = build_queue(small.catalog, QueueFilter(max_pairs=3))
    assert [r["pair_id"] for r in queue.rows] == [r["pair_id"] for r in small.pair_rows[:3]]  # oldest first
    assert (queue.matching, queue.left_out) == (8, 5)
    assert build_queue(small.catalog, QueueFilter()).left_out == 0


def test_bad_filter_values_are_refused() -> None:
    with pytest.raises(ReviewError, match="decision 'maybe'"):
        QueueFilter(decision="maybe")
    with pytest.raises(ReviewError, match="sample"):
        QueueFilter(sample=0)
    with pytest.raises(ReviewError, match="max_pairs"):
        QueueFilter(max_pairs=0)


def test_a_sample_is_drawn_before_reviewed_pairs_are_dropped(tmp_path: Path) -> None:
    small = make_small_catalog(str(tmp_path / "cat"), n_renders=N_RENDERS)
    first = build_queue(small.catalog, QueueFilter(sample=4, seed=11))
    assert (first.matching, first.sampled, first.already_reviewed, len(first.rows)) == (8, 4, 0, 4)
    assert first.strata == {
        "accepted / propagation": {"pairs": 4, "drawn": 2},
        "rejected / null": {"pairs": 4, "drawn": 2},
    }
    session = ReviewSession(small.catalog, first, "ana")
    session.review({"pair_id": first.rows[0]["pair_id"], "verdict": "accepted"})
    # The same seed resumes the same sample, less the reviewed pair; --all shows it again.
    again = build_queue(small.catalog, QueueFilter(sample=4, seed=11))
    assert [r["pair_id"] for r in again.rows] == [r["pair_id"] for r in first.rows[1:]]
    assert again.already_reviewed == 1
    everything = build_queue(small.catalog, QueueFilter(sample=4, seed=11, unreviewed=False))
    assert [r["pair_id"] for r in everything.rows] == [r["pair_id"] for r in first.rows]
    assert everything.rows[0]["latest_review_verdict"] == "accepted"


# ------------------------------------------------------------------------------------------------ API
class Client:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.url + path.lstrip("/"), headers=headers or {})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def post(self, path: str, body, *, content_type: str = "application/json", headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path.lstrip("/"), data=data, headers={"Content-Type": content_type, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def served(tmp_path: Path):
    small = make_small_catalog(str(tmp_path / "cat"), n_renders=2)
    session = ReviewSession(small.catalog, build_queue(small.catalog, QueueFilter()), "ana")
    server = serve_in_thread(session)
    yield small, session, Client(server.url)
    server.shutdown()
    server.server_close()


def review_rows(catalog) -> list[dict]:
    return catalog.query("SELECT * FROM reviews ORDER BY created_at").to_pylist()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pair_id": "pair_" + "0" * 32, "verdict": "accepted"}, "not in this review session's queue"),
        ({"pair_id": None, "verdict": "accepted"}, "pair_id must be"),
        ({"pair_id": 0, "verdict": "good"}, "verdict 'good'"),
        ({"pair_id": 0, "verdict": "withdrawn"}, "verdict 'withdrawn'"),
        ({"pair_id": 0, "verdict": "rejected"}, "reason None"),
        ({"pair_id": 0, "verdict": "rejected", "reason": "ugly"}, "reason 'ugly'"),
        ({"pair_id": 0, "verdict": "accepted", "reason": "flicker"}, "only a rejection takes a reason"),
        ({"pair_id": 0, "verdict": "accepted", "note": "x" * 2001}, "at most 2000"),
        ({"pair_id": 0, "verdict": "accepted", "note": 5}, "note must be a string"),
        ({"pair_id": 0, "verdict": "accepted", "score": 1}, "unknown field"),
        (["not", "an", "object"], "JSON object"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_bad_reviews_are_refused_with_400_and_write_nothing(served, body, message: str) -> None:
    small, _, client = served
    if isinstance(body, dict) and body.get("pair_id") == 0:
        body = {**body, "pair_id": small.pair_rows[0]["pair_id"]}
    status, answer = client.post("/api/review", body)
    assert status == 400 and message in answer["error"], answer
    assert review_rows(small.catalog) == []


def test_requests_that_are_not_the_pages_own_json_are_refused(served) -> None:
    small, _, client = served
    good = {"pair_id": small.pair_rows[0]["pair_id"], "verdict": "accepted"}
    assert client.post("/api/review", json.dumps(good).encode(), content_type="text/plain")[0] == 415
    assert client.post("/api/review", good, headers={"Origin": "http://evil.example"})[0] == 403
    assert client.post("/api/review", b"x" * 20_000)[0] == 413
    assert client.post("/api/nothing", good)[0] == 404
    assert review_rows(small.catalog) == []
    # Positive control: the same review from the page's origin is written.
    origin = client.url.rstrip("/")
    assert client.post("/api/review", good, headers={"Origin": origin})[0] == 200
    assert len(review_rows(small.catalog)) == 1


def test_reviews_land_in_the_table_and_undo_withdraws_the_last(served) -> None:
    small, _, client = served
    first, second = small.pair_rows[0]["pair_id"], small.pair_rows[1]["pair_id"]
    status, answer = client.post("/api/review", {"pair_id": first, "verdict": "accepted", "note": " crisp "})
    assert status == 200 and answer["counts"]["accepted"] == 1
    status, answer = client.post("/api/review", {"pair_id": second, "verdict": "rejected", "reason": "effect_left"})
    assert status == 200 and answer["counts"] == {
        "total": 4,
        "accepted": 1,
        "rejected": 1,
        "reviewed": 2,
        "session": 2,
    }
    rows = review_rows(small.catalog)
    assert [(r["pair_id"], r["verdict"], r["reason"], r["note"], r["reviewer"]) for r in rows] == [
        (first, "accepted", None, "crisp", "ana"),
        (second, "rejected", "effect_left", None, "ana"),
    ]
    latest = {r["pair_id"]: r["verdict"] for r in latest_reviews(small.catalog).to_pylist()}
    assert latest == {first: "accepted", second: "rejected"}

    status, answer = client.post("/api/undo", {})
    assert status == 200 and answer["pair_id"] == second and answer["index"] == 1 and answer["can_undo"]
    assert review_rows(small.catalog)[-1]["verdict"] == "withdrawn"
    assert {r["pair_id"] for r in latest_reviews(small.catalog).to_pylist()} == {first}
    state = json.loads(client.get("/api/queue")[1])
    assert [p.get("review") for p in state["pairs"]][:2] == ["accepted", None]
    assert state["counts"]["reviewed"] == 1

    assert client.post("/api/undo", {})[1]["pair_id"] == first
    assert latest_reviews(small.catalog).num_rows == 0
    status, answer = client.post("/api/undo", {})
    assert status == 400 and "nothing to undo" in answer["error"]
    assert client.post("/api/undo", {"pair_id": first})[0] == 400
    assert [r["verdict"] for r in review_rows(small.catalog)] == ["accepted", "rejected", "withdrawn", "withdrawn"]


def test_every_reason_is_accepted(served) -> None:
    small, _, client = served
    pair_id = small.pair_rows[0]["pair_id"]
    for reason in REVIEW_REASONS:
        assert client.post("/api/review", {"pair_id": pair_id, "verdict": "rejected", "reason": reason})[0] == 200
    assert [r["reason"] for r in review_rows(small.catalog)] == list(REVIEW_REASONS)


def test_only_the_queues_media_is_served(served) -> None:
    small, session, client = served
    state = json.loads(client.get("/api/queue")[1])
    pair = state["pairs"][0]
    uri = pair["src"].removeprefix("/media/")
    status, data, headers = client.get(pair["src"])
    assert status == 200 and data == small.catalog.read_media(uri) and headers["Content-Type"] == "video/mp4"
    fragment = "tables/pairs/" + small.catalog.fragments("pairs")[0].rsplit("/", 1)[-1]
    assert small.catalog.fs.exists(small.catalog.path(fragment))  # the path is real: refused, not missing
    for path in (
        "/media/" + fragment,  # a table fragment: inside the root, but no pair's media
        "/media/../../etc/passwd",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/mask/" + uri,  # a video asked for as a mask
        "/media/" + pair["mask"].removeprefix("/mask/"),  # an npz mask asked for as a file
        "/nowhere",
    ):
        assert client.get(path)[0] == 404, path
    for path in ("/", "/app.js", "/style.css"):
        status, data, headers = client.get(path)
        assert status == 200 and data and "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"http" not in client.get("/")[1].replace(b"http-equiv", b"")  # no external assets


def test_media_supports_range_requests(served) -> None:
    small, _, client = served
    src = json.loads(client.get("/api/queue")[1])["pairs"][0]["src"]
    whole = small.catalog.read_media(src.removeprefix("/media/"))
    status, data, headers = client.get(src, {"Range": "bytes=10-99"})
    assert status == 206 and data == whole[10:100] and headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
    assert client.get(src, {"Range": "bytes=-16"})[1] == whole[-16:]
    assert client.get(src, {"Range": f"bytes={len(whole)}-"})[0] == 416
    assert (
        byte_range(None, 10) is None
        and byte_range("bytes=2-", 10) == (2, 9)
        and byte_range("bytes=0-99", 10) == (0, 9)
    )
    with pytest.raises(RangeNotSatisfiable):
        byte_range("bytes=5-2", 10)


def decode_video(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


def test_a_memory_catalog_is_reviewed_through_fsspec() -> None:
    small = make_small_catalog(f"memory://vpf-review-{uuid.uuid4().hex[:8]}", n_renders=2)
    session = ReviewSession(small.catalog, build_queue(small.catalog, QueueFilter(decision="accepted")), "bo")
    server = serve_in_thread(session)
    try:
        client = Client(server.url)
        pair = json.loads(client.get("/api/queue")[1])["pairs"][0]
        status, data, _ = client.get(pair["tgt"])
        assert status == 200 and data == small.catalog.read_media(pair["tgt"].removeprefix("/media/"))
        status, data, headers = client.get(pair["mask"])
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        frames = decode_video(data)
        assert frames.shape[0] == NUM_FRAMES and frames.max() > 200 and frames.min() < 50  # white square on black
        assert client.post("/api/review", {"pair_id": pair["id"], "verdict": "accepted"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert [(r["pair_id"], r["reviewer"]) for r in review_rows(small.catalog)] == [(pair["id"], "bo")]


def test_a_session_needs_a_reviewer(small) -> None:
    with pytest.raises(ReviewError, match="reviewer"):
        ReviewSession(small.catalog, build_queue(small.catalog, QueueFilter()), " ")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_usage_errors_exit_2(small) -> None:
    root = small.catalog.url
    for args, message in (
        (["--where", "1=1; DROP VIEW pairs"], "--where"),
        (["--sample", "0"], "--sample must be a positive"),
        (["--port", "70000"], "--port"),
    ):
        result = CliRunner().invoke(app, ["review", "--catalog", root, "--no-browser", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
    result = CliRunner().invoke(app, ["review", "--catalog", root, "--decision", "maybe"])
    assert result.exit_code == 2


def test_cli_serves_the_queue_and_prints_its_url(small, monkeypatch) -> None:
    seen = {}

    def serve_once(server: ReviewServer) -> None:
        seen["url"] = server.url
        seen["state"] = json.loads(Client(server.url).get("/api/queue")[1])  # answered by handle_request below
        raise KeyboardInterrupt

    def fake_serve(self: ReviewServer, poll_interval: float = 0.5) -> None:
        import threading

        threading.Thread(target=self.handle_request, daemon=True).start()
        serve_once(self)

    monkeypatch.setattr(ReviewServer, "serve_forever", fake_serve)
    result = CliRunner().invoke(
        app,
        ["review", "--catalog", small.catalog.url, "--no-browser", "--reviewer", "cy", "--sample", "3", "--seed", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "3 pairs to review (3 sampled of 8" in result.output
    assert f"reviewing as cy: {seen['url']}" in result.output
    assert seen["state"]["reviewer"] == "cy" and len(seen["state"]["pairs"]) == 3
    empty = CliRunner().invoke(app, ["review", "--catalog", small.catalog.url, "--run", "none", "--no-browser"])
    assert empty.exit_code == 0 and "nothing to review" in empty.output
