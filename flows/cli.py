"""The `flowship` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowship.errors import FlowshipError

app = typer.Typer(
    help="flowship: train, gate, register, deploy and monitor a tabular model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params.yaml to use; its folder is the project root.")
]


def _environment(root: Path) -> None:
    """Project-local state, unless the user points elsewhere: no surprises in ~/.prefect."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _fail(message: str) -> None:
    typer.secho(f"flowship: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _check_params(params: Path, check_estimator: bool = True) -> Path:
    from flowship.config import load_params

    path = params.resolve()
    try:
        load_params(path, check_estimator)
    except FlowshipError as exc:
        _fail(str(exc))
    return path


@app.command()
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
    path = _check_params(params, check_estimator=False)
    _environment(path.parent)
    os.chdir(path.parent)
    from flowship.config import load_params

    summary: dict[str, Any] | None = None
    try:
        if not full:
            from flowship.rerun import last_outcome_if_unchanged

            summary = last_outcome_if_unchanged(load_params(path, check_estimator=False), path.parent)
        if summary is None:
            _check_params(path)
            from flows.training import training

            summary = training(params_path=str(path))
    except FlowshipError as exc:
        _fail(str(exc))
    assert summary is not None
    _print_training(summary)
    if summary["decision"]["verdict"] != "passed":
        _fail("quality gate failed, unchanged since the last run: " + "; ".join(summary["decision"]["reasons"]))


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


@app.command()
def status(
    params: ParamsOption = Path("params.yaml"), runs: int = typer.Option(5, min=1, help="How many recent runs to list.")
) -> None:
    """The champion, the challenger and the last runs with their verdicts."""
    path = _check_params(params)
    _environment(path.parent)
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker
    from flowship.config import load_params

    cfg = load_params(path)
    tracker = Tracker(path.parent)
    try:
        tracker.check_available()
    except FlowshipError as exc:
        _fail(str(exc))
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
    typer.echo("recent runs:")
    recent = tracker.recent_runs(name, runs)
    if not recent:
        typer.echo("  none yet: run `flowship train`")
    for r in recent:
        metric = cfg.gate.primary_metric
        value = r["metrics"].get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else ""
        typer.echo(f"  {r['started']}  {r['run_id']}  {r['status']:<8}  gate {r['verdict']:<7} {shown}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
