"""Discover: the work items of a run's source (a folder, glob, manifest or VPData CSV at any fsspec URL)."""

from __future__ import annotations

from tasks.config import RunConfig
from tasks.types import Failure, SourceItem


class SourceNotFoundError(ValueError):
    """The run's source does not exist, or is a folder or glob holding no video: a usage error, raised before the run
    writes anything (``vpf run`` exits 2). ``source`` is the source as given; the message names it."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"no source at {source} ({detail})")


def discover(config: RunConfig) -> tuple[list[SourceItem], list[Failure]]:
    """The items of ``config.source`` (the first ``config.limit``: manifest order, else sorted by uri) and the
    manifest rows that cannot be items (a missing column, a path outside ``config.roots``) as failures.

    Raises ``SourceNotFoundError`` when the source itself is not found (no such file, folder or object; a folder or
    glob without a video): that is a wrong argument, not a bad item to record."""
    from tasks.sources import discover_sources

    items, failures = discover_sources(config.source, roots=config.roots, storage_options=config.storage_options)
    if not items and len(failures) == 1 and _is_the_source(failures[0], str(config.source)):
        detail = failures[0].message.removeprefix(f"{config.source}: ")
        raise SourceNotFoundError(str(config.source), detail)
    if config.limit is not None:
        items = items[: config.limit]
    return items, failures


def _is_the_source(failure: Failure, source: str) -> bool:
    """Whether ``failure`` says the source itself was not found (``tasks.sources.discover_sources`` reports that as
    one ``not_found`` failure whose item is the source), rather than a row or video it names."""
    return failure.reason == "not_found" and failure.item_id == source
