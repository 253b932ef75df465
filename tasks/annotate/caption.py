"""Clip captions and object tags from a vision-language model, cached like proposals.

:class:`VLMAnnotator` sends ``num_frames`` frames sampled evenly from a clip (PNG data URLs in ``image_url`` parts,
built by :mod:`tasks.judge`) to a ``ChatBackend``: a local ``transformers`` image-text-to-text model
(``transformers:PATH``) or an OpenAI-compatible server with image inputs (``openai:URL#MODEL``). Captions are cleaned
like any caption; tags must be the JSON document ``{"objects": [...]}``. Answers are cached under
``<catalog>/cache/llm/`` (key: backend, model, messages with their images, parameters), so a resumed run never asks
twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.judge import image_data_url, sample_frames
from tasks.proposers.cache import LLMCache
from tasks.proposers.llm import BackendError, ChatBackend, cached_complete, extract_json
from tasks.proposers.safety import SafetyPolicy, cap_chars


PROMPT_VERSION = "annotate_v1"
CAPTION_PROMPT = (
    "These are {n} frames sampled in order from one video clip. Describe the clip in one or two plain sentences: "
    "the main objects, what they do, and the setting. Answer with the description only."
)
TAGS_PROMPT = (
    "These are {n} frames sampled in order from one video clip. List the distinct physical objects that are "
    "clearly visible and could be removed from the video (people, animals, vehicles, things), at most {k}, each as "
    'a short noun phrase of one to three words. Answer with only the JSON document {{"objects": ["...", ...]}}.'
)


class TagDocument(BaseModel):
    """The tagger's answer."""

    model_config = ConfigDict(extra="forbid")

    objects: list[str] = Field(max_length=64)


class VLMAnnotator:
    """Captions and tags from a vision-language model behind a ``ChatBackend``.

    Args:
        backend: a backend whose model accepts images.
        cache: response cache (``None``: no caching).
        num_frames: frames sampled from each clip; image_size: longer side of each, pixels.
        max_tags: most tags asked for; max_tokens: generation budget.
    """

    def __init__(
        self,
        backend: ChatBackend,
        *,
        cache: LLMCache | None = None,
        safety: SafetyPolicy | None = None,
        num_frames: int = 4,
        image_size: int = 448,
        max_tags: int = 8,
        max_tokens: int = 128,
    ):
        if num_frames < 1 or image_size < 16 or max_tags < 1 or max_tokens < 1:
            raise ValueError(
                f"VLMAnnotator: num_frames >= 1, image_size >= 16, max_tags >= 1 and max_tokens >= 1 expected, got "
                f"{num_frames}, {image_size}, {max_tags}, {max_tokens}"
            )
        self.model = backend
        self.cache = cache
        self.safety = safety or SafetyPolicy()
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.max_tags = int(max_tags)
        self.max_tokens = int(max_tokens)
        self.requests_sent = 0

    @property
    def model_id(self) -> str:
        """The backend and the model's name (``transformers:llava-1.5-7b``), used in messages."""
        return f"{self.model.backend}:{self.model.model_id}"

    @property
    def identity(self) -> str:
        """Recorded with every caption (``clips.caption_model``) and part of the tagger's vocabulary identity:
        :attr:`model_id` and, for a local model, ``@`` the folder's content fingerprint (configs, tokenizer, weight
        file names and sizes), so two folders of the same name are told apart. A served model (``openai:``) is
        named by its URL and model name only."""
        fingerprint = getattr(self.model, "fingerprint", None)
        return f"{self.model_id}@{fingerprint}" if fingerprint else self.model_id

    def setup(self) -> None:
        self.model.setup()

    def _conversation(self, frames: np.ndarray, text: str) -> list[dict[str, Any]]:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise ValueError(f"frames: expected uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
        sampled = sample_frames(frames, self.num_frames)
        parts: list[dict[str, Any]] = [{"type": "text", "text": text.format(n=len(sampled), k=self.max_tags)}]
        for frame in sampled:
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(frame, self.image_size)}})
        return [{"role": "user", "content": parts}]

    def _ask(self, frames: np.ndarray, text: str) -> str | BackendError:
        answers, sent = cached_complete(
            self.model, self.cache, [self._conversation(frames, text)], [0], temperature=0.0,
            max_tokens=self.max_tokens,
        )  # fmt: skip
        self.requests_sent += sent
        return answers[0]

    def caption(self, frames: np.ndarray) -> tuple[str | None, list[tuple[str, str]]]:
        """``(caption, problems)`` for a clip's ``frames`` ``(T, H, W, 3)`` uint8; ``problems`` are
        ``(reason, message)`` pairs (the caption is ``None`` when there is one).

        The caption is one or two sentences describing the clip, cleaned like any caption
        (:meth:`SafetyPolicy.clean_caption`: controls, markup and instruction-like sentences removed); an empty result
        is a ``caption_empty`` problem. Callers record it with :attr:`model_id` (``clips.caption_model``).
        """
        answer = self._ask(frames, CAPTION_PROMPT)
        if isinstance(answer, BackendError):
            return None, [(answer.reason, f"{self.model_id}: {answer.message}")]
        text, _ = self.safety.clean_caption(cap_chars(answer, 2000))
        if not text.strip():
            return None, [("caption_empty", f"{self.model_id}: the answer holds no usable caption")]
        return text.strip(), []

    def tags(self, frames: np.ndarray, *, key: str = "") -> tuple[list[str], list[tuple[str, str]]]:
        """``(tags, problems)``: the raw tags of a clip and ``(reason, message)`` pairs. ``key`` names the clip in
        messages.

        The answer must be the JSON document ``{"objects": ["...", ...]}`` (:class:`TagDocument`), else it is a
        ``tags_invalid_output`` problem; each tag is then checked as a label by the vocabulary
        (:mod:`tasks.annotate.vocab`).
        """
        answer = self._ask(frames, TAGS_PROMPT)
        where = f"{self.model_id} ({key})" if key else self.model_id
        if isinstance(answer, BackendError):
            return [], [(answer.reason, f"{where}: {answer.message}")]
        try:
            document = TagDocument.model_validate(extract_json(cap_chars(answer, 8000)))
        except (ValueError, ValidationError) as exc:
            message = str(exc).splitlines()[0][:200]
            return [], [("tags_invalid_output", f'{where}: the answer is not {{"objects": [...]}} ({message})')]
        return document.objects[: self.max_tags], []


def make_vlm(
    spec: str,
    *,
    cache_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> VLMAnnotator:
    """A :class:`VLMAnnotator` for ``transformers:PATH`` (a local image-text-to-text model folder) or
    ``openai:URL#MODEL``. Keywords: ``num_frames``, ``image_size``, ``max_tags``, ``max_tokens`` and the backend's
    own. A folder that is not a vision-language model is refused, named for what it is (a detector, a tracker,
    CLIP: they write no text; a text-only model: it cannot see the frames)."""
    from tasks.proposers import make_backend, parse_spec

    backend, argument = parse_spec(spec)
    if backend == "template":
        raise ValueError(f"captioner spec {spec!r}: expected transformers:PATH or openai:URL#MODEL")
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_frames", "image_size", "max_tags", "max_tokens") if k in kwargs}
    if backend == "transformers":
        import json

        from tasks.annotate.loading import not_a_vlm
        from tasks.proposers.hf import TransformersVisionBackend

        config = Path(argument) / "config.json"
        if not config.is_file():
            raise ValueError(f"captioner spec {spec!r}: {argument} has no config.json; expected a saved model folder")
        if problem := not_a_vlm(json.loads(config.read_text()), argument):
            raise ValueError(f"captioner spec {spec!r}: {problem}")
        names = ("device", "dtype", "batch_size", "max_input_tokens", "generate_kwargs")
        model: ChatBackend = TransformersVisionBackend(argument, **{k: kwargs.pop(k) for k in names if k in kwargs})
    else:
        model = make_backend(spec, kwargs)
    if kwargs:
        raise ValueError(f"captioner spec {spec!r}: unknown keyword(s) {sorted(kwargs)}")
    cache = LLMCache(cache_url, storage_options) if cache_url is not None else None
    return VLMAnnotator(model, cache=cache, **options)
