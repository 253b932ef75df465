"""flows/build_pairs.RunTally: the run's status from what its stages counted."""

from __future__ import annotations

import pytest

from flows.build_pairs import RunTally
from flows.executors import BatchSummary
from tasks.config import RunConfig
from tasks.types import Failure


def _tally(items: int, failures: int) -> RunTally:
    tally = RunTally("run_x")
    tally.add({"items": items})
    tally.failed([Failure("ingest", "item", f"item_{i}", "unreadable_video", "probe failed") for i in range(failures)])
    return tally


def test_status_from_counts() -> None:
    config = RunConfig(source="clips/", catalog="memory://x")
    assert _tally(10, 0).status(config) == "completed"
    assert _tally(10, 3).status(config) == "completed_with_failures"
    lost = _tally(10, 0)
    lost.rendered(None, cat=None)  # type: ignore[arg-type]  # a render batch whose flow run did not complete
    assert lost.status(config) == "failed" and lost.counts["render_batches_failed"] == 1


@pytest.mark.parametrize("failures, status", [(2, "completed_with_failures"), (3, "failed")])
def test_max_failure_ratio_fails_a_run_with_too_many_failures(failures: int, status: str) -> None:
    config = RunConfig(source="clips/", catalog="memory://x", max_failure_ratio=0.2)
    assert _tally(10, failures).status(config) == status  # 2 of 10 is within 20 %, 3 of 10 is not


def test_a_run_whose_items_all_fail_to_be_discovered_fails_under_a_ratio() -> None:
    config = RunConfig(source="clips/", catalog="memory://x", max_failure_ratio=0.5)
    assert _tally(0, 1).status(config) == "failed"
    assert _tally(0, 1).status(RunConfig(source="clips/", catalog="memory://x")) == "completed_with_failures"


def test_batch_summaries_add_up_and_previews_are_capped() -> None:
    class _Cat:
        def full_url(self, uri: str) -> str:
            return f"/cat/{uri}"

    tally = RunTally("run_x")
    for _ in range(3):
        tally.rendered(BatchSummary(counts={"pairs": 4, "failures": 0}, previews=[f"p{i}" for i in range(5)]), _Cat())
    assert tally.counts == {"pairs": 12, "failures": 0}
    assert len(tally.previews) == 12 and tally.previews[0] == "/cat/p0"


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(0, 8, []), (1, 8, [1]), (5, 8, [1, 2, 2]), (20, 8, [1, 2, 4, 8, 5]), (40, 16, [1, 2, 4, 8, 16, 9]),
     (5, 1, [1, 1, 1, 1, 1]), (7, 3, [1, 2, 3, 1])],
)  # fmt: skip
def test_batches_grow_from_one_item_to_the_batch_size(n: int, size: int, expected: list[int]) -> None:
    from flows.build_pairs import _ramp_batches

    batches = _ramp_batches(list(range(n)), size)
    assert [len(b) for b in batches] == expected
    assert [i for b in batches for i in b] == list(range(n))  # every item once, in order
