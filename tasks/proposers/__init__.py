"""Instruction proposers: edit instructions and target captions for segmented objects.

Entry point for the flows::

    get_proposer(spec, *, cache_url=None, storage_options=None, **kwargs) -> Proposer

``spec`` is ``"template"`` (the default, no model), ``"transformers:PATH"`` (a local causal LM) or
``"openai:URL#MODEL"`` (an OpenAI-compatible server); :func:`get_proposer` lists their keywords. Model responses are
cached under ``<catalog>/cache/llm/``. Usage and the records returned: see ``tasks.proposers.base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tasks.proposers.base import Proposal, ProposalOutcome, ProposalRequest, Proposer, load_prompt
from tasks.proposers.safety import SafetyPolicy
from tasks.proposers.template import TemplateProposer


if TYPE_CHECKING:
    from tasks.proposers.llm import ChatBackend


__all__ = [
    "Proposal",
    "ProposalOutcome",
    "ProposalRequest",
    "Proposer",
    "SafetyPolicy",
    "TemplateProposer",
    "get_proposer",
    "make_backend",
    "load_prompt",
    "parse_spec",
]

SAFETY_KEYWORDS = ("disallowed", "max_caption_chars")
LLM_KEYWORDS = ("temperature", "max_tokens")


def parse_spec(spec: str) -> tuple[str, str]:
    """``(backend, argument)``: ``"template"`` → ``("template", "")``, ``"openai:URL#m"`` → ``("openai", "URL#m")``."""
    backend, _, argument = spec.partition(":")
    backend = backend.strip()
    if backend == "template" and not argument:
        return backend, ""
    if backend in ("transformers", "openai") and argument:
        return backend, argument
    raise ValueError(f"proposer spec {spec!r}: expected 'template', 'transformers:PATH' or 'openai:URL#MODEL'")


def _safety(kwargs: dict[str, Any]) -> SafetyPolicy:
    options = {k: kwargs.pop(k) for k in SAFETY_KEYWORDS if k in kwargs}
    if "disallowed" in options:
        options["disallowed"] = tuple(options["disallowed"])
    return SafetyPolicy(**options)


def make_backend(spec: str, kwargs: dict[str, Any]) -> ChatBackend:
    """The ``ChatBackend`` for a model spec, consuming its keywords from ``kwargs``."""
    backend, argument = parse_spec(spec)
    if backend == "transformers":
        from tasks.proposers.hf import TransformersBackend

        names = ("device", "dtype", "batch_size", "max_input_tokens", "generate_kwargs")
        options = {k: kwargs.pop(k) for k in names if k in kwargs}
        return TransformersBackend(argument, **options)
    if backend == "openai":
        from tasks.proposers.openai_compat import OpenAIBackend

        names = ("model", "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "max_concurrency")
        names += ("rate_limit", "json_mode")
        options = {k: kwargs.pop(k) for k in names if k in kwargs}
        return OpenAIBackend(argument, **options)
    raise ValueError(f"proposer spec {spec!r}: the {backend!r} backend has no language model")


def get_proposer(
    spec: str = "template",
    *,
    cache_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Proposer:
    """A proposer for ``spec``. Unknown keywords raise ``ValueError`` naming them.

    ``spec``:

    - ``"template"``: deterministic phrase templates, no model (the default). Takes only the safety keywords.
    - ``"transformers:PATH"``: a causal LM from a local folder (``hf.TransformersBackend`` keywords: ``device``,
      ``dtype``, ``batch_size``, ``max_input_tokens``, ``generate_kwargs``).
    - ``"openai:URL#MODEL"``: an OpenAI-compatible server at API base ``URL`` serving ``MODEL`` (or pass ``model=``;
      ``openai_compat.OpenAIBackend`` keywords: ``model``, ``timeout_s``, ``max_retries``, ``backoff_s``,
      ``max_backoff_s``, ``max_concurrency``, ``rate_limit``, ``json_mode``). API key from ``$VPF_OPENAI_API_KEY``
      or ``$OPENAI_API_KEY``, never stored.

    Keywords for every spec: ``disallowed`` (terms rejected in outputs), ``max_caption_chars``; for model specs also
    ``temperature`` (default 0) and ``max_tokens`` (default 768). ``cache_url`` is the catalog root: model responses
    are cached under ``<catalog>/cache/llm/`` so a resumed run never resends a completed request (the template needs
    no cache).
    """
    backend, _ = parse_spec(spec)
    kwargs = dict(kwargs)
    safety = _safety(kwargs)
    if backend == "template":
        proposer: Proposer = TemplateProposer(safety=safety)
    else:
        from tasks.proposers.cache import LLMCache
        from tasks.proposers.llm import LLMProposer

        options = {k: kwargs.pop(k) for k in LLM_KEYWORDS if k in kwargs}
        model = make_backend(spec, kwargs)
        cache = LLMCache(cache_url, storage_options) if cache_url is not None else None
        proposer = LLMProposer(model, cache=cache, safety=safety, **options)
    if kwargs:
        raise ValueError(f"proposer spec {spec!r}: unknown keyword(s) {sorted(kwargs)}")
    return proposer
