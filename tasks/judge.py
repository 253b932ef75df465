"""Judging finished pairs with a vision-language model: three 1–5 scores and the model's reasons.

``get_judge(spec, cache_url=…)`` builds a :class:`VLMJudge` for ``openai:URL#MODEL`` or ``transformers:PATH`` (a
local vision-language model; a text-only folder is refused: it cannot see the frames). ``judge(requests)`` returns
one :class:`JudgeVerdict` per request: ``compliance`` (the edit carries out the instruction), ``consistency``
(everything else is preserved) and ``quality``; consistency and quality are clamped to at most compliance, and
every clamp, unusable answer or failed request is a failure of stage ``judge``. Frames are sampled evenly and sent
as PNG data URLs; the instruction is fenced as data in ``proposers/prompts/judge_v1.txt``; answers are cached under
``<catalog>/cache/llm/``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalog.schema import EDIT_TYPES
from tasks.proposers.cache import LLMCache
from tasks.proposers.llm import (
    BackendError,
    ChatBackend,
    Message,
    cached_complete,
    extract_json,
    fill_prompt,
)
from tasks.proposers.safety import SafetyPolicy, cap_chars, fence, strip_controls
from tasks.types import Failure


JUDGE_PROMPT = "judge_v1"
STAGE = "judge"
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class JudgeRequest:
    """One finished pair.

    Args:
        pair_id: the pair's catalog id (failures name it).
        instruction: the pair's instruction (short or long).
        edit_type: the pair's direction (remove, add, replace, attribute).
        source_frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the source clip, or frames of it.
        edited_frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): the edited clip, same length.
        source_caption, target_caption: optional context for the judge.
        seed: sampling seed sent with the request.
    """

    pair_id: str
    instruction: str
    edit_type: str
    source_frames: np.ndarray
    edited_frames: np.ndarray
    source_caption: str | None = None
    target_caption: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.edit_type not in EDIT_TYPES:
            raise ValueError(f"JudgeRequest.edit_type: {self.edit_type!r}; expected one of {EDIT_TYPES}")
        for name in ("source_frames", "edited_frames"):
            frames = getattr(self, name)
            if (
                not isinstance(frames, np.ndarray)
                or frames.ndim != 4
                or frames.shape[-1] != 3
                or frames.dtype != np.uint8
            ):
                raise ValueError(
                    f"JudgeRequest.{name}: expected uint8 (num_frames, height, width, 3), got "
                    f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}"
                )
            if len(frames) == 0:
                raise ValueError(f"JudgeRequest.{name}: no frames")
        if len(self.source_frames) != len(self.edited_frames):
            raise ValueError(
                f"JudgeRequest: source_frames has {len(self.source_frames)} frames, edited_frames "
                f"{len(self.edited_frames)}; they must be the same clip length"
            )


@dataclass
class JudgeVerdict:
    """Scores (None when the judge gave no usable answer), the model's reason and what was recorded."""

    pair_id: str
    model: str
    compliance: int | None = None
    consistency: int | None = None
    quality: int | None = None
    reason: str | None = None
    failures: list[Failure] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """The ``pairs.judge_*`` columns (catalog/schema.py)."""
        return {
            "judge_compliance": self.compliance,
            "judge_consistency": self.consistency,
            "judge_quality": self.quality,
            "judge_reason": self.reason,
            "judge_model": self.model,
        }

    def fail(self, reason: str, message: str) -> None:
        self.failures.append(Failure(STAGE, "pair", self.pair_id, reason, message))


class JudgeScores(BaseModel):
    model_config = ConfigDict(extra="ignore")

    compliance: int = Field(ge=1, le=5)
    consistency: int = Field(ge=1, le=5)
    quality: int = Field(ge=1, le=5)
    reason: str = Field(min_length=1, max_length=4000)


def sample_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread evenly over the clip, first and last included (all of them when fewer).

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`).

    Returns:
        `np.ndarray` of shape `(min(count, num_frames), height, width, 3)`.
    """
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count}")
    if len(frames) <= count:
        return frames
    index = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    return frames[index]


def image_data_url(frame: np.ndarray, image_size: int) -> str:
    """A ``data:image/png;base64,...`` URL of one ``(height, width, 3)`` uint8 frame, longer side ``image_size``."""
    from PIL import Image

    image = Image.fromarray(frame)
    scale = image_size / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class VLMJudge:
    """Scores pairs with a vision-language model behind a ``ChatBackend``; one repair turn for unusable answers.

    Args:
        backend: a backend whose model accepts images (``openai``).
        cache: response cache (``None``: no caching).
        num_frames: frames sampled from each clip.
        image_size: longer side of each frame sent, in pixels.
        temperature, max_tokens: generation settings.
    """

    def __init__(
        self,
        backend: ChatBackend,
        *,
        cache: LLMCache | None = None,
        safety: SafetyPolicy | None = None,
        num_frames: int = 4,
        image_size: int = 512,
        temperature: float = 0.0,
        max_tokens: int = 256,
    ):
        if num_frames < 1 or image_size < 16:
            raise ValueError(f"judge: num_frames >= 1 and image_size >= 16 expected, got {num_frames}, {image_size}")
        self.model = backend
        self.cache = cache
        self.safety = safety or SafetyPolicy()
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.requests_sent = 0

    @property
    def judge_id(self) -> str:
        """Recorded as ``pairs.judge_model``."""
        return f"{self.model.backend}:{self.model.model_id}"

    def setup(self) -> None:
        self.model.setup()

    def conversation(self, request: JudgeRequest) -> list[Message]:
        source = sample_frames(request.source_frames, self.num_frames)
        edited = sample_frames(request.edited_frames, self.num_frames)
        instruction, _ = self.safety.clean_caption(request.instruction)
        data = {
            "edit_type": request.edit_type,
            "instruction": instruction,
            "source_caption": self.safety.clean_caption(request.source_caption)[0],
            "target_caption": self.safety.clean_caption(request.target_caption)[0],
        }
        system, user = fill_prompt(
            JUDGE_PROMPT, data=fence(data), n_source=str(len(source)), n_edited=str(len(edited))
        )
        parts: list[dict[str, Any]] = [{"type": "text", "text": user["content"]}]
        for frame in [*source, *edited]:
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(frame, self.image_size)}})
        return [system, {"role": "user", "content": parts}]

    def _parse(self, text: str, verdict: JudgeVerdict) -> None:
        try:
            scores = JudgeScores.model_validate(extract_json(cap_chars(text, 8000)))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:4])
            raise ValueError(f"the JSON does not match the schema ({problems})") from None
        verdict.compliance, verdict.consistency, verdict.quality = (
            scores.compliance,
            scores.consistency,
            scores.quality,
        )
        verdict.reason = cap_chars(strip_controls(scores.reason), MAX_REASON_CHARS) or None
        for name in ("consistency", "quality"):
            value = getattr(verdict, name)
            if value > scores.compliance:
                setattr(verdict, name, scores.compliance)
                verdict.fail(
                    "judge_scores_clamped",
                    f"{self.judge_id}: {name} {value} exceeds compliance {scores.compliance}; clamped to it",
                )

    def judge(self, requests: list[JudgeRequest]) -> list[JudgeVerdict]:
        """One verdict per request, in order; per-pair problems are recorded in ``verdict.failures``."""
        verdicts = [JudgeVerdict(r.pair_id, self.judge_id) for r in requests]
        conversations = [self.conversation(r) for r in requests]
        seeds = [r.seed for r in requests]
        answers, sent = cached_complete(
            self.model, self.cache, conversations, seeds, temperature=self.temperature, max_tokens=self.max_tokens
        )
        self.requests_sent += sent
        problems: dict[int, tuple[str, str]] = {}
        for i, answer in enumerate(answers):
            if isinstance(answer, BackendError):
                problems[i] = (answer.reason, answer.message)
                continue
            try:
                self._parse(answer, verdicts[i])
            except ValueError as exc:
                problems[i] = ("judge_invalid_output", str(exc))
        repair = [i for i, (reason, _) in problems.items() if reason == "judge_invalid_output"]
        if repair:
            turns = []
            for i in repair:
                previous = strip_controls(cap_chars(str(answers[i]), 2000)) or "(empty answer)"
                ask = (
                    f"Your answer could not be used: {problems[i][1]}. Answer again with only the JSON document "
                    '{"compliance": <1-5>, "consistency": <1-5>, "quality": <1-5>, "reason": "<text>"}.'
                )
                turns.append(
                    [*conversations[i], {"role": "assistant", "content": previous}, {"role": "user", "content": ask}]
                )
            repaired, sent = cached_complete(
                self.model,
                self.cache,
                turns,
                [seeds[i] for i in repair],
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
            self.requests_sent += sent
            for i, answer in zip(repair, repaired):
                if isinstance(answer, BackendError):
                    problems[i] = (answer.reason, f"repair turn failed: {answer.message}")
                    continue
                try:
                    self._parse(answer, verdicts[i])
                    del problems[i]
                except ValueError as exc:
                    problems[i] = ("judge_invalid_output", f"after one repair turn: {exc}")
        for i, (reason, message) in problems.items():
            verdicts[i].fail(reason, f"{self.judge_id}: {message}; the pair has no judge scores")
        return verdicts


def get_judge(
    spec: str,
    *,
    cache_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> VLMJudge:
    """A judge for ``openai:URL#MODEL`` or ``transformers:PATH`` (a vision-language model folder). Keywords:
    ``num_frames``, ``image_size``, ``temperature``, ``max_tokens``, ``disallowed`` and the backend's own
    (``OpenAIBackend`` / ``TransformersBackend``). Other specs raise ``ValueError`` saying why.
    """
    from tasks.proposers import make_backend, parse_spec

    backend, argument = parse_spec(spec)
    if backend == "template":
        raise ValueError(
            "judge spec 'template': templates cannot judge videos; use 'openai:URL#MODEL' with a vision-language model"
        )
    if backend == "transformers":
        config = Path(argument) / "config.json"
        if not config.is_file():
            raise ValueError(f"judge spec {spec!r}: {argument} has no config.json; expected a saved model folder")
        loaded = json.loads(config.read_text())
        if "vision_config" not in loaded:
            kind = ",".join(loaded.get("architectures") or [loaded.get("model_type", "unknown")])
            raise ValueError(
                f"judge spec {spec!r}: the judge needs a vision-language model to see the frames, and {argument} is "
                f"a text-only model ({kind}); use a vision-language model folder (LLaVA, Qwen2-VL, ...) or "
                "'openai:URL#MODEL'"
            )
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_frames", "image_size", "temperature", "max_tokens") if k in kwargs}
    safety = SafetyPolicy(disallowed=tuple(kwargs.pop("disallowed", ())))
    if backend == "transformers":
        from tasks.proposers.hf import TransformersVisionBackend

        names = ("device", "dtype", "batch_size", "max_input_tokens", "generate_kwargs")
        model = TransformersVisionBackend(argument, **{k: kwargs.pop(k) for k in names if k in kwargs})
    else:
        model = make_backend(spec, kwargs)
    if kwargs:
        raise ValueError(f"judge spec {spec!r}: unknown keyword(s) {sorted(kwargs)}")
    cache = LLMCache(cache_url, storage_options) if cache_url is not None else None
    return VLMJudge(model, cache=cache, safety=safety, **options)
