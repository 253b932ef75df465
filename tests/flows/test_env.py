"""The CLI's Prefect defaults: quiet ephemeral runs; with a server, INFO to the server and a quiet terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from flows.env import apply_local_defaults, configured_api_url


def test_ephemeral_mode_logs_warnings_only(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path)}  # no profiles.toml there
    apply_local_defaults(env)
    assert configured_api_url(env) is None
    assert env["PREFECT_LOGGING_LEVEL"] == "WARNING"
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" not in env


def test_a_server_in_the_environment_gets_info_logs_and_the_console_stays_at_warning(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://prefect:4200/api"}
    apply_local_defaults(env)
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"
    assert env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "WARNING"


def test_a_server_in_the_active_profile_counts_and_other_profiles_do_not(tmp_path: Path) -> None:
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect:4200/api"\n[profiles.local]\n'
    )
    env = {"PREFECT_HOME": str(tmp_path)}
    assert configured_api_url(env) == "http://prefect:4200/api"
    apply_local_defaults(env)
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"
    other = {"PREFECT_HOME": str(tmp_path), "PREFECT_PROFILE": "local"}
    assert configured_api_url(other) is None
    apply_local_defaults(other)
    assert other["PREFECT_LOGGING_LEVEL"] == "WARNING"


def test_values_already_set_win(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://x/api", "PREFECT_LOGGING_LEVEL": "DEBUG",
           "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}  # fmt: skip
    apply_local_defaults(env)
    assert env["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "INFO"


def test_an_unreadable_profiles_file_means_no_server(tmp_path: Path) -> None:
    (tmp_path / "profiles.toml").write_text("this is [ not toml")
    assert configured_api_url({"PREFECT_HOME": str(tmp_path)}) is None


def test_serial_opencv_holds_until_the_last_overlapping_block_ends() -> None:
    import threading

    import cv2

    from flows.env import serial_opencv

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        first_in, second_out = threading.Event(), threading.Event()

        def other_run() -> None:
            with serial_opencv():
                first_in.wait(10)
            second_out.set()

        thread = threading.Thread(target=other_run)
        with serial_opencv():
            thread.start()
            assert cv2.getNumThreads() == 1
            first_in.set()
            assert second_out.wait(10)
            assert cv2.getNumThreads() == 1  # the other block ended, this one still runs
        thread.join()
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


_ARENAS_PROBE = """
import ctypes, os, sys, threading
sys.path.insert(0, {root!r})
from flows.env import limit_malloc_arenas
if sys.argv[1] == "capped":
    assert limit_malloc_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)

def churn():
    start.wait()
    for _ in range(2000):
        libc.free(libc.malloc(4096))

threads = [threading.Thread(target=churn) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
libc.open_memstream.restype = ctypes.c_void_p
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(ctypes.string_at(buf, size.value).decode().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_threads_share_at_most_two_malloc_arenas(tmp_path: Path) -> None:
    import subprocess

    root = str(Path(__file__).resolve().parents[2])
    probe = tmp_path / "probe.py"
    probe.write_text(_ARENAS_PROBE.format(root=root))
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def heaps(mode: str) -> int:
        out = subprocess.run([sys.executable, str(probe), mode], capture_output=True, text=True, env=env, check=True)
        return int(out.stdout.strip())

    assert heaps("capped") <= 2
    assert heaps("default") > 2  # negative control: eight threads allocating at once get arenas of their own


@pytest.fixture
def numpy_huge_pages():
    """numpy's huge-page setting, restored after the test; yields a function that reads it."""
    from numpy._core.multiarray import _set_madvise_hugepage

    before = _set_madvise_hugepage(True)

    def current() -> bool:
        value = _set_madvise_hugepage(True)
        _set_madvise_hugepage(value)
        return bool(value)

    yield current
    _set_madvise_hugepage(before)


@pytest.mark.parametrize(
    ("policy", "turned_off"),
    [
        ("always defer defer+madvise [madvise] never", True),
        ("[always] defer defer+madvise madvise never", True),
        ("always defer [defer+madvise] madvise never", True),
        ("always [defer] defer+madvise madvise never", False),  # faults never wait for compaction: keep them
        ("always defer defer+madvise madvise [never]", False),
    ],
)
def test_numpy_huge_pages_go_only_where_their_faults_wait_for_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numpy_huge_pages, policy: str, turned_off: bool
) -> None:
    from flows.env import numpy_without_huge_pages

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    defrag = tmp_path / "defrag"
    defrag.write_text(policy + "\n")
    assert numpy_huge_pages()
    assert numpy_without_huge_pages(str(defrag)) is turned_off
    assert numpy_huge_pages() is not turned_off


def test_numpy_huge_pages_setting_in_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numpy_huge_pages
) -> None:
    from flows.env import numpy_without_huge_pages

    defrag = tmp_path / "defrag"
    defrag.write_text("always defer defer+madvise [madvise] never\n")
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    assert not numpy_without_huge_pages(str(defrag)) and numpy_huge_pages()
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE")
    assert not numpy_without_huge_pages(str(tmp_path / "missing"))  # no such kernel setting: nothing changes
    assert numpy_huge_pages()
