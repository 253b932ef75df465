"""Progress a person can follow in a terminal while ``build_pairs`` runs in this process.

The flow reports ``(stage, done, total)`` through :func:`report`; :func:`observe` shows them as rich progress bars.
Outside ``observe`` (deployments, tests) reporting does nothing: the Prefect UI shows task runs instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


# A process-wide slot rather than a ContextVar: Prefect may run the flow body in another thread.
_current: list[tuple[Progress, dict[str, TaskID]]] = []


def report(stage: str, done: int, total: int) -> None:
    """Set the bar of ``stage`` to ``done``/``total``."""
    if not _current:
        return
    progress, bars = _current[-1]
    if stage not in bars:
        bars[stage] = progress.add_task(stage, total=total)
    progress.update(bars[stage], completed=done, total=total)


@contextmanager
def observe(console: Console) -> Iterator[None]:
    progress = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    _current.append((progress, {}))
    try:
        with progress:
            yield
    finally:
        _current.pop()
