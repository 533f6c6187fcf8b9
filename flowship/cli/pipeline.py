"""`flowship train` and `flowship status`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from flowship.cli.common import ParamsOption, check_params, environment, fail, runtimes
from flowship.errors import FlowshipError
from flowship.release.runtime import ROLES


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
    # The estimator check imports scikit-learn: it waits until there is work to do.
    path = check_params(params, check_estimator=False)
    environment(path.parent)
    os.chdir(path.parent)
    from flowship.config import load_params

    summary: dict[str, Any] | None = None
    try:
        compute = load_params(path, check_estimator=False).compute
        if compute.engine == "dask":  # (imports Prefect, which makes its home folder: only when needed)
            from flowship.flows.compute import require_server

            # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
            require_server(compute)
        if not full:
            from flowship.pipeline.rerun import last_outcome_if_unchanged

            summary = last_outcome_if_unchanged(load_params(path, check_estimator=False), path.parent)
        if summary is None:
            check_params(path)
            from flowship.flows.training import training

            summary = training(params_path=str(path))
    except FlowshipError as exc:
        fail(str(exc))
    assert summary is not None
    _print_training(summary)
    if summary["decision"]["verdict"] != "passed":
        fail("quality gate failed, unchanged since the last run: " + "; ".join(summary["decision"]["reasons"]))


def _print_training(summary: dict[str, Any]) -> None:
    stages_line = ", ".join(f"{n} {'ran' if did else 'unchanged'}" for n, did in summary["stages"].items())
    typer.echo(f"stages:        {stages_line}")
    if not any(summary["stages"].values()):
        typer.echo("               nothing changed since the last run (dvc.lock matches): no training was done")
    typer.echo(f"data version:  data/raw {summary['data_version']}")
    typer.echo(f"MLflow run:    {summary['candidate']['run_id']}")
    typer.echo(f"               {summary['candidate']['url']}")
    typer.echo(f"gate:          {summary['decision']['verdict']} ({'; '.join(summary['decision']['reasons'])})")
    version = summary["registered"]
    if version is not None:
        state = "new, alias challenger" if version["new"] else "already registered"
        typer.echo(f"registered:    {version['name']} v{version['version']} ({state})")


def status(
    params: ParamsOption = Path("params.yaml"), runs: int = typer.Option(5, min=1, help="How many recent runs to list.")
) -> None:
    """The champion, the challenger and the last runs with their verdicts."""
    path = check_params(params)
    environment(path.parent)
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker
    from flowship.config import load_params

    cfg = load_params(path)
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
    for runtime in runtimes(path):
        for role in reversed(ROLES):
            deployed = runtime.deployed(role)
            if deployed is not None:
                where = f"image {deployed.image}" if deployed.image else f"pid {deployed.ref}"
                state = f"{deployed.status}  ({deployed.kind}, {where})"
                typer.echo(f"  {role:<11} v{deployed.version}  {deployed.url}  {state}")
    typer.echo("recent runs:")
    recent = tracker.recent_runs(name, runs)
    if not recent:
        typer.echo("  none yet: run `flowship train`")
    for r in recent:
        metric = cfg.gate.primary_metric
        value = r["metrics"].get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else ""
        typer.echo(f"  {r['started']}  {r['run_id']}  {r['status']:<8}  gate {r['verdict']:<7} {shown}")
