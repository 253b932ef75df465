"""``build_pairs`` renders while it scores: overlap proved without timing, per-render recording, per-render isolation,
stage timings in the catalog."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest

from catalog.store import Catalog
from flows.build_pairs import build_pairs
from flows.executors import LocalExecutor
from tasks import gate
from tasks.config import RunConfig
from tasks.engines.base import Inpainted, InpaintEngine
from tests.flows.conftest import TINY


N_CLIPS = 5


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``N_CLIPS`` tiny clips, one object each (one removal render and two pairs per clip)."""
    from tasks.synthetic import CAMERAS, make_scene
    from tasks.video_io import encode_mp4

    out = tmp_path_factory.mktemp("clips")
    rows = []
    for i in range(N_CLIPS):
        scene = make_scene(CAMERAS[i % 3], num_frames=TINY["num_frames"], height=TINY["height"],
                           width=TINY["width"], num_objects=1, seed=i)  # fmt: skip
        (out / f"c{i}.mp4").write_bytes(encode_mp4(scene.frames, fps=TINY["fps"]))
        np.savez_compressed(out / f"c{i}.npz", scene.label_map)
        rows.append({"uri": f"c{i}.mp4", "caption": scene.caption, "mask_uri": f"c{i}.npz", "mask_id": 1,
                     "label": scene.labels[0]})  # fmt: skip
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out / "manifest.csv"


class ScriptedEngine(InpaintEngine):
    """Fills the hole with a constant; ``on_call(n)`` runs before the n-th render (from 1)."""

    engine_id = "scripted"
    edit_types = frozenset({"remove"})

    def __init__(self, on_call=None) -> None:
        self.calls = 0
        self.on_call = on_call

    @property
    def version(self) -> str:
        return "scripted-1"

    def fill(self, frames, masks, *, prompt, edit_type, seed, first_frame) -> Inpainted:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return Inpainted(np.broadcast_to(np.uint8(90), frames.shape))


def _run(manifest: Path, catalog: Path, engine: InpaintEngine, monkeypatch, **score) -> object:
    """A run whose renders go to ``engine``, injected through the executor (the configured engine is not used)."""
    config = RunConfig(source=str(manifest), catalog=str(catalog), geometry=TINY, batch_size=8, gallery=False,
                       render={"engine": "null"}, score={"previews": False, **score})  # fmt: skip
    return build_pairs(config, executor=LocalExecutor(engine))


# Not compared: when and by which run a row was written, and what depends on H.264 bytes. libx264 (through PyAV)
# does not give byte-identical output from run to run on a loaded machine, even encoding one clip at a time, so
# media uris (content hashes) and the metrics measured on decoded pixels may differ between any two runs.
# The gate's figures (and the decision reasons that quote them) are such metrics; the decisions are compared.
VOLATILE = {"created_at", "run_id", "elapsed_s", "started_at", "finished_at", "metrics_json", "decision_reason",
            *gate.GATE_COLUMNS}  # fmt: skip


def _table(cat: Catalog, table: str, key: str) -> list[dict]:
    rows = cat.query(f"SELECT * FROM {table} ORDER BY {key}", read_only=True).to_pylist()
    return [{k: v for k, v in row.items() if k not in VOLATILE and not k.endswith("_uri")} for row in rows]


def _rendezvous(monkeypatch, wait_s: float, *, scoring: int = 2, render: int = 3) -> ScriptedEngine:
    """The ``scoring``-th scoring and the ``render``-th render each wait until the other has started: the run completes
    only when that render runs while that scoring does. Defaults: the second and third clips (both in the second
    batch, of two: batches grow 1, 2, 4, …), so a render must run while the previous one is scored."""
    meet = threading.Barrier(2, timeout=wait_s)
    scored: list[int] = []
    score_render = gate.score_render

    def scoring_waits(*args, **kwargs):
        scored.append(1)
        if len(scored) == scoring:
            meet.wait()
        return score_render(*args, **kwargs)

    monkeypatch.setattr(gate, "score_render", scoring_waits)
    return ScriptedEngine(on_call=lambda n: meet.wait() if n == render else None)


def test_a_render_runs_while_the_previous_one_is_scored_and_the_catalog_equals_a_sequential_run(
    clips, tmp_path, monkeypatch
) -> None:
    overlapped = _run(clips, tmp_path / "overlap", _rendezvous(monkeypatch, wait_s=60), monkeypatch, workers=2)
    assert overlapped.status == "completed", overlapped
    assert overlapped.counts["renders"] == N_CLIPS and overlapped.counts["pairs"] == 2 * N_CLIPS

    monkeypatch.undo()
    sequential = _run(clips, tmp_path / "sequential", ScriptedEngine(), monkeypatch, workers=0)
    assert sequential.status == "completed", sequential
    a, b = Catalog(str(tmp_path / "overlap")), Catalog(str(tmp_path / "sequential"))
    for table, key in [("clips", "clip_id"), ("objects", "object_id"), ("instructions", "instruction_id"),
                       ("renders", "render_id"), ("pairs", "pair_id")]:  # fmt: skip
        ta, tb = _table(a, table, key), _table(b, table, key)
        diff = [(r[key], k, r[k], q[k]) for r, q in zip(ta, tb) for k in r if r[k] != q.get(k)]
        assert len(ta) == len(tb) and not diff, (table, diff[:5])


def test_without_overlap_the_rendezvous_fails(clips, tmp_path, monkeypatch) -> None:
    """Negative control of the test above: one render after another cannot meet its own scoring."""
    summary = _run(clips, tmp_path / "cat", _rendezvous(monkeypatch, wait_s=1), monkeypatch, workers=0)
    assert summary.status == "completed_with_failures"
    failures = Catalog(str(tmp_path / "cat")).query("SELECT error_type FROM failures", read_only=True).to_pylist()
    assert {f["error_type"] for f in failures} == {"BrokenBarrierError"}


def test_the_next_batch_renders_while_the_previous_batch_is_scored(clips, tmp_path, monkeypatch) -> None:
    # the first clip (the first batch) is scored while the second (the next batch's first) renders
    summary = _run(clips, tmp_path / "cat", _rendezvous(monkeypatch, 60, scoring=1, render=2), monkeypatch)
    assert summary.status == "completed", summary
    assert summary.counts["renders"] == N_CLIPS and summary.counts["pairs"] == 2 * N_CLIPS


def test_with_one_render_lane_the_batch_rendezvous_fails(clips, tmp_path, monkeypatch) -> None:
    """Negative control of the test above: with one lane, a batch's renders wait for the previous batch's scoring."""
    monkeypatch.setattr(LocalExecutor, "LANES", 1)
    summary = _run(clips, tmp_path / "cat", _rendezvous(monkeypatch, 1, scoring=1, render=2), monkeypatch)
    assert summary.status == "completed_with_failures"
    failures = Catalog(str(tmp_path / "cat")).query("SELECT error_type FROM failures", read_only=True).to_pylist()
    assert {f["error_type"] for f in failures} == {"BrokenBarrierError"}


def test_a_render_that_raises_is_a_failure_row_and_every_other_render_is_kept(clips, tmp_path, monkeypatch) -> None:
    k = 2

    def crash(n: int) -> None:
        if n == k + 1:
            raise RuntimeError("device lost on the third render")

    summary = _run(clips, tmp_path / "cat", ScriptedEngine(on_call=crash), monkeypatch)
    assert summary.status == "completed_with_failures"
    cat = Catalog(str(tmp_path / "cat"))
    renders = cat.query("SELECT instruction_id FROM renders", read_only=True).to_pylist()
    failures = cat.query("SELECT stage, item_id, error_type, message FROM failures", read_only=True).to_pylist()
    assert len(renders) == N_CLIPS - 1  # k before it, and every later one
    assert [(f["stage"], f["error_type"]) for f in failures] == [("render", "RuntimeError")]
    assert "device lost" in failures[0]["message"]
    assert failures[0]["item_id"] not in {r["instruction_id"] for r in renders}
    assert cat.query("SELECT count(*) AS n FROM pairs", read_only=True).to_pylist()[0]["n"] == 2 * (N_CLIPS - 1)


class Killed(BaseException):
    """Stands for the worker being stopped (not an error a run may turn into a failure row)."""


def test_a_batch_stopped_after_k_renders_keeps_those_k_renders_and_their_pairs(clips, tmp_path, monkeypatch) -> None:
    k = 3

    def stop(n: int) -> None:
        if n > k:  # the process is gone: no later render of any render lane gets through
            raise Killed()

    with pytest.raises(Killed):
        _run(clips, tmp_path / "cat", ScriptedEngine(on_call=stop), monkeypatch)
    cat = Catalog(str(tmp_path / "cat"))
    assert cat.query("SELECT count(*) AS n FROM renders", read_only=True).to_pylist()[0]["n"] == k
    assert cat.query("SELECT count(*) AS n FROM pairs", read_only=True).to_pylist()[0]["n"] == 2 * k

    resumed = _run(clips, tmp_path / "cat", ScriptedEngine(), monkeypatch)  # the rerun does only the rest
    assert resumed.counts["already_done"] == k and resumed.counts["renders"] == N_CLIPS - k


def test_each_batch_records_its_time_by_stage(clips, tmp_path, monkeypatch) -> None:
    from flows.status import catalog_status

    summary = _run(clips, tmp_path / "cat", ScriptedEngine(), monkeypatch)
    cat = Catalog(str(tmp_path / "cat"))
    rows = cat.query(
        "SELECT stage, sum(items) AS items, sum(wall_s) AS wall_s, count(DISTINCT batch) AS batches "
        f"FROM stage_timings WHERE run_id = '{summary.run_id}' GROUP BY stage",
        read_only=True,
    ).to_pylist()
    by_stage = {r["stage"]: r for r in rows}
    assert {"ingest", "annotate", "propose", "load", "render", "score", "encode", "record"} <= set(by_stage)
    assert by_stage["render"]["items"] == N_CLIPS and by_stage["score"]["items"] == N_CLIPS  # one scoring per render
    assert by_stage["load"]["wall_s"] > 0  # decoding the job's inputs is not charged to the engine's render
    assert by_stage["annotate"]["items"] == N_CLIPS
    assert by_stage["ingest"]["batches"] == 3  # batches of 1, 2 and 2 items: growing 1, 2, 4… up to batch_size
    assert all(r["wall_s"] > 0 for r in rows)
    status = catalog_status(str(tmp_path / "cat"))
    assert status["stages"]["run_id"] == summary.run_id
    assert [s["stage"] for s in status["stages"]["rows"]] == [
        "ingest", "annotate", "propose", "load", "render", "score", "encode", "record"
    ]  # fmt: skip


def test_clip_weights_load_once_per_run_and_fill_the_clip_columns(clips, tmp_path, monkeypatch) -> None:
    """The CLIP label check of the gate: one model load for all the run's render batches in one process (never one
    per render), and both CLIP columns filled on every pair."""
    from tests.tasks.test_gate import _tiny_clip

    weights = _tiny_clip(tmp_path)
    loads: list[str] = []
    setup = gate.ClipScorer.setup

    def counting(self) -> None:
        if self._model is None:
            loads.append(self.model_path)
        setup(self)

    monkeypatch.setattr(gate.ClipScorer, "setup", counting)
    summary = _run(clips, tmp_path / "cat", ScriptedEngine(), monkeypatch, clip_weights=weights)
    assert summary.status == "completed", summary
    assert summary.counts["renders"] == N_CLIPS
    assert len(loads) == 1  # three render batches (1, 2 and 2 clips) in one process share the gate's models
    pairs = Catalog(str(tmp_path / "cat")).query("SELECT clip_label_src, clip_label_tgt FROM pairs").to_pylist()
    assert len(pairs) == 2 * N_CLIPS
    assert all(p["clip_label_src"] is not None and p["clip_label_tgt"] is not None for p in pairs)


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.tasks.annotate import tiny_models

    return str(tiny_models.build_sam3_video(tmp_path_factory.mktemp("models") / "sam3"))


def test_the_reseg_segmenter_loads_once_per_run_and_fills_the_reseg_columns(
    clips, tmp_path, monkeypatch, tiny_sam3
) -> None:
    """The gate's re-segmentation check in a run (provided masks, a segmenter named for the gate): one model load per
    batch of renders, both columns filled on every pair and recorded with their details."""
    import json

    loads: list[str] = []
    setup = gate.ResegScorer.setup

    def counting(self) -> None:
        if not self._ready:
            loads.append(self.name)
        setup(self)

    monkeypatch.setattr(gate.ResegScorer, "setup", counting)
    spec = f"sam3:{tiny_sam3}#max_objects=2"
    summary = _run(clips, tmp_path / "cat", ScriptedEngine(), monkeypatch, reseg_segmenter=spec)
    assert summary.status == "completed", summary
    assert loads == [spec]  # three render batches (1, 2 and 2 clips) in one process share the gate's models
    pairs = Catalog(str(tmp_path / "cat")).query("SELECT reseg_iou_src, reseg_iou_tgt, metrics_json FROM pairs")
    pairs = pairs.to_pylist()
    assert len(pairs) == 2 * N_CLIPS
    assert all(0 <= p["reseg_iou_src"] <= 1 and 0 <= p["reseg_iou_tgt"] <= 1 for p in pairs)
    assert all(json.loads(p["metrics_json"])["reseg"]["segmenter"] == spec for p in pairs)


def test_an_unloadable_reseg_segmenter_is_refused_before_anything_is_written(clips, tmp_path, monkeypatch) -> None:
    """Loud and early: the run stops before its first write (the folder is checked up front, no model loads), with
    the option and the path in its message; no render, no catalog."""
    from tasks.annotate.specs import AnnotationSpecError

    missing = tmp_path / "no-such-sam3"
    engine = ScriptedEngine()
    with pytest.raises(AnnotationSpecError) as err:
        _run(clips, tmp_path / "cat", engine, monkeypatch, reseg_segmenter=f"sam3:{missing}")
    assert "--reseg-segmenter" in str(err.value) and str(missing) in str(err.value)
    assert engine.calls == 0 and not (tmp_path / "cat").exists()


def test_opencv_runs_on_the_calling_thread_during_a_run_and_its_setting_comes_back(
    clips, tmp_path, monkeypatch
) -> None:
    import cv2

    seen: list[int] = []
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        summary = _run(clips, tmp_path / "cat", ScriptedEngine(on_call=lambda n: seen.append(cv2.getNumThreads())),
                       monkeypatch)  # fmt: skip
        assert summary.status == "completed"
        assert seen == [1] * N_CLIPS  # the run's threads share the cores; OpenCV adds no pool of its own
        assert cv2.getNumThreads() == 2  # the caller's setting is back
    finally:
        cv2.setNumThreads(before)
