"""The accept rule: thresholds a pair's gate and judge columns must meet, and the decision with its reason.

A value object with one pure method, so the run configuration can hold it without importing the gate's scorers.
The checks themselves are described in docs/quality-gate.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tasks.engines.base import NO_OBSERVED_BACKGROUND


# (column, rule field, ">=" or "<=") in the order reasons are written
_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("psnr_bg", "min_psnr_bg", ">="),
    ("ssim_bg", "min_ssim_bg", ">="),
    ("hole_change", "min_hole_change", ">="),
    ("object_match", "max_object_match", "<="),
    ("ring_colour_gap", "max_ring_colour_gap", "<="),
    ("ring_texture_ratio", "min_ring_texture_ratio", ">="),
    ("seam_error", "max_seam_error", "<="),
    ("flicker_ratio", "max_flicker_ratio", "<="),
    ("motion_gap", "max_motion_gap", "<="),
    ("temporal_warp_error", "max_warp_error", "<="),
    ("effect_residual", "max_effect_residual", "<="),
    ("object_ring_colour_gap", "max_object_ring_colour_gap", "<="),
    ("object_texture_ratio", "min_object_texture_ratio", ">="),
    ("bad_frame_share", "max_bad_frame_share", "<="),
    ("mask_area_ratio", "min_mask_area_ratio", ">="),
    ("mask_area_ratio", "max_mask_area_ratio", "<="),
    ("judge_compliance", "min_judge_compliance", ">="),
    ("judge_consistency", "min_judge_consistency", ">="),
    ("judge_quality", "min_judge_quality", ">="),
)


@dataclass
class AcceptRule:
    """Thresholds a pair must meet to be accepted; None disables a check.

    A check whose metric is absent (None) is skipped and the skip is named in the reason, unless ``reject_missing``
    is set, which rejects instead. The defaults are what ``vpf bench gate`` measures (positives accepted, every
    negative control rejected); see docs/quality-gate.md.
    """

    min_psnr_bg: float | None = 30.0
    min_ssim_bg: float | None = None
    min_hole_change: float | None = 0.8
    max_object_match: float | None = 0.25
    max_ring_colour_gap: float | None = 1.2
    min_ring_texture_ratio: float | None = 0.35
    max_seam_error: float | None = 0.15
    max_flicker_ratio: float | None = 1.5
    max_motion_gap: float | None = 0.6
    max_warp_error: float | None = None
    max_effect_residual: float | None = 3.0
    max_object_ring_colour_gap: float | None = 1.0
    min_object_texture_ratio: float | None = 0.3
    max_bad_frame_share: float | None = 0.05
    min_mask_area_ratio: float | None = 0.001
    max_mask_area_ratio: float | None = 0.9
    min_clip_label_drop: float | None = 0.0
    max_reseg_iou: float | None = 0.3
    min_add_reseg_iou: float | None = 0.5
    min_add_object_frames: float | None = 0.5
    min_judge_compliance: int | None = None
    min_judge_consistency: int | None = None
    min_judge_quality: int | None = None
    reject_flags: list[str] = field(default_factory=lambda: [NO_OBSERVED_BACKGROUND])
    reject_missing: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def decide(self, metrics: dict[str, Any], direction: str = "remove") -> tuple[str, str]:
        """``("accepted" | "rejected", reason)`` for a pair; the reason lists every failed check with its value and
        threshold, and the skipped ones.

        ``direction="add"``: an ``add`` pair reverses a removal render, so it must pass every removal check (the
        same render, the same values) and its own: the object it adds is visible in at least
        ``min_add_object_frames`` of the target's frames (``object_frames_ratio``) and, with a re-segmentation
        segmenter, found there again (``reseg_iou_src`` at least ``min_add_reseg_iou``: the ``add`` target is the
        original footage, the removal's source).

        Checks with weights (CLIP, re-segmentation) apply only where they were configured (``clip_configured``,
        ``reseg_configured`` or a value present); then an absent value is skipped or, with ``reject_missing``,
        rejected.
        """
        failed: list[str] = []
        skipped: list[str] = []

        def check(key: str, value: Any, limit: float | None, op: str) -> None:
            if limit is None:
                return
            if value is None:
                (failed if self.reject_missing else skipped).append(f"{key} absent")
                return
            if not (value >= limit if op == ">=" else value <= limit):
                failed.append(f"{key} {value:.4g} {'<' if op == '>=' else '>'} {limit:g}")

        for key, name, op in _CHECKS:
            check(key, metrics.get(key), getattr(self, name), op)
        src, tgt = metrics.get("clip_label_src"), metrics.get("clip_label_tgt")
        drop = None if src is None or tgt is None else src - tgt
        if drop is not None or metrics.get("clip_configured"):  # a check with weights: only where they are
            check("clip_label_drop", drop, self.min_clip_label_drop, ">=")
        resegmented = metrics.get("reseg_configured") or metrics.get("reseg_iou_tgt") is not None
        if resegmented:
            check("reseg_iou_tgt", metrics.get("reseg_iou_tgt"), self.max_reseg_iou, "<=")
        if direction == "add":
            check("object_frames_ratio", metrics.get("object_frames_ratio"), self.min_add_object_frames, ">=")
            if resegmented:
                check("reseg_iou_src", metrics.get("reseg_iou_src"), self.min_add_reseg_iou, ">=")
        for flag in metrics.get("quality_flags") or []:
            if flag in self.reject_flags:
                failed.append(f"flag {flag}")
        note = f" (not checked: {', '.join(skipped)})" if skipped else ""
        if failed:
            return "rejected", "; ".join(failed) + note
        return "accepted", "all checks passed" + note


def threshold_checks() -> tuple[tuple[str, str, str], ...]:
    """``(column, rule field, ">=" | "<=")`` of every check that compares one recorded ``pairs`` column with one
    threshold, in the order reasons are written (what ``vpf gate calibrate`` may move)."""
    return _CHECKS


MAX_RULE_FILE_CHARS = 1 << 16  # an accept-rule file holds a few dozen fields


class AcceptRuleFileError(ValueError):
    """An accept-rule file that cannot be read, is not a mapping of ``AcceptRule`` fields, or holds a bad value."""


def accept_rule_fields(path: str, data: Any) -> dict[str, Any]:
    """``data`` (a file's parsed content) checked as a mapping of ``AcceptRule`` fields: unknown keys and values of
    the wrong type raise ``AcceptRuleFileError`` naming ``path``, the key and the problem. Returns the fields given
    (the others keep their defaults when the rule is built)."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise AcceptRuleFileError(f"{path}: expected a mapping of accept-rule fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(AcceptRule)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise AcceptRuleFileError(f"{path}: unknown accept-rule key(s) {unknown}; known: {', '.join(known)}")
    checked: dict[str, Any] = {}
    for key, value in data.items():
        try:
            checked[key] = TypeAdapter(known[key].type).validate_python(value, strict=True)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            raise AcceptRuleFileError(f"{path}: {key}: {value!r} is not valid ({problem})") from None
    return checked


def load_accept_rule_fields(path: str) -> dict[str, Any]:
    """The fields of the accept-rule file ``path`` (JSON, or YAML for ``.yaml``/``.yml``; a local path or an fsspec
    URL), checked by :func:`accept_rule_fields`. ``vpf gate calibrate`` writes such files; ``vpf run --accept-file``
    and ``vpf rescore --accept-file`` read them. Raises ``AcceptRuleFileError`` naming the file and the problem."""
    import json

    import fsspec
    import yaml

    try:
        with fsspec.open(path, "rt", encoding="utf-8") as f:
            text = f.read(MAX_RULE_FILE_CHARS + 1)
    except (OSError, ValueError) as exc:
        raise AcceptRuleFileError(f"{path}: cannot read the accept-rule file ({exc})") from None
    if len(text) > MAX_RULE_FILE_CHARS:
        raise AcceptRuleFileError(f"{path}: larger than {MAX_RULE_FILE_CHARS} characters; not an accept-rule file")
    try:
        data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise AcceptRuleFileError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: {exc}")
    return accept_rule_fields(path, data)


def load_accept_rule(path: str, overrides: dict[str, Any] | None = None) -> AcceptRule:
    """The ``AcceptRule`` of the file ``path`` (see :func:`load_accept_rule_fields`) with ``overrides`` (fields,
    e.g. from ``--accept KEY=VALUE``) set on top; fields neither names keep their defaults."""
    given = load_accept_rule_fields(path)
    extra = accept_rule_fields("--accept", dict(overrides or {}))
    return AcceptRule(**{**given, **extra})
