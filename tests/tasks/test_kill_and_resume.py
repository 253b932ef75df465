"""kill -9 at random points of a run (ingest, render, a catalog write, a compaction), then a rerun: nothing finished
is lost, nothing is written twice, nothing dangles, and the catalog ends exactly as one clean run leaves it.

Each trial forks a process that runs ``tests/tasks/chaos_driver.py``'s stages on two tiny clips (17×64×96, null engine) plus
one missing file, lets it SIGKILL itself at the trial's point, then reruns the same stages here to completion.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import catalog.storage
from catalog.maintenance import media_columns
from catalog.schema import ID_COLUMNS, TABLES
from catalog.store import Catalog
from tests.corpus import write_good_clips
from tests.tasks.chaos_driver import arm, pipeline


FORK = multiprocessing.get_context("fork")  # a forked child starts in milliseconds, with everything imported


def _killed_run(manifest: str, catalog_root: str, point: str, batch_size: int = 1) -> None:
    """The child: the same stages as ``python -m tests.tasks.chaos_driver``, dying at ``point``."""
    arm(point)
    pipeline(manifest, catalog_root, batch_size=batch_size)


CONTENT_TABLES = [t for t in TABLES if t != "runs"]


def _raw_ids(cat: Catalog, table: str) -> list[str]:
    key = ID_COLUMNS[table]
    return [v for p in cat.fragments(table) for v in pq.read_table(cat.fs.open(p, "rb")).column(key).to_pylist()]


def _view_ids(cat: Catalog, table: str) -> set[str]:
    return set(cat.query(f"SELECT {ID_COLUMNS[table]} FROM {table}").column(0).to_pylist())


def _media_files(cat: Catalog) -> tuple[set[str], list[str]]:
    """``(catalog-relative media uris, leftover temporary files of writes cut short, anywhere in the catalog)``."""
    media_dir = Path(cat.path("media"))
    paths = [p for p in media_dir.rglob("*") if p.is_file()] if media_dir.exists() else []
    files = {"media/" + p.relative_to(media_dir).as_posix() for p in paths if not p.name.startswith(".tmp-")}
    return files, [str(p) for p in Path(cat.root).rglob(".tmp-*")]


def _referenced_media(cat: Catalog) -> set[str]:
    uris: set[str] = set()
    for table in CONTENT_TABLES:
        for column in media_columns(table):
            uris.update(u for u in cat.query(f"SELECT {column} FROM {table}").column(0).to_pylist() if u)
    return uris


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    good = write_good_clips(tmp_path_factory.mktemp("chaos-clips"), 2)
    with open(good["manifest"], "a") as f:
        f.write("missing.mp4,,,,\n")  # a bad row: its failure must be recorded once across kills and reruns
    return good["manifest"]


@pytest.fixture(scope="module")
def reference(manifest: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One clean run: the ids every trial must end with, and what each atomic write of a run is (for the trials
    that kill at a random write)."""
    cat = Catalog(tmp_path_factory.mktemp("chaos-reference"))
    phases: list[str] = []
    in_compaction = {"on": False}
    original_replace, original_compact = os.replace, Catalog.compact

    class Counting:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src: str, dst: str) -> None:
            kind = "compaction" if in_compaction["on"] else ("media" if "/media/" in dst else "fragment")
            phases.append(kind)
            original_replace(src, dst)

    def compacting(self, *args, **kwargs):
        in_compaction["on"] = True
        try:
            return original_compact(self, *args, **kwargs)
        finally:
            in_compaction["on"] = False

    catalog.storage.os, Catalog.compact = Counting(), compacting
    try:
        counts = pipeline(manifest, str(cat.root))
    finally:
        catalog.storage.os, Catalog.compact = os, original_compact
    assert counts["renders"] == 2 and not cat.check()
    assert {"media", "fragment", "compaction"} <= set(phases), "the atomic writes were not observed"
    return {"ids": {t: _view_ids(cat, t) for t in CONTENT_TABLES}, "phases": phases}


def _points(reference: dict) -> list[str]:
    """Eleven kill points: at ingest, in the engine, in compaction, and five at random atomic writes of the run."""
    rng = random.Random(12)
    writes = len(reference["phases"])
    targeted = ["ingest:1", "ingest:2", "render:1", "render:2", "compact:1", "compact:2"]
    return targeted + [f"write:{n}" for n in sorted(rng.sample(range(1, writes + 1), 5))]


def test_kill_9_at_random_points_then_rerun(manifest: str, reference: dict, tmp_path: Path) -> None:
    points = _points(reference)
    assert len(points) >= 10
    phases_hit = set()
    for trial, point in enumerate(points):
        cat = Catalog(tmp_path / f"trial-{trial}")
        child = FORK.Process(target=_killed_run, args=(manifest, str(cat.root), point))  # imports already done
        child.start()
        child.join(timeout=300)
        assert child.exitcode == -signal.SIGKILL, f"{point}: the run was not killed there (exit {child.exitcode})"
        kind, _, nth = point.partition(":")
        if kind == "write":
            phases_hit.add(reference["phases"][int(nth) - 1])
        else:
            phases_hit.add(kind)
        before = {t: set(_raw_ids(cat, t)) for t in CONTENT_TABLES}
        if point.startswith("ingest:"):  # every clip finished before the kill is recorded
            assert len(before["clips"]) == int(nth) - 1, (point, before["clips"])

        pipeline(manifest, str(cat.root), compact=False)  # the rerun, without compaction: duplicates would show

        problems = cat.check()
        assert not problems, f"{point}: {[str(p) for p in problems]}"
        for table in CONTENT_TABLES:
            ids = _view_ids(cat, table)
            assert ids == reference["ids"][table], f"{point}: {table} differs from a clean run"
            assert before[table] <= ids, f"{point}: {table} lost rows recorded before the kill"
        if kind == "compact" or (kind == "write" and reference["phases"][int(nth) - 1] == "compaction"):
            cat.compact(small_bytes=1 << 30)  # a compaction cut short leaves merged rows twice until the next one
        for table in CONTENT_TABLES:
            raw = _raw_ids(cat, table)
            assert len(raw) == len(set(raw)), f"{point}: {table} holds a row twice"
        # What the kill left unnamed: media stored before their rows (renders are not byte-reproducible, so the
        # rerun may name other bytes) and the temporary file of a write cut short. gc collects exactly those.
        files, partial = _media_files(cat)
        unnamed = files - _referenced_media(cat)
        if kind != "write":
            assert not partial, f"{point}: temporary files left without a write being cut: {partial}"
        collected = cat.gc(older_than_s=0)
        assert {p.rsplit("/media/", 1)[1] for p in collected["orphan_media"]} == {u[len("media/") :] for u in unnamed}
        assert sorted(collected["partial_writes"]) == sorted(partial)
        files, partial = _media_files(cat)
        assert files == _referenced_media(cat) and not partial, f"{point}: orphan media after gc"
        assert not cat.check(), f"{point}: gc removed media a row names"
    assert {"ingest", "render", "compact", "media", "fragment"} <= phases_hit, phases_hit


def test_a_render_batch_killed_at_its_second_render_keeps_the_first(manifest: str, reference: dict, tmp_path) -> None:
    """Both clips in one render batch, kill -9 inside the engine on the second job: the first render, its media and
    its pairs are in the catalog; the rerun renders only the second one."""
    cat = Catalog(tmp_path / "cat")
    child = FORK.Process(target=_killed_run, args=(manifest, str(cat.root), "render:2", 2))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"the run was not killed in its second render (exit {child.exitcode})"
    assert len(_view_ids(cat, "renders")) == 1
    assert len(_view_ids(cat, "pairs")) == 2  # the first render's remove and add pairs
    assert not cat.check()

    counts = pipeline(manifest, str(cat.root), compact=False, batch_size=2)
    assert counts == {"renders": 1, "already_done": 1}
    for table in CONTENT_TABLES:
        assert _view_ids(cat, table) == reference["ids"][table], f"{table} differs from a clean run"
