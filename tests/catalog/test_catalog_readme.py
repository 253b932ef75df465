"""The README's "reading the catalog without vpf" recipes work with plain DuckDB and NumPy on a real catalog."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pytest

from catalog.schema import ID_COLUMNS
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Reading the catalog without vpf")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_names_every_id_column() -> None:
    section = " ".join(_section().split())
    for table, column in ID_COLUMNS.items():
        assert f"`{column}` ({table})" in section


def test_latest_row_query_and_mask_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    catalog = Catalog("vpf-data")
    graph = build_graph(catalog, n_renders=2)
    rewritten = {**graph["pairs"][0], "decision": "rejected", "decision_reason": "rewritten"}
    catalog.append("pairs", [rewritten])  # a second, newer row for one id
    section = _section()
    sql = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    rows = duckdb.sql(sql).to_arrow_table().to_pylist()
    assert len(rows) == len(graph["pairs"]) == len({r["pair_id"] for r in rows})
    assert next(r for r in rows if r["pair_id"] == rewritten["pair_id"])["decision_reason"] == "rewritten"
    views = Catalog("vpf-data").query("SELECT * FROM pairs ORDER BY pair_id").to_pylist()
    assert sorted(rows, key=lambda r: r["pair_id"]) == views  # the same rows as vpf's own views
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    from tasks.masks import encode_masks_npz  # how the factory stores masks

    stored = np.random.default_rng(0).random((5, 12, 16)) > 0.6
    mask_uri = catalog.put_media(encode_masks_npz(stored), "npz")
    scope = {"mask_uri": mask_uri}
    exec(textwrap.dedent(code), scope)  # noqa: S102 - the README's own three lines
    assert scope["masks"].dtype == bool and np.array_equal(scope["masks"], stored)
    assert Path("vpf-data", rows[0]["src_video_uri"]).read_bytes() == catalog.read_media(rows[0]["src_video_uri"])
