"""The ``vpf`` command line: a thin Typer layer over the Python API of catalog/, tasks/ and flows/.

Each area registers its commands from its own module (``register(app)``), so this file only assembles them.

Exit codes: 0 success (also when the reader of stdout has gone: ``vpf status | head -1``); 1 error; 2 usage error
(bad arguments, rejected SQL); 3 completed with failures.
"""

from __future__ import annotations

from flows.env import apply_local_defaults


apply_local_defaults()  # before Prefect is imported: ephemeral mode, analytics off

import typer  # noqa: E402

from flows import (  # noqa: E402
    cli_bench,
    cli_catalog,
    cli_factory,
    cli_gallery,
    cli_gate,
    cli_quality,
    cli_reproduce,
    cli_review,
    cli_samples,
)
from flows.options import quiet_on_closed_pipes  # noqa: E402


app = typer.Typer(
    name="vpf",
    help="VideoPainter Factory: manufacture instruction-based video editing pairs into a DuckDB/Parquet catalog.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"vpf {version('videopainter-factory')}")
        except PackageNotFoundError:
            typer.echo("vpf (version unknown: the package is not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """VideoPainter Factory: manufacture instruction-based video editing pairs into a DuckDB/Parquet catalog."""


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_FAILURES = 3

cli_catalog.register(app)
cli_factory.register(app)
cli_samples.register(app)
cli_reproduce.register(app)
cli_gallery.register(app)
cli_bench.register(app)
cli_quality.register(app)
cli_gate.register(app)
cli_review.register(app)
quiet_on_closed_pipes(app)  # every command: a closed pipe (vpf status | head -1) ends it with exit 0, no traceback


if __name__ == "__main__":
    app()
