"""The retention task: delete the logs' expired daily files, record the run, show what went."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from flowship.monitoring.retention import RetentionRun, apply_retention
from flowship.tasks.common import Context, run_actor


@task(name="retention")
def retention(ctx: Context, dry_run: bool = False) -> RetentionRun:
    """The expired daily files of the inference, label, access and safety logs, deleted (a dry run only lists
    them); the run is recorded in the audit log, as this flow run."""
    run = apply_retention(ctx.layout, ctx.params.retention, dry_run, actor=run_actor())
    totals = run.per_log()
    verb = "would remove" if dry_run else "removed"
    get_run_logger().info(
        "retention %s %d files (%d bytes): %s",
        verb,
        len(run.removed),
        sum(f.bytes for f in run.removed),
        ", ".join(f"{log} {t['files']} ({kept(run.days[log])})" for log, t in totals.items()),
    )
    create_table_artifact(
        key="retention",
        table=[{"log": log, "days": run.days[log], **t} for log, t in totals.items()],
        description=f"Retention: {verb} {len(run.removed)} files",
    )
    return run


def kept(days: int | None) -> str:
    return "kept for ever" if days is None else f"kept {days} days"
