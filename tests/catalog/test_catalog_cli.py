"""``vpf sql``, ``vpf export`` and ``vpf catalog …`` through the assembled Typer app."""

from __future__ import annotations

import csv
import io
import json
import re
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import annotated_types
import pyarrow.parquet as pq
import pytest
from rich.markup import escape
from typer.main import get_command
from typer.testing import CliRunner

from catalog.export import ExportConfig
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


def json_lines(text: str) -> list[dict]:
    """``vpf sql --format json``: one object per line."""
    return [json.loads(line) for line in text.splitlines()]


def test_sql_formats(root: str, tmp_path: Path) -> None:
    query = "SELECT edit_type, count(*) AS n FROM pairs GROUP BY 1 ORDER BY 1"
    table = run("sql", query, "--catalog", root)
    assert table.exit_code == 0, table.output
    assert "remove" in table.output and "edit_type" in table.output
    as_json = run("sql", query, "--catalog", root, "--format", "json")
    assert json_lines(as_json.stdout) == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]
    as_array = run("sql", query, "--catalog", root, "--format", "json-array")  # the former --format json
    assert json.loads(as_array.stdout) == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]
    assert json.loads(run("sql", "SELECT 1 WHERE false", "--catalog", root, "-f", "json-array").stdout) == []
    assert run("sql", "SELECT 1 WHERE false", "--catalog", root, "-f", "json").stdout == ""
    as_csv = run("sql", query, "--catalog", root, "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["edit_type", "n"], ["add", "2"], ["remove", "2"]]
    out = tmp_path / "q.parquet"
    as_parquet = run("sql", query, "--catalog", root, "--format", "parquet", "--out", str(out))
    assert as_parquet.exit_code == 0
    assert pq.read_table(out).to_pylist() == [{"edit_type": "add", "n": 2}, {"edit_type": "remove", "n": 2}]


def test_sql_catalog_from_environment(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPF_CATALOG", root)
    result = run("sql", "SELECT count(*) AS n FROM pairs", "--format", "json")
    assert result.exit_code == 0 and json_lines(result.stdout) == [{"n": 4}]


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


DEEP = {
    "calls": lambda n: "SELECT " + "abs(" * n + "1" + ")" * n,
    "subqueries": lambda n: "SELECT * FROM " + "(SELECT * FROM " * n + "pairs" + ")" * n,
    "operator chain": lambda n: "SELECT " + " + ".join(["1"] * n),
}


@pytest.mark.parametrize("depth", [450, 5000])
@pytest.mark.parametrize("shape", DEEP)
def test_sql_deep_nesting_exits_2_with_one_line(root: str, shape: str, depth: int) -> None:
    result = run("sql", DEEP[shape](depth), "--catalog", root)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("rejected: query nested too deeply")
    assert not result.stdout


def test_sql_cte_of_a_subquery_cannot_name_a_catalog_file(root: str) -> None:
    """A fragment under the catalog root, named through a CTE defined only inside a subquery: the sandbox allows the
    root, so only the scoped check stands between the query and the raw fragment."""
    fragment = Catalog(root).fragments("pairs")[0]
    query = f'SELECT * FROM (WITH "{fragment}" AS (SELECT 1) SELECT 1), "{fragment}"'
    result = run("sql", query, "--catalog", root, "--format", "csv")
    assert result.exit_code == 2 and "not a catalog view" in result.stderr
    assert "pair_" not in result.stdout


def test_sql_table_display_caps_rows_and_says_so(root: str, tmp_path: Path) -> None:
    capped = run("sql", "SELECT range AS i FROM range(1000)", "--catalog", root, "-f", "table", "--max-rows", "7")
    assert capped.exit_code == 0, capped.output
    shown = [int(v) for v in re.findall(r"│ (\d+) +│", capped.stdout)]
    assert shown == list(range(7))
    assert "… 993 more rows not shown; use --format csv" in capped.stderr and "(1000 rows)" in capped.stderr
    vertical = run("sql", "SELECT range AS i FROM range(1000)", "--catalog", root, "-f", "vertical", "--max-rows", "3")
    assert vertical.stdout.count("-[ row ") == 3 and "997 more rows not shown" in vertical.stderr
    out = tmp_path / "t.txt"
    to_file = run(
        "sql", "SELECT range AS i FROM range(50)", "--catalog", root, "-f", "table", "--max-rows", "5", "-o", str(out)
    )
    assert to_file.exit_code == 0 and "45 more rows not shown" in to_file.stderr
    assert "│ 4 " in out.read_text() and "│ 5 " not in out.read_text()
    whole = run("sql", "SELECT range AS i FROM range(5)", "--catalog", root, "-f", "table", "--max-rows", "5")
    assert "not shown" not in whole.stderr and "(5 rows)" in whole.stderr


def test_sql_csv_and_json_render_cells_alike(root: str) -> None:
    """Numbers, strings and dates as Arrow writes them; other types (timestamps, lists, blobs) as DuckDB renders
    them as text; a repeated column name stays in the CSV header and gets a suffix in JSON."""
    query = (
        "SELECT 1 AS n, 'a\"b,c' AS s, NULL AS z, TIMESTAMPTZ '2026-01-02 03:04:05+00' AS t, [1, 2] AS l, "
        "DATE '2026-01-02' AS d, 2 AS n"
    )
    as_csv = list(csv.reader(io.StringIO(run("sql", query, "--catalog", root, "-f", "csv").stdout)))
    assert as_csv == [
        ["n", "s", "z", "t", "l", "d", "n"],
        ["1", 'a"b,c', "", "2026-01-02 03:04:05+00", "[1, 2]", "2026-01-02", "2"],
    ]
    [row] = json_lines(run("sql", query, "--catalog", root, "-f", "json").stdout)
    assert row == {
        "n": 1,
        "s": 'a"b,c',
        "z": None,
        "t": "2026-01-02 03:04:05+00",
        "l": [1, 2],
        "d": "2026-01-02",
        "n_1": 2,
    }


def test_sql_keeps_the_query_order(root: str) -> None:
    query = "SELECT range AS i FROM range(100000) ORDER BY i DESC"
    assert [r["i"] for r in json_lines(run("sql", query, "--catalog", root, "-f", "json").stdout)][:3] == [
        99999,
        99998,
        99997,
    ]
    rows = list(csv.reader(io.StringIO(run("sql", query, "--catalog", root, "-f", "csv").stdout)))
    assert rows[1:4] == [["99999"], ["99998"], ["99997"]] and len(rows) == 100001


def test_sql_failure_mid_stream_exits_1_and_leaves_no_file(root: str, tmp_path: Path) -> None:
    """An error after the first batches: stdout has the rows before it, a file is written whole or not at all."""
    query = "SELECT CASE WHEN range >= 2000000 THEN error('boom') ELSE range END AS i FROM range(4000000)"
    streamed = run("sql", query, "--catalog", root, "-f", "csv")
    assert streamed.exit_code == 1 and "boom" in streamed.stderr
    assert 1 < streamed.stdout.count("\n") <= 2000001
    (tmp_path / "out").mkdir()
    result = run("sql", query, "--catalog", root, "-f", "csv", "-o", str(tmp_path / "out" / "q.csv"))
    assert result.exit_code == 1 and "boom" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


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
    assert summary["rows"] == 1  # the accepted add pair: rejected pairs stay unless asked for
    assert Path(summary["files"][0]).exists() and Path(summary["card"]).exists()
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
    assert "\r" not in auto.stdout and auto.stdout.count("\n") == 5  # Unix line ends, as shell tools expect
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
    assert {"pairs", "renders", "failures"} <= {r["name"] for r in json_lines(tables.stdout)}
    described = run("sql", "DESCRIBE renders", "--catalog", root, "--format", "json")
    assert "generation" in {r["column_name"] for r in json_lines(described.stdout)}
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


def _without_none(annotation):
    if get_origin(annotation) in (Union, types.UnionType):
        [annotation] = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


def _choices(param) -> tuple:
    """The choices typer offers for an option (typer >= 0.2x keeps them on the type descriptor, click on the type)."""
    choices = getattr(getattr(param, "type", None), "choices", None)
    return tuple(choices if choices is not None else param.type_descriptor.choices)


def test_export_options_are_the_config_fields() -> None:
    params = {p.name: p for p in get_command(app).commands["export"].params}
    assert set(params) - {"help"} == set(ExportConfig.model_fields) | {"catalog", "out"}
    for name, field in ExportConfig.model_fields.items():
        param, flag = params[name], "--" + name.replace("_", "-")
        assert param.opts[0] == flag and param.help == escape(field.description), name
        assert param.default == field.get_default(call_default_factory=True), name
        annotation = _without_none(field.annotation)
        if get_origin(annotation) is Literal:
            assert _choices(param) == get_args(annotation), name
        elif get_origin(annotation) is list:
            assert param.multiple, name
            item = get_args(annotation)[0]
            if get_origin(item) is Literal:  # typer takes no list of choices: the model checks, the metavar shows
                assert param.metavar == "|".join(get_args(item)) + ",...", name
        elif annotation is bool:
            assert param.is_flag and param.secondary_opts == [f"--no-{flag[2:]}"], name
        low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
        assert param.min == low, name
    assert params["licenses"].opts == ["--licenses", "--license"] and params["format"].opts == ["--format", "-f"]


def test_export_command_exports_only_accepted_pairs_unless_asked(root: str, tmp_path: Path) -> None:
    decisions = {r["pair_id"]: r["decision"] for r in Catalog(root).query("SELECT * FROM pairs").to_pylist()}
    assert sorted(decisions.values()) == ["accepted", "accepted", "rejected", "rejected"]

    def exported(*args: str) -> dict[str, str]:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        result = run("export", "--catalog", root, "--format", "csv", "--out", str(out), *args)
        assert result.exit_code == 0, result.output
        with open(json.loads(result.stdout)["files"][0], newline="") as f:
            return {r["pair_id"]: r["decision"] for r in csv.DictReader(f)}

    assert exported() == {p: d for p, d in decisions.items() if d == "accepted"}
    assert exported("--decisions", "accepted,rejected") == decisions
    assert exported("--decision", "rejected", "--decision", "accepted") == decisions
    assert set(exported("--decisions", "rejected").values()) == {"rejected"}


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--format", "tar"], "--format"),
        ([], "--format"),  # neither a format nor a preset
        (["--preset", "diffsynth-vace", "--format", "webdataset"], "--format"),
        (["--preset", "diffsynth-nope"], "--preset"),
        (["--format", "csv", "--cap", "0"], "--cap"),
        (["--format", "csv", "--shard-size", "0"], "--shard-size"),
        (["--format", "csv", "--shard-mb", "0"], "--shard-mb"),
        (["--format", "csv", "--split", "train=2"], "--split"),
        (["--format", "csv", "--split-by", "object"], "--split-by"),
        (["--format", "csv", "--mask-format", "png"], "--mask-format"),
        (["--format", "csv", "--decisions", "accepted,maybe"], "--decisions"),
    ],
)
def test_export_bad_choice_or_range_is_a_usage_error_naming_the_option(
    root: str, tmp_path: Path, args: list[str], option: str
) -> None:
    out = tmp_path / "out"
    result = run("export", "--catalog", root, "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr and not result.stdout
    assert not out.exists()
