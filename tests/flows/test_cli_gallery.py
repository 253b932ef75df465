"""``vpf gallery``: exit codes, output, and ``--serve`` on 127.0.0.1 with Range support."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.catalog.gallery_data import make_small_catalog


@pytest.fixture(scope="module")
def catalog_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("cli-gallery") / "cat")
    make_small_catalog(root, n_renders=2)
    return root


def test_builds_the_selected_pairs(catalog_root: str, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(
        app, ["gallery", "--catalog", catalog_root, "--where", "edit_type = 'add'", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2 pairs" in result.output and (out / "index.html").resolve().as_uri() in result.output
    assert (out / "data" / "chunks" / "00000.js").read_text().count('"edit_type":"add"') == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "no_such_column = 1"], "failed against the catalog"),
        (["--where", "1=1; DROP VIEW pairs"], "may not contain"),
        (["--media", "hardlink"], "hardlink"),
    ],
)
def test_bad_arguments_exit_2(catalog_root: str, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["gallery", "--catalog", catalog_root, "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_refuses_a_folder_that_is_not_a_gallery(catalog_root: str, tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("keep me")
    result = CliRunner().invoke(app, ["gallery", "--catalog", catalog_root, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "holds no gallery" in result.output
    assert (tmp_path / "thesis.tex").read_text() == "keep me"


def test_serve_answers_on_localhost_with_ranges(catalog_root: str, tmp_path: Path) -> None:
    vpf = str(Path(sys.executable).parent / "vpf")
    proc = subprocess.Popen(
        [vpf, "gallery", "--catalog", catalog_root, "--out", str(tmp_path / "site"), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving "):
                break
        url = lines[-1].split()[1]
        assert url.startswith("http://127.0.0.1:"), lines
        with urllib.request.urlopen(url + "index.html") as response:
            assert response.status == 200 and b"data/index.js" in response.read()
        request = urllib.request.Request(url + "app.js", headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 206 and len(response.read()) == 10
    finally:
        proc.terminate()
        proc.wait(timeout=10)
