"""Where a batch spends its time: busy wall and CPU seconds per stage, recorded as ``stage_timings`` rows.

A :class:`StageTimer` belongs to one batch. Code charges time to a stage with ``timer.span("encode")``, or, deep in
the stages where no timer is passed around, with :func:`span` on the timer made current by :func:`use_timer`
(a context variable: set it in each worker thread that works on the batch). Spans nest exclusively: time in an inner
span (``encode`` inside ``render``) is charged to the inner stage only. Spans from several threads add up, so with
overlapping stages the total exceeds wall time. The stages: docs/throughput.md, "Where the time went".
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from catalog import ids


Stage = Literal["ingest", "annotate", "propose", "load", "render", "score", "encode", "record"]
STAGES: tuple[str, ...] = get_args(Stage)


@dataclass
class StageTime:
    """Accumulated busy time of one stage in one batch."""

    items: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    started: float | None = None  # epoch seconds of the first span
    finished: float | None = None  # epoch seconds of the end of the last span


class StageTimer:
    """Busy time per stage of one batch; safe to use from several threads at once."""

    def __init__(self) -> None:
        self.stages: dict[str, StageTime] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:  # picklable: ingest may return its timer from a Dask/Ray worker
        with self._lock:
            return {"stages": dict(self.stages)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.stages = state["stages"]

    def _charge(self, stage: str, wall: float, cpu: float, items: int, start: float | None = None) -> None:
        now = time.time()
        with self._lock:
            st = self.stages.setdefault(stage, StageTime())
            st.wall_s += wall
            st.cpu_s += cpu
            st.items += items
            if start is not None:
                st.started = start if st.started is None else min(st.started, start)
            st.finished = now if st.finished is None else max(st.finished, now)

    @contextmanager
    def span(self, stage: str, items: int = 0) -> Iterator[None]:
        """Charge the block's wall and CPU time (this thread's) to ``stage``; the enclosing span of this thread is
        paused meanwhile. ``items``: how many items the block handled."""
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {STAGES}")
        stack: list[list[Any]] = self._local.__dict__.setdefault("stack", [])
        now_w, now_c = time.perf_counter(), time.thread_time()
        if stack:  # pause the enclosing span: charge what it ran so far
            outer = stack[-1]
            self._charge(outer[0], now_w - outer[1], now_c - outer[2], 0)
        stack.append([stage, now_w, now_c])
        start = time.time()
        try:
            yield
        finally:
            _, w0, c0 = stack.pop()
            end_w, end_c = time.perf_counter(), time.thread_time()
            self._charge(stage, end_w - w0, end_c - c0, items, start)
            if stack:  # resume the enclosing span from now
                stack[-1][1], stack[-1][2] = end_w, end_c

    def merge(self, other: StageTimer) -> None:
        """Add ``other``'s stages to this timer's."""
        with self._lock, other._lock:
            for stage, t in other.stages.items():
                st = self.stages.setdefault(stage, StageTime())
                st.items += t.items
                st.wall_s += t.wall_s
                st.cpu_s += t.cpu_s
                if t.started is not None:
                    st.started = t.started if st.started is None else min(st.started, t.started)
                if t.finished is not None:
                    st.finished = t.finished if st.finished is None else max(st.finished, t.finished)

    def summary(self) -> dict[str, float]:
        """``{stage: busy seconds}`` in stage order."""
        with self._lock:
            return {s: round(self.stages[s].wall_s, 3) for s in STAGES if s in self.stages}

    def rows(self, *, run_id: str | None, batch: str, worker: str) -> list[dict[str, Any]]:
        """``stage_timings`` rows, one per stage that ran (ids from run, batch, stage and worker)."""

        def ts(epoch: float | None) -> datetime | None:
            return datetime.fromtimestamp(epoch, timezone.utc) if epoch is not None else None

        with self._lock:
            return [
                {
                    "timing_id": ids.make_id("timing", run_id, batch, stage, worker),
                    "run_id": run_id,
                    "batch": batch,
                    "stage": stage,
                    "items": t.items,
                    "wall_s": round(t.wall_s, 4),
                    "cpu_s": round(t.cpu_s, 4),
                    "worker": worker,
                    "started_at": ts(t.started),
                    "finished_at": ts(t.finished),
                }
                for stage in STAGES
                if (t := self.stages.get(stage)) is not None
            ]


_current: contextvars.ContextVar[StageTimer | None] = contextvars.ContextVar("vpf_stage_timer", default=None)


@contextmanager
def use_timer(timer: StageTimer | None) -> Iterator[StageTimer | None]:
    """Make ``timer`` the one :func:`span` charges in this context (this thread, and tasks started from it with a
    copy of the context)."""
    token = _current.set(timer)
    try:
        yield timer
    finally:
        _current.reset(token)


@contextmanager
def span(stage: str, items: int = 0) -> Iterator[None]:
    """:meth:`StageTimer.span` on the current timer (see :func:`use_timer`); does nothing without one."""
    timer = _current.get()
    if timer is None:
        yield
        return
    with timer.span(stage, items):
        yield
