"""``vpf sql``, ``vpf export`` and ``vpf catalog stats|compact|check|gc``: a thin layer over ``catalog.Catalog``.

``vpf export``'s options are the fields of ``catalog.export.ExportConfig`` (derived by ``flows.model_options``: the
defaults, choices and help are the model's).

Exit codes: 0 ok; 1 error (a query that fails, problems found by ``check``); 2 usage error (an option the model
refuses, an unknown ``--since``), rejected SQL, or a ``--catalog`` that holds no catalog.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from catalog.export import ExportConfig, ExportError
from catalog.export import export as export_pairs
from catalog.sql import QueryOutOfMemory, ResultStream, SqlRejected, stream_read_only
from catalog.store import CatalogError
from catalog.views import MEMORY_ENV, MEMORY_FRACTION, SPILL_ENV, TEMP_DIR_ENV, QueryLimits
from flows.model_options import model_options
from flows.options import CatalogOption, open_catalog


EXIT_ERROR = 1
EXIT_USAGE = 2

catalog_app = typer.Typer(help="Inspect and maintain the catalog.", no_args_is_help=True)


class SqlFormat(str, Enum):
    auto = "auto"
    table = "table"
    vertical = "vertical"
    json = "json"
    json_array = "json-array"
    csv = "csv"
    parquet = "parquet"


MAX_ROWS = 100  # rows the table/vertical display shows by default; CSV, JSON and Parquet stream every row
_STREAMED = (SqlFormat.csv, SqlFormat.json, SqlFormat.json_array, SqlFormat.parquet)
_ROW = '"vpf row"'  # the alias a JSON projection gives the query's rows


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


def _rows(result: pa.Table) -> list[tuple[Any, ...]]:
    """Rows by position (column names may repeat)."""
    return list(zip(*(column.to_pylist() for column in result.columns)))


def table_width(result: pa.Table, sample: int = 200) -> int:
    """Characters a one-line-per-row table of ``result`` needs (its first ``sample`` rows): widest cell per column,
    plus borders."""
    rows = _rows(result.slice(0, sample))
    widths = [max([len(name), *(len(_cell(r[i])) for r in rows)]) for i, name in enumerate(result.column_names)]
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
    for row in _rows(result):
        table.add_row(*[_cell(v) for v in row])
    console.print(table)


def _print_vertical(result: pa.Table, console: Console) -> None:
    """One block per row, one ``column | value`` line per column (like psql's expanded display)."""
    names = result.column_names
    pad = max((len(n) for n in names), default=0)
    for i, row in enumerate(_rows(result), start=1):
        console.print(f"-[ row {i} ]" + "-" * max(0, pad - 6), style="bold", highlight=False)
        for name, value in zip(names, row):
            console.print(f"{name:<{pad}} | {_cell(value)}", highlight=False, markup=False, soft_wrap=True)


# DuckDB types Arrow's CSV writer renders as they read; every other type is rendered by DuckDB (CAST AS VARCHAR):
# timestamps, intervals, blobs, lists, structs, maps, UUIDs, enums.
_CSV_NATIVE = frozenset(
    {"boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger", "ubigint"}
    | {"float", "double", "decimal", "varchar", "date"}
)


def csv_cells(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """The query's columns by position, those Arrow's CSV writer cannot render as text rendered by DuckDB."""
    columns = [
        f"#{i}" if type_.id in _CSV_NATIVE else f"CAST(#{i} AS VARCHAR)" for i, type_ in enumerate(relation.types, 1)
    ]
    return relation.project(", ".join(f"{c} AS c{i}" for i, c in enumerate(columns)))


def json_rows(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """One column: each row as a JSON object (DuckDB's ``to_json``; a repeated column name gets a suffix)."""
    return relation.set_alias(_ROW.strip('"')).project(f"CAST(to_json({_ROW}) AS VARCHAR) AS json")


@contextmanager
def _sink(out: str | None) -> Iterator[BinaryIO]:
    """stdout, or the file ``out`` written whole or not at all (a temporary file beside it, renamed when complete);
    an ``out`` that exists and is no regular file (``/dev/null``, a FIFO) is written to directly."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.exists(out) and not os.path.isfile(out):
        with open(out, "wb") as f:
            yield f
        return
    partial = f"{out}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _write_csv(stream: ResultStream, sink: BinaryIO) -> int:
    schema = pa.schema([pa.field(name, f.type) for name, f in zip(stream.names, stream.schema)])
    rows = 0
    with pacsv.CSVWriter(sink, schema) as writer:
        for batch in stream.batches:
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
            rows += batch.num_rows
    return rows


def _write_json(stream: ResultStream, sink: BinaryIO, array: bool) -> int:
    """JSON lines (one object per row), or one JSON array (``array``) written element by element."""
    rows = 0
    separator = ",\n" if array else "\n"
    if array:
        sink.write(b"[")
    for batch in stream.batches:
        if batch.num_rows:
            text = separator.join(batch.column(0).to_pylist())
            sink.write(((separator if array and rows else "") + text + ("" if array else "\n")).encode())
            rows += batch.num_rows
    if array:
        sink.write(b"]\n")
    return rows


def _write_parquet(stream: ResultStream, sink: BinaryIO) -> int:
    rows = 0
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), stream.schema) as writer:
        for batch in stream.batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _head(stream: ResultStream, max_rows: int) -> tuple[pa.Table, int]:
    """The first ``max_rows`` rows, and how many rows the result has (the rest are counted, not kept)."""
    kept: list[pa.RecordBatch] = []
    total = 0
    for batch in stream.batches:
        if total < max_rows:
            kept.append(batch.slice(0, max_rows - total))
        total += batch.num_rows
    return pa.Table.from_batches(kept, schema=stream.schema), total


def _display(stream: ResultStream, format: SqlFormat, out: str | None, max_rows: int) -> None:
    head, total = _head(stream, max_rows)
    if format is SqlFormat.auto:
        format = auto_format(head, terminal_width=Console().width)
    show = _print_table if format is SqlFormat.table else _print_vertical
    if out is None:
        show(head, Console())
    else:  # to a file: plain text, no colours
        buffer = io.StringIO()
        show(head, Console(file=buffer, width=max(80, table_width(head)), color_system=None))
        with _sink(out) as sink:
            sink.write(buffer.getvalue().encode())
    if total > head.num_rows:
        _err(f"… {total - head.num_rows} more rows not shown; use --format csv (or json, parquet), or --max-rows")
    _err(f"({total} row{'s' if total != 1 else ''})")


def sql_command(
    query: Annotated[str, typer.Argument(help="One read-only SELECT over the catalog views.")],
    catalog: CatalogOption,
    format: Annotated[
        SqlFormat,
        typer.Option(
            "--format",
            "-f",
            help="auto: a table on a terminal (one block per row when it is too wide to fit), CSV when stdout is "
            "not a terminal. json: one object per line; json-array: one array. csv, json and parquet stream every "
            "row; table and vertical show the first --max-rows.",
        ),
    ] = SqlFormat.auto,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Rows a table/vertical display shows; the rest are counted.")
    ] = MAX_ROWS,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            envvar=MEMORY_ENV,
            show_default=False,
            help="DuckDB's memory limit (4GB, 512MiB, 25%); past it DuckDB spills to --temp-dir, and a query that "
            f"still does not fit fails (exit 1). Default: {MEMORY_FRACTION:.0%} of the machine's memory.",
        ),
    ] = None,
    temp_dir: Annotated[
        str | None,
        typer.Option(
            "--temp-dir",
            envvar=TEMP_DIR_ENV,
            show_default=False,
            help="Where DuckDB spills past --memory-limit. Default: a fresh folder in the system temp folder.",
        ),
    ] = None,
    spill_limit: Annotated[
        str | None,
        typer.Option(
            "--spill-limit",
            envvar=SPILL_ENV,
            show_default=False,
            help="Most disk the spill may take (a size, or a % of the free disk). Default: DuckDB's.",
        ),
    ] = None,
) -> None:
    """Run a read-only SQL query over the catalog views (sources, clips, objects, instructions, renders, pairs,
    runs, failures, stage_timings, reviews, decisions; reviewed: the latest review of each pair; latest_decisions:
    the latest rescore of each pair; pairs_full: a pair with its instruction, clip, source, render, effective and
    reviewed decision), streaming its result in bounded memory."""
    cat = open_catalog(catalog)
    try:
        limits = QueryLimits.resolve(memory_limit, temp_dir, spill_limit)
    except CatalogError as exc:
        _err(f"vpf sql: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if format is SqlFormat.auto and (out is not None or not sys.stdout.isatty()):
        format = SqlFormat.csv
    shape = {SqlFormat.csv: csv_cells, SqlFormat.json: json_rows, SqlFormat.json_array: json_rows}.get(format)
    try:
        with stream_read_only(cat, query, limits=limits, shape=shape) as stream:
            if format not in _STREAMED:
                _display(stream, format, out, max_rows)
                return
            with _sink(out) as sink:
                if format is SqlFormat.csv:
                    _write_csv(stream, sink)
                elif format is SqlFormat.parquet:
                    _write_parquet(stream, sink)
                else:
                    _write_json(stream, sink, array=format is SqlFormat.json_array)
    except SqlRejected as exc:
        _err(f"rejected: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except QueryOutOfMemory as exc:
        _err(
            f"out of memory: {exc}; raise --memory-limit or --spill-limit (${MEMORY_ENV}, ${SPILL_ENV}), or narrow the query"
        )
        raise typer.Exit(EXIT_ERROR) from None
    except (duckdb.Error, CatalogError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    except pa.ArrowException as exc:  # a type the output format cannot hold (an INTERVAL in Parquet, say)
        _err(f"vpf sql: cannot write the result as {format.value}: {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_ERROR) from None


OutOption = Annotated[str, typer.Option("--out", "-o", help="Output folder: a local path or any fsspec URL.")]


@model_options(ExportConfig, aliases={"format": ["-f"], "licenses": ["--license"], "decisions": ["--decision"]})
def export_command(catalog: CatalogOption, out: OutOption, config: ExportConfig) -> None:
    """Export pairs (by default only those the quality gate accepted) as WebDataset shards, Parquet (Hugging Face
    datasets), CSV or DiffSynth-Studio metadata, with a dataset card (README.md) and a manifest. Prints a JSON
    summary."""
    cat = open_catalog(catalog)
    with Progress(
        TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("export", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = export_pairs(cat, out, config, progress=progress)
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
    """Check fragments are readable, media exist with matching sha256, and references resolve; interrupted runs are
    listed as warnings. Exit 1 on errors."""
    problems = open_catalog(catalog).check(verify_hashes=not no_hash)
    for problem in problems:
        typer.echo(str(problem))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        _err(f"{len(errors)} problem(s) found")
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"catalog ok ({len(problems)} warning(s))" if problems else "catalog ok")


@catalog_app.command("gc")
def gc_command(
    catalog: CatalogOption,
    older_than_h: Annotated[
        float, typer.Option("--older-than-hours", min=0, help="Only files older than this (writers in flight).")
    ] = 24.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
) -> None:
    """Delete media no row names and temporary files of writes cut short (left by killed runs)."""
    from catalog.export import gc_exports

    cat = open_catalog(catalog)
    try:
        result = cat.gc(older_than_s=older_than_h * 3600, dry_run=dry_run)
        exports = gc_exports(cat, older_than_s=older_than_h * 3600, dry_run=dry_run)  # what killed exports left
    except CatalogError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    for path in [*result["orphan_media"], *result["partial_writes"], *exports]:
        typer.echo(path)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {len(result['orphan_media'])} unnamed media file(s), {len(result['partial_writes'])} partial "
        f"write(s) and {len(exports)} file(s) of killed exports; {result['referenced']} media uris are named by rows"
    )


def register(app: typer.Typer) -> None:
    """Add the catalog commands to the ``vpf`` app."""
    app.command("sql")(sql_command)
    app.command("export")(export_command)
    app.add_typer(catalog_app, name="catalog")
