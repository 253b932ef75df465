"""Propose: editing instructions for every selected object, from the run's proposer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.contracts import Proposer
from tasks.steps.outputs import StepOutput
from tasks.timings import span


def propose(
    objects: Sequence[Mapping[str, Any]],
    clips: Sequence[Mapping[str, Any]],
    proposer: Proposer,
    *,
    edit_types: Sequence[str],
    seed: int,
    run_id: str | None,
) -> StepOutput:
    """``instructions`` rows for the ``objects`` rows that passed selection (``qa_status == "ok"``), one request per
    object with its clip's size and caption; ``proposer`` is already set up. Per-object problems are failures."""
    from tasks.proposers import ProposalRequest

    clip_by_id = {c["clip_id"]: c for c in clips}
    requests = []
    for obj in objects:
        if obj.get("qa_status", "ok") != "ok":
            continue
        clip = clip_by_id[obj["clip_id"]]
        bbox = obj.get("bbox")
        requests.append(
            ProposalRequest(
                object_id=obj["object_id"],
                clip_id=obj["clip_id"],
                label=obj.get("label"),
                caption=obj.get("caption") or clip.get("caption"),  # the object's own row first
                bbox=tuple(bbox) if bbox else None,
                frame_size=(int(clip["width"]), int(clip["height"])),
                area_ratio=obj.get("area_ratio_mean"),
                edit_types=tuple(edit_types),
                seed=seed,
            )
        )
    out = StepOutput(rows={"instructions": []})
    if requests:
        with span("propose", items=len(requests)):
            for outcome in proposer.propose(requests):
                req = outcome.request
                rows = (p.to_row(req.object_id, req.clip_id, run_id) for p in outcome.proposals)
                out.rows["instructions"].extend(rows)
                out.failures.extend(outcome.failures)
    out.add("instructions", len(out.rows["instructions"]))
    return out
