"""The retention flow: the logs' daily files older than params.yaml `retention:` deleted, the run recorded."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flowship.config import Params  # at run time: Prefect reads the flow's annotations
from flowship.flows.training import context
from flowship.monitoring.retention import RetentionRun
from flowship.tasks import retention as tasks


@flow(name="retention", description="Delete the inference, label, access and safety logs' files past their retention.")
def retention(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    dry_run: bool = False,
    params: Params | None = None,
) -> RetentionRun:
    """Each log's whole daily files past its retention are deleted (listed only, with `dry_run`)."""
    ctx = context(params_path, overrides, params)
    return tasks.retention(ctx, dry_run)
