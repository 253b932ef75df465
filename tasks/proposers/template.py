"""The ``template`` proposer: deterministic instructions from phrase templates, no model (the default).

It uses the object's label, the clip caption (rewritten per edit type for the target caption) and where the
object sits and how big it is ("the small dog on the left"). The same request and seed always give the same
proposals; different seeds choose among at least 20 phrasings per edit type. The caption rewriting is lexical
(the sentence or noun phrase naming the label is dropped or swapped), so it is weaker than a language model's; the
LLM backends fall back to this proposer when their output is unusable.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tasks.proposers.base import (
    MIN_LONG_WORDS,
    Proposal,
    ProposalOutcome,
    ProposalRequest,
    Proposer,
    word_count,
)
from tasks.proposers.safety import CleanInput, SafetyPolicy


TEMPLATE_VERSION = "template-v1"

REPLACEMENTS = (
    "cat", "potted plant", "wooden crate", "bicycle", "stone statue", "red ball", "small tree", "lamp post",
    "suitcase", "park bench", "traffic cone", "teddy bear", "vase of flowers", "backpack", "basketball", "dog",
    "golden retriever", "cardboard box", "wooden chair", "umbrella", "guitar", "flower pot",
)  # fmt: skip
ATTRIBUTES = (
    "red", "blue", "green", "yellow", "purple", "orange", "white", "black", "golden", "silver", "pink",
    "turquoise", "bright red", "deep blue", "pale green", "matte black",
)  # fmt: skip

SHORT = {
    "remove": (
        "Remove {ref}.", "Delete {ref}.", "Erase {ref} from the video.", "Take out {ref}.", "Get rid of {ref}.",
        "Remove {ref} from the scene.", "Make {ref} disappear.", "Cut {ref} out of the video.",
        "Eliminate {ref}.", "Delete {ref} from every frame.", "Clear {ref} from the shot.",
        "Remove {ref} entirely.", "Wipe {ref} out of the footage.", "Take {ref} out of the scene.",
        "Edit out {ref}.", "Remove {ref} and fill in the background.", "Erase {ref}.",
        "Have {ref} removed from the clip.", "Let the background replace {ref}.", "Strip {ref} from the video.",
        "Remove {ref} from the clip.", "Make the video show no trace of {ref}.",
    ),
    "add": (
        "Add {aref}.", "Insert {aref}.", "Put {aref} into the scene.", "Place {aref} in the video.",
        "Add {aref} to the scene.", "Bring {aref} into the shot.", "Include {aref} in the video.",
        "Make {aref} appear.", "Introduce {aref}.", "Add {aref} to every frame.", "Place {aref} in the shot.",
        "Insert {aref} into the footage.", "Show {aref} in the scene.", "Put {aref} back into the video.",
        "Add {aref} to the clip.", "Let {aref} appear in the video.", "Draw {aref} into the scene.",
        "Have {aref} appear in the footage.", "Fill the empty spot with {aref_noun}.", "Add in {aref}.",
        "Populate the scene with {aref}.",
    ),
    "replace": (
        "Replace {ref} with a {new}.", "Swap {ref} for a {new}.", "Turn {ref} into a {new}.",
        "Change {ref} into a {new}.", "Substitute a {new} for {ref}.", "Exchange {ref} for a {new}.",
        "Put a {new} where {ref} is.", "Transform {ref} into a {new}.", "Make {ref} a {new} instead.",
        "Replace {ref} by a {new}.", "Swap out {ref} for a {new}.", "Change {ref} to a {new}.",
        "Convert {ref} into a {new}.", "Show a {new} in place of {ref}.", "Switch {ref} with a {new}.",
        "Have a {new} take the place of {ref}.", "Turn {ref} into a {new} in every frame.",
        "Replace {ref} with a {new} throughout the clip.", "Morph {ref} into a {new}.",
        "Let a {new} stand in for {ref}.", "Use a {new} instead of {ref}.",
    ),
    "attribute": (
        "Make {ref} {attr}.", "Change the color of {ref} to {attr}.", "Turn {ref} {attr}.",
        "Paint {ref} {attr}.", "Recolor {ref} {attr}.", "Give {ref} a {attr} color.", "Color {ref} {attr}.",
        "Change {ref} to {attr}.", "Make the color of {ref} {attr}.", "Dye {ref} {attr}.",
        "Tint {ref} {attr}.", "Switch the color of {ref} to {attr}.", "Render {ref} in {attr}.",
        "Shade {ref} {attr}.", "Make {ref} look {attr}.", "Give {ref} a {attr} finish.",
        "Recolor {ref} to a {attr} tone.", "Change {ref}'s color to {attr}.", "Turn the color of {ref} {attr}.",
        "Make {ref} {attr} in every frame.", "Paint {ref} {attr} throughout the clip.",
    ),
}  # fmt: skip

LONG_OPEN = {
    "remove": (
        "Remove {ref} from the whole clip.",
        "Erase {ref} completely, in every frame where it is visible.",
        "Take {ref} out of the video from the first frame to the last.",
        "Delete {ref} so that it no longer appears anywhere in the footage.",
        "Make {ref} vanish from the scene for the entire duration of the clip.",
    ),
    "add": (
        "Add {aref} to the video, visible from the first frame to the last.",
        "Insert {aref} into the scene so that it stays in place for the whole clip.",
        "Place {aref} in the footage, keeping it present in every frame.",
        "Bring {aref} into the shot and keep it there throughout the clip.",
        "Make {aref} appear in the scene for the entire duration of the video.",
    ),
    "replace": (
        "Replace {ref} with a {new} in every frame of the clip.",
        "Swap {ref} for a {new} for the whole duration of the video.",
        "Turn {ref} into a {new}, keeping the change consistent from the first frame to the last.",
        "Put a {new} where {ref} is, throughout the entire clip.",
        "Transform {ref} into a {new} in all frames of the footage.",
    ),
    "attribute": (
        "Change the color of {ref} to {attr} in every frame of the clip.",
        "Make {ref} {attr} for the whole duration of the video.",
        "Recolor {ref} so that it is clearly {attr} from the first frame to the last.",
        "Turn {ref} {attr}, keeping the new color consistent throughout the footage.",
        "Paint {ref} {attr} in all frames of the clip.",
    ),
}
LONG_DETAIL = {
    "remove": (
        "Fill the area it occupied with the background that would naturally be behind it, continuing nearby "
        "textures, edges and shadows.",
        "Where it stood, reconstruct the background so that the surrounding surfaces continue without seams.",
        "The region it covered should show plausible background that matches the neighbouring pixels and lighting.",
        "Cover its former place with the scenery around it, with no blur, ghosting or outline left behind.",
    ),
    "add": (
        "It should sit {pos_where}, at a scale that fits the scene, lit like its surroundings and casting a "
        "matching shadow.",
        "Match its size, perspective and lighting to the scene so that it looks as if it had been filmed there.",
        "Blend it with the surroundings: consistent perspective, natural lighting and believable contact with "
        "the ground.",
        "It should look like a real part of the scene, {pos_where}, with edges that blend cleanly into the "
        "background.",
    ),
    "replace": (
        "The {new} should occupy the same place and roughly the same size, lit like the rest of the scene.",
        "Keep the {new} at the same position and scale, with lighting and shadows that match the surroundings.",
        "Give the {new} a believable pose and perspective that fit the space the original object filled.",
        "The {new} should move with the camera like the original object did and look naturally filmed.",
    ),
    "attribute": (
        "Only the color changes: its shape, texture, size, position and motion must stay exactly the same.",
        "Keep its shape, shading, highlights and motion unchanged; only the hue becomes {attr}.",
        "Preserve every detail of its form and texture while the new {attr} color follows the scene lighting.",
        "The change affects its color alone, with natural shading and no color bleeding onto nearby areas.",
    ),
}
LONG_KEEP = (
    "Everything else in the video, including the background, the other objects, the lighting and the camera "
    "motion, must stay exactly as it is.",
    "Leave the rest of the scene untouched: other objects, colors, lighting and camera movement stay identical.",
    "Do not alter anything outside this edit; the surroundings, motion and lighting of the clip remain the same.",
    "All other content of the clip must be preserved frame by frame, with no flicker or change in the background.",
)
EXTRA_KEEP = "Keep the result temporally stable from frame to frame, without flicker or sudden changes."

REGION_REMOVE = (
    "the surrounding background, continued seamlessly",
    "background matching the nearby surfaces and lighting",
    "plain continuation of the background scenery",
    "the scenery that lies behind, with consistent texture",
)
_DETERMINERS = {
    "a", "an", "the", "one", "two", "three", "some", "several", "his", "her", "their", "its", "this", "that",
    "these", "those", "another", "many", "few",
}  # fmt: skip


@dataclass(frozen=True)
class Region:
    """Where the object is and how big it is, in words."""

    size: str  # "tiny", "small", "", "large"
    where: str  # "on the left", "in the upper right", ... or "" when unknown


def describe_region(request: ProposalRequest) -> Region:
    """Position from the bbox centre in thirds of the frame; size from the area ratio (or the bbox)."""
    ratio = request.area_ratio
    where = ""
    if request.bbox is not None and request.frame_size is not None:
        x0, y0, x1, y1 = request.bbox
        width, height = request.frame_size
        if ratio is None:
            ratio = max(0, x1 - x0) * max(0, y1 - y0) / float(width * height)
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
        row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
        where = {
            ("left", "middle"): "on the left",
            ("right", "middle"): "on the right",
            ("center", "middle"): "in the center",
            ("center", "top"): "at the top",
            ("center", "bottom"): "at the bottom",
            ("left", "top"): "in the upper left",
            ("right", "top"): "in the upper right",
            ("left", "bottom"): "in the lower left",
            ("right", "bottom"): "in the lower right",
        }[(col, row)]
    size = ""
    if ratio is not None:
        size = "tiny" if ratio < 0.01 else "small" if ratio < 0.05 else "large" if ratio >= 0.3 else ""
    return Region(size, where)


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


@dataclass(frozen=True)
class Mention:
    """Where the caption names the object: character span of the noun phrase, its adjectives, its sentence."""

    start: int
    end: int
    adjectives: str


def find_mention(caption: str, label: str) -> Mention | None:
    """The first noun phrase naming ``label`` (plural tolerated), with up to two words before it after a
    determiner ("A brown dog", "the two dogs")."""
    match = re.search(rf"(?<!\w){re.escape(label)}(?:s|es)?(?!\w)", caption, re.IGNORECASE)
    if match is None:
        return None
    before = caption[: match.start()]
    words = list(re.finditer(r"[\w'-]+", before))[-3:]
    start, adjectives = match.start(), ""
    for i, word in enumerate(words):
        if word.group(0).lower() in _DETERMINERS:
            start = word.start()
            adjectives = " ".join(w.group(0) for w in words[i + 1 :])
            break
    return Mention(start, match.end(), adjectives)


def _sentences(caption: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", caption) if s]


_CONNECTOR = re.compile(
    r"(?:,?\s+(?:with|and|or|holding|carrying|beside|near|next to|by|behind|of))\s*$", re.IGNORECASE
)
_PLACE = re.compile(
    r"\b(?:on|in|at|along|across|near|under|over|through|beside|inside|into|onto|around|against)\b[^.!?]*",
    re.IGNORECASE,
)


def removed_caption(caption: str, label: str, region: Region) -> str:
    """The caption for the scene after removal.

    Per sentence: an object in the subject ("A brown dog runs ...") drops the sentence; an object elsewhere is
    cut out with its connector ("A man walks his dog in the park" → "A man walks in the park"). When no sentence
    is left, the place phrase of the dropped subject sentence is kept ("An empty scene on the beach at sunset").
    """
    mentions = re.compile(rf"(?<!\w){re.escape(label)}(?:s|es)?(?!\w)", re.IGNORECASE)
    kept, dropped = [], []
    for sentence in _sentences(caption):
        mention = find_mention(sentence, label)
        if mention is None:
            kept.append(sentence)
            continue
        before = sentence[: mention.start].rstrip()
        if not before:
            dropped.append(sentence[mention.end :])
            continue
        before = _CONNECTOR.sub("", before)
        edited = re.sub(r"\s+([,.!?;:])", r"\1", f"{before} {sentence[mention.end :].lstrip()}").strip()
        if mentions.search(edited) or len(edited.split()) < 3:
            dropped.append(sentence[mention.end :])
        else:
            kept.append(edited)
    if kept:
        return " ".join(_sentence(s) for s in kept)
    for rest in dropped:
        place = _PLACE.search(rest)
        if place and not mentions.search(place.group(0)):
            return _sentence(f"An empty scene {place.group(0).strip()}")
    return _sentence(_join("An empty view of the scene; the area", region.where, "shows only the background"))


class TemplateProposer(Proposer):
    """Deterministic template proposals. ``safety`` checks inputs and outputs (see ``tasks.proposers.safety``)."""

    backend = "template"

    def __init__(self, *, safety: SafetyPolicy | None = None):
        self.safety = safety or SafetyPolicy()

    @property
    def proposer_id(self) -> str:
        return "template"

    @property
    def prompt_version(self) -> str:
        return TEMPLATE_VERSION

    def propose(self, requests: list[ProposalRequest]) -> list[ProposalOutcome]:
        outcomes = []
        for request in requests:
            outcome = ProposalOutcome(request)
            clean = self.safety.clean(request.label, request.caption)
            for reason, message in clean.issues:
                outcome.fail(reason, message)
            drafts = self.drafts(request, clean)
            for edit_type in request.edit_types:
                self.accept(outcome, drafts[edit_type])
            outcomes.append(outcome)
        return outcomes

    def accept(self, outcome: ProposalOutcome, proposal: Proposal) -> bool:
        """Append ``proposal`` unless its output fails the safety check (then record the rejection)."""
        problem = self.safety.check_output(
            {
                "instruction": proposal.instruction,
                "instruction_long": proposal.instruction_long,
                "source_caption": proposal.source_caption,
                "target_caption": proposal.target_caption,
                "region_caption": proposal.region_caption,
            }
        )
        if problem:
            outcome.fail("unsafe_output", f"{proposal.proposer} {proposal.edit_type} proposal rejected: {problem}")
            return False
        outcome.proposals.append(proposal)
        return True

    def drafts(self, request: ProposalRequest, clean: CleanInput) -> dict[str, Proposal]:
        """One template proposal per requested edit type (``add`` coherent with ``remove``)."""
        label, caption = clean.label, clean.caption
        region = describe_region(request)
        ref = "the " + _join(region.size, label, region.where)
        noun = _join(region.size, label)
        mention = find_mention(caption, label) if caption else None
        adjectives = mention.adjectives if mention else ""
        a_noun = _join(adjectives, label)
        aref = _join(_article(a_noun), a_noun, region.where)
        without = removed_caption(caption, label, region)
        with_object = caption or _sentence(_join("A video showing", _article(noun or label), noun, region.where))
        if caption and mention is None:
            with_object = _join(
                caption if caption[-1] in ".!?" else caption + ".",
                _sentence(_join(_article(a_noun).capitalize(), a_noun, "is visible", region.where or "in the scene")),
            )
        out: dict[str, Proposal] = {}
        for edit_type in request.edit_types:
            rng = random.Random(f"{request.seed}:{request.object_id}:{edit_type}")
            fields = {
                "ref": ref,
                "aref": aref,
                "aref_noun": _join(_article(a_noun), a_noun),
                "pos_where": region.where or "in a natural spot in the scene",
                "label": label,
            }
            if edit_type == "remove":
                source, target = with_object, without
                region_caption = rng.choice(REGION_REMOVE)
            elif edit_type == "add":
                source, target = without, with_object
                a_region = _join(region.size, adjectives, label)
                region_caption = _join(_article(a_region), a_region)
            elif edit_type == "replace":
                new = rng.choice([r for r in REPLACEMENTS if r != label])
                fields["new"] = new
                source, target = with_object, self._swap(caption, mention, f"{_article(new)} {new}", region)
                region_caption = _join(_article(new), new, "in the same place and pose")
            else:
                attr = rng.choice(ATTRIBUTES)
                fields["attr"] = attr
                colored = _join(_article(attr), attr, label)
                source, target = with_object, self._swap(caption, mention, colored, region)
                region_caption = f"the same {label}, now {attr}"
            short = rng.choice(SHORT[edit_type]).format(**fields)
            long_parts = [
                rng.choice(LONG_OPEN[edit_type]).format(**fields),
                rng.choice(LONG_DETAIL[edit_type]).format(**fields),
                rng.choice(LONG_KEEP),
            ]
            long = " ".join(_sentence(p) for p in long_parts)
            if word_count(long) < MIN_LONG_WORDS:
                long = f"{long} {EXTRA_KEEP}"
            out[edit_type] = Proposal(
                edit_type=edit_type,
                instruction=_sentence(short),
                instruction_long=long,
                source_caption=source,
                target_caption=target,
                region_caption=region_caption,
                label=label,
                proposer=self.proposer_id,
                prompt_version=self.prompt_version,
            )
        return out

    @staticmethod
    def _swap(caption: str, mention: Mention | None, phrase: str, region: Region) -> str:
        """The caption with the object's noun phrase replaced by ``phrase`` (or a sentence about it appended)."""
        if caption and mention is not None:
            swapped = caption[: mention.start] + phrase + caption[mention.end :]
            return _sentence(swapped[0].upper() + swapped[1:])
        extra = _sentence(_join(phrase, "is", region.where or "in the scene"))
        return _join(_sentence(caption) if caption else "", extra)
