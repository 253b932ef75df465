"""Stage timings: exclusive nesting, several threads, the current timer, rows for the catalog."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from catalog.schema import STAGE_TIMINGS
from tasks.timings import StageTimer, span, use_timer


def test_inner_spans_are_charged_to_the_inner_stage_only() -> None:
    timer = StageTimer()
    with timer.span("render", items=1):
        with timer.span("encode", items=2):
            time.sleep(0.2)
    stages = timer.stages
    assert stages["encode"].wall_s >= 0.2
    assert stages["render"].wall_s < 0.1  # the sleep is not counted twice
    assert (stages["render"].items, stages["encode"].items) == (1, 2)


def test_time_after_an_inner_span_goes_back_to_the_outer_stage() -> None:
    timer = StageTimer()
    with timer.span("render"):
        with timer.span("encode"):
            pass
        time.sleep(0.15)
    assert timer.stages["render"].wall_s >= 0.15
    assert timer.stages["encode"].wall_s < 0.1


def test_spans_of_several_threads_add_up() -> None:
    timer = StageTimer()

    def work() -> None:
        with timer.span("score", items=1):
            time.sleep(0.1)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert timer.stages["score"].items == 3
    assert timer.stages["score"].wall_s >= 0.3


def test_module_span_uses_the_current_timer_and_is_a_no_op_without_one() -> None:
    with span("render"):  # no current timer: nothing to charge, no error
        pass
    timer = StageTimer()
    with use_timer(timer):
        with span("propose", items=4):
            pass
    with span("record"):  # the timer is no longer current
        pass
    assert set(timer.stages) == {"propose"}
    assert timer.stages["propose"].items == 4


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="stage 'paint'"):
        with StageTimer().span("paint"):
            pass


def test_rows_fit_the_schema_and_their_ids_are_deterministic() -> None:
    timer = StageTimer()
    with timer.span("ingest", items=3):
        pass
    with timer.span("record", items=7):
        pass
    rows = timer.rows(run_id="run_x", batch="1/2", worker="w1")
    assert [r["stage"] for r in rows] == ["ingest", "record"]
    pa.Table.from_pylist([{**r, "created_at": r["started_at"]} for r in rows], schema=STAGE_TIMINGS)
    again = timer.rows(run_id="run_x", batch="1/2", worker="w1")
    assert [r["timing_id"] for r in rows] == [r["timing_id"] for r in again]
    other = timer.rows(run_id="run_x", batch="2/2", worker="w1")
    assert not {r["timing_id"] for r in rows} & {r["timing_id"] for r in other}


def test_merge_adds_stages() -> None:
    a, b = StageTimer(), StageTimer()
    with a.span("render", items=1):
        pass
    with b.span("render", items=2):
        pass
    with b.span("score", items=1):
        pass
    a.merge(b)
    assert a.stages["render"].items == 3 and a.stages["score"].items == 1


def test_a_timer_survives_pickling() -> None:
    import pickle

    timer = StageTimer()
    with timer.span("ingest", items=2):
        pass
    copy = pickle.loads(pickle.dumps(timer))
    assert copy.stages["ingest"].items == 2
    with copy.span("annotate"):  # still usable
        pass
    assert set(copy.stages) == {"ingest", "annotate"}
