"""The `flowship` command line: one module per group of commands, assembled here in the order `--help` lists them."""

from __future__ import annotations

import sys

import typer

from flowship.cli.audit import audit
from flowship.cli.monitoring import monitor, replay, retention
from flowship.cli.onboarding import init
from flowship.cli.pipeline import report, run, status, train
from flowship.cli.release import deploy, history, pause, resume, rollback, stage, stop
from flowship.cli.scoring import score
from flowship.cli.services import down, schedule, up

app = typer.Typer(
    help="flowship: train, gate, register, deploy and monitor a tabular model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
COMMANDS = (
    init,
    run,
    train,
    status,
    report,
    replay,
    stage,
    deploy,
    rollback,
    pause,
    resume,
    history,
    audit,
    stop,
    monitor,
    retention,
    score,
    schedule,
    up,
    down,
)
for command in COMMANDS:
    app.command()(command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
