"""Plan: turn instructions into render jobs, JSON values that name everything a render reloads from the catalog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tasks.config import EFFECT_PHRASES, EffectMasksMode


class RenderJob(BaseModel):
    """One instruction to render, as JSON: ids and media uris only, so it travels to a GPU worker."""

    instruction_id: str
    object_id: str
    clip_id: str
    edit_type: str
    instruction: str
    instruction_long: str | None = None
    prompt: str = Field("", description="the target caption: what the clip shows after the edit")
    clip_video_uri: str
    mask_uri: str
    fps: float
    dilation_radius: int = Field(
        0, ge=0, description="dilation of the mask before inpainting: radius in pixels (square kernel of side 2r+1)"
    )
    effect_masks: EffectMasksMode = Field(
        "off",
        description="auto (or all, the same): grow the mask to the object's side effects before dilation, on still "
        "and moving cameras (tasks/effects.py); off: the object only",
    )
    effect_segmenter: str | None = Field(
        None,
        description="for a labelled removal with effect_masks: the open-vocabulary segmenter spec asked for its side "
        "effects by name (tasks/effect_segments.py)",
    )
    effect_phrases: list[str] = Field(
        default_factory=list, description="with effect_segmenter: the phrase templates ({label}) it is asked"
    )
    add_instruction_id: str | None = Field(None, description="for a removal: the reverse `add` instruction")
    add_instruction: str | None = None
    add_instruction_long: str | None = None
    label: str | None = Field(None, description="the object's name (the gate's label checks)")

    def directions(self) -> list[str]:
        """The pairs one render of this job yields: a removal gives ``remove`` and, with an add instruction,
        ``add``."""
        if self.edit_type == "remove" and self.add_instruction_id:
            return ["remove", "add"]
        return [self.edit_type]


def plan(
    instructions: Sequence[Mapping[str, Any]],
    objects: Sequence[Mapping[str, Any]],
    clips: Sequence[Mapping[str, Any]],
    *,
    dilation_radius: int | None,
    effect_masks: EffectMasksMode,
    effect_segmenter: str | None = None,
    effect_phrases: Sequence[str] = EFFECT_PHRASES,
) -> list[RenderJob]:
    """One job per instruction except ``add``, which rides on its object's removal (the reverse pair: inpainted →
    original). ``dilation_radius`` in pixels; None: the object's own, else ``tasks.masks.default_dilation_radius`` of
    the clip width. ``effect_masks`` (``RenderConfig.effect_masks``): ``auto`` (or ``all``) grows each
    removal's mask to the object's shadow or reflection (``tasks.effects``); other edits keep the object's mask.
    ``effect_segmenter`` (``RenderConfig.effect_segmenter``) with ``effect_phrases``: such a removal whose object has a
    label is also asked of that open-vocabulary segmenter (``tasks.effect_segments``); without a label it is not.
    Edit types the engine cannot render become recorded skips at render time."""
    from tasks.masks import default_dilation_radius

    clip_by_id = {c["clip_id"]: c for c in clips}
    object_by_id = {o["object_id"]: o for o in objects}
    adds = {i["object_id"]: i for i in instructions if i["edit_type"] == "add"}
    jobs = []
    for ins in instructions:
        if ins["edit_type"] == "add":
            continue
        obj, clip = object_by_id[ins["object_id"]], clip_by_id[ins["clip_id"]]
        add = adds.get(ins["object_id"]) if ins["edit_type"] == "remove" else None
        radius = dilation_radius
        if radius is None:
            radius = int(obj.get("dilation_radius") or default_dilation_radius(int(clip["width"])))
        jobs.append(
            RenderJob(
                instruction_id=ins["instruction_id"],
                object_id=ins["object_id"],
                clip_id=ins["clip_id"],
                edit_type=ins["edit_type"],
                instruction=ins["instruction"],
                instruction_long=ins.get("instruction_long"),
                prompt=ins.get("target_caption") or "",
                clip_video_uri=clip["video_uri"],
                mask_uri=obj["mask_uri"],
                fps=float(clip["fps"]),
                dilation_radius=radius,
                effect_masks=effect_masks if ins["edit_type"] == "remove" else "off",
                add_instruction_id=add["instruction_id"] if add else None,
                add_instruction=add["instruction"] if add else None,
                add_instruction_long=add.get("instruction_long") if add else None,
                label=obj.get("label"),
            )
        )
    return [with_effect_segmenter(job, effect_segmenter, effect_phrases) for job in jobs]


def with_effect_segmenter(job: RenderJob, spec: str | None, phrases: Sequence[str] = EFFECT_PHRASES) -> RenderJob:
    """``job`` asking the open-vocabulary segmenter ``spec`` for its side effects with the templates ``phrases``
    when it grows its mask to them (``effect_masks`` not ``off``: removals only) and its object has a label, else
    asking none. The render flow applies its ``RenderConfig`` this way (``tasks.produce.PairMaker``)."""
    use = spec if job.effect_masks != "off" and job.label else None
    if (use, list(phrases) if use else []) == (job.effect_segmenter, job.effect_phrases):
        return job
    return job.model_copy(update={"effect_segmenter": use, "effect_phrases": list(phrases) if use else []})
