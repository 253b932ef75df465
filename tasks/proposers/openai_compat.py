"""The ``openai:URL`` backend: an OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, ...).

``URL`` is the API base (``http://host:8000/v1``); requests go to ``URL/chat/completions``. The served model name
comes from the spec's fragment (``openai:http://host:8000/v1#qwen2.5-7b-instruct``) or the ``model=`` keyword; one
of them is required. The API key is read from ``$VPF_OPENAI_API_KEY`` (else ``$OPENAI_API_KEY``) at ``setup()`` and
sent as a bearer token; it is never stored, hashed into cache keys, logged or shown in ``repr``. Retries, errors and
rate limiting: see :class:`OpenAIBackend`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasks.proposers.llm import BackendError, ChatBackend, Message, OnAnswer


API_KEY_ENV = ("VPF_OPENAI_API_KEY", "OPENAI_API_KEY")


def parse_spec_url(spec_url: str, model: str | None) -> tuple[str, str]:
    """``(base_url, model)`` from ``URL#model`` and/or the ``model`` keyword."""
    base, _, fragment = spec_url.partition("#")
    if fragment and model and fragment != model:
        raise ValueError(f"openai proposer: model given twice ({fragment!r} in the spec, {model!r} as keyword)")
    model = fragment or model
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"openai proposer: {base!r} is not an http(s) URL like http://host:8000/v1")
    if not model:
        raise ValueError(f"openai proposer: no model name for {base!r}; use 'openai:{base}#<model>' or model=")
    return base.rstrip("/"), model


class OpenAIBackend(ChatBackend):
    """OpenAI-compatible chat completions over httpx.

    Requests run concurrently (``max_concurrency`` threads over one ``httpx.Client``). Timeouts, transport errors, 429
    and 5xx answers are retried ``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, or the
    server's ``Retry-After`` when shorter than ``max_backoff_s``); other 4xx answers and malformed bodies are not
    retried. A request that still fails yields a ``BackendError`` (``llm_timeout``, ``llm_http_<status>``,
    ``llm_transport``, ``llm_bad_response``) which the proposer records before falling back to templates.

    Rate limiting: with ``rate_limit=True`` every attempt first takes a slot from the Prefect global concurrency limit
    ``llm:<host>`` (``prefect.concurrency.sync.rate_limit``), or from the limit named by ``rate_limit="<name>"``.
    Create it with a slot decay, e.g. ``prefect gcl create llm:host --limit 5 --slot-decay-per-second 2``; a
    configured limit that does not exist (or has no slot decay) is an error at ``setup()``. Without ``rate_limit``
    nothing is called (no Prefect API).

    Args:
        url: API base URL (``http://host:8000/v1``); a ``#model`` fragment names the model.
        model: served model name (if not in ``url``).
        timeout_s: per-request timeout.
        max_retries: retries after the first attempt, for timeouts, transport errors, 429 and 5xx.
        backoff_s, max_backoff_s: exponential backoff base and cap.
        max_concurrency: concurrent requests.
        rate_limit: ``True`` for the Prefect limit ``llm:<host>``, a string for a named limit, ``False`` for none.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it).
    """

    backend = "openai"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 4,
        rate_limit: bool | str = False,
        json_mode: bool = False,
    ):
        self.base_url, self.model = parse_spec_url(url, model)
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or max_concurrency < 1:
            raise ValueError(
                "openai proposer: timeout_s > 0, max_retries >= 0, backoff_s >= 0 and max_concurrency >= 1 expected, "
                f"got {timeout_s}, {max_retries}, {backoff_s}, {max_concurrency}"
            )
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_concurrency = int(max_concurrency)
        host = urlsplit(self.base_url).netloc
        self.rate_limit_name = f"llm:{host}" if rate_limit is True else (rate_limit or None)
        self.json_mode = bool(json_mode)
        self.client: httpx.Client | None = None
        self.http_requests = 0  # HTTP attempts made, for logs and tests

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.base_url!r}, model={self.model!r})"

    @property
    def model_id(self) -> str:
        return self.model

    def params(self) -> dict[str, Any]:
        return {"url": self.base_url, "json_mode": self.json_mode}

    def setup(self) -> None:
        if self.client is not None:
            return
        if self.rate_limit_name:
            self._check_limit()
        headers = {"Content-Type": "application/json"}
        key = next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.timeout_s))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _check_limit(self) -> None:
        """Fail at setup, naming the fix, when the configured Prefect limit does not exist or cannot decay."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        name = self.rate_limit_name
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                raise ValueError(
                    f"openai proposer: rate limit {name!r} is configured but no such Prefect global concurrency limit "
                    f"exists; create it with `prefect gcl create {name} --limit N --slot-decay-per-second R`"
                ) from None
        if not limit.slot_decay_per_second:
            raise ValueError(f"openai proposer: Prefect limit {name!r} has no slot decay; rate limits need one")

    def _acquire(self) -> None:
        if self.rate_limit_name:
            from prefect.concurrency.sync import rate_limit

            rate_limit(self.rate_limit_name, occupy=1, strict=True)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff_s * (2**attempt)
        if response is not None:
            try:
                retry_after = float(response.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
            if retry_after is not None and 0 <= retry_after <= self.max_backoff_s:
                delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    def _one(self, body: dict[str, Any]) -> str | BackendError:
        assert self.client is not None
        error = BackendError("llm_transport", "no attempt made")
        for attempt in range(self.max_retries + 1):
            response = None
            self._acquire()
            self.http_requests += 1
            try:
                response = self.client.post("/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                error = BackendError("llm_timeout", f"{self.base_url}: no answer within {self.timeout_s}s ({exc})")
            except httpx.TransportError as exc:
                error = BackendError("llm_transport", f"{self.base_url}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    return self._content(response)
                error = BackendError(
                    f"llm_http_{response.status_code}",
                    f"{self.base_url}: HTTP {response.status_code}: {response.text[:200]!r}",
                )
                if response.status_code != 429 and response.status_code < 500:
                    return error
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
        return BackendError(error.reason, f"{error.message} (after {self.max_retries + 1} attempts)")

    def _content(self, response: httpx.Response) -> str | BackendError:
        try:
            payload = response.json()
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return BackendError(
                "llm_bad_response", f"{self.base_url}: malformed completion body ({type(exc).__name__}: {exc})"
            )
        if not isinstance(content, str):
            return BackendError("llm_bad_response", f"{self.base_url}: message content is {type(content).__name__}")
        return content

    def complete(
        self,
        conversations: list[list[Message]],
        *,
        temperature: float,
        max_tokens: int,
        seeds: list[int],
        on_answer: OnAnswer | None = None,
    ) -> list[str | BackendError]:
        self.setup()
        bodies = []
        for conversation, seed in zip(conversations, seeds):
            body: dict[str, Any] = {
                "model": self.model,
                "messages": conversation,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "seed": seed,
            }
            if self.json_mode:
                body["response_format"] = {"type": "json_object"}
            bodies.append(body)

        def one(index: int) -> str | BackendError:
            answer = self._one(bodies[index])
            if on_answer is not None:
                on_answer(index, answer)
            return answer

        if len(bodies) == 1 or self.max_concurrency == 1:
            return [one(i) for i in range(len(bodies))]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, range(len(bodies))))
