"""The ``render`` flow: render, score and record one batch of jobs on a worker of the ``gpu`` pool.

Its parameters are JSON (the jobs' ids and uris, the catalog URL, the run's ``RenderConfig`` and ``ScoreConfig``),
never arrays: it reloads clips and masks from the catalog, so it runs on any machine that reaches the catalog. It
holds a slot of the global concurrency limit ``gpu:<worker id>`` around everything that may put a model on the GPU,
so two flow runs never load models on one GPU at once. ``build_pairs`` hands it batches through
``flows.executors.DeploymentExecutor``; it renders with the same helpers as in-process rendering (``LocalExecutor``).
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed

from catalog.store import Catalog
from flows.env import limit_malloc_arenas, numpy_without_huge_pages, serial_opencv
from flows.executors import gpu_slot, make_batch, make_engine, prepare
from tasks.config import RenderConfig, ScoreConfig
from tasks.steps.plan import RenderJob


@flow(name="render", flow_run_name="render {batch_label}", log_prints=False, persist_result=False)
def render_flow(
    jobs: list[RenderJob],
    catalog: str,
    render: RenderConfig = RenderConfig(),  # noqa: B008 (pydantic model: validated copy per call)
    score: ScoreConfig = ScoreConfig(),  # noqa: B008
    run_id: str | None = None,
    batch_label: str = "batch",
    storage_options: dict[str, Any] | None = None,
) -> Completed:
    """Render, score and record one batch of jobs on this worker, holding the GPU slot from before the models load
    until the batch's last pair is recorded. The final state carries the ``BatchSummary`` as its value and as JSON
    in its message, which ``run_deployment`` callers read from the API without shared result storage."""
    limit_malloc_arenas()  # a worker's flow-run process: before the batch's threads start
    numpy_without_huge_pages()
    cat = Catalog(catalog, storage_options=storage_options)
    engine = make_engine(render)
    with gpu_slot(render.gpu_slots) as limit, serial_opencv():
        get_run_logger().info("holding %s; %d jobs: engine %s", limit, len(jobs), engine.engine_id)
        maker = prepare(engine, render, score, cat)
        summary = make_batch(maker, jobs, cat, run_id=run_id, label=batch_label)
    return Completed(message=json.dumps({"result": summary.model_dump()}), data=summary)
