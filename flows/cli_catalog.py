"""``vpf sql``, ``vpf export`` and ``vpf catalog stats|compact|check|gc``: a thin layer over ``catalog.Catalog``.

Exit codes: 0 ok; 1 error (a query that fails, problems found by ``check``); 2 usage error, rejected SQL, or a
``--catalog`` that holds no catalog.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from catalog.export import ExportError
from catalog.sql import SqlRejected
from catalog.store import CatalogError
from flows.options import CatalogOption, open_catalog


EXIT_ERROR = 1
EXIT_USAGE = 2

catalog_app = typer.Typer(help="Inspect and maintain the catalog.", no_args_is_help=True)


class SqlFormat(str, Enum):
    auto = "auto"
    table = "table"
    vertical = "vertical"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class ExportFormatOption(str, Enum):
    webdataset = "webdataset"
    parquet = "parquet"
    csv = "csv"


class PresetOption(str, Enum):
    diffsynth_vace = "diffsynth-vace"
    diffsynth_control = "diffsynth-control"


class SplitByOption(str, Enum):
    source = "source"
    clip = "clip"


class MaskFormatOption(str, Enum):
    mp4 = "mp4"
    npy = "npy"


class PromptFromOption(str, Enum):
    instruction = "instruction"
    target_caption = "target_caption"


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    return "" if value is None else str(_plain(value))


def table_width(result: pa.Table, sample: int = 200) -> int:
    """Characters a one-line-per-row table of ``result`` needs (its first ``sample`` rows): widest cell per column,
    plus borders."""
    rows = result.slice(0, sample).to_pylist()
    widths = [max([len(name), *(len(_cell(r[name])) for r in rows)]) for name in result.column_names]
    return sum(widths) + 3 * len(widths) + 1


def auto_format(result: pa.Table, terminal_width: int | None) -> SqlFormat:
    """``--format auto``: CSV when the output is not a terminal (``terminal_width`` None), a table when it fits the
    terminal, else one block per row."""
    if terminal_width is None:
        return SqlFormat.csv
    return SqlFormat.table if table_width(result) <= terminal_width else SqlFormat.vertical


def _print_table(result: pa.Table, console: Console) -> None:
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name, overflow="fold")
    for row in result.to_pylist():
        table.add_row(*[_cell(v) for v in row.values()])
    console.print(table)


def _print_vertical(result: pa.Table, console: Console) -> None:
    """One block per row, one ``column | value`` line per column (like psql's expanded display)."""
    names = result.column_names
    pad = max((len(n) for n in names), default=0)
    for i, row in enumerate(result.to_pylist(), start=1):
        console.print(f"-[ row {i} ]" + "-" * max(0, pad - 6), style="bold", highlight=False)
        for name in names:
            console.print(f"{name:<{pad}} | {_cell(row[name])}", highlight=False, markup=False, soft_wrap=True)


def _csv_bytes(result: pa.Table) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(result.column_names)
    for row in result.to_pylist():
        writer.writerow([_plain(v) for v in row.values()])
    return buffer.getvalue().encode()


def sql_command(
    query: Annotated[str, typer.Argument(help="One read-only SELECT over the catalog views.")],
    catalog: CatalogOption,
    format: Annotated[
        SqlFormat,
        typer.Option(
            "--format",
            "-f",
            help="auto: a table on a terminal (one block per row when it is too wide to fit), CSV when stdout is "
            "not a terminal.",
        ),
    ] = SqlFormat.auto,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Run a read-only SQL query over the catalog views (sources, clips, objects, instructions, renders, pairs,
    runs, failures, pairs_full)."""
    cat = open_catalog(catalog)
    try:
        result = cat.query(query, read_only=True)
    except SqlRejected as exc:
        _err(f"rejected: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except (duckdb.Error, CatalogError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    if format is SqlFormat.auto:
        format = auto_format(result, terminal_width=Console().width if out is None and sys.stdout.isatty() else None)
    if format in (SqlFormat.table, SqlFormat.vertical) and out is None:
        console = Console()
        (_print_table if format is SqlFormat.table else _print_vertical)(result, console)
        typer.echo(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})", err=True)
        return
    if format is SqlFormat.parquet:
        sink = pa.BufferOutputStream()
        pq.write_table(result, sink)
        data = sink.getvalue().to_pybytes()
    elif format is SqlFormat.json:
        data = (
            json.dumps([{k: _plain(v) for k, v in r.items()} for r in result.to_pylist()], default=str) + "\n"
        ).encode()
    elif format in (SqlFormat.table, SqlFormat.vertical):  # to a file: plain text, no colours
        buffer = io.StringIO()
        console = Console(file=buffer, width=max(80, table_width(result)), color_system=None)
        (_print_table if format is SqlFormat.table else _print_vertical)(result, console)
        data = buffer.getvalue().encode()
    else:
        data = _csv_bytes(result)
    if out:
        with open(out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def export_command(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder: a local path or any fsspec URL.")],
    format: Annotated[
        ExportFormatOption | None,
        typer.Option("--format", "-f", help="Output format (default csv with --preset, else required)."),
    ] = None,
    preset: Annotated[
        PresetOption | None,
        typer.Option(
            "--preset",
            help="DiffSynth-Studio metadata: diffsynth-vace (video, vace_video, vace_video_mask, prompt) or "
            "diffsynth-control (video, control_video, prompt).",
        ),
    ] = None,
    where: Annotated[
        str | None, typer.Option("--where", help="SQL predicate over pairs_full plus license and attribution.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Shares of each split, e.g. train=0.9,val=0.05,test=0.05 (default: all train)."),
    ] = None,
    split_by: Annotated[
        SplitByOption,
        typer.Option("--split-by", help="Keep every pair of one source (or clip) in one split."),
    ] = SplitByOption.source,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split assignment.")] = 0,
    balance: Annotated[
        str | None,
        typer.Option(
            "--balance",
            help="Group by these pairs_full columns (comma-separated; label = object_label); with --cap at most "
            "N per group, without it every group cut to the smallest. Best quality first.",
        ),
    ] = None,
    cap: Annotated[int | None, typer.Option("--cap", min=1, help="At most N pairs per group (best first).")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only pairs added after this earlier export (its id, or its folder)."),
    ] = None,
    license: Annotated[
        list[str] | None,
        typer.Option("--license", help="Only sources under this licence (repeat; 'unknown' = none recorded)."),
    ] = None,
    shard_mb: Annotated[
        float, typer.Option("--shard-mb", min=0.001, help="WebDataset/Parquet: close a shard before it passes this.")
    ] = 512.0,
    shard_size: Annotated[
        int | None,
        typer.Option("--shard-size", min=1, help="WebDataset/Parquet: at most this many samples per shard."),
    ] = None,
    embed_media: Annotated[
        bool,
        typer.Option(
            "--embed-media/--no-embed-media",
            help="Parquet: the mp4 bytes inside the files, or copies referenced by paths relative to --out.",
        ),
    ] = True,
    mask_format: Annotated[
        MaskFormatOption,
        typer.Option("--mask-format", help="WebDataset: <key>.mask.mp4 (lossless video) or <key>.mask.npy (uint8)."),
    ] = MaskFormatOption.mp4,
    prompt_from: Annotated[
        PromptFromOption,
        typer.Option("--prompt-from", help="CSV/DiffSynth: the prompt is the instruction or the target caption."),
    ] = PromptFromOption.instruction,
) -> None:
    """Export pairs as WebDataset shards, Parquet (Hugging Face datasets), CSV or DiffSynth-Studio metadata, with a
    dataset card (README.md) and a manifest. Prints a JSON summary."""
    if format is None and preset is None:
        raise typer.BadParameter("give --format webdataset|parquet|csv or --preset", param_hint="--format")
    cat = open_catalog(catalog)
    with Progress(
        TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("export", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = cat.export(
                format.value if format else None, out, where=where, preset=preset.value if preset else None,
                split=split, split_by=split_by.value, seed=seed,
                balance=[b for b in balance.split(",") if b.strip()] if balance else None, cap=cap, since=since,
                licenses=license, shard_bytes=int(shard_mb * (1 << 20)), shard_size=shard_size,
                embed_media=embed_media, mask_format=mask_format.value, prompt_from=prompt_from.value,
                progress=progress,
            )  # fmt: skip
        except SqlRejected as exc:
            _err(f"rejected --where: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
        except ExportError as exc:
            _err(f"vpf export: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
        except (duckdb.Error, CatalogError, OSError) as exc:
            _err(str(exc))
            raise typer.Exit(EXIT_ERROR) from None
    typer.echo(json.dumps(summary))


@catalog_app.command("stats")
def stats_command(
    catalog: CatalogOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rows per table; pairs by edit type, decision and engine; failures by stage, reason and error type."""
    try:
        stats = open_catalog(catalog).stats()
    except (duckdb.Error, CatalogError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        typer.echo(json.dumps(stats, default=str))
        return
    console = Console()
    tables = Table(title="tables")
    for column in ("table", "rows", "fragments", "bytes"):
        tables.add_column(column, justify="left" if column == "table" else "right")
    for name, info in stats["tables"].items():
        tables.add_row(name, str(info["rows"]), str(info["fragments"]), str(info["bytes"]))
    console.print(tables)
    for title, rows in (("pairs", stats["pairs_by"]), ("failures", stats["failures_by"])):
        if rows:
            table = Table(title=title)
            for column in rows[0]:
                table.add_column(column)
            for row in rows:
                table.add_row(*["" if v is None else str(v) for v in row.values()])
            console.print(table)


@catalog_app.command("compact")
def compact_command(
    catalog: CatalogOption,
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    small_mb: Annotated[float, typer.Option("--small-mb", help="Merge fragments smaller than this.")] = 64.0,
) -> None:
    """Merge small fragments into one deduplicated fragment per table (safe with concurrent readers/writers)."""
    try:
        result = open_catalog(catalog).compact(table, small_bytes=int(small_mb * (1 << 20)))
    except CatalogError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    for name, info in result.items():
        typer.echo(f"{name}: merged {len(info['merged'])} fragments, {info['rows_in']} -> {info['rows_out']} rows")
    if not result:
        typer.echo("nothing to compact")


@catalog_app.command("check")
def check_command(
    catalog: CatalogOption,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Check media exist without hashing them.")] = False,
) -> None:
    """Check fragments are readable, media exist with matching sha256, and references resolve. Exit 1 on
    problems."""
    problems = open_catalog(catalog).check(verify_hashes=not no_hash)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        _err(f"{len(problems)} problem(s) found")
        raise typer.Exit(EXIT_ERROR)
    typer.echo("catalog ok")


@catalog_app.command("gc")
def gc_command(
    catalog: CatalogOption,
    older_than_h: Annotated[
        float, typer.Option("--older-than-hours", min=0, help="Only files older than this (writers in flight).")
    ] = 24.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
) -> None:
    """Delete media no row names and temporary files of writes cut short (left by killed runs)."""
    try:
        result = open_catalog(catalog).gc(older_than_s=older_than_h * 3600, dry_run=dry_run)
    except CatalogError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    for path in [*result["orphan_media"], *result["partial_writes"]]:
        typer.echo(path)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {len(result['orphan_media'])} unnamed media file(s) and {len(result['partial_writes'])} partial "
        f"write(s); {result['referenced']} media uris are named by rows"
    )


def register(app: typer.Typer) -> None:
    """Add the catalog commands to the ``vpf`` app."""
    app.command("sql")(sql_command)
    app.command("export")(export_command)
    app.add_typer(catalog_app, name="catalog")
