"""``vpf run``, ``vpf status`` and ``vpf demo``: the factory from the command line.

``vpf run``'s options are the fields of ``tasks.config.RunConfig`` (derived by ``flows.model_options``: names, help,
defaults and choices are the model's; its parts' fields take bare flags, ``--engine``, ``--seed``, ``--vocab``).

Exit codes: 0 completed; 1 error (the run failed); 2 usage error; 3 completed with failures (failures are rows in
the catalog's ``failures`` table: ``vpf status`` lists them).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from catalog.redact import redact
from flows.model_options import FieldOption, model_options
from flows.options import CatalogOption, open_catalog
from tasks.config import RunConfig


if TYPE_CHECKING:
    from flows.build_pairs import RunSummary


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_FAILURES = 3
STATUS_EXIT = {"completed": EXIT_OK, "completed_with_failures": EXIT_COMPLETED_WITH_FAILURES, "failed": EXIT_ERROR}

console = Console(stderr=True)


class TaskRunnerChoice(str, Enum):  # flows.runners.TaskRunnerName (that module imports Prefect)
    default = "default"
    dask = "dask"
    ray = "ray"


def _summary_table(summary: RunSummary) -> Table:
    table = Table(caption=f"{summary.status} in {summary.elapsed_s:.1f}s", caption_justify="left", min_width=40)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in "items clips objects instructions renders pairs accepted skipped already_done failures".split():
        if key in summary.counts:
            table.add_row(key, str(summary.counts[key]))
    for reason, n in sorted(summary.failures_by_reason.items()):
        table.add_row(f"  {reason}", str(n), style="yellow")
    return table


def run_factory(config: RunConfig, *, task_runner: str = "default", workers: int | None = None) -> RunSummary:
    """Run ``build_pairs`` with ``config`` in this process (Prefect ephemeral mode
    unless ``PREFECT_API_URL`` is set) with a progress display; returns its ``RunSummary``.

    ``task_runner``/``workers``: where ingest runs (threads here, or a local Dask or Ray cluster, one batch in flight
    per worker process).
    """
    from flows.build_pairs import build_pairs
    from flows.progress import observe

    flow = build_pairs
    if task_runner != "default":
        from flows.runners import local_workers, make_task_runner

        flow = build_pairs.with_options(task_runner=make_task_runner(task_runner, workers=workers))
        config = config.model_copy(update={"ingest_in_flight": local_workers(workers)})
    with observe(console), _usage_errors_off_the_console():
        return flow(config=config)


USAGE_ERROR_NAMES = ("SourceNotFoundError", "NoMasksError", "AnnotationSpecError")
"""The errors a run raises before it writes anything (a wrong source, no masks): ``vpf run`` says them in one line."""


class _UsageErrorRecords(logging.Filter):
    """Drops Prefect's records of a run or task ending on a usage error (its traceback, its final state)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) or record.levelno < logging.ERROR:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            return type(record.exc_info[1]).__name__ not in USAGE_ERROR_NAMES
        text = record.getMessage()  # "Finished in state Failed('… SourceNotFoundError: …')"
        return not any(f"{name}:" in text or f"{name}(" in text for name in USAGE_ERROR_NAMES)


@contextmanager
def _usage_errors_off_the_console() -> Iterator[None]:
    """While the block runs, the terminal's log handlers (Prefect's console handler on the root logger) skip the
    records of a run ending on a usage error, which ``vpf run`` reports in one line; a server still gets them."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    quiet = _UsageErrorRecords()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


@model_options(
    RunConfig,
    exclude={"storage_options"},  # credentials never on a command line
    from_params={"source": "source", "catalog": "catalog"},
    overrides="settings",
    flatten={"geometry", "annotate", "render", "score"},
    key_values={"annotate.select", "score.accept_rule"},
    aliases={
        "roots": ["--root"],
        "edit_types": ["--edit-type"],
        "geometry.num_frames": ["--frames"],
        "render.engine_options": ["--engine-option"],
        "score.accept_rule": ["--accept"],
    },
)
def run_command(
    source: Annotated[str, typer.Argument(help=RunConfig.model_fields["source"].description)],
    catalog: CatalogOption,
    config: RunConfig,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE of any run setting, on top of the options (repeat; dotted keys reach parts, e.g. "
            "max_failure_ratio=0.1 render.gpu_slots=2 score.reseg_segmenter=null); see tasks/config.py.",
        ),
    ] = None,
    task_runner: Annotated[
        TaskRunnerChoice,
        typer.Option(
            "--task-runner",
            help="Where ingest (decode, scene split, masks) runs: threads here, or a local "
            "Dask or Ray cluster (one batch per worker process).",
        ),
    ] = TaskRunnerChoice.default,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes of --task-runner dask|ray.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line on stdout.")] = False,
) -> None:
    """Make editing pairs from SOURCE into the catalog. Exit 0: completed; 3: completed with failures; 1: failed;
    2: usage error (also: no source has masks and no --segmenter was chosen)."""
    if workers is not None and task_runner is TaskRunnerChoice.default:
        raise typer.BadParameter(
            "--workers sizes a dask or ray cluster; add --task-runner dask|ray", param_hint=["--workers"]
        )
    from tasks.annotate.specs import AnnotationSpecError, NoMasksError, check_annotation
    from tasks.steps.discover import SourceNotFoundError

    try:
        check_annotation(config)  # specs, ranges, model folders, vocabulary: before the flow starts, no model loaded
        summary = run_factory(config, task_runner=task_runner.value, workers=workers)
    except (SourceNotFoundError, NoMasksError, AnnotationSpecError) as exc:  # found before any write: usage error
        console.print(f"[red]vpf run:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except BaseException as exc:  # the runs row says "failed" (or "interrupted"); one line, not a traceback
        _exit_if_stopped()
        if not isinstance(exc, Exception):
            raise
        console.print(f"[red]vpf run failed:[/red] {type(exc).__name__}: {escape(redact(str(exc)))}")
        raise typer.Exit(EXIT_ERROR) from exc
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        console.print(f"run {summary.run_id}")
        console.print(_summary_table(summary))
        console.print(f"catalog: {summary.catalog}   failures: vpf status --catalog {summary.catalog}")
        if summary.gallery:
            console.print(f"gallery: {summary.gallery}")
    raise typer.Exit(STATUS_EXIT.get(summary.status, EXIT_ERROR))


def _exit_if_stopped() -> None:
    """After SIGINT/SIGTERM stopped a run (``tasks.annotate.stop``): one line, exit 128 + the signal's number."""
    import signal

    from tasks.annotate.stop import stop_requested

    signum = stop_requested()
    if signum is None:
        return
    name = signal.Signals(signum).name if signum else "a stop request"
    console.print(f"[red]vpf run:[/red] stopped by {name}; the clips finished before it are recorded (vpf status)")
    raise typer.Exit(128 + signum) from None


RUN_OPTIONS: dict[str, FieldOption] = {option.dotted: option for option in run_command.options}  # type: ignore[attr-defined]


def build_config(settings: Mapping[str, Any], overrides: Sequence[tuple[str, Any]] = ()) -> RunConfig:
    """``tasks.config.RunConfig`` of ``settings`` with ``overrides`` (dotted keys, e.g. ``("render.seed", 3)``) set
    on top, validated as ``vpf run`` validates its options: an error is a usage error naming the option (``--set``
    where no option holds the field)."""
    return run_command.build(dict(settings), list(overrides))  # type: ignore[attr-defined]


# ``vpf demo``: the run's options (choices, bounds, help) with the demo's own sizes
EngineOpt = RUN_OPTIONS["render.engine"].annotated("--engine")
FramesOpt = RUN_OPTIONS["geometry.num_frames"].annotated("--frames")
HeightOpt = RUN_OPTIONS["geometry.height"].annotated("--height")
WidthOpt = RUN_OPTIONS["geometry.width"].annotated("--width")


def status_command(
    catalog: CatalogOption,
    last: Annotated[int, typer.Option("--last", min=1, help="How many runs to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """The last runs, row counts per table, failures by stage and reason (open ones counted apart from those a later
    run made good: "superseded"), and the latest run's time by stage.

    On a terminal, tables (one block per row where a table does not fit; ids never wrap). When stdout is not a
    terminal (a pipe, a file): tab-separated lines that never wrap, each section a "# title" line, a header line and
    one line per row, sections separated by a blank line (tabs and newlines inside values become spaces). --json:
    one JSON object."""
    from flows.status import catalog_status

    open_catalog(catalog)  # exit 2 when the path holds no catalog
    try:
        report = catalog_status(catalog, last=last)
    except Exception as exc:
        console.print(f"[red]vpf status failed:[/red] {type(exc).__name__}: {escape(redact(str(exc)))}")
        raise typer.Exit(EXIT_ERROR) from exc
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    sections = status_sections(report, catalog)
    if sys.stdout.isatty():
        out = Console()
        for section in sections:
            section.show(out)
    else:
        typer.echo("\n\n".join(section.tsv() for section in sections))


@dataclass
class StatusSection:
    """One part of ``vpf status``: a title, column names and rows of text. Only the ``fold`` columns (free text: a
    source, an error message) ever wrap on a terminal; ids and counts never do."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    right: frozenset[str] = frozenset()
    fold: frozenset[str] = frozenset()

    FOLDED_WIDTH = 16  # the narrowest a ``fold`` column gets before a table no longer fits

    def show(self, console: Console) -> None:
        """A table when it fits ``console`` with only the ``fold`` columns folded, else one block per row."""
        console.print(self.table() if self._table_width() <= console.width else self.blocks())

    def table(self) -> Table:
        table = Table(title=escape(self.title))
        for name in self.columns:
            folds = name in self.fold
            table.add_column(name, justify="right" if name in self.right else "left", no_wrap=not folds,
                             overflow="fold" if folds else "ellipsis")  # fmt: skip
        for row in self.rows:
            table.add_row(*(Text(cell) for cell in row))  # values as they are: no rich markup in them
        return table

    def blocks(self) -> Text:
        """The title, then each row as "column  value" lines, rows separated by a blank line."""
        key_width = max(len(name) for name in self.columns)
        blocks = [Text(self.title, style="italic")]
        for row in self.rows:
            blocks.append(Text("\n".join(f"{name:<{key_width}}  {cell}" for name, cell in zip(self.columns, row))))
        return Text("\n\n").join(blocks)

    def tsv(self) -> str:
        """The title (after "# "), the header and the rows, tab-separated, one line each."""
        lines = [f"# {_one_line(self.title)}", "\t".join(self.columns)]
        lines += ["\t".join(_one_line(cell) for cell in row) for row in self.rows]
        return "\n".join(lines)

    def _table_width(self) -> int:
        """Columns of the table with only the ``fold`` columns folded (to ``FOLDED_WIDTH``): cells, padding, rules."""
        widths = []
        for i, name in enumerate(self.columns):
            widest = max([len(name), *(len(row[i]) for row in self.rows)])
            widths.append(min(widest, self.FOLDED_WIDTH) if name in self.fold else widest)
        return sum(w + 3 for w in widths) + 1


def _run_cells(run: dict[str, Any]) -> list[str]:
    started = f"{run['started_at']:%Y-%m-%d %H:%M:%S}" if run["started_at"] else ""
    cells = (run["run_id"], run["status"], started, run["source"], run["n_clips"], run["n_pairs"], run["n_failures"])
    return [str(cell) for cell in cells]


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def status_sections(report: dict[str, Any], catalog: str) -> list[StatusSection]:
    """The sections ``vpf status`` prints for ``report`` (``flows.status.catalog_status``)."""
    runs = StatusSection(
        f"last runs in {catalog}",
        ["run_id", "status", "started_utc", "source", "clips", "pairs", "failures"],
        [_run_cells(r) for r in report["runs"]],
        right=frozenset({"clips", "pairs", "failures"}),
        fold=frozenset({"source"}),
    )
    rows = StatusSection("rows", ["table", "rows"], [[t, str(n)] for t, n in report["rows"].items()],
                         right=frozenset({"rows"}))  # fmt: skip
    failures = StatusSection(  # count: open failures; superseded: made good by a later run (flows.status)
        "failures",
        ["stage", "reason", "count", "superseded", "example"],
        [
            [f["stage"], f["reason"], str(f["count"]), str(f["superseded"]), str(f["example"])]
            for f in report["failures"]
        ],
        right=frozenset({"count", "superseded"}),
        fold=frozenset({"example"}),
    )
    sections = [runs, rows, failures]
    if report["stages"]["rows"]:
        sections.append(
            StatusSection(
                f"time by stage, run {report['stages']['run_id']} (busy seconds; stages overlap)",
                ["stage", "batches", "items", "busy_s", "cpu_s"],
                [
                    [s["stage"], str(s["batches"]), str(s["items"]), f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}"]
                    for s in report["stages"]["rows"]
                ],
                right=frozenset({"batches", "items", "busy_s", "cpu_s"}),
            )
        )
    return sections


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for samples, catalog and previews.")] = Path("demo-out"),
    engine: EngineOpt = RUN_OPTIONS["render.engine"].default,
    frames: FramesOpt = 25,
    height: HeightOpt = 240,
    width: WidthOpt = 368,
) -> None:
    """Write samples, run the factory on them (Prefect ephemeral mode, a local catalog), print what it made."""
    started = time.perf_counter()
    out = out.resolve()
    from flows.cli_samples import write_samples

    console.rule("1. samples")
    paths = write_samples(out / "samples", num_frames=frames, height=height, width=width, real=False)
    for name, path in paths.items():
        console.print(f"{name}: {path}")
    console.rule("2. build pairs (Prefect ephemeral mode)")
    catalog = str(out / "catalog")
    config = build_config(
        {
            "source": str(paths["synthetic"]),
            "catalog": catalog,
            "render": {"engine": engine},
            "batch_size": 4,
            "geometry": {"num_frames": frames, "height": height, "width": width},
        }
    )
    summary = run_factory(config)
    console.rule("3. summary")
    stdout = Console()
    stdout.print(f"run {summary.run_id}")
    stdout.print(_summary_table(summary))
    stdout.print(f"catalog:  {catalog}")
    stdout.print("previews (side by side: original | mask | edited), e.g.:")
    for url in summary.previews[:3]:
        stdout.print(f"  {url}", soft_wrap=True)
    if summary.gallery:
        stdout.print(f"gallery of this run: {summary.gallery}", soft_wrap=True)
    stdout.print(f"browse every pair: vpf gallery --catalog {catalog} --out {out / 'gallery'} --serve", soft_wrap=True)
    console.rule("4. query it with SQL")
    from catalog.store import Catalog

    # psnr_bg: codec loss of the stored target's background; hole_change / object_match: did the object go
    query = (
        "SELECT edit_type, decision, count(*) AS pairs, round(avg(psnr_bg), 1) AS psnr_bg, "
        "round(avg(hole_change), 2) AS hole_change, round(max(object_match), 2) AS max_object_match "
        "FROM pairs GROUP BY ALL ORDER BY ALL"
    )
    stdout.print(f'$ vpf sql "{query}" --catalog {catalog}', soft_wrap=True)
    result = Catalog(catalog).query(query, read_only=True)
    table = Table()
    for name in result.column_names:
        table.add_column(name)
    for row in result.to_pylist():
        table.add_row(*[str(v) for v in row.values()])
    stdout.print(table)
    stdout.print(f"demo finished in {time.perf_counter() - started:.0f}s ({summary.status})")
    raise typer.Exit(STATUS_EXIT.get(summary.status, EXIT_ERROR))


def register(app: typer.Typer) -> None:
    """Add ``run``, ``status`` and ``demo`` to the ``vpf`` app (``samples``: flows/cli_samples.py)."""
    app.command("run")(run_command)
    app.command("status")(status_command)
    app.command("demo")(demo_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(EXIT_USAGE)
