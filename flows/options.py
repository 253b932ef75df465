"""Options shared by every ``vpf`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from catalog.store import default_root


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
