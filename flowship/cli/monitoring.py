"""`flowship replay`, `flowship monitor` and `flowship retention`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flowship.cli.common import ParamsOption, environment, fail, read_params, ready_for_flows, runtimes
from flowship.errors import FlowshipError

if TYPE_CHECKING:
    from flowship.config import Params
    from flowship.monitoring.replay import PartResult
    from flowship.monitoring.report import MonitoringSummary
    from flowship.monitoring.service import ServiceCheck


def replay(
    params: ParamsOption = Path("params.yaml"),
    from_: str | None = typer.Option(
        None, "--from", help="The first month to replay (YYYY-MM; default: the first month of the production data)."
    ),
    to: str | None = typer.Option(None, "--to", help="The last month to replay (YYYY-MM; default: --from)."),
    url: str | None = typer.Option(None, "--url", help="The endpoint to send to (default: what serves production)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Records per request (at most release.max_batch)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight."),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Run the monitoring check after each month."),
    once: bool = typer.Option(
        False, "--once", help="Skip months already replayed to this project (see .flowship/replayed.json)."
    ),
) -> None:
    """Send the production share of the data to the endpoint as real traffic, month by month in time order (whole,
    in its stored order, when params.yaml names no data.time_column); each part's true labels are written after its
    traffic (logs/labels/), as they would arrive later."""
    path = params.resolve()
    cfg = read_params(path, check_estimator=False)
    replay_months(path, cfg, from_, to, url, batch_size, concurrency, monitor, once)


def replay_months(
    path: Path,
    cfg: Params,
    from_: str | None,
    to: str | None,
    url: str | None,
    batch_size: int,
    concurrency: int,
    monitor: bool,
    once: bool,
) -> None:
    """`flowship replay` once its params are read."""
    import pandas as pd

    from flowship.monitoring import replay as replays
    from flowship.paths import Layout

    layout = Layout(path.parent)
    if batch_size > cfg.release.max_batch:
        fail(f"--batch-size {batch_size} is more than release.max_batch ({cfg.release.max_batch}) allows per request")
    columns = replays.Columns.of(cfg)
    try:
        wanted = replays.parts(columns, layout.production_split, from_, to)
    except FlowshipError as exc:
        fail(str(exc))
    book = replays.ReplayBook(layout.replayed)
    if once:
        wanted, skipped = book.pending(wanted)
        for part in skipped:
            typer.echo(f"{part}  already replayed ({book.replayed_at(part)}): skipped")
        if not wanted:
            if (report := layout.last_monitoring_report()) is not None:
                typer.echo(f"last report:   {report}")
            return
    if url is None:
        url = _production_url(path, cfg)
    if monitor:
        environment(path.parent)
        os.chdir(path.parent)
    frame = pd.read_parquet(layout.production_split)
    token = os.environ.get("FLOWSHIP_API_TOKEN") or None
    run = replays.Replay(url, columns, layout.labels_dir, batch_size, concurrency, token=token)
    span = wanted[0] if len(wanted) == 1 else f"{wanted[0]} to {wanted[-1]}"
    typer.echo(f"replay {run.id}: {span} → {url}/predict, labels to {layout.labels_dir}")
    for part in wanted:
        try:
            done = run.part(frame, part)
        except FlowshipError as exc:
            fail(str(exc))
        print_part(done)
        book.record(part, run.id, url, done.sent)
        if monitor:
            try:
                summary = _check_after_replay(path, cfg)
            except FlowshipError as exc:
                fail(str(exc))
            print_monitoring(summary, path.parent)


def _production_url(path: Path, cfg: Params) -> str:
    serving = [
        d for r in runtimes(path.parent, cfg) if (d := r.deployed("production")) is not None and d.status == "running"
    ]
    if not serving:
        fail("nothing serves production: run `flowship deploy` first")
    return str(serving[0].url)


def _check_after_replay(path: Path, cfg: Params) -> MonitoringSummary:
    import time

    from flowship.monitoring.window import SETTLE

    # the check's window ends SETTLE before now (log lines still on their way): wait for this month's last
    time.sleep(SETTLE.total_seconds() + 0.5)
    return run_monitoring(path, cfg)


def monitor(
    params: ParamsOption = Path("params.yaml"),
    start: str | None = typer.Option(
        None, "--from", help="Window start (date or ISO time, UTC); default: where the last check ended."
    ),
    end: str | None = typer.Option(None, "--to", help="Window end (exclusive); default: now."),
) -> None:
    """Check production's inference log for drift and model quality; write the reports; alert past a threshold."""
    path = params.resolve()
    cfg = read_params(path)
    environment(path.parent)
    os.chdir(path.parent)
    from flowship.monitoring.window import parse_time

    try:
        for value, what in ((start, "start"), (end, "end")):
            if value is not None:
                parse_time(value, what)
        summary = run_monitoring(path, cfg, start, end)
    except FlowshipError as exc:
        fail(str(exc))
    print_monitoring(summary, path.parent)


def run_monitoring(path: Path, cfg: Params, start: str | None = None, end: str | None = None) -> MonitoringSummary:
    from flowship.services import temporary_api

    temporary_api.start_soon(path.parent)  # starts while the flow's modules load
    from flowship.flows.monitoring import run_monitoring as run

    ready_for_flows(path.parent)
    return run(str(path), start, end, cfg)


def print_part(done: PartResult) -> None:
    typer.echo(
        f"{done.part}  sent {done.sent:>7} of {done.records:<7} rejected {done.rejected:<6}"
        f"{done.requests_per_second:7.0f} req/s  labels written {done.sent}"
    )
    for error in done.errors:
        typer.echo(f"         rejected: {error}")


def print_monitoring(summary: MonitoringSummary, root: Path) -> None:
    typer.echo(f"window:        {summary.window}")
    typer.echo(f"records:       {summary.records}  (unreadable lines skipped: {summary.skipped_lines})")
    typer.echo(f"verdict:       {summary.verdict}")
    if summary.note:
        typer.echo(f"               {summary.note}")
    for check in summary.versions:
        typer.echo(f"  v{check.version:<5} {check.verdict:<17} {check.records} records")
        for reason in check.reasons:
            typer.echo(f"          {reason}")
        alerted = " ".join(check.reasons)
        for rate in check.guardrails:
            if rate.sentence() not in alerted:
                typer.echo(f"          guardrails: {rate.sentence()}")
    if summary.service is not None:
        print_service(summary.service)
    if summary.report:
        typer.echo(f"report:        {summary.report}")
    for version, url in summary.mlflow_runs.items():
        typer.echo(f"mlflow:        v{version}: {url}")
    if summary.service_run:
        typer.echo(f"mlflow:        service: {summary.service_run}")
    if summary.dashboard_project:
        typer.echo(f"dashboard:     {dashboard_link(root, summary.dashboard_project)}")
    for alert in summary.alerts:
        scope = f"v{alert.version}" if alert.version else "service"
        typer.echo(f"alert:         {scope} {', '.join(alert.kinds)}: {alert.delivery}")
        typer.echo(f"               runbook: {', '.join(alert.runbook)}")
    if summary.retraining is not None:
        typer.echo(f"retraining:    {summary.retraining.as_dict()}")


def print_service(check: ServiceCheck) -> None:
    from flowship.monitoring.alerts import cost_line, figures_line

    skipped = f"  (unreadable access-log lines skipped: {check.skipped})" if check.skipped else ""
    typer.echo(f"service:       {check.verdict}{skipped}")
    for fig in [*check.versions, check.total]:
        name = "all" if fig.version == "*" else f"v{fig.version}"
        typer.echo(f"  {name:<6} {figures_line(fig)}")
        if (cost := cost_line(fig)) is not None:
            typer.echo(f"         {cost}")
    for reason in check.reasons:
        typer.echo(f"          {reason}")
    if check.usage is not None:
        for note in check.usage.notes:
            typer.echo(f"  cost:  {note}")
        if check.usage.skipped:
            typer.echo(f"  cost:  unreadable usage-log lines skipped: {check.usage.skipped}")
    budget = check.budget
    if budget.left is not None and budget.good_ratio is not None:
        typer.echo(
            f"  error budget: {budget.good_ratio:.3%} good of {budget.requests} requests over {budget.days} days "
            f"(target {budget.target:.2%}): {budget.left:.0%} left"
        )


def retention(
    params: ParamsOption = Path("params.yaml"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files that would go; delete and record nothing."),
) -> None:
    """Delete the inference, label, access and safety logs' daily files past params.yaml `retention:`."""
    path = params.resolve()
    cfg = read_params(path)
    from flowship.monitoring.retention import apply_retention
    from flowship.paths import Layout

    try:
        run = apply_retention(Layout(path.parent), cfg.retention, dry_run)
    except (FlowshipError, OSError) as exc:
        fail(str(exc))
    verb = "would remove" if dry_run else "removed"
    for log, totals in run.per_log().items():
        days = run.days[log]
        kept = "kept for ever" if days is None else f"kept {days} days"
        typer.echo(f"{log + ':':<14} {verb} {totals['files']} files, {totals['bytes']} bytes ({kept})")
    for removed in run.removed:
        typer.echo(f"  {removed.path.relative_to(path.parent)}")
    for busy in run.kept_while_written:
        typer.echo(f"  kept (still written to): {busy.relative_to(path.parent)}")
    if not dry_run:
        typer.echo("recorded in:   the audit log (flowship audit)")


def dashboard_link(root: Path, project: str) -> str:
    """The model's dashboard in the Evidently UI that `flowship up` runs for this project, or how to open it."""
    from flowship.services.processes import DASHBOARD, live_services

    running = live_services(root)
    if running is not None and running.evidently_url and DASHBOARD in running.running():
        return f"{running.evidently_url}/projects/{project}"
    return f"project {project} (`flowship up` starts the Evidently UI that shows it)"
