"""Safety for proposer inputs and outputs: captions and labels are data, never instructions.

Inputs (labels, captions) are cleaned before anything sees them (:meth:`SafetyPolicy.clean_label`,
:meth:`SafetyPolicy.clean_caption`); models receive the cleaned data as a JSON document fenced between ``<<<DATA``
and ``DATA>>>`` with an explicit statement that it is data (:func:`fence`, prompts/). Outputs (every proposal, from
any backend) are checked the same way (:meth:`SafetyPolicy.check_output`). Every change or rejection is reported as a
``(reason, message)`` pair that the caller records as a ``Failure`` (stage "propose").
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field


FENCE_OPEN = "<<<DATA"
FENCE_CLOSE = "DATA>>>"
FALLBACK_LABEL = "object"

_WS_CONTROLS = {"\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"}
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_TAG = re.compile(r"<[^<>]{0,200}>")
_MARKUP_CHARS = re.compile(r"[<>`{}\[\]\\|]")
_LABEL = re.compile(r"^[^\W\d_][\w '\-]*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
INJECTION_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|prompts?|rules|directions|above|previous)\b",
        r"\b(system|developer)\s+(prompt|message|instructions?)\b",
        r"\byou\s+are\s+(now|no\s+longer)\b",
        r"\b(new|updated)\s+instructions?\b",
        r"\b(respond|reply|answer|output|print|say)\s+(only\s+)?(with\s+)?[\"'“]",
        r"<\|[a-z_]+\|>",
        r"\[/?(inst|sys)\]",
        r"<<<|>>>",
    )
)


def strip_controls(text: str) -> str:
    """Remove ANSI escapes and unicode control/format/private/unassigned characters; whitespace controls become
    spaces; runs of spaces collapse."""
    out = []
    for ch in _ANSI.sub("", text):
        if ch in _WS_CONTROLS:
            out.append(" ")
        elif unicodedata.category(ch)[0] == "C":
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def cap_chars(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` at a word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rsplit(" ", 1)[0] if " " in text[:max_chars] else text[:max_chars]
    return cut[:max_chars].rstrip(" ,;:-")


def find_injection(text: str) -> str | None:
    for pattern in INJECTION_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(0)
    return None


@dataclass(frozen=True)
class CleanInput:
    label: str
    caption: str
    issues: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SafetyPolicy:
    """Limits and the configurable disallowed-content list (case-insensitive words or phrases, matched on word
    boundaries in every output field)."""

    disallowed: tuple[str, ...] = ()
    max_caption_chars: int = 600
    max_label_chars: int = 40
    max_label_words: int = 4
    _disallowed_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        terms = [t.strip() for t in self.disallowed if t and t.strip()]
        object.__setattr__(self, "disallowed", tuple(terms))
        if terms:
            alternation = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
            object.__setattr__(self, "_disallowed_re", re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE))

    # ------------------------------------------------------------------ inputs
    def clean_label(self, label: str | None) -> tuple[str, list[tuple[str, str]]]:
        """A safe object name, or ``"object"`` with the reason when the label is missing or unusable.

        Unicode control and format characters are removed; a usable label looks like an object name (letters, digits,
        spaces, ``-`` and ``'``; at most ``max_label_words`` words and ``max_label_chars`` characters) and holds no
        instruction or disallowed term. It is returned lower-cased.
        """
        issues: list[tuple[str, str]] = []
        raw = label or ""
        text = strip_controls(unicodedata.normalize("NFKC", raw)).strip(" '-")
        if not text:
            if raw:
                issues.append(("unsafe_label", f"label {raw[:60]!r} is empty after removing control characters"))
            return FALLBACK_LABEL, issues
        problem = None
        if len(text) > self.max_label_chars or len(text.split()) > self.max_label_words:
            problem = f"is longer than {self.max_label_words} words / {self.max_label_chars} characters"
        elif not _LABEL.match(text):
            problem = "contains characters that do not belong in an object name (markup, code or punctuation)"
        elif find_injection(text) or self._disallowed(text):
            problem = "contains an instruction or disallowed content"
        if problem:
            issues.append(("unsafe_label", f"label {raw[:60]!r} {problem}; using {FALLBACK_LABEL!r}"))
            return FALLBACK_LABEL, issues
        if text != raw:
            issues.append(("label_cleaned", f"label {raw[:60]!r} had control characters or extra spaces removed"))
        return text.lower(), issues

    def clean_caption(self, caption: str | None) -> tuple[str, list[tuple[str, str]]]:
        """The caption with controls and markup removed, instruction-like sentences dropped, length capped.

        Unicode control and format characters (bidi overrides, zero-width characters, escapes) and markup are removed;
        the sentence that tries to instruct a model ("ignore previous instructions ...") and everything after it are
        dropped, and so are sentences with disallowed terms; the rest is capped at ``max_caption_chars``.
        """
        issues: list[tuple[str, str]] = []
        raw = caption or ""
        text = strip_controls(unicodedata.normalize("NFKC", raw))
        if text != " ".join(raw.split()):
            issues.append(("caption_control_chars", "caption had unicode control or format characters; removed"))
        sentences = _SENTENCE.split(text)
        for i, sentence in enumerate(sentences):
            hit = find_injection(sentence)
            if hit:  # what follows an injection attempt is part of it: drop the rest of the caption
                issues.append(
                    ("caption_injection", f"dropped {len(sentences) - i} caption sentence(s) from {hit[:60]!r} on")
                )
                text = " ".join(sentences[:i])
                break
        without_tags = _TAG.sub(" ", text)
        without_markup = " ".join(_MARKUP_CHARS.sub(" ", without_tags).split())
        if without_markup != text:
            issues.append(("caption_markup", "caption had markup or code characters; removed"))
        kept = []
        for sentence in _SENTENCE.split(without_markup):
            hit = self._disallowed(sentence)
            if hit:
                issues.append(("caption_disallowed", f"dropped a caption sentence containing {hit!r}"))
            elif sentence:
                kept.append(sentence)
        text = " ".join(kept)
        if len(text) > self.max_caption_chars:
            issues.append(
                ("caption_truncated", f"caption has {len(text)} characters; cut to {self.max_caption_chars}")
            )
            text = cap_chars(text, self.max_caption_chars)
        return text, issues

    def clean(self, label: str | None, caption: str | None) -> CleanInput:
        label_clean, label_issues = self.clean_label(label)
        caption_clean, caption_issues = self.clean_caption(caption)
        return CleanInput(label_clean, caption_clean, tuple(label_issues + caption_issues))

    # ------------------------------------------------------------------ outputs
    def check_output(self, fields: dict[str, str], allowed: Iterable[str] = ()) -> str | None:
        """Why these output fields must be rejected, or None. ``allowed`` are input texts the output may repeat.

        Rejected: control characters, markup or fence markers, injection phrases, disallowed terms. The length caps
        are those of ``tasks.proposers.base.Proposal``.
        """
        for name, value in fields.items():
            if not isinstance(value, str):
                continue
            if strip_controls(value) != value:
                return f"{name} contains control characters or irregular whitespace"
            if _TAG.search(value) or re.search(r"[<>`{}\\|]", value):
                return f"{name} contains markup or code characters"
            hit = find_injection(value)
            if hit:
                return f"{name} contains an injection phrase {hit[:60]!r}"
            hit = self._disallowed(value)
            if hit:
                return f"{name} contains disallowed content {hit!r}"
        return None

    def _disallowed(self, text: str) -> str | None:
        if self._disallowed_re is None:
            return None
        match = self._disallowed_re.search(text)
        return match.group(0) if match else None


def fence(data: dict) -> str:
    """Cleaned data as a JSON document between fence markers, for a prompt. The data cannot close the fence:
    cleaned inputs contain no ``<``/``>``, and JSON escapes quotes and newlines."""
    body = json.dumps(data, ensure_ascii=False, indent=1)
    if FENCE_OPEN in body or FENCE_CLOSE in body:
        raise ValueError("fence: data contains a fence marker; clean it with SafetyPolicy first")
    return f"{FENCE_OPEN}\n{body}\n{FENCE_CLOSE}"
