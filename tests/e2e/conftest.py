"""A real Prefect server for end-to-end tests, shared by the whole session.

``prefect_server`` starts ``prefect server start`` on 127.0.0.1 (a free port, a temporary ``PREFECT_HOME``, analytics
off, UI off), waits until ``/api/health`` answers, creates the ``cpu`` and ``gpu`` process work pools and yields a
:class:`PrefectServer`. Everything it starts (the server, workers, any helper process) is stopped by PID, children
included, when the session ends. Tests talk to it either from subprocesses (``server.env``) or in-process
(``with server.settings(): ...``).

Typical use::

    def test_something(prefect_server, tmp_path):
        worker = prefect_server.start_worker("gpu", name="gpu-1")
        prefect_server.run(["prefect", "deploy", "--all"], cwd=REPO)
        ...
        prefect_server.stop(worker)            # or leave it: stopped at session end
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest


REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WORK_POOLS = ("cpu", "gpu")
SERVER_READY_TIMEOUT_S = 180.0  # a loaded 2-core CI machine can take a minute


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_tree(proc: subprocess.Popen | psutil.Process | int, timeout: float = 10.0) -> None:
    """Stop a process and every descendant by PID: SIGTERM, wait, then SIGKILL what is left."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        family = [root]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(Exception):
            proc.wait(timeout=1)


@dataclass
class PrefectServer:
    """A running Prefect server: its API URL, its ``PREFECT_HOME``, and the environment that points at it."""

    api_url: str
    home: Path
    log_dir: Path
    env: dict[str, str]
    work_pools: tuple[str, ...] = WORK_POOLS
    processes: list[subprocess.Popen] = field(default_factory=list)

    def command(self, args: Sequence[str]) -> list[str]:
        """Resolve ``prefect``/``vpf``/``python`` to the venv's executables."""
        args = list(args)
        if args and args[0] in {"prefect", "vpf"}:
            args[0] = str(VENV_BIN / args[0])
        elif args and args[0] == "python":
            args[0] = sys.executable
        return args

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | Path = REPO,
        extra_env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run a command against this server and wait for it; raises with its output when ``check`` fails."""
        result = subprocess.run(
            self.command(args),
            cwd=cwd,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def spawn(
        self,
        args: Sequence[str],
        *,
        name: str,
        cwd: str | Path = REPO,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a long-lived process against this server; output goes to ``log_dir/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            self.command(args),
            cwd=cwd,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def start_worker(
        self,
        pool: str,
        *,
        name: str | None = None,
        cwd: str | Path = REPO,
        extra_env: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> subprocess.Popen:
        """Start ``prefect worker start --pool POOL --type process``; stopped at session end unless stopped first."""
        name = name or f"{pool}-worker-{len(self.processes)}"
        args = ["prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", name]
        if limit is not None:
            args += ["--limit", str(limit)]
        return self.spawn(args, name=name, cwd=cwd, extra_env={"VPF_WORKER_ID": name, **(extra_env or {})})

    def stop(self, proc: subprocess.Popen, *, kill: bool = False) -> None:
        """Stop a process started here and its children (SIGKILL at once when ``kill``)."""
        if kill:
            for p in _family(proc.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        stop_process_tree(proc)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point in-process Prefect clients (``get_client``, ``run_deployment``) at this server."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            yield


def _family(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []


def _wait_ready(api_url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not ready after {SERVER_READY_TIMEOUT_S}s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on 127.0.0.1 with ``cpu`` and ``gpu`` process work pools."""
    base = tmp_path_factory.mktemp("prefect-server")
    home, log_dir = base / "home", base / "logs"
    home.mkdir()
    log_dir.mkdir()
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == "PREFECT_SERVER_ANALYTICS_ENABLED"
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
        PREFECT_LOGGING_LEVEL="INFO",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    server = PrefectServer(api_url=api_url, home=home, log_dir=log_dir, env=env)
    proc = server.spawn(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off", "--no-ui"],
        name="server",
        extra_env={"PREFECT_API_URL": ""},
    )
    try:
        _wait_ready(api_url, proc, log_dir / "server.log")
        for pool in server.work_pools:
            server.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"], timeout=120)
        yield server
    finally:
        for p in reversed(server.processes):
            stop_process_tree(p)
