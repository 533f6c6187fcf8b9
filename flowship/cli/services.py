"""`flowship up`, `down` and `schedule`: the arguments, one call to `flowship.services.lifecycle`, its output."""

from __future__ import annotations

from pathlib import Path

import typer

from flowship.cli.common import EnvOption, IntervalOption, ParamsOption, check_params, environment, fail, read_params
from flowship.errors import FlowshipError
from flowship.services.processes import (
    CRASH_AFTER_S,
    EVIDENTLY_PORT,
    HEARTBEAT_S,
    MIN_CRASH_AFTER_S,
    MLFLOW_PORT,
    PREFECT_PORT,
)


def _warn(line: str) -> None:
    typer.echo(line, err=True)


def schedule(
    params: ParamsOption = Path("params.yaml"), env: EnvOption = "dev", interval: IntervalOption = None
) -> None:
    """Register one environment's deployments of deployments/prefect.yaml (monitoring daily at 06:00 UTC;
    training, release and retraining to start from the UI) on the Prefect server named by PREFECT_API_URL,
    creating their work pool if missing. `flowship up` does this too, on servers it starts itself."""
    path = check_params(params, check_estimator=False)
    root = path.parent
    environment(root)
    from flowship.services import lifecycle

    try:
        scheduled = lifecycle.schedule(root, env, interval, say=typer.echo)
    except FlowshipError as exc:
        fail(str(exc))
    worker = f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_S} prefect worker start --pool {scheduled.pool}"
    typer.echo(f"worker:        {worker}")
    typer.echo(f"               (from this virtualenv, with PREFECT_API_URL={scheduled.api_url}; runs start in {root})")


def up(
    params: ParamsOption = Path("params.yaml"),
    env: EnvOption = "dev",
    interval: IntervalOption = None,
    prefect_port: int = typer.Option(PREFECT_PORT, min=1024, max=65535, help="Prefect server port."),
    mlflow_port: int = typer.Option(MLFLOW_PORT, min=1024, max=65535, help="MLflow server port."),
    evidently_port: int = typer.Option(
        EVIDENTLY_PORT, min=1024, max=65535, help="Evidently UI port (the monitoring dashboard)."
    ),
    timeout: float = typer.Option(120.0, min=1.0, help="Seconds to wait for each service to answer."),
    crash_after: int | None = typer.Option(
        None,
        min=MIN_CRASH_AFTER_S,
        metavar="SECONDS",
        help=f"A run with no heartbeat (sent every {HEARTBEAT_S} s) for this long is marked Crashed "
        f"[default: {CRASH_AFTER_S}, or what an earlier `flowship up` set].",
    ),
) -> None:
    """Start, in the background on 127.0.0.1, a Prefect server with its UI, an MLflow tracking server with its
    UI, the Evidently UI on the monitoring dashboard's workspace and a Prefect worker; register the environment's
    deployments; print the URLs. Their logs go to logs/services/; `flowship down` stops them. While they run,
    flowship's commands in this project use them."""
    path = params.resolve()
    cfg = read_params(path, check_estimator=False)
    root = path.parent
    environment(root, use_services=False)
    from flowship.services import lifecycle

    ports = (prefect_port, mlflow_port, evidently_port)
    workspace = root / cfg.monitoring.dashboard.workspace
    try:
        ready = lifecycle.start(root, env, interval, ports, timeout, workspace, typer.echo, _warn, crash_after)
    except FlowshipError as exc:
        fail(str(exc))
    typer.echo(f"ready in:      {ready.seconds:.1f} s")
    typer.echo(f"Prefect UI:    {ready.prefect_url}")
    typer.echo(f"MLflow UI:     {ready.mlflow_url}")
    typer.echo(f"Evidently UI:  {ready.evidently_url} (the monitoring dashboard; workspace {ready.workspace})")
    typer.echo(f"logs:          {ready.logs}/")
    typer.echo(f"in this shell: export PREFECT_API_URL={ready.api_url} MLFLOW_TRACKING_URI={ready.mlflow_url}")
    typer.echo("               (flowship's own commands in this project use the servers without it)")


def down(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop what `flowship up` started in this project (worker, Evidently UI, MLflow server, Prefect server), and
    nothing else; and the temporary Prefect API earlier commands left running, unless a command uses it.
    Runs still going are cancelled first; the servers' state stays (`flowship up` finds it again)."""
    path = check_params(params, check_estimator=False)
    environment(path.parent, use_services=False)
    from flowship.services import lifecycle

    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        typer.echo(line)

    try:
        stopped = lifecycle.stop(path.parent, say=say)
    except FlowshipError as exc:
        fail(str(exc))
    if stopped is None:
        typer.echo(
            "`flowship up` started nothing here" if said else "nothing to stop: `flowship up` started nothing here"
        )
