"""The gate against people's reviews: confusion matrix, precision and recall with confidence intervals, the checks
behind each disagreement, thresholds calibrated on the reviewed pairs, and pairs re-decided under a rule.

Everything here reads rows of the catalog's ``pairs_full`` view as plain dicts (``decision``: the effective gate
decision; ``review_verdict``: the latest review, ``accepted`` | ``rejected``; the gate's recorded columns). No
rendering and no scoring: a rule is applied to the columns a run recorded (:func:`metrics_of`), as
``tasks.accept.AcceptRule.decide`` reads them. ``vpf gate report``, ``vpf gate calibrate`` and ``vpf rescore``
(flows/cli_gate.py) are the command-line faces of this module.

Terms: a pair is *positive* when the reviewer accepted it. The gate's ``accepted`` is the prediction, so precision
is the share of gate-accepted pairs the reviewer accepted (what a trainer gets), recall the share of
reviewer-accepted pairs the gate accepted (what the gate keeps of the good ones).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog import ids
from tasks.accept import AcceptRule, threshold_checks
from tasks.gate import GATE_COLUMNS


# the pairs columns AcceptRule.decide reads (tasks/accept.py), as the score step records them
METRIC_COLUMNS = (*GATE_COLUMNS, "judge_compliance", "judge_consistency", "judge_quality", "quality_flags")
Z_95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval
FIRST_COST, COST_STEP = 0.125, 4.0  # the cost of a bad pair in good ones, first and growth (see fit_rule)
MAX_FIT_TARGET = 0.995  # a fit aims at most this high: a bad pair costs 199 good ones (1.0 would cost them all)


# ------------------------------------------------------------------------------------------------ rates and intervals
def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (95 % by default); ``(0.0, 1.0)`` when ``n == 0``."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); the closed form reaches it up to rounding
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n``: the share (None when ``n == 0``) and its 95 % Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        low, high = wilson(self.k, self.n)
        return {"value": self.value, "k": self.k, "n": self.n, "ci95": [low, high]}


@dataclass(frozen=True)
class Confusion:
    """The gate (prediction: ``accepted``) against the reviews (truth: the reviewer accepted)."""

    tp: int = 0  # gate accepted, reviewer accepted
    fp: int = 0  # gate accepted, reviewer rejected: bad pairs let through
    fn: int = 0  # gate rejected, reviewer accepted: good pairs lost
    tn: int = 0  # gate rejected, reviewer rejected

    @classmethod
    def of(cls, gate_accepted: Iterable[bool], good: Iterable[bool]) -> Confusion:
        counts = Counter(zip(gate_accepted, good, strict=True))
        return cls(counts[True, True], counts[True, False], counts[False, True], counts[False, False])

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> Rate:
        return Rate(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> Rate:
        return Rate(self.tp, self.tp + self.fn)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "matrix": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
            "agreement": Rate(self.tp + self.tn, self.n).as_dict(),
            "precision": self.precision.as_dict(),
            "recall": self.recall.as_dict(),
        }


# ------------------------------------------------------------------------------------------------ rows and the rule
def rule_direction(edit_type: str | None) -> str:
    """The accept rule's direction of a pair (as the score step decides it): ``add`` pairs reverse a removal."""
    return "add" if edit_type == "add" else "remove"


def metrics_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A pair row's recorded gate and judge columns, as ``AcceptRule.decide`` reads them. The CLIP and
    re-segmentation checks apply where their columns hold values (a run without those models recorded none)."""
    return {key: row.get(key) for key in METRIC_COLUMNS}


def decide_rows(rule: AcceptRule, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(decision, reason)`` of each row under ``rule``, from its recorded columns (see :func:`metrics_of`)."""
    return [rule.decide(metrics_of(row), rule_direction(row.get("edit_type"))) for row in rows]


def failed_checks(reason: str | None) -> list[str]:
    """The checks a ``decision_reason`` says failed: ``"psnr_bg 25 < 30; flag no_observed_background (not
    checked: …)"`` → ``["psnr_bg", "flag no_observed_background"]``; none for an accepted pair's reason."""
    if not reason or reason.startswith("all checks passed"):
        return []
    checks = []
    for part in reason.split(" (not checked")[0].split("; "):
        part = part.strip()
        if part:
            checks.append(part if part.startswith("flag ") else part.split(" ")[0])
    return checks


def _is_good(row: Mapping[str, Any]) -> bool:
    return row["review_verdict"] == "accepted"


def _is_accepted(row: Mapping[str, Any]) -> bool:
    return row["decision"] == "accepted"


# ------------------------------------------------------------------------------------------------ the report
def _grouped(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key)), []).append(row)
    return {
        name: Confusion.of([_is_accepted(r) for r in group], [_is_good(r) for r in group]).as_dict()
        for name, group in sorted(groups.items())
    }


def gate_report(
    reviewed: Sequence[Mapping[str, Any]], population: Mapping[tuple[str, str], int] | None = None
) -> dict[str, Any]:
    """The gate against the reviews of ``reviewed`` (rows with ``decision``, ``review_verdict``, ``review_reason``,
    ``engine``, ``edit_type``, ``decision_reason``).

    Returns ``{"reviewed", "overall", "by_engine", "by_edit_type", "by_reason", "disagreements", "weighted_recall"}``:
    each confusion as :meth:`Confusion.as_dict` (counts, precision and recall with 95 % Wilson intervals from the
    sample size); ``by_reason``: per review reason of the rejected pairs, how many the gate also rejected
    (``caught``, a rate with its interval); ``disagreements``: ``false_accepts`` (gate accepted, reviewer rejected)
    counted by review reason, and ``false_rejects`` (gate rejected, reviewer accepted) counted by the check that
    rejected them (a pair rejected by two checks counts for both).

    ``population``: pairs per ``(decision, engine)`` stratum among the pairs the sample was drawn from. Precision is estimated without
    bias from any sample stratified by gate decision (it is a rate within the accepted stratum); recall is not when
    the strata were sampled at different rates, so ``weighted_recall`` weights each reviewed pair by its stratum's
    size over its reviewed count (a point estimate; None without ``population``).
    """
    rows = [r for r in reviewed if r.get("review_verdict") in ("accepted", "rejected")]
    overall = Confusion.of([_is_accepted(r) for r in rows], [_is_good(r) for r in rows])
    by_reason: dict[str, dict[str, Any]] = {}
    for reason in sorted({_reason(r) for r in rows if not _is_good(r)}):
        bad = [r for r in rows if not _is_good(r) and _reason(r) == reason]
        by_reason[reason] = {"n": len(bad), "caught": Rate(sum(not _is_accepted(r) for r in bad), len(bad)).as_dict()}
    false_accepts = Counter(_reason(r) for r in rows if _is_accepted(r) and not _is_good(r))
    false_rejects = Counter(
        check for r in rows if not _is_accepted(r) and _is_good(r) for check in failed_checks(r.get("decision_reason"))
    )
    return {
        "reviewed": len(rows),
        "overall": overall.as_dict(),
        "by_engine": _grouped(rows, "engine"),
        "by_edit_type": _grouped(rows, "edit_type"),
        "by_reason": by_reason,
        "disagreements": {
            "false_accepts": overall.fp,
            "false_accepts_by_reason": dict(false_accepts.most_common()),
            "false_rejects": overall.fn,
            "false_rejects_by_check": dict(false_rejects.most_common()),
        },
        "weighted_recall": _weighted_recall(rows, population) if population else None,
    }


def _reason(row: Mapping[str, Any]) -> str:
    return row.get("review_reason") or "unspecified"


def _weighted_recall(rows: Sequence[Mapping[str, Any]], population: Mapping[tuple[str, str], int]) -> float | None:
    sampled = Counter((r["decision"], str(r.get("engine"))) for r in rows)
    good = {True: 0.0, False: 0.0}
    for row in rows:
        stratum = (row["decision"], str(row.get("engine")))
        if _is_good(row):
            good[_is_accepted(row)] += population.get(stratum, 0) / sampled[stratum]
    total = good[True] + good[False]
    return good[True] / total if total else None


# ------------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class _Check:
    field: str
    column: str
    op: str  # ">=" or "<="
    integer: bool


def tunable_checks(rule: AcceptRule) -> list[_Check]:
    """The threshold checks of ``rule`` calibration may move: those on one recorded column that ``rule`` enables
    (a check set to None stays off)."""
    types = {f.name: f.type for f in dataclasses.fields(AcceptRule)}
    return [
        _Check(field, column, op, "int" in str(types[field]))
        for column, field, op in threshold_checks()
        if getattr(rule, field) is not None
    ]


class _Sample:
    """Reviewed rows as arrays: each tunable column (NaN where absent), the truth, and what the rule's other checks
    (flags, CLIP, re-segmentation, the ``add`` checks) decide, computed once."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], good: Sequence[bool], base: AcceptRule):
        self.checks = tunable_checks(base)
        self.good = np.asarray(good, dtype=bool)
        self.columns = {
            c.column: np.array([np.nan if r.get(c.column) is None else float(r[c.column]) for r in rows], float)
            for c in self.checks
        }
        fixed = dataclasses.replace(base, **{c.field: None for c in self.checks})
        self.fixed = np.array([d == "accepted" for d, _ in decide_rows(fixed, rows)], dtype=bool)
        self.reject_missing = base.reject_missing

    def subset(self, index: np.ndarray) -> _Sample:
        out = object.__new__(_Sample)
        out.checks, out.good, out.fixed = self.checks, self.good[index], self.fixed[index]
        out.columns = {k: v[index] for k, v in self.columns.items()}
        out.reject_missing = self.reject_missing
        return out

    def passes(self, check: _Check, threshold: float) -> np.ndarray:
        """Which rows pass ``check`` at ``threshold``, as ``AcceptRule.decide`` would decide it."""
        values = self.columns[check.column]
        missing = np.isnan(values)
        with np.errstate(invalid="ignore"):
            ok = values >= threshold if check.op == ">=" else values <= threshold
        return np.where(missing, not self.reject_missing, ok)

    def accepted(self, rule: AcceptRule) -> np.ndarray:
        out = self.fixed.copy()
        for check in self.checks:
            out &= self.passes(check, getattr(rule, check.field))
        return out


def _precision(accepted: np.ndarray, good: np.ndarray) -> float:
    n = int(accepted.sum())
    return float((accepted & good).sum() / n) if n else 1.0


def _candidates(values: np.ndarray, op: str, current: float, integer: bool) -> list[float]:
    """Thresholds worth trying on a column: the current one, each observed value's edge (the loosest threshold
    that keeps it, or one that drops it: a midpoint between neighbours, so a threshold never sits on a sample)."""
    seen = np.unique(values[~np.isnan(values)])
    if seen.size == 0:
        return [current]
    if integer:
        edges = [float(v) for v in seen] + [float(seen[-1] + 1 if op == ">=" else seen[0] - 1)]
    else:
        mids = [float(v) for v in (seen[1:] + seen[:-1]) / 2]
        span = float(seen[-1] - seen[0]) or 1.0
        beyond = float(seen[-1] + span) if op == ">=" else float(seen[0] - span)
        edges = [float(seen[0] if op == ">=" else seen[-1]), *mids, beyond]
    return sorted({current, *edges})


def fit_rule(
    rows: Sequence[Mapping[str, Any]] | _Sample,
    good: Sequence[bool] | None,
    base: AcceptRule,
    target_precision: float,
    passes: int = 4,
) -> AcceptRule:
    """Thresholds that accept as many reviewer-accepted pairs of ``rows`` as they can at a precision of at least
    ``target_precision``, moving one threshold at a time from ``base`` (coordinate ascent, at most ``passes``
    rounds over the tunable checks per stage). ``good``: the truth of each row (the reviewer accepted it).

    A set of pairs is worth accepting at precision ``t`` when ``tp / (tp + fp) >= t``, that is when
    ``tp - fp * t / (1 - t) >= 0``. The stages maximise ``tp - c * fp`` for a cost ``c`` growing from
    ``FIRST_COST`` by ``COST_STEP`` up to ``t / (1 - t)``: from a rule far too loose, the first stages let every
    threshold take its share of the bad pairs (at the full cost the first threshold moved would take them all,
    keeping a single good pair, and leave the others nothing to do). The last stage only takes moves that reach or keep the target and accept more good
    pairs. A move never rejects every pair while another keeps some. Among thresholds that do equally well the one
    nearest the current one wins, so a threshold the sample does not contradict stays."""
    sample = rows if isinstance(rows, _Sample) else _Sample(rows, good or [], base)
    cost = min(target_precision, MAX_FIT_TARGET) / (1 - min(target_precision, MAX_FIT_TARGET))
    costs = [
        min(cost, FIRST_COST * COST_STEP**i) for i in range(int(math.ceil(math.log(cost / FIRST_COST, COST_STEP))) + 1)
    ]
    rule = base
    for c in costs:
        rule = _ascend(sample, rule, passes, lambda tp, fp, c=c: (tp - c * fp,))
    return _ascend(sample, rule, passes, lambda tp, fp: _at_target(tp, fp, target_precision, cost))


def _at_target(tp: int, fp: int, target: float, cost: float) -> tuple[float, ...]:
    """At the target: as many good pairs as possible; below it: towards it."""
    return (1, tp, -fp) if tp >= target * (tp + fp) else (0, tp - cost * fp)


def _ascend(
    sample: _Sample, rule: AcceptRule, passes: int, score: Callable[[int, int], tuple[float, ...]]
) -> AcceptRule:
    """Coordinate ascent of ``score(tp, fp)`` over the tunable thresholds (see :func:`fit_rule`)."""
    for _ in range(passes):
        moved = False
        for check in sample.checks:
            current = getattr(rule, check.field)
            others = sample.fixed.copy()
            for other in sample.checks:
                if other is not check:
                    others &= sample.passes(other, getattr(rule, other.field))
            values = sample.columns[check.column]
            seen = values[~np.isnan(values)]
            scale = float(seen.max() - seen.min()) if seen.size else 1.0
            best_key, best = None, current
            for threshold in _candidates(values, check.op, current, check.integer):
                accepted = others & sample.passes(check, threshold)
                tp, fp = int((accepted & sample.good).sum()), int((accepted & ~sample.good).sum())
                near = -abs(threshold - current) / (scale or 1.0)
                key = (1, *score(tp, fp), near) if tp + fp else (0, near)  # never empty while pairs can stay
                if best_key is None or key > best_key:
                    best_key, best = key, threshold
            if best != current:
                best = int(best) if check.integer else float(f"{best:.6g}")
                moved = moved or best != current
                rule = dataclasses.replace(rule, **{check.field: best})
        if not moved:
            break
    return rule


def _folds(good: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number per row, stratified by the truth (each fold gets its share of good and bad pairs)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(good), dtype=int)
    for value in (True, False):
        index = np.flatnonzero(good == value)
        fold[rng.permutation(index)] = np.arange(index.size) % k
    return fold


def _held_out(sample: _Sample, base: AcceptRule, target: float, fold: np.ndarray, k: int) -> np.ndarray:
    """The gate's decision on each row by a rule fitted (at ``target``) on the other folds."""
    accepted = np.zeros(len(fold), dtype=bool)
    for f in range(k):
        test = fold == f
        rule = fit_rule(sample.subset(np.flatnonzero(~test)), None, base, target)
        accepted[test] = sample.subset(np.flatnonzero(test)).accepted(rule)
    return accepted


def _scores(accepted: np.ndarray, good: np.ndarray) -> dict[str, Any]:
    return Confusion.of(accepted.tolist(), good.tolist()).as_dict()


def calibrate(
    rows: Sequence[Mapping[str, Any]],
    good: Sequence[bool],
    base: AcceptRule,
    target_precision: float,
    *,
    folds: int = 5,
    seed: int = 0,
    step: float = 0.01,
    max_raise: float = 0.04,
) -> dict[str, Any]:
    """Propose a rule from reviewed ``rows`` (truth ``good``) whose precision stays at or above
    ``target_precision`` on pairs it was not fitted on.

    k-fold cross-validation (stratified by the truth) picks how strict the fit must be: for fit targets
    ``target_precision``, ``+ step``, … up to ``+ max_raise`` (at most ``MAX_FIT_TARGET``), each fold's pairs are
    decided by a rule fitted on the other folds; the first fit target whose pooled held-out precision reaches
    ``target_precision`` (else the one with the best held-out precision, and ``target_met`` is False) is used to
    fit the proposed rule on every reviewed pair. A small or noisy sample thus asks for a stricter fit instead of
    thresholds that merely separate the pairs seen.

    Returns ``{"rule": AcceptRule, "changes": {field: [old, new]}, "fit_target", "target_met", "folds",
    "cross_validated": confusion of the held-out decisions, "base": confusion of ``base`` on the rows,
    "proposed_on_sample": confusion of the proposed rule on the rows}``.
    """
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if len(rows) != len(good):
        raise ValueError(f"calibrate: {len(rows)} rows but {len(good)} truths")
    sample = _Sample(rows, good, base)
    if sample.good.all() or not sample.good.any():
        raise ValueError("calibrate needs reviewed pairs of both verdicts (accepted and rejected)")
    k = max(2, min(folds, int(sample.good.sum()), int((~sample.good).sum())))
    fold = _folds(sample.good, k, seed)
    highest = min(MAX_FIT_TARGET, target_precision + max_raise)
    targets = list(dict.fromkeys(min(highest, target_precision + i * step) for i in range(int(max_raise / step) + 1)))
    tried: list[tuple[float, np.ndarray]] = []
    for fit_target in targets:
        held = _held_out(sample, base, fit_target, fold, k)
        tried.append((fit_target, held))
        if held.any() and _precision(held, sample.good) >= target_precision:
            break
    # the first fit target that meets the target on held-out pairs, else the one with the best held-out precision
    chosen, held = max(tried, key=lambda t: (_precision(t[1], sample.good), -t[0]))
    met = bool(held.any()) and _precision(held, sample.good) >= target_precision  # accepting nothing meets nothing
    rule = fit_rule(sample, None, base, chosen)
    changes = {
        c.field: [getattr(base, c.field), getattr(rule, c.field)]
        for c in sample.checks
        if getattr(base, c.field) != getattr(rule, c.field)
    }
    return {
        "rule": rule,
        "changes": changes,
        "fit_target": chosen,
        "target_met": met,
        "folds": k,
        "cross_validated": _scores(held, sample.good),
        "base": _scores(sample.accepted(base), sample.good),
        "proposed_on_sample": _scores(sample.accepted(rule), sample.good),
    }


# ------------------------------------------------------------------------------------------------ rescoring
def rule_json(rule: AcceptRule) -> str:
    """The rule as canonical JSON (sorted keys): what a ``decisions`` row records, and what its id hashes."""
    return json.dumps(rule.as_dict(), sort_keys=True)


def rescore_rows(
    rows: Sequence[Mapping[str, Any]], rule: AcceptRule, *, at: Any = None, run_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``decisions`` rows re-deciding ``rows`` (``pairs_full`` rows: ``pair_id``, ``edit_type``, ``decision``,
    the recorded columns) under ``rule``, and the counts ``{"pairs", "accepted", "newly_accepted",
    "newly_rejected", "unchanged"}`` against each row's current ``decision``. A decision's id hashes the pair and
    the rule, so rescoring twice under one rule rewrites the same ids (the later row wins)."""
    text = rule_json(rule)
    out: list[dict[str, Any]] = []
    counts = Counter({"pairs": 0, "accepted": 0, "newly_accepted": 0, "newly_rejected": 0, "unchanged": 0})
    for row, (decision, reason) in zip(rows, decide_rows(rule, rows), strict=True):
        counts["pairs"] += 1
        counts["accepted"] += decision == "accepted"
        if decision == row.get("decision"):
            counts["unchanged"] += 1
        else:
            counts["newly_accepted" if decision == "accepted" else "newly_rejected"] += 1
        out.append(
            {
                "decision_id": ids.make_id("decision", row["pair_id"], text),
                "pair_id": row["pair_id"],
                "decision": decision,
                "decision_reason": reason,
                "rule_json": text,
                "created_at": at,
                "run_id": run_id,
            }
        )
    return out, dict(counts)


def changes_under(rule: AcceptRule, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What deciding ``rows`` (every pair of a catalog) under ``rule`` would change: counts as
    :func:`rescore_rows`, and per engine."""
    _, counts = rescore_rows(rows, rule)
    per_engine: dict[str, dict[str, int]] = {}
    for engine in sorted({str(r.get("engine")) for r in rows}):
        _, per_engine[engine] = rescore_rows([r for r in rows if str(r.get("engine")) == engine], rule)
    return {**counts, "by_engine": per_engine}
