"""What a review session shows: the pairs matching the filters, optionally a stratified random sample of them.

A sample is drawn from every pair that matches the filters (reviewed or not) and only then are pairs already reviewed
dropped (``unreviewed=True``), so running ``vpf review --sample 100 --seed 7`` again resumes the same sample instead
of drawing a new one among what is left.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from catalog.gallery import GalleryError, gallery_query
from catalog.reviews import LATEST_REVIEWS_SQL
from catalog.schema import DECISIONS
from catalog.sql import SqlRejected


if TYPE_CHECKING:
    from catalog.store import Catalog


STRATA = ("decision", "engine")  # a sample is stratified by the gate's decision and the engine
MAX_QUEUE_PAIRS = 10_000  # one session's page holds at most this many pairs (about 1 KB of JSON each)


class ReviewError(ValueError):
    """Bad input for a review session (a filter, a sample size, an API request); the message names the input."""


@dataclass(frozen=True)
class QueueFilter:
    """Which pairs a review session shows; every field narrows the selection (``None``: no condition)."""

    where: str | None = None  # a predicate over pairs_full's columns, checked read-only like ``vpf sql``
    run: str | None = None
    engine: str | None = None
    edit_type: str | None = None
    decision: str | None = None
    unreviewed: bool = True  # drop pairs whose latest review is not withdrawn
    sample: int | None = None  # a stratified random sample of this many pairs
    seed: int = 0
    max_pairs: int = MAX_QUEUE_PAIRS  # the queue keeps the first this many; ``Queue.left_out`` counts the rest

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise ReviewError(f"decision {self.decision!r} is not one of {', '.join(DECISIONS)}")
        if self.sample is not None and self.sample < 1:
            raise ReviewError(f"sample must be a positive number of pairs, got {self.sample}")
        if self.max_pairs < 1:
            raise ReviewError(f"max_pairs must be >= 1, got {self.max_pairs}")


@dataclass
class Queue:
    """The pairs to review (``pairs_full`` rows, in review order) and what the selection held before it was cut."""

    rows: list[dict[str, Any]]
    matching: int  # pairs matching the filters
    sampled: int  # after sampling (== matching without a sample)
    already_reviewed: int  # sampled pairs dropped because they were reviewed already
    left_out: int = 0  # pairs past ``QueueFilter.max_pairs``: a later session shows them
    # samples only: "decision / engine" -> {"pairs": matching pairs in the stratum, "drawn": pairs sampled from it}
    strata: dict[str, dict[str, int]] = field(default_factory=dict)


def queue_query(flt: QueueFilter) -> tuple[str, list[str]]:
    """The read-only SQL (and its parameters) selecting the pairs matching ``flt``'s filters, oldest first.

    Raises ``ReviewError`` when ``flt.where`` is not one boolean expression over pairs_full's columns.
    """
    try:
        base = gallery_query(flt.where)
    except GalleryError as exc:
        raise ReviewError(str(exc)) from None
    conditions, params = [], []
    for column, value in (
        ("run_id", flt.run),
        ("engine", flt.engine),
        ("edit_type", flt.edit_type),
        ("decision", flt.decision),
    ):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        "SELECT p.*, r.verdict AS latest_review_verdict, r.reason AS latest_review_reason,\n"
        "    r.reviewer AS latest_reviewer\n"
        f"FROM (SELECT * FROM ({base}){where}) AS p\n"
        f"LEFT JOIN ({LATEST_REVIEWS_SQL}) AS r USING (pair_id)\n"
        "ORDER BY p.created_at, p.pair_id"
    )
    return sql, params


def build_queue(catalog: Catalog, flt: QueueFilter) -> Queue:
    """The review queue of ``catalog`` under ``flt``: filter, sample (``flt.sample``), drop reviewed pairs, keep the
    first ``flt.max_pairs``."""
    sql, params = queue_query(flt)
    try:
        rows = catalog.query(sql, params, read_only=True).to_pylist()
    except SqlRejected as exc:
        raise ReviewError(f"--where {flt.where!r} was rejected: {exc}") from None
    except duckdb.Error as exc:
        raise ReviewError(f"--where {flt.where!r} failed against the catalog: {exc}") from None
    matching = len(rows)
    strata: dict[str, dict[str, int]] = {}
    if flt.sample is not None:
        for row in rows:
            strata.setdefault(_stratum(row), {"pairs": 0, "drawn": 0})["pairs"] += 1
        rows = stratified_sample(rows, flt.sample, seed=flt.seed)
        for row in rows:
            strata[_stratum(row)]["drawn"] += 1
    sampled = len(rows)
    if flt.unreviewed:
        rows = [r for r in rows if r.get("latest_review_verdict") is None]
    already_reviewed = sampled - len(rows)
    left_out = max(0, len(rows) - flt.max_pairs)
    return Queue(
        rows=rows[: flt.max_pairs],
        matching=matching,
        sampled=sampled,
        already_reviewed=already_reviewed,
        left_out=left_out,
        strata=strata,
    )


def _stratum(row: dict[str, Any]) -> str:
    return " / ".join(str(row.get(k)) for k in STRATA)


def allocate(sizes: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` draws each stratum of ``sizes`` gets: proportional to its size (largest remainder), at
    least one for every non-empty stratum when ``n`` is at least the number of non-empty strata, never more than
    the stratum holds. Sums to ``min(n, sum(sizes))``.
    """
    if any(s < 0 for s in sizes):
        raise ReviewError(f"stratum sizes must be >= 0, got {list(sizes)}")
    if n < 0:
        raise ReviewError(f"sample size must be >= 0, got {n}")
    total = sum(sizes)
    n = min(n, total)
    if n == 0:
        return [0] * len(sizes)
    quota = [n * s / total for s in sizes]
    counts = [math.floor(q) for q in quota]
    non_empty = [i for i, s in enumerate(sizes) if s > 0]
    if n >= len(non_empty):
        for i in non_empty:
            counts[i] = max(counts[i], 1)
    # Too many (minimums raised some strata): take back from those furthest above their quota, keeping minimums.
    while sum(counts) > n:
        i = max((i for i in non_empty if counts[i] > 1), key=lambda i: (counts[i] - quota[i], -i))
        counts[i] -= 1
    # Too few: give to those furthest below their quota that still have pairs left.
    while sum(counts) < n:
        i = max((i for i in non_empty if counts[i] < sizes[i]), key=lambda i: (quota[i] - counts[i], -i))
        counts[i] += 1
    return counts


def stratified_sample(
    rows: Sequence[dict[str, Any]], n: int, *, seed: int = 0, keys: Sequence[str] = STRATA
) -> list[dict[str, Any]]:
    """A random sample of ``n`` rows stratified by ``keys`` (proportional allocation, see :func:`allocate`).

    Reproducible: the same rows (in any order) and ``seed`` give the same sample, in the same order. Within a stratum
    rows are drawn uniformly; the sample is then shuffled, so a reviewer does not see the strata one after another.
    """
    if n < 1:
        raise ReviewError(f"sample must be a positive number of pairs, got {n}")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(k)) for k in keys), []).append(row)
    names = sorted(groups)
    for name in names:
        groups[name].sort(key=lambda r: r["pair_id"])
    counts = allocate([len(groups[name]) for name in names], n)
    rng = random.Random(seed)
    picked = [row for name, k in zip(names, counts) for row in rng.sample(groups[name], k)]
    rng.shuffle(picked)
    return picked
