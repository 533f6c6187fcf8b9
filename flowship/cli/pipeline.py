"""`flowship train`, `flowship status`, `flowship run` (what `make run` runs) and `flowship report`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flowship.cli.common import ParamsOption, environment, fail, read_params, ready_for_flows, runtimes
from flowship.errors import FlowshipError
from flowship.release.gateway_runtime import GatewayRuntime
from flowship.release.runtime import ROLES

if TYPE_CHECKING:
    from flowship.config import Params
    from flowship.pipeline.outcome import TrainingSummary


def train(
    params: ParamsOption = Path("params.yaml"),
    full: bool = typer.Option(
        False, "--full", help="Run the Prefect flow even when nothing changed (every stage is then shown as skipped)."
    ),
) -> None:
    """Run the training flow: data → validation → training → gate → registry.

    With nothing changed since the last run (data, params and code as recorded in dvc.lock, the gate's
    settings and the champion as when it last decided), it says so and does not start the flow.
    """
    path = params.resolve()
    # Read once, here, and handed down. The estimator check imports scikit-learn: it waits until there is work to do.
    cfg = read_params(path, check_estimator=False)
    environment(path.parent)
    os.chdir(path.parent)
    train_project(path, cfg, full)


def train_project(path: Path, cfg: Params, full: bool) -> None:
    """`flowship train` once its params are read and the command runs in the project."""
    try:
        summary = _train(path, cfg, full)
    except FlowshipError as exc:
        fail(str(exc))
    _print_training(summary)
    if not summary.decision.passed:
        fail("quality gate failed, unchanged since the last run: " + "; ".join(summary.decision.reasons))


# The replay's batch size in `flowship run` (and so in `make run`): 20 records a request.
RUN_BATCH_SIZE = 20


def run(params: ParamsOption = Path("params.yaml")) -> None:
    """Train, release the challenger, replay the production months not sent yet (with a check after each).

    The three commands of `make run` (`train`, `deploy`, `replay --once --batch-size 20`) in one process, so
    that a run with nothing to do answers in seconds, and the flows that do run share one temporary Prefect
    API. Each step says what it did, as the command of its name would; a failed step ends the run.
    """
    from flowship.cli.monitoring import replay_months
    from flowship.cli.release import release

    path = params.resolve()
    cfg = read_params(path, check_estimator=False)  # read once for the three steps
    environment(path.parent)
    os.chdir(path.parent)
    train_project(path, cfg, full=False)
    release(path, cfg, version=None, full=False, strategy=None)
    replay_months(
        path, cfg, from_=None, to=None, url=None, batch_size=RUN_BATCH_SIZE, concurrency=8, monitor=True, once=True
    )


def _train(path: Path, cfg: Params, full: bool) -> TrainingSummary:
    """The last run's summary when nothing changed (unless `full`), else a run of the training flow."""
    if cfg.compute.engine == "dask":  # (imports Prefect, which makes its home folder: only when needed)
        from flowship.flows.compute import require_server

        # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
        require_server(cfg.compute)
    if not full:
        from flowship.pipeline.rerun import last_outcome_if_unchanged

        summary = last_outcome_if_unchanged(cfg, path.parent)
        if summary is not None:
            return summary
    from flowship.services import temporary_api

    temporary_api.start_soon(path.parent)  # starts while the flow's modules load
    from flowship.estimators import check_estimator_config

    check_estimator_config(cfg)
    from flowship.adapters.tracking import open_store_early
    from flowship.flows.training import training

    open_store_early(path.parent)  # work the flow would do first, done while the API starts
    ready_for_flows(path.parent)
    return training(params_path=str(path), params=cfg)


def _print_training(summary: TrainingSummary) -> None:
    stages_line = ", ".join(f"{n} {'ran' if did else 'unchanged'}" for n, did in summary.stages.items())
    typer.echo(f"stages:        {stages_line}")
    if not any(summary.stages.values()):
        typer.echo("               nothing changed since the last run (dvc.lock matches): no training was done")
    typer.echo(f"data version:  data/raw {summary.data_version}")
    if summary.data is not None:
        typer.echo(f"rows:          {summary.data.describe()}")
    typer.echo(f"MLflow run:    {summary.candidate.run_id}")
    typer.echo(f"               {summary.candidate.url}")
    typer.echo(f"gate:          {summary.decision.verdict} ({'; '.join(summary.decision.reasons)})")
    version = summary.registered
    if version is not None:
        state = "new, alias challenger" if version.new else "already registered"
        typer.echo(f"registered:    {version.name} v{version.version} ({state})")


def status(
    params: ParamsOption = Path("params.yaml"), runs: int = typer.Option(5, min=1, help="How many recent runs to list.")
) -> None:
    """The champion, the challenger and the last runs with their verdicts."""
    path = params.resolve()
    cfg = read_params(path)
    environment(path.parent)
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker

    tracker = Tracker(path.parent)
    try:
        tracker.check_available()
    except FlowshipError as exc:
        fail(str(exc))
    name = cfg.project.name
    typer.echo(f"model {name}  (tracking: {tracker.uri})")
    for alias in (CHAMPION, CHALLENGER):
        ref = tracker.version_by_alias(name, alias)
        if ref is None:
            typer.echo(f"  {alias:<11} none")
        else:
            typer.echo(
                f"  {alias:<11} v{ref.version}  run {ref.run_id}  data {ref.tags.get('flowship.data.raw_md5', '?')}"
            )
    for runtime in runtimes(path.parent, cfg):
        for role in reversed(ROLES):
            deployed = runtime.deployed(role)
            if deployed is not None:
                where = f"image {deployed.image}" if deployed.image else f"pid {deployed.ref}"
                state = f"{deployed.status}  ({deployed.kind}, {where})"
                typer.echo(f"  {role:<11} v{deployed.version}  {deployed.url}  {state}")
        if isinstance(runtime, GatewayRuntime):
            _gateway_lines(runtime, cfg)
    typer.echo("recent runs:")
    recent = tracker.recent_runs(name, runs)
    if not recent:
        typer.echo("  none yet: run `flowship train`")
    for r in recent:
        metric = cfg.gate.primary_metric
        value = r["metrics"].get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else ""
        typer.echo(f"  {r['started']}  {r['run_id']}  {r['status']:<8}  gate {r['verdict']:<7} {shown}")


def _gateway_lines(runtime: GatewayRuntime, cfg: Params) -> None:
    """The gateway in front of production: where, whether paused, the replicas of each version it holds."""
    if runtime.gateway is None or runtime.gateway_state() is None:
        return
    stopped = runtime.reap()  # warm versions past their time go now
    state = runtime.gateway_state()
    assert state is not None
    gateway = runtime.gateway.status() or "missing"
    where = "a container" if runtime.gateway.kind == "docker" else "this host"
    paused = f"PAUSED ({state.paused})" if state.paused is not None else "serving"
    paused += f"; v{state.stable.version} {100 - state.canary_weight:g}%" if state.canary is not None else ""
    typer.echo(f"  {'gateway':<11} nginx ({where}) on 127.0.0.1:{state.port}  {gateway}, {paused}")
    chosen = "release.replicas" if cfg.release.replicas is not None else f"chosen for {os.cpu_count()} cores"
    replicas = ", ".join(runtime.replica_status(state.stable))
    typer.echo(f"  {'replicas':<11} v{state.stable.version}: {len(state.stable.backends)} ({chosen}): {replicas}")
    if state.canary is not None:
        replicas = ", ".join(runtime.replica_status(state.canary))
        typer.echo(f"  {'canary':<11} v{state.canary.version}: {state.canary_weight:g}% of the traffic; {replicas}")
    for warm in state.warm:
        until = warm.until.strftime("%Y-%m-%d %H:%M UTC")
        typer.echo(f"  {'warm':<11} v{warm.pool.version}: {len(warm.pool.backends)} out of traffic until {until}"
                   " (`flowship rollback` to it is a switch)")  # fmt: skip
    for version in stopped:
        typer.echo(f"  {'stopped':<11} v{version}: its warm time was up")


# `flowship report` writes report.md and report.json here (relative to the project).
REPORT_DIR = Path("reports/model-report")
ReportDir = Annotated[
    Path, typer.Option("--out", help="Folder for report.md and report.json (relative to the project).")
]


def report(
    params: ParamsOption = Path("params.yaml"),
    base: str = typer.Option(
        "main", "--base", metavar="REF", help="The git ref to compare with (branch, tag, commit)."
    ),
    out: ReportDir = REPORT_DIR,
) -> None:
    """The model report of the working tree's candidate: what changed against REF, its holdout metrics beside the
    base's and the champion's, the gate's verdict table, the plots, its MLflow run (what a pull request shows).

    Run `flowship train` first: the report reads what it produced. Exits 1 (report written) on a failed gate.
    """
    path = params.resolve()
    environment(path.parent)
    from flowship.files import atomic_write
    from flowship.pipeline.report import build_report

    try:
        made = build_report(path.parent, base, path)
    except FlowshipError as exc:
        fail(str(exc))
    folder = out if out.is_absolute() else path.parent / out
    folder.mkdir(parents=True, exist_ok=True)
    text = made.markdown()
    atomic_write(folder / "report.md", text)
    atomic_write(folder / "report.json", json.dumps(made.as_dict(), indent=2, default=str) + "\n")
    typer.echo(text)
    typer.echo(f"wrote:         {folder / 'report.md'}, {folder / 'report.json'}")
    if not made.passed:
        fail(
            "; ".join(made.problems)
            or "quality gate failed: " + "; ".join(made.decision.reasons if made.decision else [])
        )
