"""``vpf sql``, ``vpf export`` and ``vpf catalog stats|compact|check``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the catalog commands to the ``vpf`` app."""
