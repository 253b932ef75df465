"""``vpf sql``, ``vpf export`` and ``vpf catalog stats|compact|check``: a thin layer over ``catalog.Catalog``.

Exit codes: 0 ok; 1 error (a query that fails, problems found by ``check``); 2 usage error or rejected SQL.
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
from rich.table import Table

from catalog.sql import SqlRejected
from catalog.store import Catalog, CatalogError
from flows.options import CatalogOption


EXIT_ERROR = 1
EXIT_USAGE = 2

catalog_app = typer.Typer(help="Inspect and maintain the catalog.", no_args_is_help=True)


class SqlFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class ExportFormatOption(str, Enum):
    webdataset = "webdataset"
    parquet = "parquet"
    csv = "csv"


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


def _print_table(result: pa.Table) -> None:
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name, overflow="fold")
    for row in result.to_pylist():
        table.add_row(*["" if v is None else str(_plain(v)) for v in row.values()])
    Console().print(table)
    typer.echo(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})", err=True)


def sql_command(
    query: Annotated[str, typer.Argument(help="One read-only SELECT over the catalog views.")],
    catalog: CatalogOption,
    format: Annotated[SqlFormat, typer.Option("--format", "-f", help="Output format.")] = SqlFormat.table,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Run a read-only SQL query over the catalog views (sources, clips, objects, instructions, renders, pairs,
    runs, failures, pairs_full)."""
    try:
        result = Catalog(catalog).query(query, read_only=True)
    except SqlRejected as exc:
        _err(f"rejected: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except (duckdb.Error, CatalogError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    if format is SqlFormat.table and out is None:
        _print_table(result)
        return
    if format is SqlFormat.parquet:
        sink = pa.BufferOutputStream()
        pq.write_table(result, sink)
        data = sink.getvalue().to_pybytes()
    elif format is SqlFormat.json:
        data = (
            json.dumps([{k: _plain(v) for k, v in r.items()} for r in result.to_pylist()], default=str) + "\n"
        ).encode()
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(result.column_names)
        for row in result.to_pylist():
            writer.writerow([_plain(v) for v in row.values()])
        data = buffer.getvalue().encode()
    if out:
        with open(out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def export_command(
    catalog: CatalogOption,
    format: Annotated[ExportFormatOption, typer.Option("--format", "-f", help="Output format.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder: a local path or any fsspec URL.")],
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate over pairs_full.")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per shard/file.")] = 1000,
    embed_media: Annotated[
        bool, typer.Option("--embed-media/--no-embed-media", help="Parquet: include the video/mask bytes.")
    ] = True,
) -> None:
    """Export pairs as WebDataset shards, Parquet (Hugging Face datasets) or a src_video,tgt_video,prompt CSV."""
    try:
        summary = Catalog(catalog).export(
            format.value, out, where=where, shard_size=shard_size, embed_media=embed_media
        )
    except SqlRejected as exc:
        _err(f"rejected --where: {exc}")
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
        stats = Catalog(catalog).stats()
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
        result = Catalog(catalog).compact(table, small_bytes=int(small_mb * (1 << 20)))
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
    problems = Catalog(catalog).check(verify_hashes=not no_hash)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        _err(f"{len(problems)} problem(s) found")
        raise typer.Exit(EXIT_ERROR)
    typer.echo("catalog ok")


def register(app: typer.Typer) -> None:
    """Add the catalog commands to the ``vpf`` app."""
    app.command("sql")(sql_command)
    app.command("export")(export_command)
    app.add_typer(catalog_app, name="catalog")
