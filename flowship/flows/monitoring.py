"""The monitoring flow: inference log window → reference of the serving version → Evidently checks →
reports (disk, MLflow, Prefect artifacts) → alerts → optional retraining through the gate and release."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flowship.errors import FlowshipError, QualityGateFailed
from flowship.flows.training import context
from flowship.monitoring import retraining as retrain
from flowship.monitoring.alerts import plan_alerts
from flowship.monitoring.checks import VersionCheck, overall
from flowship.monitoring.window import read_state
from flowship.tasks import monitoring as tasks

# How the run's state reads in the Prefect UI: drift is not a failure, and it shows at a glance.
STATE_NAMES = {
    "no_data": "No data",
    "insufficient_data": "Too few records",
    "ok": "No drift",
    "drift": "Drift detected",
    "quality_drop": "Quality dropped",
}


@flow(
    name="monitoring", description="Check production's inference log for drift and quality; alert; optionally retrain."
)
def monitoring(
    params_path: str = "params.yaml",
    start: str | None = None,
    end: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> State[Any]:
    ctx = context(params_path, overrides)
    logger = get_run_logger()
    data = tasks.read_window(ctx, start, end)
    window = data.window
    folder = _report_folder(ctx.layout.monitoring_reports)
    checks: list[VersionCheck] = []
    for version, group in data.records.groupby("model_version", sort=True):
        spec, ref = tasks.reference(ctx, str(version))
        checks.append(tasks.check_version(ctx, spec, ref, group, data.labels, folder / f"v{version}"))
    verdict = overall(checks)
    summary: dict[str, Any] = {
        "verdict": verdict,
        "window": window.label(),
        "window_start": window.start.isoformat() if window.start else None,
        "window_end": window.end.isoformat(),
        "records": len(data.records),
        "skipped_lines": data.skipped,
        "labels": len(data.labels),
        "labels_skipped_lines": data.labels_skipped,
        "report": str(folder) if checks else None,
        "versions": [c.as_dict() for c in checks],
        "mlflow_runs": {},
        "alerts": [],
        "retraining": None,
    }
    if checks:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        summary["mlflow_runs"] = {c.version: tasks.log_check(ctx, window, c, folder) for c in checks}
    tasks.publish(summary, checks)
    tasks.advance_window(ctx, window)
    alerts = plan_alerts(
        ctx.params.project.name,
        checks,
        window,
        folder,
        read_state(ctx.layout.monitoring_state),
        ctx.params.monitoring.alerts.cooldown_hours,
        datetime.now(UTC),
    )
    delivery_error: FlowshipError | None = None
    if alerts:
        try:
            summary["alerts"] = tasks.send_alerts(ctx, alerts)
        except tasks.AlertDeliveryError as exc:
            delivery_error = exc
    if ctx.params.monitoring.retrain.enabled and verdict in ("drift", "quality_drop"):
        summary["retraining"] = retraining(params_path, overrides)
    if checks:
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if delivery_error is not None:
        raise delivery_error
    message = "; ".join(r for c in checks for r in c.reasons) or f"{len(data.records)} records"
    logger.info("monitoring verdict: %s (%s)", verdict, message)
    return Completed(name=STATE_NAMES[verdict], message=f"{verdict}: {message}"[:500], data=summary)


def _report_folder(parent: Path) -> Path:
    """One folder per check, named by when it ran (UTC); never an earlier check's."""
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    folder, n = parent / stamp, 1
    while folder.exists():
        n += 1
        folder = parent / f"{stamp}-{n}"
    return folder


@flow(
    name="retraining",
    description="Train on the window moved up to the newest labelled data; the gate, and the release, as always.",
)
def retraining(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on the window moved up to the newest labelled data; the candidate meets the same gate, and the
    release (with monitoring.retrain.deploy) the same staging checks, as any other. Started by a monitoring
    check that found drift (monitoring.retrain.enabled), or by hand from its deployment."""
    from flowship.flows.release import release_flow
    from flowship.flows.training import training
    from flowship.monitoring.labels import read_labels

    logger = get_run_logger()
    ctx = context(params_path, overrides)
    path = ctx.root / Path(params_path).name
    labels, _ = read_labels(ctx.layout.labels_dir)
    values = retrain.newer_split(ctx.params, labels)
    if values is None:
        logger.info("retraining skipped: no label is newer than the training window")
        return {"status": "skipped", "reason": "no labelled data newer than the training window"}
    retrain.rewrite_split(path, values)
    logger.info("retraining on the newer window %s (params.yaml split updated)", values)
    try:
        trained = training(params_path=str(path), overrides=overrides)
    except QualityGateFailed as exc:
        return {"status": "gate_failed", "window": values, "reason": str(exc)}
    result: dict[str, Any] = {"status": "registered", "window": values, "version": trained["registered"]["version"]}
    if ctx.params.monitoring.retrain.deploy and trained["registered"]["new"]:
        try:
            released = release_flow(params_path=str(path), overrides=overrides)
            result["release"] = released.as_dict()["production"]
        except FlowshipError as exc:
            result["release"] = f"not released: {exc}"
    return result
