"""One reviewer's session over a queue of pairs: what the page is shown, and the reviews it writes.

Every write goes through ``catalog.reviews.record_review``; the session only checks the request first (the pair is
in this session's queue, the verdict and reason are known) and remembers what it wrote, so ``undo`` can withdraw the
last review (a ``withdrawn`` row: the pair counts as not reviewed again).
"""

from __future__ import annotations

import math
import threading
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from catalog.gallery.builder import METRICS
from catalog.gallery.media import MASK_FPS_DEFAULT
from catalog.review.queue import Queue, ReviewError
from catalog.reviews import MAX_NOTE_CHARS, record_review
from catalog.schema import REVIEW_REASONS
from catalog.storage import CatalogError


if TYPE_CHECKING:
    from catalog.store import Catalog


REASON_LABELS = {
    "object_left": "object left",
    "effect_left": "effect (shadow/reflection) left",
    "artefact": "artefact",
    "flicker": "flicker",
    "wrong_object": "wrong object",
    "bad_instruction": "bad instruction",
    "other": "other",
}
VERDICTS = ("accepted", "rejected")  # what a reviewer posts; ``withdrawn`` rows come from undo only


def is_catalog_relative(uri: str) -> bool:
    """Whether ``uri`` is a path inside the catalog root (no scheme, not absolute, no ``..``)."""
    path = PurePosixPath(uri)
    return bool(uri) and "://" not in uri and "\\" not in uri and not path.is_absolute() and ".." not in path.parts


class ReviewSession:
    """The queue, the reviewer and the reviews written so far; safe to call from the server's threads.

    ``media`` maps each catalog-relative media path the page may ask for to ``"file"`` (served as stored) or
    ``"mask"`` (an ``.npz`` mask, served encoded as mp4): nothing else under the catalog root is served.
    """

    def __init__(self, catalog: Catalog, queue: Queue, reviewer: str):
        if not reviewer or not reviewer.strip():
            raise ReviewError("reviewer: a reviewer name is needed (--reviewer or $VPF_REVIEWER)")
        self.catalog = catalog
        self.queue = queue
        self.reviewer = reviewer
        self.index = {row["pair_id"]: i for i, row in enumerate(queue.rows)}
        self.verdicts: dict[str, str | None] = {r["pair_id"]: r.get("latest_review_verdict") for r in queue.rows}
        self.history: list[str] = []  # pair ids reviewed in this session, oldest first, each once
        self.media: dict[str, str] = {}
        self.mask_fps: dict[str, float] = {}  # .npz mask path -> frames per second of its clip
        self.pairs = [self._pair(i, row) for i, row in enumerate(queue.rows)]
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- API
    def state(self) -> dict[str, Any]:
        """``GET /api/queue``: the reviewer, the reasons, the counts and every pair of the queue."""
        with self._lock:
            pairs = [dict(p, review=self.verdicts[p["id"]]) for p in self.pairs]
            return {
                "reviewer": self.reviewer,
                "reasons": [{"key": k, "label": REASON_LABELS.get(k, k)} for k in REVIEW_REASONS],
                "matching": self.queue.matching,
                "sampled": self.queue.sampled,
                "already_reviewed": self.queue.already_reviewed,
                "strata": self.queue.strata,
                "counts": self._counts(),
                "can_undo": bool(self.history),
                "pairs": pairs,
            }

    def review(self, body: Any) -> dict[str, Any]:
        """``POST /api/review`` with ``{"pair_id", "verdict": "accepted"|"rejected", "reason", "note"}``.

        A rejection needs a reason from ``REVIEW_REASONS``; an acceptance takes none. Raises ``ReviewError`` naming
        the bad field; returns the row written and the new counts.
        """
        if not isinstance(body, dict):
            raise ReviewError("the request body must be a JSON object")
        unknown = set(body) - {"pair_id", "verdict", "reason", "note"}
        if unknown:
            raise ReviewError(f"unknown field(s) {sorted(unknown)}; expected pair_id, verdict, reason, note")
        pair_id = self._pair_id(body.get("pair_id"))
        verdict = body.get("verdict")
        if verdict not in VERDICTS:
            raise ReviewError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)} (undo: POST /api/undo)")
        reason = body.get("reason")
        if verdict == "rejected":
            if reason not in REVIEW_REASONS:
                raise ReviewError(f"reason {reason!r} is not one of {', '.join(REVIEW_REASONS)}")
        elif reason is not None:
            raise ReviewError(f"reason {reason!r}: only a rejection takes a reason")
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            raise ReviewError("note must be a string")
        note = note.strip() if note else None
        if note and len(note) > MAX_NOTE_CHARS:
            raise ReviewError(f"note has {len(note)} characters, at most {MAX_NOTE_CHARS}")
        with self._lock:
            row = self._write(pair_id, verdict, reason=reason, note=note)
            if pair_id in self.history:
                self.history.remove(pair_id)
            self.history.append(pair_id)
            self.verdicts[pair_id] = verdict
            return {"review": _jsonable(row), "index": self.index[pair_id], "counts": self._counts()}

    def undo(self) -> dict[str, Any]:
        """``POST /api/undo``: withdraw the last review of this session; returns the pair and its queue index."""
        with self._lock:
            if not self.history:
                raise ReviewError("nothing to undo: no review was made in this session")
            pair_id = self.history[-1]
            row = self._write(pair_id, "withdrawn")
            self.history.pop()
            self.verdicts[pair_id] = None
            return {
                "review": _jsonable(row),
                "pair_id": pair_id,
                "index": self.index[pair_id],
                "counts": self._counts(),
                "can_undo": bool(self.history),
            }

    # ---------------------------------------------------------------- internals
    def _write(self, pair_id: str, verdict: str, **fields: Any) -> dict[str, Any]:
        try:
            return record_review(self.catalog, pair_id, verdict, reviewer=self.reviewer, **fields)
        except CatalogError as exc:
            raise ReviewError(str(exc)) from None

    def _pair_id(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ReviewError("pair_id must be a non-empty string")
        if value not in self.index:
            raise ReviewError(f"pair_id {value[:80]!r} is not in this review session's queue")
        return value

    def _counts(self) -> dict[str, int]:
        values = list(self.verdicts.values())
        accepted, rejected = values.count("accepted"), values.count("rejected")
        return {
            "total": len(values),
            "accepted": accepted,
            "rejected": rejected,
            "reviewed": accepted + rejected,
            "session": len(self.history),
        }

    def _media_url(self, uri: str | None, kind: str, fps: float | None = None) -> str | None:
        if not uri or not is_catalog_relative(uri):
            return None
        if kind == "mask" and uri.endswith(".npz"):
            self.media[uri] = "mask"
            self.mask_fps[uri] = float(fps) if fps else MASK_FPS_DEFAULT
            return f"/mask/{uri}"
        self.media[uri] = "file"
        return f"/media/{uri}"

    def _pair(self, i: int, row: dict[str, Any]) -> dict[str, Any]:
        metrics = []
        for name, label, higher in METRICS:
            value = _number(row.get(name))
            if value is not None:
                metrics.append({"name": name, "label": label, "value": value, "higher_is_better": higher})
        pair = {
            "id": row["pair_id"],
            "index": i,
            "edit_type": row.get("edit_type"),
            "instruction": row.get("instruction"),
            "instruction_long": row.get("instruction_long"),
            "engine": row.get("engine"),
            "engine_version": row.get("engine_version"),
            "decision": row.get("decision"),
            "decision_reason": row.get("decision_reason"),
            "object_label": row.get("object_label"),
            "target_caption": row.get("target_caption"),
            "quality_flags": list(row.get("quality_flags") or []),
            "judge_reason": row.get("judge_reason"),
            "run_id": row.get("run_id"),
            "created_at": _jsonable(row.get("created_at")),
            "fps": _number(row.get("clip_fps")),
            "metrics": metrics,
            "src": self._media_url(row.get("src_video_uri"), "file"),
            "mask": self._media_url(row.get("mask_uri"), "mask", row.get("clip_fps")),
            "tgt": self._media_url(row.get("tgt_video_uri"), "file"),
        }
        return {k: v for k, v in pair.items() if v is not None}


def _number(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return float(f"{value:.5g}") if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value
