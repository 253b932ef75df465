"""The CLI's Prefect defaults: quiet ephemeral runs; with a server, INFO to the server and a quiet terminal."""

from __future__ import annotations

from pathlib import Path

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
