"""Suite-wide settings (no network, no hub calls, no Prefect analytics) and helpers shared by test folders."""

from __future__ import annotations

import os
import signal


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it (a ``vpf run``, a worker and its flow-run process), then reap
    them."""
    import psutil

    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
