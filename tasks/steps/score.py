"""Score: the quality gate and the accept rule on one stored render, and the pairs it yields.

The gate reads what a trainer reads: the stored clip and the stored render decoded back from the catalog, with the
filled mask and the object's own mask. One render is scored once; a removal yields two pairs from that score:
``remove`` (original → inpainted) and ``add`` (inpainted → original, whose target is real footage), each decided in
its own direction. With a judge, each pair is also judged in its own direction and the rule reads both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog import ids
from catalog.schema import PAIRS
from catalog.store import Catalog
from tasks.accept import AcceptRule
from tasks.config import ScoreConfig
from tasks.contracts import Judge
from tasks.gate import GATE_COLUMNS, ClipScorer, ResegScorer
from tasks.steps.outputs import StepOutput
from tasks.steps.render import Rendered
from tasks.timings import span


# what a pair row copies from its render's score: the gate's columns, the engine's flags, the judge's scores
QUALITY_COLUMNS = (
    *GATE_COLUMNS,
    "quality_flags",
    "metrics_json",
    "judge_compliance",
    "judge_consistency",
    "judge_quality",
    "judge_reason",
    "judge_model",
)


@dataclass
class Scorers:
    """The scoring models of a run, each None where not configured: the gate's CLIP and re-segmentation checks and
    the pair judge. Load them once (:meth:`load`) and share them between batches."""

    clip: ClipScorer | None = None
    reseg: ResegScorer | None = None
    judge: Judge | None = None

    @classmethod
    def load(cls, config: ScoreConfig, catalog: Catalog) -> Scorers:
        """Build and set up the configured models; one that cannot be loaded fails loudly, naming its path. The
        judge's answers are cached under the catalog root."""
        clip = reseg = judge = None
        if config.clip_weights:
            clip = ClipScorer(config.clip_weights)
            clip.setup()
        if config.reseg_segmenter:
            reseg = ResegScorer(config.reseg_segmenter, storage_options=dict(catalog.storage_options or {}))
            reseg.setup()
        if config.judge:
            from tasks.judge import get_judge

            judge = get_judge(config.judge, cache_url=catalog.url, storage_options=catalog.storage_options)
            judge.setup()
        return cls(clip, reseg, judge)


def score(
    rendered: Rendered, catalog: Catalog, config: ScoreConfig, scorers: Scorers, *, run_id: str | None
) -> StepOutput:
    """Score ``rendered`` and decide its pairs; stores the previews when ``config.previews``. Returns the ``pairs``
    rows (decided, not recorded), counts ``pairs``/``accepted``/``judged`` and the judge's per-pair failures.

    Raises:
        InputError: the stored render cannot be read back or does not match its source.
    """
    from tasks import gate
    from tasks import previews as previews_mod
    from tasks.video_io import read_frames

    rule = config.accept_rule
    with span("score", items=1):  # the stored render, decoded back, as a trainer reads it
        stored = read_frames(catalog.full_url(rendered.row["video_uri"]), storage_options=catalog.storage_options)
        quality = gate.score_render(
            rendered.frames, stored, rendered.masks, object_masks=rendered.object_masks, flags=rendered.flags,
            label=rendered.job.label, clip=scorers.clip, reseg=scorers.reseg,
        )  # fmt: skip
    media: dict[str, str | None] = {"preview_uri": None, "contact_sheet_uri": None}
    if config.previews:
        with span("encode", items=1):
            media["preview_uri"] = catalog.put_media(
                previews_mod.side_by_side_mp4(rendered.frames, rendered.masks, stored, rendered.job.fps), "mp4"
            )
            media["contact_sheet_uri"] = catalog.put_media(
                previews_mod.contact_sheet_png(rendered.frames, rendered.masks, stored), "png"
            )
    out = StepOutput(rows={"pairs": []})
    for direction in rendered.job.directions():
        row = pair_row(rendered, direction, quality, media, run_id=run_id)
        row["decision"], row["decision_reason"] = rule.decide(quality, _rule_direction(direction))
        out.rows["pairs"].append(row)
    if scorers.judge is not None:
        with span("score"):
            _judge(scorers.judge, out, quality, rule, stored, rendered)
    out.add("pairs", len(out.rows["pairs"]))
    out.add("accepted", sum(1 for p in out.rows["pairs"] if p["decision"] == "accepted"))
    return out


def _rule_direction(edit_type: str) -> str:
    """The accept rule's direction of a pair: ``add`` pairs reverse a removal; every other edit reads as forward."""
    return "add" if edit_type == "add" else "remove"


def pair_row(
    rendered: Rendered, direction: str, quality: dict[str, Any], media: dict[str, str | None], *, run_id: str | None
) -> dict[str, Any]:
    """The ``pairs`` row of one direction of a render (undecided): ``add`` runs backwards, inpainted → original,
    with the reverse instruction."""
    job, render = rendered.job, rendered.row
    if direction == "add":
        if not job.add_instruction_id or not job.add_instruction:
            raise ValueError(f"job {job.instruction_id}: an add pair needs add_instruction_id and its text")
        instruction_id, text, long = job.add_instruction_id, job.add_instruction, job.add_instruction_long
        src, tgt = render["video_uri"], job.clip_video_uri
    else:
        instruction_id, text, long = job.instruction_id, job.instruction, job.instruction_long
        src, tgt = job.clip_video_uri, render["video_uri"]
    row: dict[str, Any] = {
        "pair_id": ids.pair_id(render["render_id"], direction),
        "render_id": render["render_id"],
        "instruction_id": instruction_id,
        "clip_id": render["clip_id"],
        "object_id": render["object_id"],
        "edit_type": direction,
        "instruction": text,
        "instruction_long": long,
        "src_video_uri": src,
        "tgt_video_uri": tgt,
        "mask_uri": render["mask_uri"] or job.mask_uri,
        **media,
        "engine": render["engine"],
        "run_id": run_id,
    }
    for key in QUALITY_COLUMNS:
        if key in quality:
            row[key] = list(quality[key]) if key == "quality_flags" else quality[key]
    unknown = set(row) - set(PAIRS.names) - {"decision", "decision_reason"}
    if unknown:  # a programming error: the schema and this module disagree
        raise KeyError(f"pairs row has columns the schema lacks: {sorted(unknown)}")
    return row


def _judge(
    judge: Judge,
    out: StepOutput,
    quality: dict[str, Any],
    rule: AcceptRule,
    stored: np.ndarray,
    rendered: Rendered,
) -> None:
    """Judge every pair of ``out`` in one batch, each in its own direction (source → target frames); its scores
    join the pair's columns and the rule decides on gate and judge columns together."""
    from tasks.judge import JudgeRequest

    rows = out.rows["pairs"]
    requests = [
        JudgeRequest(
            pair_id=row["pair_id"],
            instruction=row.get("instruction_long") or row["instruction"],
            edit_type=row["edit_type"],
            source_frames=stored if row["edit_type"] == "add" else rendered.frames,
            edited_frames=rendered.frames if row["edit_type"] == "add" else stored,
        )
        for row in rows
    ]
    for row, verdict in zip(rows, judge.judge(requests), strict=True):
        columns = verdict.columns()
        row.update(columns)
        row["decision"], row["decision_reason"] = rule.decide(
            {**quality, **columns}, _rule_direction(row["edit_type"])
        )
        out.failures.extend(verdict.failures)
    out.add("judged", len(rows))
