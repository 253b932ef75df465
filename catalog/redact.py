"""Credentials out of everything the factory writes or shows: catalog rows, Prefect records, logs, ``vpf status``.

:func:`redact` replaces with ``***``: the user-info of URLs (``http://user:KEY@host`` → ``http://***@host``), the
values of credential-named parameters (``?api_key=…``, ``&token=…``, ``sig=…``, ``"password": "…"``), bearer and basic
tokens, and every value held by a credential-named environment variable (``OPENAI_API_KEY``, ``AWS_SECRET_ACCESS_KEY``,
``HF_TOKEN``, any ``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD`` …) wherever it appears. :func:`redact_value`
applies it through mappings and lists and hides the whole value of credential-named keys. Pure functions, no imports
beyond the standard library, so every layer can call them before anything is written.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any


MASK = "***"
MIN_ENV_SECRET_CHARS = 8  # shorter environment values are too likely to occur in ordinary text

# The last word of a credential-like name: api_key, access_token, client-secret, X-Amz-Signature, sig, password, …
_SECRET_WORD = (
    r"(?:api[_-]?key|apikey|access[_-]?key(?:[_-]?id)?|secret[_-]?(?:access[_-]?)?key|key|token|secret|password|"
    r"passwd|pwd|sig|signature|credentials?|sas|auth|authorization|private[_-]?key|connection[_-]?string)"
)
SECRET_NAME = re.compile(rf"(?i)^(?:[a-z0-9]+[_-])*{_SECRET_WORD}$")
"""A parameter, mapping key or environment variable name whose value is a credential."""

_SECRET_ENV_NAMES = frozenset(
    {
        "OPENAI_API_KEY",
        "VPF_OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_TOKEN",
        "PREFECT_API_KEY",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_SAS_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS_JSON",
        "GITHUB_TOKEN",
    }
)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s\"'<>]+)@")
_PARAMETER = re.compile(
    rf"(?i)(?P<name>(?<![A-Za-z0-9_.\-])(?:[a-z0-9]+[_-])*{_SECRET_WORD})=(?!(?:basic|bearer|token|digest)\s)"
    r"(?P<value>[^&#\s\"'<>,;]+)"
)
_QUOTED = re.compile(
    rf"(?i)(?P<q>[\"'])(?P<name>(?:[a-z0-9]+[_-])*{_SECRET_WORD})(?P=q)(?P<sep>\s*:\s*)(?P<vq>[\"'])(?:\\.|(?!(?P=vq)).)*(?P=vq)"
)
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer)\s+[A-Za-z0-9._~+/=\-]{8,}")
_AUTHORIZATION = re.compile(
    r"(?i)\b(?P<head>(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|token|digest)\s+)?)[^\s\"',;]+"
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of credential-named environment variables (at least ``MIN_ENV_SECRET_CHARS`` long), longest first."""
    env = os.environ if environ is None else environ
    values = {
        v
        for k, v in env.items()
        if v and len(v) >= MIN_ENV_SECRET_CHARS and (k in _SECRET_ENV_NAMES or SECRET_NAME.match(k))
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``text`` with every credential replaced by ``***`` (see the module docstring); None stays None.

    Idempotent; text without credentials comes back unchanged. ``environ``: the environment whose credential values
    are hidden (default ``os.environ``, read at each call).
    """
    if not text:
        return text
    for value in secret_env_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _PARAMETER.sub(lambda m: f"{m['name']}={MASK}", text)
    text = _QUOTED.sub(lambda m: f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{MASK}{m['vq']}", text)
    return _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)


def redact_value(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``value`` (JSON-like: mappings, lists, strings, numbers) with every string redacted and the whole value of
    every credential-named mapping key replaced by ``***``; a new object, the input is not changed."""
    if isinstance(value, str):
        return redact(value, environ)
    if isinstance(value, Mapping):
        return {
            k: (
                MASK
                if isinstance(k, str) and SECRET_NAME.match(k) and v not in (None, "")
                else redact_value(v, environ)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_value(v, environ) for v in value]
    return value


def holds_secret(value: Any) -> bool:
    """Whether :func:`redact_value` would change ``value``."""
    return redact_value(value) != value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message and exception text before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger_names: tuple[str, ...] = ("", "prefect")) -> int:
    """Add a :class:`RedactingFilter` to every handler of the named loggers and of their child loggers (``""``: the
    root logger), once per handler; returns how many handlers got one. Handlers added later are not covered."""
    names = set(logger_names)
    loggers = [logging.getLogger(n) for n in names]
    loggers += [
        logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and any(n and name.startswith(n + ".") for n in names)
    ]
    added = 0
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
                added += 1
    return added
