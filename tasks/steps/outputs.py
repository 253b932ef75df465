"""What a step returns: rows per table, the failures it met and small counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.timings import StageTimer
from tasks.types import Failure


@dataclass
class StepOutput:
    """Rows per table written (or to write) by a step, the failures it met, counters, and where it spent its time
    (``timer``: the ``stage_timings`` of a step that may run in another process)."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timer: StageTimer | None = field(default=None, repr=False)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
