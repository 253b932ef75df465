"""Which pairs an export takes, and in which split: filters, leak-free splits, quality-first balancing, ``--since``.

Order of operations: the SQL predicate ``where``, the quality-gate ``decisions`` (accepted only unless asked; people's
reviews over the gate: a pair reviewed bad never leaves, one reviewed good only with ``include_reviewed_good``) and the
licence filter → ``since`` (drop what an earlier export already saw) → split assignment → ``balance``/``cap`` (per
group, best first) → order by split, then pair id.

Splits are assigned per *group key*, the pair's ``source_id`` (default) or ``clip_id``: the key and the seed are
hashed (sha256) to a number in [0, 1) that falls into one split's share. Every pair of a source (of a clip) lands
in the same split, whatever else is selected, so both directions of a render (``remove``/``add``, the same two
videos reversed) and sibling objects of a clip never straddle two splits, and a source keeps its split when the
catalog grows (incremental exports stay leak-free). The shares are met on average over many sources, not exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from catalog.export.config import ExportConfig, SplitBy


if TYPE_CHECKING:
    from catalog.store import Catalog

SPLIT_BY_COLUMN: dict[SplitBy, str] = {"source": "source_id", "clip": "clip_id"}  # keys: config.SPLIT_BY
UNKNOWN_LICENSE = "unknown"
# Short names accepted by ``balance`` for columns of ``pairs_full``.
BALANCE_ALIASES: dict[str, str] = {"label": "object_label"}

# The rows an export reads: pairs_full plus each source's licence and attribution.
EXPORT_SQL = (
    "SELECT pf.*, s.license AS license, s.attribution AS attribution "
    "FROM pairs_full pf LEFT JOIN sources s ON s.source_id = pf.source_id"
)


def split_of(key: str, shares: Mapping[str, float], seed: int = 0) -> str:
    """The split of a group key: sha256 of ``"<seed>:<key>"`` read as a number in [0, 1), placed on the
    cumulative shares (in the order given)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    names = list(shares)
    for name in names:
        edge += shares[name]
        if u < edge:
            return name
    return names[-1]


def quality_sort_keys() -> list[tuple[str, str]]:
    """How ``cap``/``balance`` rank the pairs of a group, best first: accepted (``final_decision``) before rejected, then the judge's
    quality score, background PSNR and SSIM (higher first), the temporal warp error (lower first), and the pair id
    to break ties. Missing figures sort last. Change this one function when the quality gate changes."""
    return [
        ("_accepted", "descending"),
        ("judge_quality", "descending"),
        ("psnr_bg", "descending"),
        ("ssim_bg", "descending"),
        ("temporal_warp_error", "ascending"),
        ("pair_id", "ascending"),
    ]


@dataclass(frozen=True)
class Since:
    """What an earlier export saw: its id, the newest ``created_at`` among the pairs then, and the ids it wrote."""

    export_id: str
    as_of: datetime | None
    pair_ids: frozenset[str]


def apply_decision_filter(
    rows: pa.Table, decisions: Sequence[str], include_reviewed_good: bool = False
) -> tuple[pa.Table, int]:
    """Keep the pairs whose quality-gate ``decision`` (``pairs_full``'s: the latest rescore or the gate's) is one of
    ``decisions`` (a pair without one matches none), with people's reviews over the gate: a pair whose latest review
    (``review_verdict``) is ``rejected`` is never kept, whatever ``decisions`` says; one reviewed ``accepted`` is
    kept whatever its gate decision when ``include_reviewed_good``. Returns the rows kept and how many pairs
    ``decisions`` took that a rejecting review withheld."""
    verdict = rows.column("review_verdict")
    by_gate = pc.fill_null(pc.is_in(rows.column("decision"), value_set=pa.array(list(decisions), pa.string())), False)
    reviewed_bad = pc.fill_null(pc.equal(verdict, "rejected"), False)
    keep = by_gate
    if include_reviewed_good:
        keep = pc.or_(keep, pc.fill_null(pc.equal(verdict, "accepted"), False))
    withheld = pc.sum(pc.and_(by_gate, reviewed_bad).cast(pa.int64())).as_py() or 0
    return rows.filter(pc.and_(keep, pc.invert(reviewed_bad))), withheld


def apply_license_filter(rows: pa.Table, licenses: Sequence[str] | None) -> pa.Table:
    """Keep the pairs whose source licence is one of ``licenses`` (``"unknown"`` matches a source without one)."""
    if not licenses:
        return rows
    wanted = [lic for lic in licenses if lic != UNKNOWN_LICENSE]
    column = rows.column("license")
    keep = pc.is_in(column, value_set=pa.array(wanted, pa.string()))
    keep = pc.fill_null(keep, False)
    if UNKNOWN_LICENSE in licenses:
        keep = pc.or_(keep, pc.is_null(column))
    return rows.filter(keep)


def apply_since(rows: pa.Table, since: Since | None) -> pa.Table:
    """Drop the pairs the earlier export wrote and those already in the catalog when it ran."""
    if since is None:
        return rows
    keep = pc.invert(pc.is_in(rows.column("pair_id"), value_set=pa.array(sorted(since.pair_ids), pa.string())))
    if since.as_of is not None:
        newer = pc.greater(rows.column("created_at"), pa.scalar(since.as_of, rows.schema.field("created_at").type))
        keep = pc.and_(keep, pc.fill_null(newer, False))
    return rows.filter(keep)


def assign_splits(rows: pa.Table, shares: Mapping[str, float], split_by: SplitBy, seed: int) -> pa.Table:
    """``rows`` with a ``split`` column (see module docstring)."""
    if split_by not in SPLIT_BY_COLUMN:
        raise ValueError(f"split_by must be one of {sorted(SPLIT_BY_COLUMN)}, got {split_by!r}")
    keys = rows.column(SPLIT_BY_COLUMN[split_by]).to_pylist()
    cache: dict[str, str] = {}
    splits = []
    for i, key in enumerate(keys):
        if key is None:  # a pair whose clip/source row is missing: group it by itself, alone in its split
            key = f"pair:{rows.column('pair_id')[i].as_py()}"
        if key not in cache:
            cache[key] = split_of(key, shares, seed)
        splits.append(cache[key])
    return rows.append_column("split", pa.array(splits, pa.string()))


def balance_columns(balance: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """``balance`` names (``label`` is an alias of ``object_label``) checked against the export's columns."""
    columns = []
    for name in balance or []:
        column = BALANCE_ALIASES.get(name.strip(), name.strip())
        if column not in available:
            raise ValueError(f"balance: {name!r} is not a column of pairs_full (e.g. edit_type, label, engine)")
        columns.append(column)
    return columns


def apply_cap(rows: pa.Table, group_columns: Sequence[str], cap: int | None) -> pa.Table:
    """At most ``cap`` pairs per group of ``group_columns`` (no columns: one group), the best first by
    :func:`quality_sort_keys`. Groups given and no cap: every group is cut to the size of the smallest one."""
    if cap is None and not group_columns:
        return rows
    if cap is not None and cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if rows.num_rows == 0:
        return rows
    ranked = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    accepted = pc.fill_null(pc.equal(rows.column("final_decision"), "accepted"), False)  # a review over the gate
    ranked = ranked.append_column("_accepted", accepted)
    order = [(c, "ascending") for c in group_columns] + quality_sort_keys()
    ranked = ranked.take(pc.sort_indices(ranked, sort_keys=order))  # nulls sort last by default
    groups = list(zip(*(ranked.column(c).to_pylist() for c in group_columns))) if group_columns else None
    sizes: dict[tuple, int] = {}
    for g in groups or [()] * ranked.num_rows:
        sizes[g] = sizes.get(g, 0) + 1
    limit = cap if cap is not None else min(sizes.values())
    seen: dict[tuple, int] = {}
    keep = []
    for i, g in enumerate(groups or [()] * ranked.num_rows):
        seen[g] = seen.get(g, 0) + 1
        if seen[g] <= limit:
            keep.append(i)
    chosen = sorted(ranked.column("_row").take(pa.array(keep, pa.int64())).to_pylist())
    return rows.take(pa.array(chosen, pa.int64()))


@dataclass(frozen=True)
class Selection:
    """What :func:`select_for_export` selected: the rows, the newest ``created_at`` among all pairs (what a later
    ``since`` starts from) and how many pairs a rejecting review withheld (see :func:`apply_decision_filter`)."""

    rows: pa.Table
    newest: datetime | None
    withheld_by_review: int


def select_for_export(catalog: Catalog, config: ExportConfig, since: Since | None = None) -> Selection:
    """The rows ``config`` selects (``pairs_full`` + ``license``, ``attribution``, ``split``), ordered by split (in
    the order of the shares) then pair id, as a :class:`Selection`. ``since``: the earlier export ``config.since``
    names, loaded by the caller. ``where`` goes through the read-only SQL guard (raises ``SqlRejected``); an unknown
    ``balance`` column raises ``ValueError``."""
    shares = config.shares
    sql = f"SELECT * FROM ({EXPORT_SQL}) AS pairs_export"
    if config.where and config.where.strip():
        sql += f" WHERE {config.where}"
    rows = catalog.query(f"{sql} ORDER BY pair_id", read_only=True)
    newest = catalog.query("SELECT max(created_at) AS t FROM pairs").column("t")[0].as_py()
    rows, withheld = apply_decision_filter(rows, config.decisions, config.include_reviewed_good)
    rows = apply_license_filter(rows, config.licenses)
    rows = apply_since(rows, since)
    rows = assign_splits(rows, shares, config.split_by, config.seed)
    rows = apply_cap(rows, balance_columns(config.balance, rows.column_names), config.cap)
    rank = {name: i for i, name in enumerate(shares)}
    order = pa.array([rank[s] for s in rows.column("split").to_pylist()], pa.int32())
    keys = pa.table({"r": order, "p": rows.column("pair_id")})
    rows = rows.take(pc.sort_indices(keys, sort_keys=[("r", "ascending"), ("p", "ascending")]))
    return Selection(rows, newest, withheld)
