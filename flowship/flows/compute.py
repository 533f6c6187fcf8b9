"""Where the parallel work of a flow runs (search trials, batch scoring chunks): Prefect's thread pool on this
machine, or a Dask cluster through prefect-dask, as `compute` in params.yaml says.

A flow's task runner is fixed when it is decorated, so the parallel part of each flow is a subflow whose runner
is picked here at run time, from the params: runs started from the CLI and from a deployment pick it up alike.
"""

from __future__ import annotations

from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flowship.config import ComputeConfig
from flowship.errors import ConfigError

START_SERVER = "start one with `flowship up` (or `prefect server start` and PREFECT_API_URL=http://127.0.0.1:4200/api)"


def require_server(cfg: ComputeConfig) -> None:
    """Dask needs a real Prefect server: with the temporary one, every Dask worker process would start its own
    API, the task runs would time out connecting to it and leave server processes behind. Fail before any work."""
    if cfg.engine != "dask":
        return
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    raise ConfigError(
        [
            "compute.engine: 'dask' needs a Prefect server the Dask workers can report to, but PREFECT_API_URL "
            f"is not set (Prefect would run a temporary API in this process only); {START_SERVER}, "
            "or set compute.engine: threads"
        ]
    )


# What `Flow.with_options(task_runner=...)` is annotated to take. TaskRunner is invariant in its future type, so
# neither the thread pool's runner (PrefectConcurrentFuture) nor Dask's fits that annotation, though the flow runs
# any runner: the runners below are cast to it, in this one place.
AnyTaskRunner = TaskRunner[PrefectFuture[Any]]


def task_runner(cfg: ComputeConfig, max_threads: int | None = None) -> AnyTaskRunner:
    """The runner for a subflow's mapped tasks; `max_threads` bounds the thread pool (None: one per task)."""
    if cfg.engine == "threads":
        return cast(AnyTaskRunner, ThreadPoolTaskRunner(max_workers=max_threads))
    require_server(cfg)
    from prefect_dask.task_runners import DaskTaskRunner

    if cfg.dask.address is not None:
        return cast(AnyTaskRunner, DaskTaskRunner(address=cfg.dask.address))
    return cast(
        AnyTaskRunner,
        DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.dask.workers,
                "threads_per_worker": cfg.dask.threads_per_worker,
                "dashboard_address": None,
            }
        ),
    )


def describe(cfg: ComputeConfig) -> str:
    if cfg.engine == "threads":
        return "threads on this machine"
    if cfg.dask.address is not None:
        return f"dask at {cfg.dask.address}"
    return f"dask, a local cluster of {cfg.dask.workers} worker(s) × {cfg.dask.threads_per_worker} thread(s)"
