"""``vpf sql``, ``vpf export`` and ``vpf catalog …`` through the assembled Typer app."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog.store import Catalog
from flows.cli import app
from tests.catalog.catalog_data import build_graph


@pytest.fixture
def root(tmp_path: Path) -> str:
    root = str(tmp_path / "cat")
    build_graph(Catalog(root), n_renders=2)
    return root


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_sql_formats(root: str, tmp_path: Path) -> None:
    query = "SELECT edit_type, count(*) AS n FROM pairs GROUP BY 1 ORDER BY 1"
    table = run("sql", query, "--catalog", root)
    assert table.exit_code == 0, table.output
    assert "remove" in table.output and "edit_type" in table.output
    as_json = run("sql", query, "--catalog", root, "--format", "json")
    assert json.loads(as_json.stdout) == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]
    as_csv = run("sql", query, "--catalog", root, "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["edit_type", "n"], ["add", "2"], ["remove", "2"]]
    out = tmp_path / "q.parquet"
    as_parquet = run("sql", query, "--catalog", root, "--format", "parquet", "--out", str(out))
    assert as_parquet.exit_code == 0
    assert pq.read_table(out).to_pylist() == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]


def test_sql_catalog_from_environment(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPF_CATALOG", root)
    result = run("sql", "SELECT count(*) AS n FROM pairs", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 4}]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
        ("DROP VIEW pairs", "DROP"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ("SET threads = 1", "SET"),
    ],
)
def test_sql_rejected_exits_2(root: str, query: str, named: str) -> None:
    result = run("sql", query, "--catalog", root)
    assert result.exit_code == 2
    assert "rejected" in result.stderr and named in result.stderr
    assert "root:" not in result.output  # nothing from /etc/passwd


def test_sql_failing_query_exits_1_with_duckdb_message(root: str) -> None:
    result = run("sql", "SELECT nope FROM pairs", "--catalog", root)
    assert result.exit_code == 1
    assert "nope" in result.stderr and "Binder Error" in result.stderr


def test_catalog_stats_compact_check(root: str) -> None:
    stats = run("catalog", "stats", "--catalog", root, "--json")
    assert stats.exit_code == 0
    assert json.loads(stats.stdout)["tables"]["pairs"]["rows"] == 4
    assert "pairs" in run("catalog", "stats", "--catalog", root).stdout
    Catalog(root).append("sources", [{"source_id": "extra", "uri": "x"}])
    compact = run("catalog", "compact", "--catalog", root)
    assert compact.exit_code == 0 and "sources: merged 2 fragments" in compact.stdout
    check = run("catalog", "check", "--catalog", root)
    assert check.exit_code == 0, check.output


def test_catalog_check_exits_1_on_problems(root: str) -> None:
    catalog = Catalog(root)
    fragment = catalog.fragments("pairs")[0]
    Path(fragment).write_bytes(Path(fragment).read_bytes()[:50])
    result = run("catalog", "check", "--catalog", root)
    assert result.exit_code == 1
    assert Path(fragment).name in result.stdout and "unreadable_fragment" in result.stdout
    named = run("sql", "SELECT count(*) FROM pairs", "--catalog", root)
    assert named.exit_code == 1 and Path(fragment).name in named.stderr


def test_export_command(root: str, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    result = run(
        "export", "--catalog", root, "--format", "webdataset", "--out", str(out), "--where", "edit_type='add'"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and Path(summary["files"][0]).exists() and Path(summary["card"]).exists()
    rejected = run(
        "export", "--catalog", root, "--format", "csv", "--out", str(tmp_path / "c"), "--where", "getenv('X')=''"
    )
    assert rejected.exit_code == 2 and "getenv" in rejected.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "SELECT 1"],
        ["export", "--format", "csv", "--out", "OUT"],
        ["status"],
        ["gallery", "--out", "OUT"],
        ["catalog", "stats"],
        ["catalog", "check"],
        ["catalog", "compact"],
        ["catalog", "gc"],
        ["reproduce", "pair_x"],
    ],
)
def test_commands_refuse_a_path_without_a_catalog(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "not-a-catalog"
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = run(*args, "--catalog", str(missing))
    assert result.exit_code == 2, result.output
    assert f"no catalog at {missing}" in result.stderr
    assert not missing.exists() and not (tmp_path / "out").exists()


def test_an_empty_folder_is_not_a_catalog_either(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("catalog", "check", "--catalog", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "catalog ok" not in result.stdout


def test_version_and_short_help() -> None:
    version = run("--version")
    assert version.exit_code == 0 and version.stdout.startswith("vpf ")
    for args in (["-h"], ["export", "-h"], ["sql", "-h"]):
        result = run(*args)
        assert result.exit_code == 0 and "Usage" in result.stdout, args


def test_sql_output_when_not_a_terminal_is_csv_and_vertical_on_request(root: str) -> None:
    query = "SELECT pair_id, edit_type, instruction, src_video_uri, tgt_video_uri FROM pairs ORDER BY pair_id"
    auto = run("sql", query, "--catalog", root)  # CliRunner's stdout is not a terminal
    rows = list(csv.reader(io.StringIO(auto.stdout)))
    assert rows[0] == ["pair_id", "edit_type", "instruction", "src_video_uri", "tgt_video_uri"] and len(rows) == 5
    vertical = run("sql", query, "--catalog", root, "--format", "vertical")
    assert vertical.exit_code == 0 and vertical.stdout.count("-[ row ") == 4
    first = Catalog(root).query(query).to_pylist()[0]
    assert f"tgt_video_uri | {first['tgt_video_uri']}" in vertical.stdout  # never folded, however narrow


def test_sql_auto_format_picks_table_vertical_or_csv(root: str) -> None:
    from flows.cli_catalog import SqlFormat, auto_format

    wide = Catalog(root).query("SELECT * FROM pairs_full")
    narrow = Catalog(root).query("SELECT edit_type, count(*) n FROM pairs GROUP BY 1")
    assert auto_format(wide, terminal_width=120) is SqlFormat.vertical
    assert auto_format(narrow, terminal_width=120) is SqlFormat.table
    assert auto_format(narrow, terminal_width=None) is SqlFormat.csv  # piped: machine-readable


def test_export_command_with_split_preset_and_options(root: str, tmp_path: Path) -> None:
    out = tmp_path / "vace"
    result = run(
        "export", "--catalog", root, "--preset", "diffsynth-vace", "--out", str(out), "--split", "train=0.5,val=0.5",
        "--balance", "edit_type", "--cap", "1", "--prompt-from", "target_caption",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["preset"] == "diffsynth-vace"
    assert (out / "README.md").exists() and (out / "manifest.json").exists()
    bad = run("export", "--catalog", root, "--format", "csv", "--out", str(tmp_path / "b"), "--split", "train=2")
    assert bad.exit_code == 2 and "split" in bad.stderr
    neither = run("export", "--catalog", root, "--out", str(tmp_path / "n"))
    assert neither.exit_code == 2


def test_sql_looks_around(root: str) -> None:
    tables = run("sql", "SHOW TABLES", "--catalog", root, "--format", "json")
    assert tables.exit_code == 0, tables.output
    assert {"pairs", "renders", "failures"} <= {r["name"] for r in json.loads(tables.stdout)}
    described = run("sql", "DESCRIBE renders", "--catalog", root, "--format", "json")
    assert "generation" in {r["column_name"] for r in json.loads(described.stdout)}
    assert run("sql", "SUMMARIZE pairs", "--catalog", root).exit_code == 0
    assert run("sql", "SHOW databases", "--catalog", root).exit_code == 2


def test_catalog_gc(root: str) -> None:
    import os
    import time

    cat = Catalog(root)
    unnamed = cat.put_media(b"stored by a run killed before its row", "mp4")
    old = time.time() - 2 * 86400
    os.utime(cat.path(unnamed), (old, old))
    listed = run("catalog", "gc", "--catalog", root, "--dry-run")
    assert listed.exit_code == 0 and unnamed.rsplit("/", 1)[-1] in listed.output and "would delete 1" in listed.output
    assert Path(cat.path(unnamed)).exists()
    done = run("catalog", "gc", "--catalog", root)
    assert done.exit_code == 0 and "deleted 1 unnamed" in done.output, done.output
    assert not Path(cat.path(unnamed)).exists()
    assert run("catalog", "check", "--catalog", root).exit_code == 0
