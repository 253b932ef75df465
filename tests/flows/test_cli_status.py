"""``vpf status`` as a shell user pipes it: tab-separated lines with whole ids, nothing on stderr, exit 0 when the
reader goes away (``| head -1``); every ``vpf`` command ends the same way on a closed pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from catalog.store import Catalog
from flows.cli import app
from flows.cli_factory import status_sections
from flows.options import quiet_on_closed_pipe
from flows.status import catalog_status


VPF = str(Path(sys.executable).parent / "vpf")
LONG_ID = "run_" + "0123456789abcdef" * 4  # longer than any column an 80-column table gives it
SOURCE = "s3://bucket/incoming/a folder\twith a tab/manifest.csv"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A catalog with two runs (one with ``LONG_ID``) and a failure whose message spans two lines."""
    root = str(tmp_path_factory.mktemp("status") / "cat")
    cat = Catalog(root)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    cat.append(
        "runs",
        [
            {"run_id": LONG_ID, "status": "completed_with_failures", "source": SOURCE, "n_clips": 3, "n_pairs": 4,
             "n_failures": 1, "started_at": started, "flow_name": "build-pairs"},
            {"run_id": "run_short", "status": "completed", "source": "clips/", "n_clips": 1, "n_pairs": 2,
             "n_failures": 0, "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "flow_name": "build-pairs"},
        ],
    )  # fmt: skip
    cat.append(
        "failures",
        [{"failure_id": "f1", "stage": "ingest", "item_kind": "source", "item_id": "a.mp4", "reason": "not_found",
          "message": "a.mp4: no such file\nsecond line", "run_id": LONG_ID}],
    )  # fmt: skip
    return root


def _sections(stdout: str) -> dict[str, list[list[str]]]:
    """Piped ``vpf status`` output: each section's title (without "# ") → its lines split at tabs."""
    sections: dict[str, list[list[str]]] = {}
    for block in stdout.strip("\n").split("\n\n"):
        title, *lines = block.split("\n")
        assert title.startswith("# "), block
        sections[title[2:]] = [line.split("\t") for line in lines]
    return sections


def test_piped_status_is_tab_separated_lines_with_whole_ids(catalog: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["status", "--catalog", catalog])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]
    assert result.stderr == ""
    sections = _sections(result.stdout)
    runs = sections[f"last runs in {catalog}"]
    assert runs[0] == ["run_id", "status", "started_utc", "source", "clips", "pairs", "failures"]
    assert runs[1] == [LONG_ID, "completed_with_failures", "2026-01-02 03:04:05", SOURCE.replace("\t", " "), "3",
                       "4", "1"]  # fmt: skip
    assert runs[2][:2] == ["run_short", "completed"]
    assert [LONG_ID in line for line in result.stdout.splitlines()].count(True) == 1  # whole, on one line
    assert ["runs", "2"] in sections["rows"] and ["failures", "1"] in sections["rows"]
    assert sections["failures"][0] == ["stage", "reason", "count", "superseded", "example"]
    assert sections["failures"][1] == ["ingest", "not_found", "1", "0", "a.mp4: no such file second line"]


def test_failures_made_good_by_a_later_run_are_superseded_not_open(tmp_path) -> None:
    """A stale ``no_vocabulary`` failure of a clip that a later run annotated is superseded; failures with no later
    success, or whose "success" came in the same run or before the failure, stay open (negative controls)."""
    cat = Catalog(str(tmp_path / "cat"))
    t = [datetime(2026, 1, 1, h, tzinfo=timezone.utc) for h in range(6)]
    failure = {"stage": "segment", "item_kind": "clip", "reason": "no_vocabulary", "message": "no phrase"}
    cat.append("failures", [
        {**failure, "failure_id": "f_fixed", "item_id": "clip_fixed", "run_id": "r1", "created_at": t[1]},
        {**failure, "failure_id": "f_open", "item_id": "clip_open", "run_id": "r1", "created_at": t[1]},
        {**failure, "failure_id": "f_same", "item_id": "clip_same", "run_id": "r2", "created_at": t[2]},
        {**failure, "failure_id": "f_before", "item_id": "clip_before", "run_id": "r2", "created_at": t[3]},
        {"failure_id": "f_obj", "stage": "segment", "item_kind": "object", "item_id": "obj_ok", "reason": "empty_mask",
         "message": "m", "run_id": "r1", "created_at": t[1]},
        {"failure_id": "f_obj_bad", "stage": "segment", "item_kind": "object", "item_id": "obj_bad",
         "reason": "empty_mask", "message": "m", "run_id": "r1", "created_at": t[1]},
        {"failure_id": "f_src", "stage": "ingest", "item_kind": "source", "item_id": "a.mp4", "reason": "not_found",
         "message": "a.mp4: no such file", "run_id": "r1", "created_at": t[1]},
    ])  # fmt: skip
    obj = {"mask_source": "sam3", "mask_uri": "media/x.npz", "qa_status": "ok"}
    cat.append("objects", [
        {**obj, "object_id": "o1", "clip_id": "clip_fixed", "run_id": "r2", "created_at": t[2]},  # later run
        {**obj, "object_id": "o2", "clip_id": "clip_same", "run_id": "r2", "created_at": t[3]},  # same run
        {**obj, "object_id": "o3", "clip_id": "clip_before", "run_id": "r1", "created_at": t[2]},  # before
        {**obj, "object_id": "obj_ok", "clip_id": "c", "run_id": "r2", "created_at": t[2]},
        {**obj, "object_id": "obj_bad", "clip_id": "c", "run_id": "r2", "created_at": t[2], "qa_status": "rejected"},
    ])  # fmt: skip
    cat.append("sources", [{"source_id": "s1", "uri": "a.mp4", "run_id": "r2", "created_at": t[2]}])
    cat.append("clips", [{"clip_id": "c", "source_id": "s1", "start_frame": 0, "end_frame": 9, "frame_stride": 1,
                          "num_frames": 9, "fps": 8.0, "width": 8, "height": 8, "video_uri": "media/c.mp4",
                          "run_id": "r2", "created_at": t[2]}])  # fmt: skip
    failures = {(f["stage"], f["reason"]): f for f in catalog_status(str(tmp_path / "cat"))["failures"]}
    assert (failures["segment", "no_vocabulary"]["count"], failures["segment", "no_vocabulary"]["superseded"]) == (
        3,
        1,
    )
    assert (failures["segment", "empty_mask"]["count"], failures["segment", "empty_mask"]["superseded"]) == (1, 1)
    assert (failures["ingest", "not_found"]["count"], failures["ingest", "not_found"]["superseded"]) == (0, 1)
    lines = _sections(CliRunner().invoke(app, ["status", "--catalog", str(tmp_path / "cat")]).stdout)["failures"]
    assert ["segment", "no_vocabulary", "3", "1", "no phrase"] in lines


def test_the_terminal_table_never_wraps_an_id(catalog: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = status_sections(catalog_status(catalog), catalog)[0]
    for width in (80, 200):  # a table when it fits, else one block per run
        out = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
        runs.show(out)
        assert any(LONG_ID in line for line in out.file.getvalue().splitlines()), (width, out.file.getvalue())
    # negative control: the table status printed before (id column folded to fit 80 columns) splits the id
    old = Table()
    for name in runs.columns:
        old.add_column(name, overflow="fold")
    for row in runs.rows:
        old.add_row(*row)
    out = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    out.print(old)
    assert not any(LONG_ID in line for line in out.file.getvalue().splitlines())


def _status_env() -> dict[str, str]:
    """A shell user's environment: Python's default warning filters (a ``UserWarning`` would show)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONWARNINGS"}


def test_status_into_a_closed_pipe_exits_0_quietly(catalog: str) -> None:
    """The reader is gone before ``vpf status`` writes a byte: exit 0, no traceback, nothing on stderr."""
    proc = subprocess.Popen(
        [VPF, "status", "--catalog", catalog], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_status_env()
    )
    proc.stdout.close()  # the reader goes away at once
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert stderr == "", stderr
    # negative control: the same command without the guard, into the same closed pipe, exits 1 (click's way)
    bare = "import typer; from flows.cli_factory import status_command as s; a = typer.Typer(); a.command()(s); a()"
    control = subprocess.Popen(
        [sys.executable, "-c", bare, "--catalog", catalog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_status_env(),
    )  # fmt: skip
    control.stdout.close()
    control.stderr.read()
    assert control.wait(timeout=120) == 1


def test_status_piped_into_head_exits_0(catalog: str) -> None:
    shell = f"set -o pipefail; {VPF} status --catalog {catalog} | head -1"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=_status_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"# last runs in {catalog}\n" and result.stderr == ""


def test_every_command_is_guarded_against_closed_pipes() -> None:
    def commands(typer_app: typer.Typer):
        yield from typer_app.registered_commands
        for group in typer_app.registered_groups:
            yield from commands(group.typer_instance)

    unguarded = [info.name or info.callback.__name__ for info in commands(app)
                 if not getattr(info.callback, "_closed_pipe_guard", False)]  # fmt: skip
    assert not unguarded
    assert {"status", "run", "sql", "export", "stats"} <= {info.name for info in commands(app)}


def test_a_closed_pipe_ends_a_command_with_exit_0() -> None:
    def writes_into_a_closed_pipe() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    bare, guarded = typer.Typer(), typer.Typer()
    bare.command()(writes_into_a_closed_pipe)
    guarded.command()(quiet_on_closed_pipe(writes_into_a_closed_pipe))
    assert CliRunner().invoke(bare, []).exit_code == 1  # negative control: click's own handling of EPIPE
    result = CliRunner().invoke(guarded, [])
    assert result.exit_code == 0, result.output
