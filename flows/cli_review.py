"""``vpf review``: review the catalog's pairs in the browser with the keyboard; each verdict is a ``reviews`` row.

Exit codes: 0 ok (also when there is nothing to review); 1 error (the catalog cannot be read, the port cannot be
bound); 2 usage error (a bad or rejected ``--where``, a bad ``--sample``).
"""

from __future__ import annotations

import signal
import webbrowser
from enum import Enum
from typing import Annotated, NoReturn

import typer

from catalog.review import QueueFilter, ReviewError, ReviewServer, ReviewSession, build_queue
from catalog.reviews import reviewer_name
from catalog.store import CatalogError
from flows.options import CatalogOption, open_catalog


EXIT_ERROR = 1
EXIT_USAGE = 2


class DecisionChoice(str, Enum):
    accepted = "accepted"
    rejected = "rejected"


def review(
    catalog: CatalogOption,
    reviewer: Annotated[
        str | None,
        typer.Option("--reviewer", help="Name recorded with each review. Default: $VPF_REVIEWER, else the login."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            help="Review a random sample of N pairs, stratified by gate decision and engine (proportional "
            "allocation): review rates estimated from it are unbiased. The same --seed resumes the same sample.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --sample.")] = 0,
    where: Annotated[
        str | None,
        typer.Option("--where", help='SQL predicate over the pairs_full view, e.g. "psnr_bg < 30" (read-only).'),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only pairs written by this run id.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Only pairs rendered by this engine.")] = None,
    edit_type: Annotated[str | None, typer.Option("--edit-type", help="Only pairs of this edit type.")] = None,
    decision: Annotated[
        DecisionChoice | None, typer.Option("--decision", help="Only pairs the gate decided so.")
    ] = None,
    unreviewed: Annotated[
        bool,
        typer.Option("--unreviewed/--all", help="Skip pairs that already have a review (default), or show all."),
    ] = True,
    host: Annotated[str, typer.Option("--host", help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on (0: any free port).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL; do not open a browser.")] = False,
) -> None:
    """Review pairs in a local web app: a = accept, r = reject (1-7 picks the reason), s = skip, u = undo."""
    if sample is not None and sample < 1:
        _usage(f"--sample must be a positive number of pairs, got {sample}")
    if not 0 <= port <= 65535:
        _usage(f"--port must be between 0 and 65535, got {port}")
    cat = open_catalog(catalog)
    flt = QueueFilter(
        where=where,
        run=run,
        engine=engine,
        edit_type=edit_type,
        decision=decision.value if decision else None,
        unreviewed=unreviewed,
        sample=sample,
        seed=seed,
    )
    try:
        queue = build_queue(cat, flt)
        session = ReviewSession(cat, queue, reviewer_name(reviewer))
    except ReviewError as exc:
        _usage(str(exc))
    except (CatalogError, OSError) as exc:
        typer.echo(f"vpf review: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    picked = f"{queue.sampled} sampled of {queue.matching}" if sample is not None else f"{queue.matching} matching"
    typer.echo(f"{len(queue.rows)} pairs to review ({picked}, {queue.already_reviewed} already reviewed)")
    if queue.left_out:
        typer.echo(
            f"{queue.left_out} more pairs match: a session shows {len(queue.rows)}; review these, then run again"
        )
    if not queue.rows:
        typer.echo("nothing to review" + (" (--all shows reviewed pairs too)" if unreviewed else ""))
        return
    try:
        server = ReviewServer(session, host, port)
    except OSError as exc:
        typer.echo(f"vpf review: cannot serve on {host}:{port}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(f"reviewing as {session.reviewer}: {server.url} (Ctrl-C to stop)")
    if not no_browser:
        webbrowser.open(server.url)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # kill ends it like Ctrl-C: the mask cache is removed
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    counts = session.state()["counts"]
    typer.echo(f"{counts['session']} review(s) this session; {counts['reviewed']} of {counts['total']} reviewed")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _usage(message: str) -> NoReturn:
    typer.echo(f"vpf review: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def register(app: typer.Typer) -> None:
    """Add ``vpf review`` to the ``vpf`` app."""
    app.command("review")(review)
