"""``vpf sql`` cannot take the machine: results stream in bounded memory, the display is capped, DuckDB runs under a
memory limit with a spill folder, and a query past them fails with exit 1 and a clear message.

The 10-million-row runs are real ``vpf`` processes; their peak RSS is their own (``RUSAGE_CHILDREN`` of a small
parent that runs nothing else)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog import views
from catalog.sql import QueryOutOfMemory, stream_read_only
from catalog.store import Catalog
from catalog.views import MEMORY_ENV, QueryLimits
from flows.cli import app
from tests.catalog.catalog_data import build_graph


ROWS = 10_000_000
BIG = f"SELECT range AS i, range * 2 AS j, 'row ' || range AS s FROM range({ROWS})"
PEAK_RSS_LIMIT = 1 << 30
# Holds every row at once (a list per group): cannot spill, so past the memory limit it fails.
UNSPILLABLE = "SELECT range % 2 AS k, list(range) AS l FROM range(30000000) GROUP BY ALL"
# Sorts more than 64 MB of text: spills past a small memory limit.
SPILLING = "SELECT md5(range::VARCHAR) AS h FROM range(3000000) ORDER BY h"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("bounds") / "cat")
    build_graph(Catalog(root), n_renders=1)
    return root


# Runs ``vpf`` as the only child of a small Python process and writes that child's peak RSS to a file. Measured from
# the test process, a child's ``ru_maxrss`` would include the test process's own RSS at the fork.
_PEAK = """
import resource, subprocess, sys
peak_file, timeout, *command = sys.argv[1:]
proc = subprocess.Popen(command)
try:
    code = proc.wait(timeout=float(timeout))
except subprocess.TimeoutExpired:
    proc.kill()
    code = proc.wait()
with open(peak_file, "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code)
"""


def _measured(args: list[str], peak_file: Path, timeout: float) -> list[str]:
    return [sys.executable, "-c", _PEAK, str(peak_file), str(timeout), sys.executable, "-m", "flows.cli", *args]


def vpf(args: list[str], timeout: float = 60) -> tuple[int, int, str]:
    """Run ``vpf`` in a child process, its stdout to /dev/null: exit code, its peak RSS in bytes, stderr."""
    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder, "peak")
        done = subprocess.run(
            _measured(args, peak, timeout), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout + 30
        )
        return done.returncode, int(peak.read_text()), done.stderr.decode()


def vpf_lines(args: list[str], timeout: float = 60) -> tuple[int, int, int, bytes, bytes]:
    """Run ``vpf`` with stdout read here in chunks: exit code, its peak RSS in bytes, lines written, the first and
    the last 200 bytes."""
    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder, "peak")
        proc = subprocess.Popen(_measured(args, peak, timeout), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        lines, head, tail = 0, b"", b""
        while chunk := proc.stdout.read(1 << 20):
            lines += chunk.count(b"\n")
            head = head or chunk[:200]
            tail = (tail + chunk)[-200:]
        proc.stdout.close()
        code = proc.wait(timeout=timeout + 30)
        return code, int(peak.read_text()), lines, head, tail


@pytest.mark.parametrize("format", ["csv", "json"])
def test_ten_million_rows_stream_as_text_in_bounded_memory(root: str, format: str) -> None:
    code, peak, lines, head, tail = vpf_lines(["sql", BIG, "--catalog", root, "--format", format])
    assert code == 0
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
    if format == "csv":
        assert lines == ROWS + 1 and head.startswith(b'"i","j","s"\n0,0,"row 0"\n')
        assert tail.endswith(b'9999999,19999998,"row 9999999"\n')
    else:
        assert lines == ROWS and head.startswith(b'{"i":0,"j":0,"s":"row 0"}\n')
        assert tail.endswith(b'{"i":9999999,"j":19999998,"s":"row 9999999"}\n')
    print(f"vpf sql --format {format}, {ROWS} rows: peak RSS {peak >> 20} MiB")


def test_ten_million_rows_stream_as_parquet_in_bounded_memory(root: str, tmp_path: Path) -> None:
    out = tmp_path / "big.parquet"
    code, peak, err = vpf(["sql", BIG, "--catalog", root, "--format", "parquet", "--out", str(out)])
    try:
        assert code == 0, err
        assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
        meta = pq.ParquetFile(out).metadata
        assert meta.num_rows == ROWS and meta.num_row_groups > 1  # written batch by batch
        print(f"vpf sql --format parquet, {ROWS} rows: peak RSS {peak >> 20} MiB")
    finally:
        out.unlink(missing_ok=True)


def test_ten_million_rows_as_a_table_show_the_first_rows_and_a_note(root: str) -> None:
    code, peak, err = vpf(["sql", BIG, "--catalog", root, "--format", "table", "--max-rows", "20"])
    assert code == 0, err
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
    assert f"… {ROWS - 20} more rows not shown; use --format csv" in err and f"({ROWS} rows)" in err
    print(f"vpf sql --format table --max-rows 20, {ROWS} rows: peak RSS {peak >> 20} MiB")


def test_a_reader_that_goes_away_stops_the_query_quietly(root: str) -> None:
    """``vpf sql … | head``: exit 1 once stdout is closed, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "sql", BIG, "--catalog", root, "-f", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(1000).startswith(b'"i","j","s"')
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and "Traceback" not in err, err


def test_a_query_past_the_memory_limit_exits_1_naming_it(root: str) -> None:
    code, peak, err = vpf(["sql", UNSPILLABLE, "--catalog", root, "--memory-limit", "64MB", "--format", "csv"])
    assert code == 1
    assert err.startswith("out of memory: the query needs more than its memory limit (61.0 MiB)")
    assert "Out of Memory Error" in err and "--memory-limit" in err and err.count("\n") == 1
    assert "Traceback" not in err and peak < PEAK_RSS_LIMIT


def test_the_memory_limit_comes_from_the_environment_too(root: str) -> None:
    result = CliRunner().invoke(app, ["sql", UNSPILLABLE, "--catalog", root], env={MEMORY_ENV: "64MB"})
    assert result.exit_code == 1 and "out of memory" in result.stderr and "61.0 MiB" in result.stderr


def test_a_sort_past_the_memory_limit_spills_and_the_spill_is_bounded_too(root: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    args = ["sql", SPILLING, "--catalog", root, "--memory-limit", "64MB", "--temp-dir", str(spill), "-f", "csv"]
    code, _, lines, _, _ = vpf_lines(args)
    assert code == 0 and lines == 3_000_001
    code, _, err = vpf([*args, "--spill-limit", "1MB"])
    assert code == 1 and "out of memory" in err and "--spill-limit" in err
    assert list(spill.iterdir()) == []  # DuckDB removes its spill files when the connection closes


def test_the_default_spill_folder_is_fresh_and_removed(root: str) -> None:
    def folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob(f"vpf-sql-{os.getpid()}-*"))

    before = folders()
    with stream_read_only(Catalog(root), SPILLING, limits=QueryLimits("64MB")) as stream:
        rows = next(stream.batches).num_rows  # the sort is done: it spilled to a folder of its own
        [spill] = folders() - before
        assert any(spill.iterdir())
        rows += sum(batch.num_rows for batch in stream.batches)
    assert rows == 3_000_000 and folders() == before


def test_stream_read_only_raises_out_of_memory_with_the_limit(root: str) -> None:
    with pytest.raises(QueryOutOfMemory) as caught:
        with stream_read_only(Catalog(root), UNSPILLABLE, limits=QueryLimits("64MB")) as stream:
            for _ in stream.batches:
                pass
    assert caught.value.limit == "61.0 MiB"


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--memory-limit", "lots"], "memory limit: 'lots'"), (["--spill-limit", "4XB"], "spill limit: '4XB'")],
)
def test_a_bad_size_is_a_usage_error(root: str, args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["sql", "SELECT 1", "--catalog", root, *args])
    assert result.exit_code == 2 and named in result.stderr


def test_query_limits_resolve_options_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (MEMORY_ENV, views.TEMP_DIR_ENV, views.SPILL_ENV):
        monkeypatch.delenv(name, raising=False)
    assert QueryLimits.resolve() == QueryLimits()
    monkeypatch.setenv(MEMORY_ENV, "2GB")
    monkeypatch.setenv(views.TEMP_DIR_ENV, "/tmp/spill-here")
    assert QueryLimits.resolve() == QueryLimits("2GB", "/tmp/spill-here")
    assert QueryLimits.resolve("1GB").memory_limit == "1GB"
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match=r"memory limit \(\$VPF_SQL_MEMORY_LIMIT\): 'lots'"):
        QueryLimits.resolve()
    filled = QueryLimits().with_defaults()
    assert filled.memory_limit == views.default_memory_limit() and filled.temp_directory
    assert filled.temp_directory != QueryLimits().with_defaults().temp_directory  # one folder per connection


def test_default_memory_limit_is_a_fraction_of_the_machine() -> None:
    mib = int(views.default_memory_limit().removesuffix("MiB"))
    assert mib == int(views.machine_memory() * views.MEMORY_FRACTION) >> 20 and mib > 0


def test_the_sandbox_sets_the_limits_and_users_cannot_change_them(root: str, tmp_path: Path) -> None:
    catalog = Catalog(root)
    con = views.connect(catalog, read_only_guard=True, limits=QueryLimits("100MB", str(tmp_path / "s"), "1GB"))
    settings = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
        "current_setting('max_temp_directory_size')"
    ).fetchall()[0]
    assert settings == ("95.3 MiB", str(tmp_path / "s"), "953.6 MiB")
    for sql in ("SET memory_limit = '100GB'", "SET temp_directory = '/'", "RESET memory_limit"):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute(sql)
    con.close()
    default = catalog.connect(read_only_guard=True)  # Catalog.query's connections are bounded too
    assert default.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] != "0 bytes"
    default.close()
