"""People's verdicts on pairs: the append-only ``reviews`` table and how a pair's reviewed decision is read.

A review row says what one reviewer thought of one pair at one moment (``accepted`` / ``rejected`` with a reason, or
``withdrawn``: an undo). Rows are never rewritten; the latest row of a pair wins, and a pair whose latest row is
``withdrawn`` counts as not reviewed. Reviews are keyed by pair id, so they survive re-runs (a pair's id is stable)
and compaction (compaction keeps rows, it only merges fragments).
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime

import pyarrow as pa

from catalog.ids import make_id
from catalog.schema import REVIEW_REASONS, REVIEW_VERDICTS
from catalog.storage import CatalogError, CatalogStorage, now_utc


REVIEWER_ENV = "VPF_REVIEWER"
MAX_NOTE_CHARS = 2000
MAX_REVIEWER_CHARS = 100

# The latest review of each pair, withdrawn ones dropped: the view ``reviewed`` (catalog.views) and every reader
# that needs a pair's reviewed decision use this query.
LATEST_REVIEWS_SQL = """
SELECT pair_id, reviewer, verdict, reason, note, created_at AS reviewed_at
FROM (
    SELECT *, row_number() OVER (PARTITION BY pair_id ORDER BY created_at DESC, review_id DESC) AS _n
    FROM reviews
)
WHERE _n = 1 AND verdict <> 'withdrawn'
"""


def reviewer_name(option: str | None = None) -> str:
    """The reviewer's name: ``option``, else ``$VPF_REVIEWER``, else the login name."""
    for name in (option, os.environ.get(REVIEWER_ENV)):
        if name and name.strip():
            return name.strip()[:MAX_REVIEWER_CHARS]
    try:
        return getpass.getuser()[:MAX_REVIEWER_CHARS]
    except (KeyError, OSError):
        return "unknown"


def review_row(
    pair_id: str,
    verdict: str,
    *,
    reviewer: str,
    reason: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> dict:
    """One ``reviews`` row, checked: raises ``CatalogError`` naming the field for an unknown verdict or reason."""
    if verdict not in REVIEW_VERDICTS:
        raise CatalogError(f"review of {pair_id}: verdict {verdict!r} is not one of {', '.join(REVIEW_VERDICTS)}")
    if reason is not None and reason not in REVIEW_REASONS:
        raise CatalogError(f"review of {pair_id}: reason {reason!r} is not one of {', '.join(REVIEW_REASONS)}")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise CatalogError(f"review of {pair_id}: the note has {len(note)} characters, at most {MAX_NOTE_CHARS}")
    at = at or now_utc()
    return {
        "review_id": make_id("review", pair_id, reviewer, at.isoformat()),
        "pair_id": pair_id,
        "reviewer": reviewer,
        "verdict": verdict,
        "reason": reason if verdict == "rejected" else None,
        "note": note or None,
        "created_at": at,
    }


def record_review(
    catalog: CatalogStorage,
    pair_id: str,
    verdict: str,
    *,
    reviewer: str | None = None,
    reason: str | None = None,
    note: str | None = None,
) -> dict:
    """Append one review of ``pair_id`` to the catalog and return the row written."""
    row = review_row(pair_id, verdict, reviewer=reviewer_name(reviewer), reason=reason, note=note)
    catalog.append("reviews", [row])
    return row


def latest_reviews(catalog) -> pa.Table:
    """The latest non-withdrawn review of each reviewed pair (``catalog`` is a ``catalog.store.Catalog``)."""
    return catalog.query(LATEST_REVIEWS_SQL)
