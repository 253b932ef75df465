"""Language-model proposers: the backend interface and the proposal logic shared by every model backend.

A ``ChatBackend`` turns chat conversations (OpenAI-style ``{"role", "content"}`` messages) into response texts; the
``transformers`` and ``openai`` backends implement it (``hf.py``, ``openai_compat.py``). ``LLMProposer`` does the
rest the same way for every backend: cleaned inputs fenced as data in a versioned prompt, cached answers, schema
validation with one repair turn, and a recorded fallback to the ``template`` proposer (see :class:`LLMProposer`).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.proposers.base import (
    MAX_CAPTION_CHARS,
    Proposal,
    ProposalOutcome,
    ProposalRequest,
    Proposer,
    load_prompt,
)
from tasks.proposers.cache import LLMCache, cache_key
from tasks.proposers.safety import CleanInput, SafetyPolicy, cap_chars, fence, strip_controls
from tasks.proposers.template import TemplateProposer, describe_region


PROPOSE_PROMPT = "propose_v1"
REPAIR_PROMPT = "repair_v1"
MAX_RESPONSE_CHARS = 8000  # longer answers are cut before parsing and before being echoed in a repair turn

Message = dict[str, Any]
OnAnswer = Callable[[int, "str | BackendError"], None]


@dataclass(frozen=True)
class BackendError:
    """A request that produced no response text (after the backend's own retries)."""

    reason: str  # "llm_timeout", "llm_http_500", "llm_bad_response", "prompt_too_long", ...
    message: str


class ChatBackend(ABC):
    """Chat completion over a batch of conversations. Construct cheaply; ``setup()`` loads models / opens clients."""

    backend: ClassVar[str]

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The model's identity (path name or served model name): part of the proposer id and the cache key."""

    def params(self) -> dict[str, Any]:
        """Backend settings that change responses (hashed into cache keys)."""
        return {}

    def setup(self) -> None:
        """Load the model / open the client; idempotent."""

    @abstractmethod
    def complete(
        self,
        conversations: list[list[Message]],
        *,
        temperature: float,
        max_tokens: int,
        seeds: list[int],
        on_answer: OnAnswer | None = None,
    ) -> list[str | BackendError]:
        """One response text (or ``BackendError``) per conversation, in order.

        ``on_answer(index, answer)`` is called as soon as each answer exists (possibly from worker threads), so
        callers can persist finished work before the whole batch ends.
        """


def cached_complete(
    model: ChatBackend,
    cache: LLMCache | None,
    conversations: list[list[Message]],
    seeds: list[int],
    *,
    temperature: float,
    max_tokens: int,
) -> tuple[list[str | BackendError], int]:
    """Answers from the cache where present; the misses go to the backend in one batch and are cached.

    Returns the answers in order and the number of conversations sent to the backend.
    """
    params = {"temperature": temperature, "max_tokens": max_tokens, **model.params()}
    results: list[str | BackendError | None] = [None] * len(conversations)
    keys = []
    for i, (conversation, seed) in enumerate(zip(conversations, seeds)):
        key = cache_key(model.backend, model.model_id, conversation, {**params, "seed": seed})
        keys.append(key)
        if cache is not None:
            results[i] = cache.get(key)
    todo = [i for i, r in enumerate(results) if r is None]

    def store(position: int, answer: str | BackendError) -> None:
        # cached as soon as it exists: a run killed mid-batch resumes without resending finished requests
        if cache is not None and isinstance(answer, str):
            cache.put(keys[todo[position]], answer, {"backend": model.backend, "model": model.model_id})

    if todo:
        answers = model.complete(
            [conversations[i] for i in todo],
            temperature=temperature,
            max_tokens=max_tokens,
            seeds=[seeds[i] for i in todo],
            on_answer=store,
        )
        for i, answer in zip(todo, answers):
            results[i] = answer
    return results, len(todo)  # type: ignore[return-value]


def fill_prompt(name: str, **values: str) -> list[Message]:
    """Messages from a versioned prompt file with ``### system`` / ``### user`` sections and ``{name}`` slots."""
    text = load_prompt(f"{name}.txt")
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    sections = re.split(r"^### (system|user)\s*$", text, flags=re.MULTILINE)
    messages = []
    for role, body in zip(sections[1::2], sections[2::2]):
        messages.append({"role": role, "content": body.strip()})
    if not messages:
        messages = [{"role": "user", "content": text.strip()}]
    return messages


def fill_text(name: str, **values: str) -> str:
    text = load_prompt(f"{name}.txt")
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text.strip()


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (code fences and chatter around it tolerated); ValueError if none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):  # RecursionError: pathologically nested output
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object found in the answer")


class ProposalDraft(BaseModel):
    """One proposal as a model writes it (the rest of ``Proposal`` is filled in by the proposer)."""

    model_config = ConfigDict(extra="ignore")

    edit_type: Literal["remove", "add", "replace", "attribute"]
    instruction: str = Field(min_length=3, max_length=300)
    instruction_long: str = Field(min_length=3, max_length=2000)
    source_caption: str | None = Field(default=None, max_length=MAX_CAPTION_CHARS)
    target_caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)
    region_caption: str = Field(min_length=1, max_length=300)


class DraftDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    proposals: list[ProposalDraft] = Field(min_length=1, max_length=8)


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class LLMProposer(Proposer):
    """Proposals from a language model behind a ``ChatBackend``, with cache, repair turn and template fallback.

    1. inputs are cleaned (``safety.SafetyPolicy``) and fenced as data in the versioned prompt
       ``prompts/propose_v1.txt``;
    2. requests are answered from the cache when possible (``cache.LLMCache``), the rest go to the backend in one
       batch;
    3. the response's JSON document is extracted and validated against the schema (``ProposalDraft`` + ``Proposal``);
    4. invalid answers get one repair turn (``prompts/repair_v1.txt``) naming the problem;
    5. what is still invalid, failed in transport, or fails the output safety check falls back to the ``template``
       proposer, and the reason is recorded as a ``Failure`` (stage "propose").

    Args:
        backend: the model backend.
        cache: response cache (``None``: no caching).
        safety: input cleaning and output checks.
        temperature: sampling temperature (0 = greedy).
        max_tokens: cap on generated tokens per answer.
    """

    def __init__(
        self,
        backend: ChatBackend,
        *,
        cache: LLMCache | None = None,
        safety: SafetyPolicy | None = None,
        temperature: float = 0.0,
        max_tokens: int = 768,
    ):
        if temperature < 0:
            raise ValueError(f"temperature: expected >= 0, got {temperature}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: expected >= 1, got {max_tokens}")
        self.model = backend
        self.backend = backend.backend
        self.cache = cache
        self.safety = safety or SafetyPolicy()
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.fallback = TemplateProposer(safety=self.safety)
        self.requests_sent = 0  # conversations sent to the backend (cache misses), for logs and tests

    @property
    def proposer_id(self) -> str:
        return f"{self.model.backend}:{self.model.model_id}"

    @property
    def prompt_version(self) -> str:
        return PROPOSE_PROMPT

    def setup(self) -> None:
        self.model.setup()

    # ------------------------------------------------------------------ requests
    def _query(self, conversations: list[list[Message]], seeds: list[int]) -> list[str | BackendError]:
        results, sent = cached_complete(
            self.model, self.cache, conversations, seeds, temperature=self.temperature, max_tokens=self.max_tokens
        )
        self.requests_sent += sent
        return results

    def conversation(self, request: ProposalRequest, clean: CleanInput) -> list[Message]:
        region = describe_region(request)
        size_known = request.area_ratio is not None or (request.bbox is not None and request.frame_size is not None)
        data = {
            "label": clean.label,
            "caption": clean.caption,
            "position": region.where or "unknown",
            "size": region.size or ("medium" if size_known else "unknown"),
        }
        if request.area_ratio is not None:
            data["area_ratio"] = round(float(request.area_ratio), 4)
        return fill_prompt(PROPOSE_PROMPT, data=fence(data), edit_types=json.dumps(list(request.edit_types)))

    # ------------------------------------------------------------------ parsing
    def parse(self, text: str, request: ProposalRequest, clean: CleanInput) -> dict[str, Proposal]:
        """Validated proposals by edit type; ValueError naming the problem (fed back in the repair turn)."""
        try:
            document = DraftDocument.model_validate(extract_json(cap_chars(text, MAX_RESPONSE_CHARS)))
        except ValidationError as exc:
            raise ValueError(f"the JSON does not match the schema ({_errors(exc)})") from None
        drafts: dict[str, ProposalDraft] = {}
        for draft in document.proposals:
            drafts.setdefault(draft.edit_type, draft)
        missing = [e for e in request.edit_types if e not in drafts]
        if missing:
            raise ValueError(f"proposals are missing for edit type(s) {missing}")
        proposals: dict[str, Proposal] = {}
        for edit_type in request.edit_types:
            draft = drafts[edit_type]
            target = draft.target_caption
            source = clean.caption
            if edit_type == "add":
                # The reverse of a removal: from the clip without the object back to the real footage.
                if "remove" in drafts:
                    source = drafts["remove"].target_caption
                elif draft.source_caption:
                    source = draft.source_caption
                else:
                    raise ValueError("proposal 'add' needs source_caption (the caption without the object)")
                target = clean.caption or draft.target_caption
            try:
                proposals[edit_type] = Proposal(
                    edit_type=edit_type,
                    instruction=strip_controls(draft.instruction),
                    instruction_long=strip_controls(draft.instruction_long),
                    source_caption=strip_controls(source),
                    target_caption=strip_controls(target),
                    region_caption=strip_controls(draft.region_caption),
                    label=clean.label,
                    proposer=self.proposer_id,
                    prompt_version=self.prompt_version,
                )
            except ValidationError as exc:
                raise ValueError(f"proposal {edit_type!r} is invalid ({_errors(exc)})") from None
        return proposals

    # ------------------------------------------------------------------ batch
    def propose(self, requests: list[ProposalRequest]) -> list[ProposalOutcome]:
        outcomes = [ProposalOutcome(r) for r in requests]
        cleans = [self.safety.clean(r.label, r.caption) for r in requests]
        for outcome, clean in zip(outcomes, cleans):
            for reason, message in clean.issues:
                outcome.fail(reason, message)
        conversations = [self.conversation(r, c) for r, c in zip(requests, cleans)]
        seeds = [r.seed for r in requests]
        answers = self._query(conversations, seeds)

        parsed: list[dict[str, Proposal] | None] = [None] * len(requests)
        problems: list[tuple[str, str] | None] = [None] * len(requests)
        repair: list[int] = []
        for i, answer in enumerate(answers):
            if isinstance(answer, BackendError):
                problems[i] = (answer.reason, answer.message)
                continue
            try:
                parsed[i] = self.parse(answer, requests[i], cleans[i])
            except ValueError as exc:
                problems[i] = ("llm_invalid_output", str(exc))
                repair.append(i)

        if repair:
            repair_conversations = []
            for i in repair:
                answer = strip_controls(cap_chars(str(answers[i]), 2000)) or "(empty answer)"
                turn = fill_text(
                    REPAIR_PROMPT, error=problems[i][1], edit_types=json.dumps(list(requests[i].edit_types))
                )
                repair_conversations.append(
                    [*conversations[i], {"role": "assistant", "content": answer}, {"role": "user", "content": turn}]
                )
            repaired = self._query(repair_conversations, [seeds[i] for i in repair])
            for i, answer in zip(repair, repaired):
                if isinstance(answer, BackendError):
                    problems[i] = (answer.reason, f"repair turn failed: {answer.message}")
                    continue
                try:
                    parsed[i] = self.parse(answer, requests[i], cleans[i])
                    problems[i] = None
                except ValueError as exc:
                    problems[i] = ("llm_invalid_output", f"after one repair turn: {exc}")

        for i, outcome in enumerate(outcomes):
            fallback: dict[str, Proposal] | None = None
            if problems[i] is not None:
                reason, message = problems[i]
                outcome.fail(reason, f"{self.proposer_id}: {message}; used the template proposer instead")
            for edit_type in requests[i].edit_types:
                proposal = parsed[i][edit_type] if parsed[i] is not None else None
                if proposal is not None and self.fallback.accept(outcome, proposal):
                    continue
                if fallback is None:
                    fallback = self.fallback.drafts(requests[i], cleans[i])
                self.fallback.accept(outcome, fallback[edit_type])
            # Keep the add proposal coherent with whichever remove proposal was kept.
            _pair_add_with_remove(outcome)
        return outcomes


def _pair_add_with_remove(outcome: ProposalOutcome) -> None:
    by_type = {p.edit_type: p for p in outcome.proposals}
    remove, add = by_type.get("remove"), by_type.get("add")
    if remove is None or add is None or add.source_caption == remove.target_caption:
        return
    fixed = add.model_copy(update={"source_caption": remove.target_caption})
    outcome.proposals = [fixed if p is add else p for p in outcome.proposals]


def split_kwargs(kwargs: Mapping[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(those in names, the rest)``."""
    picked = {k: v for k, v in kwargs.items() if k in names}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    return picked, rest
