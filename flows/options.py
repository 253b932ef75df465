"""Options shared by every ``vpf`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from catalog.store import Catalog, NoCatalogError, default_root, require_catalog


def _catalog_default() -> str:
    return default_root()


CatalogOption = Annotated[
    str,
    typer.Option(
        "--catalog",
        help="Catalog root: a local folder or any fsspec URL (s3://bucket/prefix, memory://…). "
        "Default: $VPF_CATALOG, else ./vpf-data.",
        default_factory=_catalog_default,
        show_default=False,
    ),
]


def open_catalog(url: str) -> Catalog:
    """The catalog at ``url`` for a command that reads it; a root holding no catalog ends the command with exit
    code 2 and "no catalog at …" (a wrong path is never taken for an empty catalog)."""
    try:
        return require_catalog(url)
    except NoCatalogError as exc:
        typer.echo(f"vpf: {exc}", err=True)
        raise typer.Exit(2) from None
