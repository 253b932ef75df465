"""An export folder holds one export: re-exporting refuses or (``overwrite``) replaces exactly the earlier export's
files; readers (``datasets.load_dataset``) never see a part of one, even when the export is killed (``kill -9``, in
a subprocess) at any point; the next export, ``clean_partial`` or ``gc_exports`` removes what a killed one left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from catalog.export import ExportConfig, ExportError, clean_partial, export, gc_exports
from catalog.export.folder import LOCK, MARKER, _Lock
from catalog.store import Catalog
from tests.catalog.catalog_data import build_graph


BOTH = ["accepted", "rejected"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def graphs(catalog: Catalog) -> list[dict]:
    """Three sources, two renders each: 12 pairs, 6 accepted."""
    return [build_graph(catalog, n_renders=2, seed=s) for s in range(3)]


def run_export(catalog: Catalog, out: Path | str, **options) -> dict:
    return export(catalog, str(out), ExportConfig(**options))


def hidden_beside(out: Path) -> list[str]:
    """What an export leaves beside its folder (staging, set-aside, lock): nothing once it is done."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def files_under(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def load(out: Path, tmp_path: Path):
    import datasets

    return datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))


def pair_ids(out: Path, tmp_path: Path) -> list[str]:
    return sorted(load(out, tmp_path)["pair_id"])


def manifest_ids(out: Path) -> list[str]:
    return sorted(json.loads((out / "manifest.json").read_text())["pairs"]["train"])


def test_exporting_into_a_folder_that_holds_an_export_needs_overwrite(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "pq"
    first = run_export(catalog, out, format="parquet", decisions=BOTH, shard_size=2)
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    with pytest.raises(ExportError, match=re.escape(f"{out} already holds export {first['export_id']} (")):
        run_export(catalog, out, format="parquet")
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before and hidden_beside(out) == []
    # the case: 12 pairs, then the 6 accepted ones into the same folder: no stale shard remains
    second = run_export(catalog, out, format="parquet", overwrite=True, shard_size=2)
    assert second["replaced"] == first["export_id"] and second["rows"] == 6
    written = {Path(f).relative_to(out).as_posix() for f in second["files"]}
    assert files_under(out) == {"README.md", "manifest.json", *written}
    accepted = sorted(p["pair_id"] for g in graphs for p in g["pairs"] if p["decision"] == "accepted")
    assert pair_ids(out, tmp_path) == manifest_ids(out) == accepted
    assert hidden_beside(out) == []


def test_overwrite_removes_the_earlier_exports_files_of_another_format(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_export(catalog, out, preset="diffsynth-vace", decisions=BOTH)  # media copies under media/
    assert any(p.startswith("media/") for p in files_under(out))
    summary = run_export(catalog, out, format="webdataset", overwrite=True, split="train=0.5,val=0.5")
    assert files_under(out) == {"README.md", "manifest.json", *(Path(f).name for f in summary["files"])}
    # and back to a no-embed Parquet export: the tars go, its media lie under data/<split>/media/
    summary = run_export(catalog, out, format="parquet", embed_media=False, overwrite=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert files_under(out) == {"README.md", "manifest.json", "data/train/metadata.parquet", *manifest["media"]}
    assert manifest["media"] and all(m.startswith("data/train/media/") for m in manifest["media"])


def test_a_folder_with_other_files_is_refused_even_with_overwrite(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ExportError, match=re.escape(f"{out} is not empty and holds no finished export")):
            run_export(catalog, out, format="csv", overwrite=overwrite)
    (out / "notes.txt").unlink()
    first = run_export(catalog, out, format="csv")  # an empty folder is fine
    (out / "media" / "extra.mp4").write_bytes(b"x")  # its manifest lists its media: this one is not
    (out / "train-000000.tar").write_bytes(b"not ours")
    with pytest.raises(ExportError, match=f"holds export {first['export_id']} and files it did not write: ") as info:
        run_export(catalog, out, format="csv", overwrite=True)
    assert "media/extra.mp4" in str(info.value) and "train-000000.tar" in str(info.value)
    assert (out / "train-000000.tar").read_bytes() == b"not ours" and (out / "manifest.json").exists()


def test_an_export_without_a_media_list_owns_its_media_folder(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "old"
    run_export(catalog, out, format="csv")
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["media"]  # as written before the media were listed
    (out / "manifest.json").write_text(json.dumps(manifest))
    run_export(catalog, out, format="webdataset", overwrite=True)
    assert not (out / "media").exists() and not (out / "metadata.csv").exists()


def test_a_failed_export_leaves_the_earlier_one(catalog: Catalog, graphs: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "pq"
    run_export(catalog, out, format="parquet", decisions=BOTH)
    before = {p: (out / p).read_bytes() for p in files_under(out)}

    def progress(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export(catalog, str(out), ExportConfig(format="parquet", overwrite=True), progress=progress)
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before and hidden_beside(out) == []
    assert not list(Path(catalog.path("exports")).glob("*/started.json"))


def test_a_second_export_into_a_folder_being_written_is_refused(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "busy"
    lock = _Lock(str(out.parent / f".{out.name}{LOCK}"))
    assert lock.acquire()
    try:
        with pytest.raises(ExportError, match=f"another export is writing into {out}"):
            run_export(catalog, out, format="csv")
        assert clean_partial(str(out)) == []  # a live export is left alone
    finally:
        lock.release()
    run_export(catalog, out, format="csv")
    assert hidden_beside(out) == []


def test_overwrite_in_place_on_an_object_store(catalog: Catalog, graphs: list[dict]) -> None:
    import fsspec

    out = "memory://vpf-export-folder-test/out"
    first = run_export(catalog, out, format="webdataset", decisions=BOTH, shard_size=2)
    with pytest.raises(ExportError, match="already holds export"):
        run_export(catalog, out, format="webdataset")
    second = run_export(catalog, out, format="webdataset", overwrite=True, shard_size=4)
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find("/vpf-export-folder-test/out"))
    assert names == ["README.md", "manifest.json", "train-000000.tar", "train-000001.tar"]
    assert len(first["files"]) == 6 and second["replaced"] == first["export_id"]
    fs.rm("/vpf-export-folder-test", recursive=True)


# ---------------------------------------------------------------------------------------------- killed exports
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import catalog.export.folder as folder
    from catalog.export import ExportConfig, export
    from catalog.store import Catalog

    root, out, point, in_place, options = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if in_place:  # the object-store protocol, on a local folder
        folder._stageable = lambda out: False
    progress = None
    if point == "first_shard":  # shard_size=1: the first shard closed, the second being written
        def progress(done, total):
            if done == 2:
                die()
    elif point == "card":  # the card written, the manifest not
        write = folder.write_atomic
        def write_atomic(fs, path, data):
            write(fs, path, data)
            if path.endswith("/README.md") and b"Export not finished" not in data:
                die()
        folder.write_atomic = write_atomic
    elif point == "aside":  # the earlier export renamed aside, the new one not yet in place
        rename = os.rename
        def renamed(src, dst):
            rename(src, dst)
            if ".vpf-old-" in dst:
                die()
        os.rename = renamed
    export(Catalog(root), out, ExportConfig.model_validate_json(options), progress=progress)
    """
)


def kill_export(catalog: Catalog, out: Path, point: str, config: ExportConfig, in_place: bool = False) -> None:
    """Run the export in a subprocess that SIGKILLs itself at ``point``."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(catalog.url), str(out), point, "1" if in_place else "0",
         config.model_dump_json()],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize("point", ["first_shard", "card", "aside"])
def test_a_killed_overwrite_leaves_the_earlier_export(
    catalog: Catalog, graphs: list[dict], tmp_path: Path, point: str
) -> None:
    out = tmp_path / "pq"
    run_export(catalog, out, format="parquet", decisions=BOTH, shard_size=1)
    everything = manifest_ids(out)
    kill_export(catalog, out, point, ExportConfig(format="parquet", overwrite=True, shard_size=1))
    assert hidden_beside(out)  # a staged export, or the earlier one set aside
    if point == "aside":  # killed between the two renames: no folder, nothing to load
        assert not out.exists()
        with pytest.raises(FileNotFoundError):
            load(out, tmp_path)
        assert clean_partial(str(out)) and out.is_dir()  # puts it back, drops the staged one
    assert pair_ids(out, tmp_path) == everything == manifest_ids(out)  # the earlier export, whole
    summary = run_export(catalog, out, format="parquet", overwrite=True, shard_size=1)  # cleans, then replaces
    assert hidden_beside(out) == [] and summary["rows"] == 6
    assert pair_ids(out, tmp_path) == manifest_ids(out) and len(manifest_ids(out)) == 6


def test_a_killed_first_export_leaves_no_folder_and_gc_cleans_it(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "pq"
    kill_export(catalog, out, "first_shard", ExportConfig(format="parquet", shard_size=1))
    assert not out.exists() and hidden_beside(out)
    with pytest.raises(FileNotFoundError):
        load(out, tmp_path)
    [started] = Path(catalog.path("exports")).glob("*/started.json")
    assert json.loads(started.read_text())["url"] == str(out)
    assert gc_exports(catalog, older_than_s=3600) == []  # too recent: it may still run
    removed = gc_exports(catalog, older_than_s=0)
    assert hidden_beside(out) == [] and str(started) in removed and not started.exists()
    run_export(catalog, out, format="parquet")  # the folder takes a new export as if nothing happened


@pytest.mark.parametrize("point", ["first_shard", "card"])
def test_a_killed_in_place_export_is_not_loadable_and_is_cleaned(
    catalog: Catalog, graphs: list[dict], tmp_path: Path, point: str
) -> None:
    """The object-store protocol (written in place, manifest last) on a local folder."""
    out = tmp_path / "pq"
    run_export(catalog, out, format="parquet", decisions=BOTH, shard_size=1)
    kill_export(catalog, out, point, ExportConfig(format="parquet", overwrite=True, shard_size=1), in_place=True)
    assert not (out / "manifest.json").exists() and (out / MARKER).exists()
    if point == "first_shard":  # the earlier export is gone, the new one unfinished: the README stub points nowhere
        with pytest.raises(FileNotFoundError):
            load(out, tmp_path)
        assert "Export not finished" in (out / "README.md").read_text()
    else:  # the data and the card are complete; only the manifest is missing
        assert len(pair_ids(out, tmp_path)) == 6
    dry = clean_partial(str(out), dry_run=True)
    assert dry and (out / MARKER).exists()
    assert sorted(clean_partial(str(out))) == sorted(dry)
    assert files_under(out) == set()
    run_export(catalog, out, format="parquet")


def test_a_killed_export_is_cleaned_by_the_next_export_without_overwrite(
    catalog: Catalog, graphs: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "csv"
    kill_export(catalog, out, "card", ExportConfig(preset="diffsynth-vace"), in_place=True)
    assert (out / MARKER).exists() and not (out / "manifest.json").exists()
    run_export(catalog, out, preset="diffsynth-vace")  # nothing there was a finished export: no overwrite needed
    assert not (out / MARKER).exists() and (out / "manifest.json").exists()
    assert not [p for p in files_under(out) if os.path.basename(p).startswith(".")]
