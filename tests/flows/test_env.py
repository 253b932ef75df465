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
