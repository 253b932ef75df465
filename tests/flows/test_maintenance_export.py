"""The ``export`` deployment's flow takes one ``ExportConfig`` (``vpf export``'s options), exports only accepted pairs
unless asked, and refuses a path without a catalog."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import pytest
import yaml
from prefect.utilities.callables import parameter_schema

from catalog.export import ExportConfig
from catalog.store import Catalog, NoCatalogError
from flows.cli_catalog import export_command
from flows.maintenance import export
from tests.catalog.catalog_data import build_graph


REPO = Path(__file__).resolve().parents[2]


def test_export_flow_takes_the_config_the_cli_builds() -> None:
    assert list(inspect.signature(export.fn).parameters) == ["out_url", "config", "catalog"]
    cli_params = set(inspect.signature(export_command).parameters)
    assert cli_params == set(ExportConfig.model_fields) | {"catalog", "out"}
    schema = parameter_schema(export.fn).model_dump()
    assert schema["required"] == ["out_url", "config"]
    config_schema = schema["definitions"]["ExportConfig"]
    for name, field in ExportConfig.model_fields.items():  # the UI shows the model's help and defaults
        assert config_schema["properties"][name]["description"] == field.description
    assert config_schema["properties"]["decisions"]["default"] == ["accepted"]


def test_the_export_deployment_parameters_fit_the_flow() -> None:
    [deployment] = [
        d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"] if d["name"] == "export"
    ]
    parameters = deployment["parameters"]
    assert set(parameters) <= set(inspect.signature(export.fn).parameters)
    ExportConfig.model_validate(parameters["config"])


def test_export_flow_writes_a_preset_with_splits(tmp_path: Path) -> None:
    root = str(tmp_path / "cat")
    for seed in range(4):
        build_graph(Catalog(root), n_renders=1, seed=seed)
    out = tmp_path / "vace"
    config = ExportConfig(preset="diffsynth-vace", split="train=0.5,val=0.5", balance=["edit_type"], cap=3)
    report = export(str(out), config, catalog=root)
    assert report["rows"] == 6 and sum(report["splits"].values()) == 6
    for split, n in report["splits"].items():
        if n:
            with (out / f"metadata_{split}.csv").open(newline="") as f:
                assert len(list(csv.DictReader(f))) == n
    with pytest.raises(NoCatalogError, match="no catalog at"):
        export(str(tmp_path / "x"), ExportConfig(format="csv"), catalog=str(tmp_path / "nothing-here"))


def _decisions(report: dict) -> list[str]:
    with open(report["files"][0], newline="") as f:
        return sorted(r["decision"] for r in csv.DictReader(f))


def test_export_flow_exports_only_accepted_pairs_unless_asked(tmp_path: Path) -> None:
    root = str(tmp_path / "cat")
    build_graph(Catalog(root), n_renders=2)  # two accepted pairs, two rejected
    assert _decisions(export(str(tmp_path / "a"), ExportConfig(format="csv"), catalog=root)) == ["accepted"] * 2
    both = ExportConfig(format="csv", decisions=["accepted", "rejected"])
    assert _decisions(export(str(tmp_path / "b"), both, catalog=root)) == ["accepted"] * 2 + ["rejected"] * 2
    # as a deployment passes it: JSON, validated by Prefect into the model; unset fields take the model's defaults
    report = export(str(tmp_path / "c"), {"format": "csv"}, catalog=root)
    assert _decisions(report) == ["accepted"] * 2


def _run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_maintenance_runs_are_named_after_what_they_work_on(tmp_path: Path) -> None:
    from flows.maintenance import compact

    root = str(tmp_path / "cat")
    build_graph(Catalog(root), n_renders=1)
    assert _run_name(compact(catalog=root, return_state=True)) == f"compact {root}"
    assert _run_name(compact(catalog=root, table="pairs", return_state=True)) == f"compact {root} pairs"
    out = str(tmp_path / "out")
    assert _run_name(export(out, ExportConfig(format="csv"), catalog=root, return_state=True)) == f"export {out}"


def test_a_relative_catalog_resolves_against_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """``./vpf-data`` (prefect.yaml's default) is the working directory's; without a catalog there the run fails
    naming the resolved path and that directory, and, in a deployment's run, the deployment parameter to set."""
    from flows.maintenance import compact

    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoCatalogError) as info:
        compact(catalog="./vpf-data")
    message = str(info.value)
    assert message.startswith(f"no catalog at {tmp_path / 'vpf-data'} ")
    assert f"./vpf-data is relative to the flow run's working directory {tmp_path}" in message
    assert "deployment" not in message  # a plain call names no deployment
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__NAME", "compact")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__FLOW_NAME", "compact")
    with pytest.raises(NoCatalogError, match="set parameter `catalog` of deployment compact/compact to the catalog's"):
        compact(catalog="./vpf-data")
    assert not (tmp_path / "vpf-data").exists()
    build_graph(Catalog(str(tmp_path / "vpf-data")), n_renders=1)  # with a catalog there, the same call works
    assert isinstance(compact(catalog="./vpf-data"), dict)
