"""`flowship audit`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from flowship.cli.common import ParamsOption, fail
from flowship.errors import FlowshipError


def audit(
    params: ParamsOption = Path("params.yaml"),
    since: str | None = typer.Option(
        None, "--since", metavar="WHEN", help="Only changes from WHEN on: an ISO date or time, or an age (7d, 12h)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, as the log keeps them."),
) -> None:
    """Every change to production, oldest first: when, who (the OS user or the Prefect flow run), what changed from
    what to what, and why."""
    from flowship import audit as audit_log

    path = params.resolve()
    # The log is read without checking params.yaml: a broken one must not hide what was done.
    if not path.is_file():
        fail(f"{path}: no such file (the audit log is kept in the folder of the project's params.yaml)")
    try:
        start = audit_log.parse_since(since, datetime.now(UTC)) if since is not None else None
    except FlowshipError as exc:
        fail(str(exc))
    entries = audit_log.read(path.parent, since=start)
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry, sort_keys=True))
    elif not entries:
        typer.echo("no changes to production recorded" + (f" since {start.isoformat()}" if start else ""))
    else:
        typer.echo("\n".join(audit_log.table(entries)))
