"""``vpf gallery`` reports its media work as it goes (the progress bar's source)."""

from __future__ import annotations

from pathlib import Path

from catalog.gallery import build_site, select_rows
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


def test_build_site_reports_media_progress(catalog: Catalog, tmp_path: Path) -> None:
    build_graph(catalog, n_renders=2)
    calls: list[tuple[int, int]] = []
    built = build_site(
        select_rows(catalog), tmp_path / "g", catalog=catalog, progress=lambda d, t: calls.append((d, t))
    )
    # the clip, two renders, one mask encoded as mp4: four files, each reported once, in order
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)] and built.n_media_files == 4
    again: list[tuple[int, int]] = []
    build_site(select_rows(catalog), tmp_path / "g", catalog=catalog, progress=lambda d, t: again.append((d, t)))
    assert again == []  # nothing left to copy on a rebuild
