"""The vocabulary a clip is searched with: noun phrases from a file, the clip's caption and a VLM's tags.

Every phrase passes :meth:`tasks.proposers.safety.SafetyPolicy.clean_label` (the rule for object labels): a phrase
that is too long, holds markup/code characters, an instruction or disallowed content is refused with its reason,
never used as a label. Phrases are lower-cased and deduplicated; the first source that named a phrase is kept
(order: file, caption, VLM). Caption nouns come from a small deterministic chunker (:func:`caption_nouns`).

Without a ``--vocab`` file and without a tagger, the fixed phrases are :data:`DEFAULT_VOCABULARY` (source
``builtin``): common objects that can be removed from a video, so raw footage is never searched with nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec

from tasks.proposers.safety import FALLBACK_LABEL, SafetyPolicy


VocabSource = Literal["file", "builtin", "caption", "vlm"]

DEFAULT_VOCABULARY: tuple[str, ...] = (
    "person", "dog", "cat", "bird", "horse", "car", "bicycle", "motorcycle", "bus", "truck", "boat", "ball",
    "backpack", "handbag", "umbrella", "bottle", "cup", "chair", "bench", "potted plant", "sign", "kite",
)  # fmt: skip
"""The built-in vocabulary: used when a run has neither ``--vocab FILE`` nor a ``--tagger`` (docs/annotation.md)."""

DETERMINERS = frozenset(
    "a an the this that these those some several many two three four five six seven eight nine ten one another "
    "his her their its our my your each every".split()
)
SINGULAR_DETERMINERS = frozenset("a an this that one another each every".split())
STOPWORDS = frozenset(
    "is are was were be been being has have had with without on in at of and or but to from by for while as near "
    "into onto over under behind beside between through across along around against up down out off about after "
    "before during than then there here who which that what where when very also it its "
    # prepositions and adverbs that follow a noun in captions ("a bicycle past the camera", "a car slowly")
    "past toward towards beneath below above inside outside within via upon like among amid next beyond throughout "
    "underneath alongside until onward onwards away back again still now just only even too together alone "
    "nearby forward forwards backward backwards ahead aside apart while whilst so because if though although".split()
)
VERBS = frozenset(
    "stand sit walk run ride move fly swim jump play look hold lie eat drive pass cross roll turn dance talk hang "
    "float grow appear remain stay wait watch follow carry pull push chase climb graze sway blow shine glow spin "
    "bounce perch lean stare smile laugh sleep crawl hop trot gallop zoom enter leave approach go come make take "
    "give seem begin continue keep pose wander slide splash fill cover surround sail bark sing read write cook "
    "glide hover drift flow pour shake nod reach pick put sniff lick chew peck flap skate ski surf jog stroll hike "
    "pedal steer wag tilt fade pause twist bend kneel squat crouch hide emerge arrive depart travel cruise "
    "is are was were be has have does do can will".split()
)
"""Verbs common in video captions: a chunk ends before one (``"the dogs run"`` → ``dogs``); their ``-s``, ``-es`` and
``-ies`` forms are matched too (:func:`_verb_form`). Words that are as often the head of a compound noun (``pan``,
``wave``, ``stop``, ``park``, ``race`` …: "frying pan", "bus stop") are left out."""
LY_NOUNS = frozenset("family fly belly jelly lily bully butterfly dragonfly firefly ally rally holly assembly".split())
NOT_OBJECTS = frozenset(
    "shot view camera scene video footage clip image picture frame close-up closeup background foreground side "
    "distance front top bottom left right middle center centre day night time way lot kind sort couple pair group "
    "portrait".split()
)
_WORD = re.compile(r"[a-z][a-z'\-]*|[.,;:!?()\"]")


CHUNKER_VERSION = "2"
"""Changes when :func:`caption_nouns` finds other phrases; part of :attr:`Vocabulary.identity` with caption nouns on,
so a run with a changed chunker annotates again."""


@dataclass(frozen=True)
class Phrase:
    """One vocabulary entry and where it came from."""

    text: str
    source: VocabSource


def caption_nouns(caption: str | None, *, max_words: int = 2) -> list[str]:
    """Noun phrases of ``caption``, in order, without repeats, found with no language model.

    A chunk starts after a determiner or number (``a``, ``the``, ``two``, …), after ``of`` (``a cup of coffee`` →
    ``cup``, ``coffee``) or after a possessive (``a man's hat`` → ``man``, ``hat``) and runs over its modifiers to its
    head noun. It ends before punctuation, a preposition or adverb (``past``, ``slowly`` …), a verb (a word of
    :data:`VERBS` or one of its ``-s`` forms, ``-ing``/``-ed`` words, and after a singular determiner any ``-s`` word:
    ``"a rabbit stands"`` → ``rabbit``); the first word of a chunk is taken as a modifier even when verb-like (``"a
    swimming pool"``, ``"a parked car"``, ``"a drink"``). The phrase is at most the last ``max_words`` words (``"a
    tabby cat looking at the camera"`` → ``tabby cat``). Chunks whose head word names the footage rather than a thing
    in it (``shot``, ``view``, ``camera`` …) are skipped. The figures measured on captions are in
    docs/annotation.md.
    """
    if not caption:
        return []
    words = _WORD.findall(caption.lower())
    found: list[str] = []

    def add(chunk: list[str]) -> None:
        if chunk and chunk[-1] not in NOT_OBJECTS:  # "a static shot": the head names the footage, not a thing
            phrase = " ".join(chunk[-max_words:])
            if phrase not in found:
                found.append(phrase)

    i = 0
    while i < len(words):
        if words[i] not in DETERMINERS and words[i] != "of":  # "a cup of coffee": what follows "of" is a chunk too
            i += 1
            continue
        singular = words[i] in SINGULAR_DETERMINERS
        j = i + 1
        chunk: list[str] = []
        while j < len(words):
            w = words[j]
            if not w[0].isalpha() or w in STOPWORDS or w in DETERMINERS:
                break
            if w.endswith("'s") and len(w) > 2:  # a possessor is a chunk of its own; what it owns starts the next
                chunk.append(w[:-2])
                j += 1
                break
            if chunk and _ends_chunk(w, singular):
                break
            chunk.append(w)
            j += 1
        add(chunk)
        if j < len(words) and words[j - 1].endswith("'s") and chunk:
            words.insert(j, "the")  # what a possessor owns: "a man's hat" → man, hat
        i = max(j, i + 1)
    return found


def _ends_chunk(word: str, singular: bool) -> bool:
    """Whether ``word``, after at least one word of a chunk, is not part of the noun phrase (a verb or adverb)."""
    if _verb_form(word) or (len(word) > 4 and word.endswith(("ing", "ed"))):
        return True
    if word.endswith("ly") and len(word) > 4 and word not in LY_NOUNS:
        return True
    # after "a"/"this" the noun is singular: a further "-s" word is a verb ("a rabbit stands"), not a plural noun
    return singular and word.endswith("s") and not word.endswith(("ss", "us", "is", "as", "'s"))


def _verb_form(word: str) -> bool:
    if word in VERBS:
        return True
    if word.endswith("ies") and word[:-3] + "y" in VERBS:  # flies
        return True
    if word.endswith("es") and word[:-2] in VERBS:  # passes, crosses
        return True
    return word.endswith("s") and word[:-1] in VERBS  # stands, walks


def read_vocab_file(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Phrases of a vocabulary file: one noun phrase a line; blank lines and ``#`` comments skipped. Raises
    ``ValueError`` naming the file when it cannot be read or holds no phrase."""
    try:
        with fsspec.open(str(uri), "rt", encoding="utf-8", **dict(storage_options or {})) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"vocabulary file {uri}: cannot be read ({exc})") from None
    phrases = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise ValueError(f"vocabulary file {uri}: no phrase (one noun phrase a line expected)")
    return phrases


def merge_vocab(
    sources: Iterable[tuple[VocabSource, Sequence[str]]],
    *,
    policy: SafetyPolicy | None = None,
    max_phrases: int | None = None,
) -> tuple[list[Phrase], list[tuple[str, str]]]:
    """``(phrases, refused)``: the cleaned, deduplicated phrases in source order (at most ``max_phrases``) and the
    ``(phrase, reason)`` of every refused one."""
    policy = policy or SafetyPolicy()
    kept: dict[str, Phrase] = {}
    refused: list[tuple[str, str]] = []
    for source, phrases in sources:
        for raw in phrases:
            text, issues = policy.clean_label(raw)
            unsafe = [message for reason, message in issues if reason == "unsafe_label"]
            if unsafe or text == FALLBACK_LABEL and raw.strip().lower() != FALLBACK_LABEL:
                refused.append((raw, unsafe[0] if unsafe else f"label {raw[:60]!r} is empty"))
                continue
            kept.setdefault(text, Phrase(text, source))
    phrases = list(kept.values())
    return (phrases if max_phrases is None else phrases[:max_phrases]), refused


class Vocabulary:
    """Builds a clip's vocabulary: the fixed ``phrases`` (``--vocab FILE``), the caption's nouns (``from_caption``)
    and the tags of an optional ``tagger`` (:class:`tasks.annotate.caption.VLMAnnotator`) on the clip's frames.

    :meth:`for_clip` returns the phrases and the refusals (``(phrase, reason)``) to record as failures.
    """

    def __init__(
        self,
        phrases: Sequence[str] = (),
        *,
        from_caption: bool = True,
        tagger: Any = None,
        policy: SafetyPolicy | None = None,
        max_phrases: int = 32,
        source: VocabSource = "file",
    ):
        if max_phrases < 1:
            raise ValueError(f"max_phrases: expected >= 1, got {max_phrases}")
        self.policy = policy or SafetyPolicy()
        self.fixed, refused = merge_vocab([(source, phrases)], policy=self.policy)
        if refused:
            raise ValueError(f"vocabulary: refused phrase(s): {'; '.join(reason for _, reason in refused)}")
        self.from_caption = from_caption
        self.tagger = tagger
        self.max_phrases = int(max_phrases)

    @property
    def empty(self) -> bool:
        """True when no source can ever give a phrase."""
        return not self.fixed and not self.from_caption and self.tagger is None

    @property
    def identity(self) -> str:
        """A hash of what decides the phrases: the fixed phrases and their source, the caption switch (and the
        chunker's version), the tagger's identity and prompt version, the phrase cap. Part of each object's row key
        (``tasks.ingest.item_row_key``)."""
        tagger = None
        if self.tagger is not None:
            from tasks.annotate.caption import PROMPT_VERSION

            name = getattr(self.tagger, "identity", None)  # name@content hash; a tagger of tests may have a name only
            tagger = [str(name or getattr(self.tagger, "model_id", type(self.tagger).__name__)), PROMPT_VERSION]
        document = {
            "fixed": [[p.text, p.source] for p in self.fixed],
            "from_caption": self.from_caption,
            "chunker": CHUNKER_VERSION if self.from_caption else None,
            "tagger": tagger,
            "max_phrases": self.max_phrases,
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]

    def setup(self) -> None:
        if self.tagger is not None:
            self.tagger.setup()

    def for_clip(self, caption: str | None, frames: Any = None, *, clip_id: str = "") -> tuple[list[Phrase], list]:
        """``(phrases, problems)`` for one clip; ``problems`` are ``(reason, message)`` pairs (refused phrases,
        tagger failures)."""
        sources: list[tuple[VocabSource, Sequence[str]]] = [(p.source, [p.text]) for p in self.fixed]
        if self.from_caption:
            sources.append(("caption", caption_nouns(caption)))
        problems: list[tuple[str, str]] = []
        if self.tagger is not None and frames is not None:
            tags, failures = self.tagger.tags(frames, key=clip_id)
            sources.append(("vlm", tags))
            problems.extend(failures)
        phrases, refused = merge_vocab(sources, policy=self.policy, max_phrases=self.max_phrases)
        problems.extend(("unsafe_tag", reason) for _, reason in refused)
        return phrases, problems
