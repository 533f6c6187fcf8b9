"""The training flow: version data → ingest → validate → prepare → train → evaluate → track → gate → register."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import TaskRunner

from flowship.config import Params, load_params
from flowship.flows import compute
from flowship.pipeline.outcome import DataCounts, RecordedDecision, RunLink, TrainingSummary
from flowship.pipeline.search import TrialResult
from flowship.tasks import registry, stages, tracking
from flowship.tasks.common import Context


def context(params_path: str | Path, overrides: dict[str, Any] | None = None, params: Params | None = None) -> Context:
    """The run's typed params and the project root, the folder of params.yaml. The params are `params` when the
    caller has loaded them already (the CLI, once per command); else params.yaml with a deployment's overrides for
    its environment (keys DVC tracks can't be overridden)."""
    path = Path(params_path).resolve()
    if params is None:
        params = load_params(path, overrides=overrides)
    elif overrides:
        raise ValueError("overrides apply to params.yaml as it is read: pass them, or params already loaded, not both")
    return Context(params=params, root=path.parent)


@flow(name="search", description="Score the hyperparameter trials in parallel, on the engine of `compute`.")
def search(ctx: Context, trials: list[dict[str, Any]]) -> list[TrialResult]:
    return stages.score_trial.map(ctx, range(len(trials)), trials).result()


def run_search(ctx: Context, trials: list[dict[str, Any]]) -> list[TrialResult]:
    """The trials as a subflow whose task runner comes from the params (a flow's own runner is fixed at import)."""
    if not trials:
        return []
    # Any future type: the thread pool's and Dask's runners differ in theirs, and the flow takes either.
    runner: TaskRunner[Any] = compute.task_runner(ctx.params.compute, max_threads=ctx.params.train.search.max_workers)
    return search.with_options(task_runner=runner)(ctx, trials)


@flow(name="training", description="Train, evaluate and gate a candidate; register it as challenger if it passes.")
def training(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None, params: Params | None = None
) -> TrainingSummary:
    """Deployments name params.yaml (and their overrides); the CLI, which has read and checked it, hands the
    params over so the file is read once per command."""
    ctx = context(params_path, overrides, params)
    compute.require_server(ctx.params.compute)
    tracking.check_tracking(ctx)
    data_version = stages.version_data(ctx)
    ran = {
        "ingest": stages.ran(stages.ingest(ctx)),
        "validate": stages.ran(stages.validate(ctx)),
        "prepare": stages.ran(stages.prepare(ctx)),
    }
    trials = stages.plan_search(ctx)
    ran["train"] = stages.ran(stages.train(ctx, run_search(ctx, trials)))
    ran["evaluate"] = stages.ran(stages.evaluate(ctx))
    pushed = stages.push_data(ctx)
    candidate = tracking.log_candidate(ctx, data_version)
    decision = registry.gate(ctx, candidate)
    version = registry.register(ctx, candidate, decision)
    summary = TrainingSummary(
        data_version=data_version,
        stages=ran,
        candidate=RunLink(candidate.run_id, candidate.url),
        decision=RecordedDecision.of(decision),
        registered=version,
        remote=pushed,
        data=DataCounts.read(ctx.layout.validation_report),
    )
    create_markdown_artifact(key="training-summary", markdown=summary.markdown(), description="where to look")
    return summary
