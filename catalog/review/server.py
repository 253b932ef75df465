"""The review app's HTTP server: the page, a small JSON API and the queue's media, on one host and port.

Routes::

    GET  /  /app.js  /style.css     the page (package data of catalog.review; no external assets)
    GET  /api/queue                 the session's state (``ReviewSession.state``)
    POST /api/review                ``{"pair_id", "verdict", "reason", "note"}`` -> the row written; 400 on bad input
    POST /api/undo                  withdraw the session's last review -> the pair to go back to; 400 if none
    GET  /media/<catalog path>      a queued pair's video, read through fsspec, with HTTP Range support
    GET  /mask/<catalog path>.npz   a queued pair's npz mask, encoded once as H.264 mp4 (white = edited region)

Only media named by the queue's pairs is served, read in bounded chunks (``CHUNK_BYTES``), so a remote catalog streams
without holding a whole file in memory. A POST must be JSON (``Content-Type: application/json``, at most
``MAX_BODY_BYTES``) and come from the page's own origin.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import shutil
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from catalog.gallery.media import encode_mask_mp4, mask_array
from catalog.review.queue import ReviewError
from catalog.review.session import ReviewSession


log = logging.getLogger(__name__)

STATIC_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
CHUNK_BYTES = 256 << 10
MAX_BODY_BYTES = 16 << 10
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a ``Range: bytes=…`` header over a file of ``size`` bytes; ``None``
    for the whole file (no header, or a form this server does not serve partially, such as several ranges).

    Raises ``RangeNotSatisfiable`` when the range starts past the end of the file.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(header)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        raise RangeNotSatisfiable(header)
    return start, end


class MaskCache:
    """npz masks encoded as mp4 on first request, kept in a temporary folder until the server closes."""

    def __init__(self, session: ReviewSession):
        self.session = session
        self.dir = Path(tempfile.mkdtemp(prefix="vpf-review-masks-"))
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, uri: str) -> Path:
        """The encoded mp4 of mask ``uri``; raises ``FileNotFoundError`` (not in the catalog) or ``ValueError``."""
        with self._guard:
            lock = self._locks.setdefault(uri, threading.Lock())
        target = self.dir / f"{PurePosixPath(uri).stem}.mp4"
        with lock:
            if not target.exists():
                masks = mask_array(self.session.catalog.read_media(uri), uri)
                encode_mask_mp4(masks, target, self.session.mask_fps[uri])
        return target

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class ReviewServer(ThreadingHTTPServer):
    """The review app for ``session`` on ``host:port`` (``port=0``: a free one; see ``url``)."""

    daemon_threads = True

    def __init__(self, session: ReviewSession, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True):
        self.session = session
        self.quiet = quiet
        self.masks = MaskCache(session)
        try:
            super().__init__((host, port), _Handler)
        except OSError:
            self.masks.close()
            raise

    @property
    def url(self) -> str:
        """The app's base URL (``http://host:port/``)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.masks.close()


def serve_in_thread(session: ReviewSession, host: str = "127.0.0.1", port: int = 0) -> ReviewServer:
    """Start the review app in a daemon thread; ``shutdown()`` and ``server_close()`` the returned server."""
    server = ReviewServer(session, host, port)
    threading.Thread(target=server.serve_forever, name="vpf-review-http", daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of BaseHTTPRequestHandler
        if not self.server.quiet:
            super().log_message(format, *args)

    # ---------------------------------------------------------------- GET
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._get(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(send_body=False)

    def _get(self, *, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path in STATIC_FILES:
            name = STATIC_FILES[path]
            data = resources.files("catalog.review").joinpath(name).read_bytes()
            self._send(HTTPStatus.OK, data, mimetypes.guess_type(name)[0] or "text/plain", body=send_body)
        elif path == "/api/queue":
            self._json(HTTPStatus.OK, self.server.session.state(), body=send_body)
        elif path.startswith("/media/") or path.startswith("/mask/"):
            kind, uri = path[1:].split("/", 1)
            self._media(kind, uri, send_body=send_body)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path[:200]}")

    def _media(self, kind: str, uri: str, *, send_body: bool) -> None:
        session = self.server.session
        expected = "mask" if kind == "mask" else "file"
        if session.media.get(uri) != expected:
            self._error(HTTPStatus.NOT_FOUND, f"{uri[:200]!r} is not a media file of this review session's pairs")
            return
        try:
            if kind == "mask":
                local = self.server.masks.get(uri)
                size, opener, content_type = local.stat().st_size, lambda: open(local, "rb"), "video/mp4"
            else:
                fs, full = session.catalog.fs, session.catalog.path(uri)
                size, opener = int(fs.size(full)), lambda: fs.open(full, "rb")
                content_type = mimetypes.guess_type(uri)[0] or "application/octet-stream"
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, f"{uri[:200]!r} is named by a pair but missing from the catalog")
            return
        except ValueError as exc:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))
            return
        try:
            span = byte_range(self.headers.get("Range"), size)
        except RangeNotSatisfiable:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = span if span else (0, size - 1)
        length = max(0, last - first + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if span:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Cache-Control", "private, max-age=3600")
        self.end_headers()
        if send_body and length:
            with opener() as f:
                _copy_span(f, self.wfile, first, length)

    # ---------------------------------------------------------------- POST
    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path not in ("/api/review", "/api/undo"):
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {path[:200]}")
            return
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._error(HTTPStatus.FORBIDDEN, f"requests from {origin[:200]} are refused: open the app's own page")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the request body must be JSON (Content-Type: application/json)"
            )
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
            return
        if length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body has {length} bytes, at most {MAX_BODY_BYTES}")
            return
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}")
            return
        session = self.server.session
        try:
            if path == "/api/review":
                answer = session.review(body)
            else:
                if body != {}:
                    raise ReviewError("POST /api/undo takes no fields (it withdraws this session's last review)")
                answer = session.undo()
        except ReviewError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        self._json(HTTPStatus.OK, answer)

    # ---------------------------------------------------------------- answers
    def _json(self, status: HTTPStatus, value: Any, *, body: bool = True) -> None:
        data = json.dumps(value, ensure_ascii=True, allow_nan=False).encode()
        self._send(status, data, "application/json", body=body, cache="no-store")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True  # a refused POST's body may be unread: never reuse this connection
        self._json(status, {"error": message})

    def _send(
        self, status: HTTPStatus, data: bytes, content_type: str, *, body: bool = True, cache: str = "no-cache"
    ) -> None:
        self.send_response(status)
        charset = "; charset=utf-8" if content_type.startswith("text/") or content_type.endswith("json") else ""
        self.send_header("Content-Type", content_type + charset)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)


def _copy_span(source: BinaryIO, sink: BinaryIO, first: int, length: int) -> None:
    source.seek(first)
    left = length
    try:
        while left > 0:
            chunk = source.read(min(CHUNK_BYTES, left))
            if not chunk:
                break
            sink.write(chunk)
            left -= len(chunk)
    except (BrokenPipeError, ConnectionResetError):  # the browser cancelled the request (a seek): nothing to send
        return
