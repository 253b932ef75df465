"""Serve a built gallery on 127.0.0.1 with HTTP Range support, so browsers can stream and seek its videos.

``http.server`` alone answers every request with the whole file, which stops videos from seeking; the
``rangehttpserver`` package's handler answers ``Range: bytes=…`` requests with ``206 Partial Content``.
"""

from __future__ import annotations

import functools
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from RangeHTTPServer import RangeRequestHandler


class _QuietRangeHandler(RangeRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature of BaseHTTPRequestHandler
        pass


def make_server(
    directory: str | Path, port: int = 0, host: str = "127.0.0.1", quiet: bool = True
) -> ThreadingHTTPServer:
    """An HTTP server for ``directory`` bound to ``host:port`` (``port=0``: a free port; see ``server_address``)."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise FileNotFoundError(f"{str(directory)!r} holds no index.html: build the gallery first (vpf gallery --out)")
    handler = functools.partial(_QuietRangeHandler if quiet else RangeRequestHandler, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(directory: str | Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start serving ``directory`` in a daemon thread; returns the server (``.shutdown()`` it) and its base URL."""
    server = make_server(directory, port)
    thread = threading.Thread(target=server.serve_forever, name="vpf-gallery-http", daemon=True)
    thread.start()
    host, bound_port = server.server_address[:2]
    return server, f"http://{host}:{bound_port}/"
