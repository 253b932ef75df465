"""The render pipeline: overlap without timing, per-item isolation, finished work kept on interrupt, bounded."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from tasks.pipeline import JobPipeline


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: list[int] = []
        self.rendered: list[int] = []
        self.finished: list[int] = []
        self.errors: list[tuple[int, str, str]] = []

    def load(self, item: int) -> int:
        with self.lock:
            self.loaded.append(item)
        return item * 10

    def render(self, item: int, loaded: int) -> int:
        assert loaded == item * 10
        self.rendered.append(item)
        return loaded + 1

    def finish(self, item: int, rendered: int) -> None:
        assert rendered == item * 10 + 1
        with self.lock:
            self.finished.append(item)

    def on_error(self, item: int, step: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append((item, step, str(exc)))

    def pipeline(self, **kwargs) -> JobPipeline:
        return JobPipeline(self.load, self.render, self.finish, self.on_error, **kwargs)


def _rendezvous(rec: Recorder, wait_s: float) -> Recorder:
    """Finishing item 1 and rendering item 2 each wait until the other has started: only a pipeline that runs them at
    the same time completes (rendering everything first, or finishing each item before the next render, deadlocks)."""
    meet = threading.Barrier(2, timeout=wait_s)
    finish, render = rec.finish, rec.render

    def finish_first(item: int, rendered: int) -> None:
        if item == 1:
            meet.wait()
        finish(item, rendered)

    def render_second(item: int, loaded: int) -> int:
        if item == 2:
            meet.wait()
        return render(item, loaded)

    rec.finish, rec.render = finish_first, render_second  # type: ignore[method-assign]
    return rec


def test_the_next_render_runs_while_the_previous_item_is_finished() -> None:
    rec = _rendezvous(Recorder(), wait_s=60)
    rec.pipeline(workers=2).run([1, 2, 3, 4])
    assert rec.errors == []
    assert rec.rendered == [1, 2, 3, 4]  # the device works in order
    assert sorted(rec.finished) == [1, 2, 3, 4]


def test_the_sequential_reference_does_not_overlap() -> None:
    """Negative control of the test above: without threads the rendezvous times out."""
    rec = _rendezvous(Recorder(), wait_s=0.2)
    rec.pipeline(workers=0).run([1, 2, 3])
    assert [(item, step) for item, step, _ in rec.errors] == [(1, "finish"), (2, "render")]
    assert rec.finished == [3]


def _render_rendezvous(rec: Recorder, wait_s: float) -> Recorder:
    """Rendering items 1 and 2 each wait until the other has started: only two renders at once complete."""
    meet = threading.Barrier(2, timeout=wait_s)
    render = rec.render

    def render_together(item: int, loaded: int) -> int:
        if item in (1, 2):
            meet.wait()
        return render(item, loaded)

    rec.render = render_together  # type: ignore[method-assign]
    return rec


def test_concurrent_renders_run_several_items_at_once() -> None:
    """``concurrent=True`` (engines that hold no device): renders of different items run at the same time."""
    rec = _render_rendezvous(Recorder(), wait_s=60)
    rec.pipeline(workers=2, concurrent=True).run([1, 2, 3, 4, 5])
    assert rec.errors == []
    assert sorted(rec.rendered) == sorted(rec.finished) == sorted(rec.loaded) == [1, 2, 3, 4, 5]


def test_without_concurrent_renders_the_device_renders_one_item_at_a_time() -> None:
    """Negative control of the test above: by default the renders take turns, so the rendezvous times out."""
    rec = _render_rendezvous(Recorder(), wait_s=0.2)
    rec.pipeline(workers=2).run([1, 2, 3])
    assert [(item, step) for item, step, _ in rec.errors] == [(1, "render"), (2, "render")]
    assert rec.finished == [3]


def test_concurrent_renders_stop_starting_items_after_an_interrupt() -> None:
    rec = Recorder()
    render = rec.render

    def killed(item: int, loaded: int) -> int:
        if item == 2:
            raise KeyboardInterrupt("worker stopped")
        time.sleep(0.01)  # 200 items would take about a second on two threads
        return render(item, loaded)

    rec.render = killed  # type: ignore[method-assign]
    shared = threading.BoundedSemaphore(3)
    with pytest.raises(KeyboardInterrupt):
        rec.pipeline(workers=2, concurrent=True, slots=shared).run(list(range(1, 201)))
    assert all(shared.acquire(blocking=False) for _ in range(3))  # every slot came back (other batches share them)
    assert 2 not in rec.finished and sorted(rec.rendered) == sorted(rec.finished)  # every render is finished
    assert len(rec.loaded) < 100  # nothing more was started once the interrupt was seen


def test_an_exception_of_one_item_is_reported_and_the_batch_goes_on() -> None:
    rec = Recorder()
    render = rec.render

    def flaky(item: int, loaded: int) -> int:
        if item == 3:
            raise RuntimeError("device fault on item 3")
        return render(item, loaded)

    rec.render = flaky  # type: ignore[method-assign]
    rec.pipeline(workers=2).run([1, 2, 3, 4, 5])
    assert rec.errors == [(3, "render", "device fault on item 3")]
    assert sorted(rec.finished) == [1, 2, 4, 5]


@pytest.mark.parametrize("step", ["load", "finish"])
def test_errors_in_load_and_finish_are_isolated_too(step: str) -> None:
    rec = Recorder()
    original = getattr(rec, step)

    def broken(item: int, *args: int) -> object:
        if item == 2:
            raise ValueError(f"bad {step}")
        return original(item, *args)

    setattr(rec, step, broken)
    rec.pipeline(workers=1).run([1, 2, 3])
    assert rec.errors == [(2, step, f"bad {step}")]
    assert sorted(rec.finished) == [1, 3]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_interrupt_stops_rendering_but_every_rendered_item_is_finished(workers: int) -> None:
    rec = Recorder()
    render = rec.render

    def killed(item: int, loaded: int) -> int:
        if item == 4:
            raise KeyboardInterrupt("worker stopped")
        return render(item, loaded)

    rec.render = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        rec.pipeline(workers=workers).run([1, 2, 3, 4, 5, 6])
    assert sorted(rec.finished) == [1, 2, 3]
    assert rec.rendered == [1, 2, 3]


def test_pending_work_is_bounded() -> None:
    rec = Recorder()
    gate = threading.Semaphore(0)
    pending, peak = [0], [0]
    render, finish = rec.render, rec.finish

    def counted_render(item: int, loaded: int) -> int:
        out = render(item, loaded)
        with rec.lock:
            pending[0] += 1
            peak[0] = max(peak[0], pending[0])
        gate.release()
        return out

    def slow_finish(item: int, rendered: int) -> None:
        gate.acquire()  # finishing lags behind rendering
        finish(item, rendered)
        with rec.lock:
            pending[0] -= 1

    rec.render, rec.finish = counted_render, slow_finish  # type: ignore[method-assign]
    rec.pipeline(workers=1, max_pending=2).run(list(range(20)))
    assert sorted(rec.finished) == list(range(20))
    assert peak[0] <= 2 + 1  # max_pending being finished, plus the one the render thread holds


@pytest.mark.parametrize("concurrent", [False, True])
def test_pipelines_sharing_their_slots_share_the_bound(concurrent: bool) -> None:
    """Two batches rendering at once with one ``slots`` semaphore hold no more renders together than it allows."""
    shared = threading.BoundedSemaphore(2)
    held, peak = [0], [0]
    lock = threading.Lock()

    def make() -> Recorder:
        rec = Recorder()
        render, finish = rec.render, rec.finish

        def counted_render(item: int, loaded: int) -> int:
            out = render(item, loaded)
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            return out

        def slow_finish(item: int, rendered: int) -> None:
            time.sleep(0.005)
            with lock:
                held[0] -= 1
            finish(item, rendered)

        rec.render, rec.finish = counted_render, slow_finish  # type: ignore[method-assign]
        return rec

    recs = [make(), make()]
    runs = [threading.Thread(target=r.pipeline(workers=3, concurrent=concurrent, slots=shared).run,
                             args=(list(range(15)),)) for r in recs]  # fmt: skip
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert all(sorted(r.finished) == list(range(15)) for r in recs)
    # concurrent: each render holds a slot from load to finish; otherwise the render threads may hold one more each
    assert peak[0] <= (2 if concurrent else 2 + len(recs))
    assert peak[0] >= 2  # the bound was reached: the test could fail


def test_threads_see_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    var.set("run-context")
    JobPipeline(
        lambda i: seen.append(var.get()), lambda i, loaded: i, lambda i, r: seen.append(var.get()), print, workers=2
    ).run([1, 2])
    assert seen and set(seen) == {"run-context"}


def test_bad_settings_are_refused() -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="workers"):
        rec.pipeline(workers=-1)
    with pytest.raises(ValueError, match="max_pending"):
        rec.pipeline(workers=1, max_pending=0)


def test_a_failing_error_handler_ends_the_batch_after_the_started_work() -> None:
    rec = Recorder()
    finish = rec.finish

    def broken_finish(item: int, rendered: int) -> None:
        if item == 2:
            raise ValueError("bad item")
        finish(item, rendered)

    def unreachable(item: int, step: str, exc: BaseException) -> None:
        raise ConnectionError("catalog unreachable")

    rec.finish = broken_finish  # type: ignore[method-assign]
    with pytest.raises(ConnectionError, match="catalog unreachable"):
        JobPipeline(rec.load, rec.render, rec.finish, unreachable, workers=1).run([1, 2, 3])
    assert 1 in rec.finished
