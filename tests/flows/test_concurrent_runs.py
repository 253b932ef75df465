"""Three ``vpf run``s started together on one catalog: every table holds one raw row per id (the views would hide
duplicates; the raw Parquet that plain readers see must not have them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from catalog.schema import ID_COLUMNS
from catalog.store import Catalog


VPF = str(Path(sys.executable).with_name("vpf"))


def test_three_runs_at_once_leave_one_raw_row_per_id(vpf_env, tiny_samples, tmp_path: Path) -> None:
    manifest, n_objects = tiny_samples
    catalog = tmp_path / "catalog"
    args = [VPF, "run", str(manifest), "--catalog", str(catalog), "--frames", "17", "--height", "64", "--width", "96",
            "--engine", "null", "--no-previews", "--no-gallery", "--json"]  # fmt: skip
    runs = [subprocess.Popen(args, env=vpf_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]  # fmt: skip
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    cat = Catalog(catalog)
    counted = {}
    for table, column in ID_COLUMNS.items():
        if table == "runs":  # a run rewrites its own row (running, heartbeats, final status) under one id
            continue
        raw = [
            v
            for path in cat.fragments(table)
            for v in pq.read_table(cat.fs.open(path, "rb")).column(column).to_pylist()
        ]
        counted[table] = len(raw)
        assert len(raw) == len(set(raw)), f"{table}: {len(raw)} raw rows for {len(set(raw))} ids"
    assert counted["pairs"] == 2 * n_objects and counted["renders"] == n_objects  # the work was done, once
