"""What every command shares: the options, the project's environment, failing with a message, the runtimes."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flowship.errors import FlowshipError

if TYPE_CHECKING:
    from flowship.config import Params
    from flowship.release.runtime import Runtime

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params.yaml to use; its folder is the project root.")
]


EnvOption = Annotated[
    str, typer.Option("--env", "-e", help="The environment whose deployments to register (dev, staging, production).")
]


IntervalOption = Annotated[
    int | None,
    typer.Option(
        "--interval",
        min=1,
        metavar="SECONDS",
        help="Run the monitoring check every SECONDS instead of its cron schedule (to try the schedule out).",
    ),
]


def environment(root: Path, use_services: bool = True) -> None:
    """Project-local state, unless the user points elsewhere: no surprises in ~/.prefect. While `flowship up`'s
    servers run, runs go to them (shown in both UIs), unless PREFECT_API_URL / MLFLOW_TRACKING_URI say otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    # The temporary local API gets 20 s to start by default: too few on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flowship.services.temporary_api import idle_seconds

    try:
        idle_seconds()  # a wrong value is named before any work
    except FlowshipError as exc:
        fail(str(exc))
    if use_services:
        from flowship.services.processes import live_services

        running = live_services(root)
        if running is not None:
            os.environ.setdefault("PREFECT_API_URL", running.api_url)
            os.environ.setdefault("MLFLOW_TRACKING_URI", running.mlflow_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def ready_for_flows(root: Path) -> None:
    """Just before a command runs its flow: the temporary Prefect API answering (when it uses one), and what the
    command has loaded by then (its libraries: about 450,000 objects in `flowship train`, kept until it ends) left
    out of the collector's later walks, which went through all of it for next to no garbage (0.2 s of a
    `flowship train`; see `main`)."""
    from flowship.services import temporary_api

    temporary_api.ready(root)
    gc.freeze()


def fail(message: str) -> NoReturn:
    typer.secho(f"flowship: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def read_params(path: Path, check_estimator: bool = True) -> Params:
    """The typed params, read once for the command: a bad file ends it, naming every problem found.
    `check_estimator=False` leaves out the estimator check, which imports scikit-learn."""
    from flowship.config import load_params

    try:
        return load_params(path, check_estimator)
    except FlowshipError as exc:
        fail(str(exc))


def check_params(params: Path, check_estimator: bool = True) -> Path:
    """The resolved path of a params.yaml that is valid (see `read_params`); its folder is the project root."""
    path = params.resolve()
    read_params(path, check_estimator)
    return path


def check_estimator(cfg: Params) -> None:
    """The estimator check that `read_params(..., check_estimator=False)` left out, on the params already read."""
    from flowship.estimators import check_estimator_config

    try:
        check_estimator_config(cfg)
    except FlowshipError as exc:
        fail(str(exc))


def runtimes(root: Path, cfg: Params) -> list[Runtime]:
    """Every runtime that may hold a deployment of this project: Docker (when a daemon answers) and processes."""
    from flowship.release.discovery import runtimes as project_runtimes

    return project_runtimes(root, cfg.project.name)
