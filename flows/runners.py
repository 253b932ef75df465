"""Task runners for ingest inside a flow: Prefect's thread pool, a Dask cluster or a Ray cluster.

``make_task_runner("dask" | "ray", workers=…, address=…)`` starts a local cluster when the flow starts (or joins the
one at ``address``) through Prefect's own integrations (``prefect-dask``, ``prefect-ray``; the ``dask`` and ``ray``
extras). Use it with ``build_pairs.with_options(task_runner=…)``. Tasks and their arguments must then be picklable,
and every worker process needs the catalog's credentials in its environment (docs/fleet.md).
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


TaskRunnerName = Literal["default", "dask", "ray"]
TASK_RUNNERS: tuple[str, ...] = get_args(TaskRunnerName)


def local_workers(workers: int | None) -> int:
    """``workers``, checked, or the default size of a local cluster: the number of cores, at most 4."""
    if workers is None:
        return max(1, min(4, os.cpu_count() or 1))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def make_task_runner(
    name: TaskRunnerName = "default", *, address: str | None = None, workers: int | None = None
) -> TaskRunner:
    """The task runner called ``name``.

    Args:
        name: ``default`` (Prefect's thread pool, in the flow's process), ``dask`` or ``ray``.
        address: an existing cluster to use instead of a local one: a Dask scheduler (``tcp://host:8786``) or a
            Ray address (``ray://host:10001``, ``auto``). Not accepted for ``default``.
        workers: size of the local cluster (Dask worker processes, Ray CPUs) or of the thread pool; default: the
            number of cores, at most 4. Not accepted together with ``address``.

    Raises:
        ValueError: an unknown ``name`` or a contradictory argument.
        ImportError: the integration for ``name`` is not installed (names the extra to install).
    """
    if name not in TASK_RUNNERS:
        raise ValueError(f"task runner {name!r} is not one of {TASK_RUNNERS}")
    if address is not None and workers is not None:
        raise ValueError("pass either address= (an existing cluster) or workers= (a local one), not both")
    if name == "default":
        if address is not None:
            raise ValueError("the default task runner runs in the flow's process; address= needs 'dask' or 'ray'")
        return ThreadPoolTaskRunner(max_workers=workers) if workers is not None else ThreadPoolTaskRunner()
    if name == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ImportError(
                "task runner 'dask' needs prefect-dask: pip install 'videopainter-factory[dask]'"
            ) from exc
        if address is not None:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            # Single-threaded worker processes: the CPU steps release the GIL only in part (OpenCV, PyAV).
            cluster_kwargs={
                "n_workers": local_workers(workers),
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ImportError("task runner 'ray' needs prefect-ray: pip install 'videopainter-factory[ray]'") from exc
    if address is not None:
        return RayTaskRunner(address=address)
    return RayTaskRunner(
        init_kwargs={
            "num_cpus": local_workers(workers),
            "include_dashboard": False,
            "log_to_driver": True,
        }
    )
