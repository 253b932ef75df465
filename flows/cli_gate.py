"""``vpf gate report``, ``vpf gate calibrate`` and ``vpf rescore``: the quality gate against people's reviews.

``vpf review`` records reviews; ``gate report`` measures the gate on them (confusion matrix, precision and recall
with 95 % Wilson intervals, per engine, edit type and review reason, the checks behind the disagreements);
``gate calibrate`` proposes thresholds from them and writes an accept-rule file; ``vpf rescore`` re-decides existing
pairs under a rule from their recorded columns (no rendering) as new ``decisions`` rows, which ``pairs_full`` and
exports then use. The statistics are ``tasks.calibrate``'s.

Exit codes: 0 done; 1 the catalog could not be read or holds too little to work on (calibrate without reviews of
both verdicts); 2 usage error (no catalog, a bad ``--where``, a bad accept-rule file or ``--accept``).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.options import CatalogOption, open_catalog


if TYPE_CHECKING:
    from catalog.store import Catalog
    from tasks.accept import AcceptRule


EXIT_ERROR = 1
EXIT_USAGE = 2

gate_app = typer.Typer(help="The quality gate against people's reviews: report, calibrate.", no_args_is_help=True)

WhereOption = Annotated[
    str | None,
    typer.Option(
        "--where", help="SQL predicate over pairs_full (read-only, as in vpf sql), e.g. \"engine = 'videopainter'\"."
    ),
]
AcceptFileOption = Annotated[
    Path | None,
    typer.Option(
        "--accept-file",
        help="Accept-rule file (JSON, or YAML for .yaml/.yml: AcceptRule fields; vpf gate calibrate writes one).",
    ),
]
AcceptOption = Annotated[
    list[str] | None,
    typer.Option(
        "--accept", metavar="KEY=VALUE", help="A field of the accept rule (repeat), on top of --accept-file."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _rule(accept_file: Path | None, accept: list[str] | None) -> AcceptRule:
    """The default rule, or ``accept_file``'s, with ``--accept`` pairs on top; a bad file or pair exits 2."""
    from flows.model_options import parse_key_values
    from tasks.accept import AcceptRule, AcceptRuleFileError, accept_rule_fields, load_accept_rule

    overrides = parse_key_values(accept, "--accept")
    try:
        if accept_file is not None:
            return load_accept_rule(str(accept_file), overrides)
        return AcceptRule(**accept_rule_fields("--accept", overrides))
    except AcceptRuleFileError as exc:
        _fail(str(exc), EXIT_USAGE)
        raise AssertionError("unreachable") from None


def _pairs(catalog: Catalog, where: str | None, reviewed: bool) -> list[dict[str, Any]]:
    """``pairs_full`` rows (the columns ``tasks.calibrate`` reads), only reviewed ones with ``reviewed``; a
    ``--where`` the read-only guard refuses exits 2."""
    import duckdb

    from catalog.sql import SqlRejected
    from catalog.storage import CatalogError
    from tasks.calibrate import METRIC_COLUMNS

    wanted = ["pair_id", "edit_type", "engine", "decision", "decision_reason", "review_verdict", "review_reason",
              *METRIC_COLUMNS]  # fmt: skip
    present = set(catalog.query("SELECT * FROM pairs_full LIMIT 0").column_names)  # older catalogs lack new checks
    sql = f"SELECT {', '.join(c for c in wanted if c in present)} FROM pairs_full"
    conditions = [f"({where})"] if where and where.strip() else []
    if reviewed:
        conditions.append("review_verdict IS NOT NULL")
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    try:
        return catalog.query(f"{sql} ORDER BY pair_id", read_only=True).to_pylist()
    except SqlRejected as exc:
        _fail(f"rejected --where: {exc}", EXIT_USAGE)
    except duckdb.BinderException as exc:  # a --where naming no column of pairs_full
        _fail(f"--where: {exc}", EXIT_USAGE)
    except (duckdb.Error, CatalogError) as exc:  # an unreadable fragment
        _fail(f"cannot read pairs_full: {exc}", EXIT_ERROR)
    raise AssertionError("unreachable")


def _rate(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return f"- (0/{rate['n']})"
    low, high = rate["ci95"]
    return f"{rate['value']:.3f} [{low:.3f}, {high:.3f}] ({rate['k']}/{rate['n']})"


def _lines(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _confusion_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    rows = [[title, "n", "tp", "fp", "fn", "tn", "precision [95% CI]", "recall [95% CI]"]]
    for name, c in groups.items():
        m = c["matrix"]
        rows.append([name, str(c["n"]), *(str(m[k]) for k in ("tp", "fp", "fn", "tn")),
                     _rate(c["precision"]), _rate(c["recall"])])  # fmt: skip
    return _lines(rows)


def format_report(report: dict[str, Any]) -> str:
    """``vpf gate report``'s text: the overall confusion, the groups, the review reasons and the disagreements."""
    if not report["reviewed"]:
        return "no reviewed pairs (vpf review records reviews)"
    overall = report["overall"]
    m = overall["matrix"]
    parts = [
        f"{report['reviewed']} reviewed pairs; gate (rows) against reviewers (columns):",
        _lines(
            [
                ["", "reviewer accepted", "reviewer rejected"],
                ["gate accepted", str(m["tp"]), str(m["fp"])],
                ["gate rejected", str(m["fn"]), str(m["tn"])],
            ]
        ),  # fmt: skip
        f"precision of accepted: {_rate(overall['precision'])}",
        f"recall of accepted:    {_rate(overall['recall'])}",
        f"agreement:             {_rate(overall['agreement'])}",
    ]
    if report.get("weighted_recall") is not None:
        parts.append(f"recall weighted by stratum size (gate decision x engine): {report['weighted_recall']:.3f}")
    parts += [
        "",
        _confusion_table("engine", report["by_engine"]),
        "",
        _confusion_table("edit_type", report["by_edit_type"]),
    ]
    if report["by_reason"]:
        rows = [["review reason", "rejected by reviewers", "also rejected by the gate [95% CI]"]]
        rows += [[name, str(r["n"]), _rate(r["caught"])] for name, r in report["by_reason"].items()]
        parts += ["", _lines(rows)]
    d = report["disagreements"]
    parts.append("")
    parts.append(f"bad pairs the gate let through: {d['false_accepts']}")
    parts += [f"  {reason}: {n}" for reason, n in d["false_accepts_by_reason"].items()]
    parts.append(f"good pairs the gate rejected: {d['false_rejects']}, by the check that rejected them:")
    parts += [f"  {check}: {n}" for check, n in d["false_rejects_by_check"].items()]
    return "\n".join(parts)


@gate_app.command("report")
def report_command(catalog: CatalogOption, where: WhereOption = None, as_json: JsonOption = False) -> None:
    """The gate against the reviews: confusion matrix, precision and recall of `accepted` with 95% Wilson intervals,
    per engine, edit type and review reason, and the checks behind the disagreements."""
    from tasks.calibrate import gate_report

    cat = open_catalog(catalog)
    reviewed = _pairs(cat, where, reviewed=True)
    population = Counter((r["decision"], str(r["engine"])) for r in _pairs(cat, where, reviewed=False))
    report = gate_report(reviewed, population)
    typer.echo(json.dumps(report) if as_json else format_report(report))


@gate_app.command("calibrate")
def calibrate_command(
    catalog: CatalogOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The accept-rule file to write (JSON; .yaml/.yml: YAML).")],
    target_precision: Annotated[
        float, typer.Option("--target-precision", min=0.5, max=1.0, help="Precision of accepted pairs to keep.")
    ] = 0.95,
    accept_file: AcceptFileOption = None,
    accept: AcceptOption = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 0,
    where: WhereOption = None,
    as_json: JsonOption = False,
) -> None:
    """Propose accept-rule thresholds from the reviewed pairs: as many reviewer-accepted pairs accepted as possible
    at --target-precision, checked by k-fold cross-validation; print what the rule would change in the whole
    catalog (with --where: in the pairs it matches, reviewed or not) and write it to --out (for vpf run --accept-file
    and vpf rescore --accept-file). The starting rule is the default, or --accept-file with --accept on top."""
    from tasks.calibrate import calibrate, changes_under

    base = _rule(accept_file, accept)
    cat = open_catalog(catalog)
    reviewed = _pairs(cat, where, reviewed=True)
    good = [r["review_verdict"] == "accepted" for r in reviewed]
    try:
        result = calibrate(reviewed, good, base, target_precision, folds=folds, seed=seed)
    except ValueError as exc:
        _fail(f"cannot calibrate on {len(reviewed)} reviewed pair(s): {exc}", EXIT_ERROR)
    rule = result["rule"]
    impact = changes_under(rule, _pairs(cat, where, reviewed=False))
    fields = rule.as_dict()
    try:
        text = _dump_rule(fields, out)
        out.write_text(text)
    except OSError as exc:
        _fail(f"--out {out}: {exc}", EXIT_ERROR)
    summary = {**{k: v for k, v in result.items() if k != "rule"}, "rule": fields, "catalog": impact,
               "reviewed": len(reviewed), "out": str(out)}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{len(reviewed)} reviewed pairs, {result['folds']}-fold cross-validation, fit target "
               f"{result['fit_target']:.3f}")  # fmt: skip
    if not result["target_met"]:
        typer.echo(f"warning: no fit reached precision {target_precision} on held-out pairs; the rule is the one "
                   "that came nearest: review more pairs", err=True)  # fmt: skip
    typer.echo(_lines([["threshold", "from", "to"]] + [[k, str(a), str(b)] for k, (a, b) in result["changes"].items()])
               if result["changes"] else "no threshold changes")  # fmt: skip
    for name, key in (("current rule, reviewed pairs", "base"), ("proposed, held-out folds", "cross_validated"),
                      ("proposed, reviewed pairs", "proposed_on_sample")):  # fmt: skip
        c = result[key]
        typer.echo(f"{name}: precision {_rate(c['precision'])}, recall {_rate(c['recall'])}")
    scope = "pairs matching --where" if where else "whole catalog"
    typer.echo(f"{scope} ({impact['pairs']} pairs): {impact['newly_accepted']} newly accepted, "
               f"{impact['newly_rejected']} newly rejected, {impact['accepted']} accepted under the rule")  # fmt: skip
    narrow = f" --where {shlex.quote(where)}" if where else ""
    typer.echo(f"wrote {out}; apply it: vpf rescore --catalog {catalog} --accept-file {out}{narrow}")


def _dump_rule(fields: dict[str, Any], out: Path) -> str:
    if out.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(fields, sort_keys=False)
    return json.dumps(fields, indent=1) + "\n"


def rescore_command(
    catalog: CatalogOption,
    accept_file: AcceptFileOption = None,
    accept: AcceptOption = None,
    where: WhereOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would change; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-decide existing pairs under an accept rule (--accept-file, --accept on top; fields neither names keep
    their defaults) from their recorded gate columns, without rendering: one new decisions row per pair (earlier ones are kept;
    the latest is the pair's decision in pairs_full and exports). Prints the counts that changed."""
    from catalog.storage import now_utc
    from tasks.calibrate import rescore_rows

    if accept_file is None and not accept:
        raise typer.BadParameter(
            "name the rule: --accept-file FILE and/or --accept KEY=VALUE", param_hint="--accept-file"
        )
    rule = _rule(accept_file, accept)
    cat = open_catalog(catalog)
    rows = _pairs(cat, where, reviewed=False)
    decisions, counts = rescore_rows(rows, rule, at=now_utc())
    if not dry_run and decisions:
        cat.append("decisions", decisions)
    counts["written"] = 0 if dry_run else len(decisions)
    if as_json:
        typer.echo(json.dumps(counts))
        return
    typer.echo(f"{counts['pairs']} pairs re-decided: {counts['newly_accepted']} newly accepted, "
               f"{counts['newly_rejected']} newly rejected, {counts['unchanged']} unchanged; "
               f"{counts['accepted']} accepted under the rule" + (" (dry run: nothing written)" if dry_run else ""))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``gate report``, ``gate calibrate`` and ``rescore`` to the ``vpf`` app."""
    app.add_typer(gate_app, name="gate")
    app.command("rescore")(rescore_command)
