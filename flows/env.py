"""Process settings: Prefect defaults for local use, applied before Prefect is imported by the ``vpf`` CLI, glibc's
malloc arenas (``limit_malloc_arenas``), numpy's huge pages (``numpy_without_huge_pages``) and OpenCV's threading
during a run (``serial_opencv``).

Without a Prefect server (no ``PREFECT_API_URL`` in the environment or the active Prefect profile) Prefect runs in
ephemeral mode (a temporary local API, no server to start) and only warnings are logged. With a server, runs ship
their INFO logs to it (the Prefect UI shows what a run did) while the terminal still shows warnings only: the
``prefect`` loggers let INFO through and Prefect's console handler keeps its WARNING threshold. Analytics are off.
Each default yields to a value already in the environment.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


LOCAL_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # the default 20 s is too short on a busy machine
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_UI_ENABLED": "false",
}
SERVER_LOGGING = {
    "PREFECT_LOGGING_LEVEL": "INFO",  # flow and task run loggers hand INFO records to the API handler
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",  # the terminal stays as quiet as in ephemeral mode
}


def configured_api_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The Prefect server this process will talk to: ``$PREFECT_API_URL``, else the active profile's
    ``PREFECT_API_URL`` (``$PREFECT_PROFILES_PATH``, else ``$PREFECT_HOME/profiles.toml``); None for ephemeral mode."""
    env = os.environ if environ is None else environ
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    home = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = env.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def apply_local_defaults(environ: dict[str, str] | None = None) -> None:
    """Set the defaults above in ``environ`` (default ``os.environ``) where not set; with a configured server, INFO
    logs go to the server and the console handler keeps WARNING. For this process (no ``environ``), also
    ``limit_malloc_arenas`` and ``numpy_without_huge_pages``."""
    env = os.environ if environ is None else environ
    defaults = dict(LOCAL_DEFAULTS)
    if configured_api_url(env):
        defaults.update(SERVER_LOGGING)
    for key, value in defaults.items():
        env.setdefault(key, value)
    if environ is None:  # this process: its run threads share two malloc arenas; numpy asks for no huge pages
        limit_malloc_arenas()
        numpy_without_huge_pages()


_opencv_lock = threading.Lock()
_opencv_users = 0
_opencv_before = 0


@contextmanager
def serial_opencv() -> Iterator[None]:
    """Run OpenCV's operations on the calling thread for the block (``cv2.setNumThreads(1)``), then restore its
    previous setting when the last block in the process ends.

    The factory renders, scores and encodes several clips at once on threads of its own; OpenCV splitting each small
    operation across its own pool on top of that only costs CPU (its workers spin while they wait for work): the
    propagation engine alone takes about a tenth less CPU per clip on the calling thread (1.94 → 1.76 s at
    49×480×720).
    """
    import cv2

    global _opencv_users, _opencv_before
    with _opencv_lock:
        if _opencv_users == 0:
            _opencv_before = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _opencv_users += 1
    try:
        yield
    finally:
        with _opencv_lock:
            _opencv_users -= 1
            if _opencv_users == 0:
                cv2.setNumThreads(_opencv_before)


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``count`` for the rest of the process (``mallopt(M_ARENA_MAX)``), unless
    ``MALLOC_ARENA_MAX`` is set in the environment (glibc reads that itself). Returns whether the cap was set; False
    off glibc.

    By default glibc gives threads up to eight arenas per core and keeps the memory freed in each: a run's threads
    handle clips of tens of megabytes each, so the process's resident memory grew with the length of the run (a
    48-clip run peaked 17% above a 12-clip run; with two arenas, 4%, and lower in both) at the same CPU per clip.
    Arenas that already exist stay; call it before the run's threads start.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
    return bool(mallopt(_M_ARENA_MAX, int(count)))


THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
_COMPACTING_DEFRAG = frozenset({"always", "madvise", "defer+madvise"})  # a huge-page fault of madvised memory waits


def numpy_without_huge_pages(defrag_path: str = THP_DEFRAG) -> bool:
    """Stop numpy asking the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)`` on every large array) when
    the kernel's defrag policy (``defrag_path``) makes such a page fault wait for memory compaction, unless
    ``NUMPY_MADVISE_HUGEPAGE`` is set in the environment (numpy reads that itself). Returns whether it was turned off.

    A run allocates and frees arrays of tens of megabytes per clip (decoded clips, renders, masks) all the time; with
    the ``madvise`` policy many of their first touches stalled in the kernel: over six paired 12-clip propagation runs
    (2 cores, 49×480×720) the process spent 7.5–10 s in the kernel with huge pages and 5.1–6.1 s without.
    """
    if os.environ.get("NUMPY_MADVISE_HUGEPAGE") is not None:
        return False
    try:
        with open(defrag_path, encoding="ascii") as f:
            text = f.read()
    except OSError:  # not Linux, or no transparent huge pages
        return False
    policy = text[text.find("[") + 1 : text.find("]")] if "[" in text else text.strip()
    if policy not in _COMPACTING_DEFRAG:
        return False
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:  # a numpy without the switch
        return False
    setter(False)
    return True
