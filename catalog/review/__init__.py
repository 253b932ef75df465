"""``vpf review``: a local web app to review pairs with the keyboard; each verdict is a row of ``reviews``.

``build_queue(catalog, QueueFilter(...))`` selects the pairs (filters, an optional stratified sample),
``ReviewSession`` checks and records the reviewer's verdicts through ``catalog.reviews.record_review``, and
``ReviewServer`` serves the page, its JSON API and the pairs' media from the catalog (any fsspec URL).
"""

from catalog.review.queue import (
    STRATA,
    Queue,
    QueueFilter,
    ReviewError,
    allocate,
    build_queue,
    queue_query,
    stratified_sample,
)
from catalog.review.server import ReviewServer, byte_range, serve_in_thread
from catalog.review.session import REASON_LABELS, ReviewSession


__all__ = [
    "REASON_LABELS",
    "STRATA",
    "Queue",
    "QueueFilter",
    "ReviewError",
    "ReviewServer",
    "ReviewSession",
    "allocate",
    "build_queue",
    "byte_range",
    "queue_query",
    "serve_in_thread",
    "stratified_sample",
]
