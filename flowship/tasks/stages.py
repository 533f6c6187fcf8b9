"""The DVC-versioned stages as Prefect tasks: each runs only when `dvc status` says it changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from prefect import State, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed

from flowship import estimators
from flowship.adapters.dvc_repo import DvcProject, describe_changes
from flowship.errors import DataValidationError
from flowship.paths import RAW_DATA, Layout
from flowship.pipeline import search, stages
from flowship.pipeline.outcome import DataPush, StageRun
from flowship.tasks.common import Context, is_transient


@task(name="version_data", retries=2, retry_delay_seconds=2)
def version_data(ctx: Context) -> str:
    """Track the raw data folder with DVC; its hash is the data version."""
    digest = DvcProject(ctx.root).version_data(RAW_DATA)
    get_run_logger().info("data version %s: %s", RAW_DATA, digest)
    return digest


# A stage task returns its run, or a Completed state named "Skipped" (so the UI tells the two apart) that holds it.
StageResult: TypeAlias = "StageRun | State[StageRun]"


def _run_stage(name: str, ctx: Context, body: Callable[[], dict[str, Any]]) -> StageResult:
    log = get_run_logger()
    dvc = DvcProject(ctx.root)
    changes = dvc.stage_changes(name)
    if not changes:
        log.info("stage %r unchanged since its last run (dvc.lock matches): skipped", name)
        return Completed(name="Skipped", message=f"stage {name!r} unchanged", data=StageRun(name, ran=False))
    log.info("stage %r runs: %s", name, describe_changes(changes))
    dvc.remove_outputs(name)
    summary = body()
    dvc.commit(name)
    return StageRun(name, ran=True, summary=summary)


@task(name="ingest")
def ingest(ctx: Context) -> StageResult:
    return _run_stage("ingest", ctx, lambda: stages.run_ingest(ctx.params, ctx.layout))


def _failure_table(report: dict[str, Any]) -> str:
    lines = ["| column | check | failing rows | examples |", "| --- | --- | --- | --- |"]
    for f in report["failures"]:
        lines.append(f"| {f['column']} | `{f['check']}` | {f['count']} | {', '.join(map(str, f['examples']))} |")
    return "\n".join(lines)


@task(name="validate")
def validate(ctx: Context) -> StageResult:
    try:
        return _run_stage("validate", ctx, lambda: stages.run_validate(ctx.params, ctx.layout))
    except DataValidationError as exc:
        create_markdown_artifact(
            key="data-validation",
            markdown=f"# Data validation failed\n\n{exc.report['rows']} rows checked. "
            f"Nothing was trained or registered.\n\n{_failure_table(exc.report)}",
            description="pandera checks that failed",
        )
        raise


@task(name="prepare")
def prepare(ctx: Context) -> StageResult:
    return _run_stage("prepare", ctx, lambda: stages.run_prepare(ctx.params, ctx.layout))


@task(name="plan_search")
def plan_search(ctx: Context) -> list[dict[str, Any]]:
    """The trials to run: none when the train stage is up to date or the search is off."""
    if not DvcProject(ctx.root).stage_changes("train"):
        return []
    return estimators.search_trials(ctx.params)


@task(name="score_trial", task_run_name="trial-{index}")
def score_trial(ctx: Context, index: int, hyperparams: dict[str, Any]) -> search.TrialResult:
    import pandas as pd

    train = pd.read_parquet(Layout(ctx.root).train_split)
    result = search.score_trial(index, train, ctx.params, hyperparams)
    get_run_logger().info("trial %d %s: %s = %.4f", index, hyperparams, result.metric, result.score)
    return result


@task(name="train")
def train(ctx: Context, trial_results: list[search.TrialResult]) -> StageResult:
    return _run_stage("train", ctx, lambda: stages.run_train(ctx.params, ctx.layout, trial_results))


@task(name="evaluate")
def evaluate(ctx: Context) -> StageResult:
    return _run_stage("evaluate", ctx, lambda: stages.run_evaluate(ctx.params, ctx.layout))


@task(name="push_data", retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=is_transient)
def push_data(ctx: Context) -> DataPush:
    """Send the data and artifact versions to the DVC remote, so any version can be pulled back later."""
    log = get_run_logger()
    dvc = DvcProject(ctx.root)
    remote = dvc.default_remote()
    if remote is None:
        log.warning("no default DVC remote configured: data versions stay in this machine's cache only")
        return DataPush(remote=None, pushed=0)
    pushed = dvc.push()
    log.info("DVC remote %r: %d file(s) pushed", remote, pushed)
    return DataPush(remote=remote, pushed=pushed)


def ran(result: StageResult) -> bool:
    """Whether a stage task did work (a Skipped state carries a run with ran=False)."""
    run = result.result() if isinstance(result, State) else result
    return run.ran
