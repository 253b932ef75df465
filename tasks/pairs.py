"""Pair assembly: ``renders`` and ``pairs`` rows (catalog/schema.py) from a render and its instructions.

One removal render yields two pairs that share its quality verdict:

- ``remove``: original clip → inpainted clip, with the proposer's removal instruction;
- ``add``: inpainted clip → original clip, with the proposer's reverse ``add`` instruction (its target is real
  footage).

Ids come from ``catalog.ids``: ``render_id(instruction_id, engine, params, seed, version=…, generation=…)`` and
``pair_id(render_id, direction)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from catalog import ids
from catalog.schema import PAIRS
from tasks.gate import GATE_COLUMNS


# what a pair row copies from the render's score: the gate's columns, then the engine's flags and the judge's scores
_QUALITY_COLUMNS = (
    *GATE_COLUMNS,
    "quality_flags",
    "metrics_json",
    "judge_compliance",
    "judge_consistency",
    "judge_quality",
    "judge_reason",
    "judge_model",
)


def renders_table_row(
    *,
    instruction_id: str,
    clip_id: str,
    object_id: str,
    engine: str,
    engine_version: str,
    params: Mapping[str, Any],
    seed: int,
    video_uri: str,
    mask_uri: str | None,
    device: str | None = None,
    elapsed_s: float | None = None,
    run_id: str | None = None,
    generation: str | None = None,
) -> dict[str, Any]:
    """A ``renders`` row; ``render_id`` = ``ids.render_id(instruction_id, engine, params, seed, version=engine_version,
    generation=generation)``: new weights (a new ``engine_version``) or a ``generation`` make a new render."""
    row = {
        "render_id": ids.render_id(
            instruction_id, engine, dict(params), seed, version=engine_version, generation=generation
        ),
        "instruction_id": instruction_id,
        "clip_id": clip_id,
        "object_id": object_id,
        "engine": engine,
        "engine_version": engine_version,
        "params_json": json.dumps(dict(params), sort_keys=True, default=str),
        "seed": int(seed),
        "generation": generation,
        "video_uri": video_uri,
        "mask_uri": mask_uri,
        "device": device,
        "elapsed_s": elapsed_s,
        "run_id": run_id,
    }
    return row


def _pair(
    render: Mapping[str, Any],
    *,
    direction: str,
    instruction_id: str,
    instruction: str,
    instruction_long: str | None,
    src_video_uri: str,
    tgt_video_uri: str,
    mask_uri: str,
    quality: Mapping[str, Any],
    decision: tuple[str, str],
    preview_uri: str | None,
    contact_sheet_uri: str | None,
    run_id: str | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pair_id": ids.pair_id(render["render_id"], direction),
        "render_id": render["render_id"],
        "instruction_id": instruction_id,
        "clip_id": render["clip_id"],
        "object_id": render["object_id"],
        "edit_type": direction,
        "instruction": instruction,
        "instruction_long": instruction_long,
        "src_video_uri": src_video_uri,
        "tgt_video_uri": tgt_video_uri,
        "mask_uri": mask_uri,
        "preview_uri": preview_uri,
        "contact_sheet_uri": contact_sheet_uri,
        "engine": render["engine"],
        "decision": decision[0],
        "decision_reason": decision[1],
        "run_id": run_id,
    }
    for key in _QUALITY_COLUMNS:
        if key in quality:
            row[key] = list(quality[key]) if key == "quality_flags" else quality[key]
    unknown = set(row) - set(PAIRS.names)
    if unknown:  # a programming error: the schema and this module disagree
        raise KeyError(f"pairs row has columns the schema lacks: {sorted(unknown)}")
    return row


def pair_rows(
    render: Mapping[str, Any],
    job: Mapping[str, Any],
    *,
    quality: Mapping[str, Any],
    decision: tuple[str, str],
    clip_video_uri: str | None = None,
    preview_uri: str | None = None,
    contact_sheet_uri: str | None = None,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    """The ``pairs`` rows of one render.

    Args:
        render: the ``renders`` row (``render_id``, ``clip_id``, ``object_id``, ``engine``, ``video_uri``,
            ``mask_uri``).
        job: the instruction(s): ``instruction_id``, ``edit_type``, ``instruction``, ``instruction_long``,
            ``clip_video_uri`` (the original clip) and ``mask_uri``; for a removal, optionally ``add_instruction_id``,
            ``add_instruction``, ``add_instruction_long`` (the reverse instruction from the proposer).
        quality: ``tasks.gate.score_render`` output (plus judge columns when judged).
        decision: ``(decision, reason)`` from ``AcceptRule.decide``.
        clip_video_uri: overrides ``job["clip_video_uri"]``.

    Returns:
        One row (``edit_type`` = the job's) or, for a removal with an ``add`` instruction, two rows:
        ``remove`` (original → edited) and ``add`` (edited → original).
    """
    original = clip_video_uri or job["clip_video_uri"]
    mask_uri = render.get("mask_uri") or job["mask_uri"]
    common = {
        "mask_uri": mask_uri,
        "quality": quality,
        "decision": decision,
        "preview_uri": preview_uri,
        "contact_sheet_uri": contact_sheet_uri,
        "run_id": run_id,
    }
    rows = [
        _pair(
            render,
            direction=job["edit_type"],
            instruction_id=job["instruction_id"],
            instruction=job["instruction"],
            instruction_long=job.get("instruction_long"),
            src_video_uri=original,
            tgt_video_uri=render["video_uri"],
            **common,
        )
    ]
    if job["edit_type"] == "remove" and job.get("add_instruction_id"):
        if not job.get("add_instruction"):
            raise ValueError(f"job {job['instruction_id']}: add_instruction_id given without add_instruction text")
        rows.append(
            _pair(
                render,
                direction="add",
                instruction_id=job["add_instruction_id"],
                instruction=job["add_instruction"],
                instruction_long=job.get("add_instruction_long"),
                src_video_uri=render["video_uri"],
                tgt_video_uri=original,
                **common,
            )
        )
    return rows
