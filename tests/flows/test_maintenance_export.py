"""The ``export`` deployment's flow takes ``vpf export``'s options and refuses a path without a catalog."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import pytest

from catalog.store import Catalog, NoCatalogError
from flows.cli_catalog import export_command
from flows.maintenance import export
from tests.catalog.catalog_data import build_graph


def test_export_flow_parameters_follow_the_cli() -> None:
    flow_params = set(inspect.signature(export.fn).parameters)
    cli_params = set(inspect.signature(export_command).parameters)
    renamed = {"format": "fmt", "out": "out_url", "license": "licenses"}
    assert {renamed.get(p, p) for p in cli_params} == flow_params


def test_export_flow_writes_a_preset_with_splits(tmp_path: Path) -> None:
    root = str(tmp_path / "cat")
    for seed in range(4):
        build_graph(Catalog(root), n_renders=1, seed=seed)
    out = tmp_path / "vace"
    report = export(
        str(out), catalog=root, preset="diffsynth-vace", split="train=0.5,val=0.5", balance=["edit_type"], cap=3
    )
    assert report["rows"] == 6 and sum(report["splits"].values()) == 6
    for split, n in report["splits"].items():
        if n:
            with (out / f"metadata_{split}.csv").open(newline="") as f:
                assert len(list(csv.DictReader(f))) == n
    with pytest.raises(NoCatalogError, match="no catalog at"):
        export(str(tmp_path / "x"), catalog=str(tmp_path / "nothing-here"))
