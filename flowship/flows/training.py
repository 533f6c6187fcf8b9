"""The training flow: version data → ingest → validate → prepare → train → evaluate → track → gate → register."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flowship.config import load_params
from flowship.flows import compute
from flowship.pipeline.search import TrialResult
from flowship.tasks import registry, stages, tracking
from flowship.tasks.common import Context


def context(params_path: str | Path, overrides: dict[str, Any] | None = None) -> Context:
    """The run's typed params: params.yaml with a deployment's overrides for its environment (keys DVC tracks
    can't be overridden), and the project root, the folder of params.yaml."""
    path = Path(params_path).resolve()
    return Context(params=load_params(path, overrides=overrides), root=path.parent)


@flow(name="search", description="Score the hyperparameter trials in parallel, on the engine of `compute`.")
def search(ctx: Context, trials: list[dict[str, Any]]) -> list[TrialResult]:
    return stages.score_trial.map(ctx, range(len(trials)), trials).result()


def run_search(ctx: Context, trials: list[dict[str, Any]]) -> list[TrialResult]:
    """The trials as a subflow whose task runner comes from the params (a flow's own runner is fixed at import)."""
    if not trials:
        return []
    runner = compute.task_runner(ctx.params.compute, max_threads=ctx.params.train.search.max_workers)
    return search.with_options(task_runner=runner)(ctx, trials)


@flow(name="training", description="Train, evaluate and gate a candidate; register it as challenger if it passes.")
def training(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    ctx = context(params_path, overrides)
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
    summary = {
        "data_version": data_version,
        "stages": ran,
        "remote": pushed,
        "candidate": candidate,
        "decision": decision,
        "registered": version,
    }
    create_markdown_artifact(key="training-summary", markdown=summary_markdown(summary), description="where to look")
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    stages_line = ", ".join(
        f"{name}: {'ran' if did else 'skipped (unchanged)'}" for name, did in summary["stages"].items()
    )
    version = summary["registered"]
    registered = (
        f"{version['name']} v{version['version']} (alias `challenger`)"
        if version["new"]
        else f"{version['name']} v{version['version']} (already registered)"
    )
    return (
        "# Training run\n\n"
        f"- data version (DVC, `data/raw`): `{summary['data_version']}`\n"
        f"- stages: {stages_line}\n"
        f"- MLflow run: [{summary['candidate']['run_id']}]({summary['candidate']['url']})\n"
        f"- gate: {summary['decision']['verdict']}\n"
        f"- registered: {registered}\n"
    )
