"""A render worker's pipeline: the device renders one job after another while CPU threads work beside it.

Per job: ``load`` (a loader thread, one job ahead) → ``render`` (the calling thread, in order) → ``finish`` (a pool
of threads: store, score, record). Bounded: at most ``max_pending`` rendered jobs wait for or run ``finish``, so
memory stays flat. An ``Exception`` of one job goes to ``on_error`` and the batch goes on; every started ``finish``
completes before the batch returns or re-raises, so an interrupt never loses a finished render. ``workers=0`` is
the sequential reference; ``concurrent=True`` runs whole jobs on the threads (engines that hold no device).

:func:`process_jobs` is the factory's use of it: render, record, score and record again, job by job.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Literal, TypeVar


ItemT = TypeVar("ItemT")
InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
Step = Literal["load", "render", "finish"]


class JobPipeline(Generic[ItemT, InputT, OutputT]):
    """Run batches of items through ``load → render → finish`` (see the module docstring).

    Args:
        load: ``item -> loaded``; CPU and I/O, on a loader thread one item ahead of the render.
        render: ``(item, loaded) -> rendered``; the device's work, on the calling thread, one item at a time in order.
        finish: ``(item, rendered) -> None``; CPU work behind the render, on ``workers`` threads.
        on_error: ``(item, step, exception) -> None``; called (on any thread) for an ``Exception`` of one item.
        workers: threads for ``finish`` (0: no threads at all, the sequential reference).
        max_pending: rendered items allowed to wait for or run ``finish`` (default ``workers + 1``).
        slots: a semaphore to share that bound with other pipelines (several batches rendering at once in one
            process); built from ``max_pending`` when None.
        concurrent: render on the ``workers`` threads too, several items at once (engines that hold no device).
    """

    def __init__(
        self,
        load: Callable[[ItemT], InputT],
        render: Callable[[ItemT, InputT], OutputT],
        finish: Callable[[ItemT, OutputT], None],
        on_error: Callable[[ItemT, Step, BaseException], None],
        *,
        workers: int = 1,
        max_pending: int | None = None,
        concurrent: bool = False,
        slots: threading.Semaphore | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._load, self._render, self._finish, self._on_error = load, render, finish, on_error
        self.workers = workers
        self.max_pending = max_pending or workers + 1
        self.concurrent = concurrent
        self._slots = slots

    def run(self, items: Sequence[ItemT]) -> None:
        """Load, render and finish every item; returns when every started ``finish`` is done."""
        if self.workers == 0:
            for item in items:
                loaded = self._guard(item, "load", self._load, item)
                if loaded is _FAILED:
                    continue
                rendered = self._guard(item, "render", self._render, item, loaded)
                if rendered is not _FAILED:
                    self._guard(item, "finish", self._finish, item, rendered)
            return
        if self.concurrent:
            self._run_concurrent(items)
            return
        slots = self._slots or threading.BoundedSemaphore(self.max_pending)
        # Threads get a copy of the caller's context (the Prefect run context, the current stage timer).
        context = contextvars.copy_context()
        finishing: list[Future[None]] = []
        errors: list[BaseException] = []
        with (
            ThreadPoolExecutor(1, "vpf-load", initializer=enter_context, initargs=(context,)) as loader,
            ThreadPoolExecutor(self.workers, "vpf-finish", initializer=enter_context, initargs=(context,)) as pool,
        ):
            try:
                ahead = loader.submit(self._guard, items[0], "load", self._load, items[0]) if items else None
                for index, item in enumerate(items):
                    loaded = ahead.result() if ahead is not None else _FAILED
                    nxt = items[index + 1] if index + 1 < len(items) else None
                    ahead = loader.submit(self._guard, nxt, "load", self._load, nxt) if nxt is not None else None
                    if loaded is _FAILED:
                        continue
                    rendered = self._guard(item, "render", self._render, item, loaded)
                    del loaded
                    if rendered is _FAILED:
                        continue
                    slots.acquire()  # bounded: wait while max_pending rendered items are being finished
                    finishing.append(pool.submit(self._finish_and_release, slots, item, rendered))
                    del rendered
            finally:
                # the batch's rendered items are finished even when rendering stopped
                errors = [exc for future in finishing if (exc := future.exception()) is not None]
        if errors:  # on_error itself failed (e.g. the catalog is unreachable): the batch cannot go on
            raise errors[0]

    def _run_concurrent(self, items: Sequence[ItemT]) -> None:
        """Each item's load → render → finish as one unit on the worker threads; at most ``max_pending`` units are
        queued or running, so memory stays bounded."""
        slots = self._slots or threading.BoundedSemaphore(self.max_pending)
        context = contextvars.copy_context()
        started: list[Future[None]] = []
        with ThreadPoolExecutor(self.workers, "vpf-render", initializer=enter_context, initargs=(context,)) as pool:
            try:
                for item in items:
                    slots.acquire()
                    if any(f.done() and f.exception() is not None for f in started):
                        slots.release()  # the slot is shared with other batches: give it back
                        break  # an interrupt (or a failing on_error): start nothing more
                    started.append(pool.submit(self._whole_item, slots, item))
            finally:
                errors = [exc for future in started if (exc := future.exception()) is not None]
        if errors:  # on_error itself failed, or an interrupt: the batch cannot go on
            raise errors[0]

    def _whole_item(self, slots: threading.Semaphore, item: ItemT) -> None:
        try:
            loaded = self._guard(item, "load", self._load, item)
            if loaded is _FAILED:
                return
            rendered = self._guard(item, "render", self._render, item, loaded)
            del loaded
            if rendered is not _FAILED:
                self._guard(item, "finish", self._finish, item, rendered)
        finally:
            slots.release()

    def _finish_and_release(self, slots: threading.Semaphore, item: ItemT, rendered: OutputT) -> None:
        try:
            self._guard(item, "finish", self._finish, item, rendered)
        finally:
            slots.release()

    def _guard(self, item: ItemT, step: Step, fn: Callable, *args: object) -> object:
        try:
            return fn(*args)
        except Exception as exc:
            self._on_error(item, step, exc)
            return _FAILED


_FAILED = object()


def enter_context(context: contextvars.Context) -> None:
    """Thread initializer: run this worker thread in a copy of ``context``."""
    for var, value in context.items():
        var.set(value)
