"""Produce a batch's pairs: each job rendered, its render recorded, scored, and its pairs recorded, job by job.

A :class:`PairMaker` holds what a batch needs and what must be loaded once: the engine (set up), the scoring models,
the side-effect segmenter and the render and score settings. Its owner (an executor in ``flows/executors.py``, or the ``render`` flow) builds
it once and hands it every batch. The work is pipelined (``tasks.pipeline.JobPipeline``): the next job renders
while the previous render is stored, scored and recorded. A render's row is recorded before its pairs, so a batch
stopped after k renders keeps those k and a resumed run re-scores a render whose pairs are missing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from catalog.store import Catalog
from tasks.config import RenderConfig, ScoreConfig
from tasks.effect_segments import EffectSegmenter
from tasks.engines.base import Inpainted, InpaintEngine
from tasks.errors import UnsupportedEditError
from tasks.pipeline import JobPipeline
from tasks.steps.outputs import StepOutput
from tasks.steps.plan import RenderJob, with_effect_segmenter
from tasks.steps.record import failure_rows, record_rows, record_tables
from tasks.steps.render import JobInputs, inpaint, load, pending, store
from tasks.steps.score import Scorers, score
from tasks.timings import StageTimer, use_timer
from tasks.types import Failure


COUNTS = ("jobs", "already_done", "renders", "skipped", "pairs", "accepted", "judged", "failures")


@dataclass
class PairMaker:
    """An engine already set up, the scoring models already loaded, and the settings that go with them; ``effects``:
    the side-effect segmenter of ``render.effect_segmenter``, loaded (``EffectSegmenter.load``; None: not used)."""

    engine: InpaintEngine
    scorers: Scorers
    render: RenderConfig
    score: ScoreConfig
    effects: EffectSegmenter | None = None

    def make(
        self,
        jobs: Sequence[RenderJob],
        catalog: Catalog,
        *,
        run_id: str | None,
        timer: StageTimer | None = None,
        slots: threading.Semaphore | None = None,
    ) -> StepOutput:
        """Render, score and record ``jobs``; jobs whose pairs are all recorded are skipped (resume).

        Any exception of one job becomes a ``failures`` row (stage ``render``, ``score`` or ``record``), recorded at
        once, and the batch goes on. ``slots`` bounds the renders held in memory across batches made at once
        (default: ``score.threads() + 1`` for this batch alone). Returns the counts of :data:`COUNTS` (all
        recorded already), the failures and ``rows["previews"]`` (``{"preview_uri": …}`` per pair with one).
        """
        generation = self.render.generation(run_id)  # None unless --rerender
        # the render's side-effect segmenter asked on every labelled removal with effect masks (part of the ids)
        jobs = [with_effect_segmenter(job, self.render.effect_segmenter, self.render.effect_phrases) for job in jobs]
        todo, done = pending(catalog, jobs, self.engine, self.render.seed, generation)
        out = StepOutput(rows={"previews": []}, counts=dict.fromkeys(COUNTS, 0), timer=timer or StageTimer())
        out.counts.update(jobs=len(jobs), already_done=done)
        lock = threading.Lock()
        seed = self.render.seed

        def failed(failure: Failure, *, skipped: bool = False) -> None:
            record_rows(catalog, "failures", failure_rows([failure], run_id))
            with lock:
                out.failures.append(failure)
                out.add("skipped" if skipped else "failures")

        def on_error(job: RenderJob, step: str, exc: BaseException) -> None:
            failed(Failure.from_exception("render", "instruction", job.instruction_id, exc),
                   skipped=isinstance(exc, UnsupportedEditError))  # fmt: skip

        def finish(job: RenderJob, item: tuple[JobInputs, Inpainted]) -> None:
            inputs, result = item
            rendered = store(
                job, inputs, result, catalog, self.engine, seed=seed, run_id=run_id, generation=generation
            )
            del inputs, result, item
            render_id = rendered.row["render_id"]
            record_rows(catalog, "renders", [rendered.row])  # durable before it is scored
            with lock:
                out.add("renders")
            try:
                scored = score(rendered, catalog, self.score, self.scorers, run_id=run_id)
            except Exception as exc:  # a bug or a broken judge: this render's pairs fail, the batch goes on
                failed(Failure.from_exception("score", "render", render_id, exc))
                return
            try:
                record_tables(
                    catalog, {"pairs": scored.rows["pairs"], "failures": failure_rows(scored.failures, run_id)}
                )
            except Exception as exc:
                failed(Failure.from_exception("record", "render", render_id, exc))
                return
            with lock:
                out.failures.extend(scored.failures)
                out.add("failures", len(scored.failures))
                for key in ("pairs", "accepted", "judged"):
                    out.add(key, scored.counts.get(key, 0))
                out.rows["previews"].extend(
                    {"preview_uri": p["preview_uri"]} for p in scored.rows["pairs"] if p.get("preview_uri")
                )

        if todo:
            pipeline: JobPipeline[RenderJob, JobInputs, tuple[JobInputs, Inpainted]] = JobPipeline(
                lambda job: load(job, catalog, self.engine, effect_segmenter=self.effects),
                lambda job, inputs: (inputs, inpaint(job, inputs, self.engine, seed=seed)),
                finish,
                on_error,
                workers=self.score.threads(),
                concurrent=not self.engine.exclusive,  # CPU engines render on every finishing thread at once
                slots=slots,
            )
            with use_timer(out.timer):
                pipeline.run(list(todo))
        return out
