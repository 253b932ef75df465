"""The metadata columns an export writes: ``pairs_full`` as a trainer's loader takes it, with no nulls.

Every value is a string, a float or an integer, so ``datasets``' ``with_format("torch")`` and
``torch.utils.data.default_collate`` take a batch as it is, in every format (the WebDataset ``.json`` too):
timestamps become ISO 8601 strings, a missing string is ``""``, a missing number is NaN (an integer column that can
lack values, such as the judge's scores, is a float column), lists and structs become JSON strings. The catalog's
own media URIs are left out (the media travel in the export itself), and so are reviewers' names and notes.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


# Catalog-internal media URIs (``media/ab/…``): meaningless outside the catalog; the export carries the media.
EXCLUDED: frozenset[str] = frozenset(
    {"src_video_uri", "tgt_video_uri", "mask_uri", "preview_uri", "contact_sheet_uri"}
)
# Who reviewed a pair and what they wrote (catalog.reviews): people's names and notes stay in the factory; the
# verdict and its reason travel (``review_verdict``, ``review_reason``, ``final_decision``).
PRIVATE: frozenset[str] = frozenset({"reviewer", "review_note"})
# Integer columns that may lack a value (a pair the judge did not score): always float, NaN when missing.
FLOAT_INTEGERS: frozenset[str] = frozenset({"judge_compliance", "judge_consistency", "judge_quality"})
NOTES = {
    "string": '"" when unknown',
    "float": "NaN when unknown",
    "timestamp": "ISO 8601, UTC",
    "json": "JSON text",
}


def _iso(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.isoformat()


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def trainer_column(name: str, column: pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, str] | None:
    """``column`` as exported and the kind of its values (``string``, ``float``, ``int``, ``bool``, ``timestamp``,
    ``json``), or None for a column left out."""
    if name in EXCLUDED or name in PRIVATE:
        return None
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        return pa.array([_iso(v) for v in column.to_pylist()], pa.string()), "timestamp"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.fill_null(column.cast(pa.string()), ""), "string"
    if pa.types.is_null(kind):
        return pa.array([""] * len(column), pa.string()), "string"
    if pa.types.is_floating(kind) or (
        (pa.types.is_integer(kind) or pa.types.is_boolean(kind)) and (name in FLOAT_INTEGERS or column.null_count)
    ):
        return pc.fill_null(column.cast(pa.float64()), float("nan")), "float"
    if pa.types.is_integer(kind):
        return column.cast(pa.int64()), "int"
    if pa.types.is_boolean(kind):
        return column, "bool"
    return pa.array([_json(v) for v in column.to_pylist()], pa.string()), "json"


def trainer_table(rows: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """``rows`` with every column as exported (see module; the order kept) and each column's kind."""
    columns, names, kinds = [], [], {}
    for name in rows.column_names:
        converted = trainer_column(name, rows.column(name))
        if converted is None:
            continue
        array, kind = converted
        columns.append(array)
        names.append(name)
        kinds[name] = kind
    return pa.Table.from_arrays(columns, names=names), kinds


def type_note(arrow_type: pa.DataType, kind: str) -> str:
    """The schema table's type cell: the Arrow type and, where it says more, how a missing value reads."""
    note = NOTES.get(kind)
    return f"{arrow_type}" + (f" ({note})" if note else "")
