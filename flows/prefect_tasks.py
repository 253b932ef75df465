"""The Prefect tasks of the factory: thin wrappers around the steps, nothing else.

Retries only on transient I/O errors (never bad data or bugs); no result caching: resume is reconciled against the
catalog's ids. Flows name each task run after its batch with ``.with_options(task_run_name=...)``.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import InputError
from tasks.produce import PairMaker
from tasks.steps.discover import discover
from tasks.steps.ingest import ingest
from tasks.steps.propose import propose
from tasks.steps.record import record_tables


def _retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only transient I/O problems (object stores, network file systems); never bad data or bugs."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) and not isinstance(exc, InputError)


_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
_IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": _retry_on_io}

discover_task = task(discover, name="discover", task_run_name="discover", **_OPTIONS, **_IO_RETRIES)
ingest_task = task(ingest, name="ingest", **_OPTIONS, **_IO_RETRIES)
propose_task = task(propose, name="propose", **_OPTIONS, **_IO_RETRIES)
record_task = task(record_tables, name="record", **_OPTIONS, **_IO_RETRIES)
# One task run per batch (its jobs are pipelined inside); no retries: each render is recorded as it finishes and
# per-job problems are failure rows, so a rerun resumes whatever a lost batch did not record.
make_pairs_task = task(PairMaker.make, name="render-score-record", **_OPTIONS)
