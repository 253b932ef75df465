"""A run's stop request, seen by the long loops of annotation (the per-frame tracking, the per-clip ingest).

The flow sets it when the process gets SIGINT or SIGTERM (``flows.build_pairs.stop_on_signals``); the loops call
:func:`check_stop` between frames and clips, which raises :class:`RunInterrupted`. It is a ``BaseException``, like
``KeyboardInterrupt``: the per-clip handlers that turn an ``Exception`` into a failure row let it through, so a stop
ends the batch instead of failing each remaining clip. Rows recorded before it stay; the run's row says
``interrupted``.

One flag per process: it reaches the threads of the default task runner, not Dask or Ray worker processes (those
stop when their process is signalled).
"""

from __future__ import annotations

import signal
import threading


class RunInterrupted(BaseException):
    """A stop was requested (``signum``: the signal, 0 when asked in code) and a loop stopped at ``where``."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = int(signum), where
        name = signal.Signals(signum).name if signum else "a stop request"
        super().__init__(f"stopped by {name} during {where}")


_stop = threading.Event()
_signum = 0


def request_stop(signum: int = 0) -> None:
    """Ask every loop of this process to stop at its next check (``signum``: the signal that asked, 0: code)."""
    global _signum
    _signum = int(signum)
    _stop.set()


def clear_stop() -> None:
    """Forget a stop request (a new run starts)."""
    global _signum
    _signum = 0
    _stop.clear()


def stop_requested() -> int | None:
    """The signal number of the pending stop request (0 when asked in code), ``None`` when there is none."""
    return _signum if _stop.is_set() else None


def check_stop(where: str) -> None:
    """Raise :class:`RunInterrupted` naming ``where`` (e.g. ``"tracking frame 12"``) when a stop was requested."""
    if _stop.is_set():
        raise RunInterrupted(_signum, where)
