"""`flowship replay` and `flowship monitor`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from flowship.cli.common import ParamsOption, check_params, environment, fail, runtimes
from flowship.errors import FlowshipError


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
    """Send the production window of the data to the endpoint as real traffic, month by month in time order;
    each month's true labels are written after its traffic (logs/labels/), as they would arrive later."""
    path = check_params(params, check_estimator=False)
    import pandas as pd

    from flowship.config import load_params
    from flowship.monitoring.replay import Columns, Replay, months
    from flowship.paths import Layout

    cfg = load_params(path, check_estimator=False)
    layout = Layout(path.parent)
    if batch_size > cfg.release.max_batch:
        fail(f"--batch-size {batch_size} is more than release.max_batch ({cfg.release.max_batch}) allows per request")
    try:
        columns = Columns.of(cfg)
        if from_ is None:
            if not layout.production_split.exists():
                fail("no production data: run `flowship train` first")
            times = pd.read_parquet(layout.production_split, columns=[columns.time])[columns.time]
            if times.dropna().empty:
                fail(f"the production data has no {columns.time!r} values to replay")
            from_ = f"{pd.Timestamp(times.min()):%Y-%m}"
        wanted = months(from_, to or from_)
    except FlowshipError as exc:
        fail(str(exc))
    if not layout.production_split.exists():
        fail("no production data: run `flowship train` first")
    done_file = path.parent / ".flowship" / "replayed.json"
    replayed: dict[str, Any] = json.loads(done_file.read_text()) if done_file.exists() else {}
    if once:
        skipped = [m for m in wanted if str(m) in replayed]
        for month in skipped:
            typer.echo(f"{month}  already replayed ({replayed[str(month)]['time']}): skipped")
        wanted = [m for m in wanted if str(m) not in replayed]
        if not wanted:
            reports = sorted((layout.monitoring_reports).glob("*/summary.json"))
            if reports:
                typer.echo(f"last report:   {reports[-1].parent}")
            return
    if url is None:
        serving = [d for r in runtimes(path) if (d := r.deployed("production")) is not None and d.status == "running"]
        if not serving:
            fail("nothing serves production: run `flowship deploy` first")
        url = serving[0].url
    if monitor:
        environment(path.parent)
        os.chdir(path.parent)
    frame = pd.read_parquet(layout.production_split)
    run = Replay(
        url, columns, layout.labels_dir, batch_size, concurrency, token=os.environ.get("FLOWSHIP_API_TOKEN") or None
    )
    typer.echo(f"replay {run.id}: {wanted[0]} to {wanted[-1]} → {url}/predict, labels to {layout.labels_dir}")
    for month in wanted:
        try:
            done = run.month(frame, month)
        except FlowshipError as exc:
            fail(str(exc))
        typer.echo(
            f"{done.month}  sent {done.sent:>7} of {done.records:<7} rejected {done.rejected:<6}"
            f"{done.requests_per_second:7.0f} req/s  labels written {done.sent}"
        )
        for error in done.errors:
            typer.echo(f"         rejected: {error}")
        replayed[str(month)] = {
            "replay": run.id,
            "url": url,
            "sent": done.sent,
            "time": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ}",
        }
        done_file.parent.mkdir(parents=True, exist_ok=True)
        done_file.write_text(json.dumps(replayed, indent=2))
        if monitor:
            import time

            from flowship.monitoring.window import SETTLE

            # the check's window ends SETTLE before now (log lines still on their way): wait for this month's last
            time.sleep(SETTLE.total_seconds() + 0.5)
            from flowship.flows.monitoring import monitoring

            try:
                summary: dict[str, Any] = monitoring(params_path=str(path))
            except FlowshipError as exc:
                fail(str(exc))
            print_monitoring(summary)


def monitor(
    params: ParamsOption = Path("params.yaml"),
    start: str | None = typer.Option(
        None, "--from", help="Window start (date or ISO time, UTC); default: where the last check ended."
    ),
    end: str | None = typer.Option(None, "--to", help="Window end (exclusive); default: now."),
) -> None:
    """Check production's inference log for drift and model quality; write the reports; alert past a threshold."""
    path = check_params(params)
    environment(path.parent)
    os.chdir(path.parent)
    from flowship.monitoring.window import parse_time

    try:
        for value, what in ((start, "start"), (end, "end")):
            if value is not None:
                parse_time(value, what)
        summary = run_monitoring(path, start, end)
    except FlowshipError as exc:
        fail(str(exc))
    print_monitoring(summary)


def run_monitoring(path: Path, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    from flowship.flows.monitoring import monitoring

    summary: dict[str, Any] = monitoring(params_path=str(path), start=start, end=end)
    return summary


def print_monitoring(summary: dict[str, Any]) -> None:
    typer.echo(f"window:        {summary['window']}")
    typer.echo(f"records:       {summary['records']}  (unreadable lines skipped: {summary['skipped_lines']})")
    typer.echo(f"verdict:       {summary['verdict']}")
    for check in summary["versions"]:
        typer.echo(f"  v{check['version']:<5} {check['verdict']:<17} {check['records']} records")
        for reason in check["reasons"]:
            typer.echo(f"          {reason}")
    if summary["report"]:
        typer.echo(f"report:        {summary['report']}")
    for version, url in summary["mlflow_runs"].items():
        typer.echo(f"mlflow:        v{version}: {url}")
    for alert in summary["alerts"]:
        typer.echo(f"alert:         v{alert['version']} {', '.join(alert['kinds'])}: {alert['delivery']}")
    if summary.get("retraining"):
        typer.echo(f"retraining:    {summary['retraining']}")
