"""A tiny OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1, real generation.

It serves a causal LM from a local folder (the tiny random model the tests build) at ``POST /v1/chat/completions``.
Random weights write gibberish; ``force_text`` constrains decoding (``prefix_allowed_tokens_fn``) to a given
document, the way a grammar-constrained server (vLLM guided decoding, llama.cpp grammars) would. ``faults`` is a
queue of failures to serve before answering normally: ``"timeout"`` (hang up after ``delay_s``, no answer), ``"500"``,
``"429"`` and ``"malformed"`` (HTTP 200 with a body that is not JSON). Every request's body and headers are kept.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ForceText:
    """``prefix_allowed_tokens_fn`` that makes ``generate`` write ``text`` then EOS, whatever the weights say.

    ``input_ids`` holds the left-padded prompt followed by the tokens generated so far; the start of generation is
    the first length seen for a row, reset whenever the row no longer continues the forced text (a new call).
    """

    def __init__(self, tokenizer, text: str):
        self.target = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.start: dict[int, int] = {}

    def __call__(self, batch_id: int, input_ids) -> list[int]:
        ids = input_ids.tolist()
        n = len(ids)
        start = self.start.get(batch_id)
        if start is None or n < start or ids[start:] != self.target[: n - start]:
            start = self.start[batch_id] = n
        return [self.target[min(n - start, len(self.target) - 1)]]


class TinyChatServer:
    """Context manager: ``with TinyChatServer(path) as server: server.url`` (API base ``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, model_path: str | Path, *, force_text: str | None = None, delay_s: float = 2.0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=torch.float32)
        self.model.eval()
        self.force_text = force_text
        self.delay_s = delay_s
        self.faults: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def requests(self) -> int:
        return len(self.headers)

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def generate(self, messages: list[dict[str, Any]], max_tokens: int) -> str:
        import torch

        flat = []
        for message in messages:
            content = message["content"]
            if isinstance(content, list):  # vision requests: text parts only, images are ignored by a text model
                content = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
            flat.append({"role": message["role"], "content": content})
        prompt = self.tokenizer.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        extra = {}
        if self.force_text is not None:
            extra["prefix_allowed_tokens_fn"] = ForceText(self.tokenizer, self.force_text)
            max_tokens = max(max_tokens, len(self.force_text) + 1)
        with self.lock, torch.no_grad():
            output = self.model.generate(
                **encoded,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
        return self.tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)

    def __enter__(self) -> TinyChatServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server.lock:
                    server.headers.append(dict(self.headers))
                    fault = server.faults.pop(0) if server.faults else None
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                body = json.loads(raw)
                server.bodies.append(body)
                if fault == "500":
                    return self._send(500, b'{"error": "internal error"}')
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}')
                if fault == "malformed":
                    return self._send(200, b'{"choices": [{"message": {"content": "trunc')
                if fault == "timeout":  # sit on the request, then hang up without answering
                    time.sleep(server.delay_s)
                    return None
                text = server.generate(body["messages"], int(body.get("max_tokens") or 64))
                payload = {
                    "id": f"chatcmpl-{server.requests}",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                }
                self._send(200, json.dumps(payload).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()
