"""``vpf gallery``: build the static HTML gallery of the catalog's pairs, and optionally serve it on 127.0.0.1.

Exit codes: 0 ok; 1 error (the catalog cannot be read, the site cannot be written); 2 usage error (a bad or rejected
``--where`` predicate, an output folder that is not a gallery).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from catalog.gallery import GalleryError, build_site, make_server, select_rows
from catalog.store import CatalogError
from flows.options import CatalogOption, open_catalog


EXIT_ERROR = 1
EXIT_USAGE = 2


class MediaOption(str, Enum):
    copy = "copy"
    link = "link"
    none = "none"


def gallery(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the site into (created if missing).")],
    catalog: CatalogOption,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="SQL predicate over the pairs_full view, e.g. \"decision = 'accepted' AND psnr_bg > 30\".",
        ),
    ] = None,
    media: Annotated[
        MediaOption,
        typer.Option(
            "--media",
            help="copy: media into the site (works anywhere); link: symlinks (local catalogs, this machine only); "
            "none: no videos.",
        ),
    ] = MediaOption.copy,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the site on 127.0.0.1 after building it.")] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve (0: any free port).")] = 8000,
) -> None:
    """Build a static gallery of pairs (works from file:// and any static host); --serve to browse it here."""
    cat = open_catalog(catalog)
    try:
        with Progress(
            TextColumn("gallery media"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("media", total=None)
            rows = select_rows(cat, where)
            built = build_site(
                rows, out, catalog=cat, media=media.value, where=where, title=title,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    except GalleryError as exc:
        typer.echo(f"vpf gallery: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (CatalogError, OSError) as exc:
        typer.echo(f"vpf gallery: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(f"{built.n_pairs} pairs, {built.n_media_files} media files -> {built.index_html.resolve().as_uri()}")
    if built.missing_media:
        typer.echo(
            f"warning: {len(built.missing_media)} media file(s) named by pairs are missing, e.g. {built.missing_media[0]}",
            err=True,
        )
    if serve:
        try:
            server = make_server(built.out, port)
        except OSError as exc:
            typer.echo(f"vpf gallery: cannot serve on 127.0.0.1:{port}: {exc}", err=True)
            raise typer.Exit(EXIT_ERROR) from None
        host, bound = server.server_address[:2]
        typer.echo(f"serving http://{host}:{bound}/ (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def register(app: typer.Typer) -> None:
    """Add ``vpf gallery`` to the ``vpf`` app."""
    app.command("gallery")(gallery)
