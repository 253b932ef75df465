"""The ``sleep`` engine: stands in for an accelerator that takes ``seconds`` per clip and holds no CPU.

It waits (``time.sleep``, which releases the interpreter lock) and returns the clip with its hole filled grey. Use it
to dry-run a fleet or a render deployment without a GPU (queues, concurrency slots, dispatch, recording), and in
``bench/throughput.py`` to see whether the factory's CPU work hides behind device time.
"""

from __future__ import annotations

import time

import numpy as np

from tasks.engines.base import Inpainted, InpaintEngine


class SleepEngine(InpaintEngine):
    """Wait ``seconds`` per clip, then fill the masked pixels with mid-grey. Removal only."""

    engine_id = "sleep"
    edit_types = frozenset({"remove"})

    def __init__(self, seconds: float = 20.0) -> None:
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.seconds = float(seconds)

    @property
    def version(self) -> str:
        return "sleep-1"

    def params(self) -> dict:
        return {"seconds": self.seconds}

    def fill(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        *,
        prompt: str,
        edit_type: str,
        seed: int,
        first_frame: np.ndarray | None,
    ) -> Inpainted:
        """Mid-grey everywhere after the wait (the base class pastes the source back outside the mask)."""
        time.sleep(self.seconds)
        return Inpainted(np.broadcast_to(np.uint8(128), frames.shape))
