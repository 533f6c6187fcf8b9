"""The `flowship` command line: one module per group of commands, assembled here in the order `--help` lists them."""

from __future__ import annotations

import atexit
import gc
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
    # A command imports its libraries as it needs them (Prefect, MLflow, pandas, scikit-learn, DVC: about 450,000
    # objects in `flowship train`), and keeps them until it ends. At CPython's default thresholds (700, 10, 10) the
    # collector walked all of them nine times while they loaded and the flow ran, for next to no garbage: 1.0 to
    # 1.3 s of a `flowship train` after a changed hyperparameter, 0.4 s of one with nothing to do (measured with
    # `gc.callbacks`). A young collection every 50,000 new objects instead of every 700; once loaded, they are left
    # out of later collections (`ready_for_flows`): 0.2 s of collections in that `flowship train`.
    gc.set_threshold(50_000, 20, 10)
    # At exit, after the handlers registered from here on (Prefect's, MLflow's, the temporary API's stop: they run in
    # reverse order), what is alive stays out of the interpreter's shutdown collections, which walked all of it (a
    # training command's libraries, data and model: 1.5 s between its last line and its exit; 0.1 s frozen). The
    # operating system frees the memory.
    atexit.register(gc.freeze)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
