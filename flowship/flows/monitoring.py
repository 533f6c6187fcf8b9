"""The monitoring flow: inference log window → reference of the serving version → Evidently checks →
reports (disk, MLflow, Prefect artifacts) → alerts → optional retraining through the gate and release."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Completed

from flowship.config import Params  # at run time: Prefect reads the flow's annotations
from flowship.errors import AlertDeliveryError, DashboardError, FlowshipError, QualityGateFailed
from flowship.flows.training import context
from flowship.monitoring.checks import VersionCheck
from flowship.monitoring.report import MonitoringSummary, report_folder, summarize
from flowship.monitoring.retraining import RetrainingResult
from flowship.tasks import monitoring as tasks

# How the run's state reads in the Prefect UI: drift is not a failure, and it shows at a glance.
STATE_NAMES = {
    "no_data": "No data",
    "expired": "Logs deleted by retention",
    "insufficient_data": "Too few records",
    "ok": "No drift",
    "drift": "Drift detected",
    "quality_drop": "Quality dropped",
}
RETRAIN_ON = ("drift", "quality_drop")


@flow(
    name="monitoring", description="Check production's inference log for drift and quality; alert; optionally retrain."
)
def monitoring(
    params_path: str = "params.yaml",
    start: str | None = None,
    end: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
) -> State[MonitoringSummary]:
    """Returns a Completed state named after the verdict (see STATE_NAMES); called directly, the flow gives its
    MonitoringSummary (`run_monitoring` does that with the type said). The CLI hands over the `params` it read."""
    ctx = context(params_path, overrides, params)
    data = tasks.read_window(ctx, start, end)
    service = tasks.check_service(ctx, data.window, data.predictions)
    folder = report_folder(ctx.layout.monitoring_reports, datetime.now(UTC))
    checks: list[VersionCheck] = []
    for version, group in data.records.groupby("model_version", sort=True):
        spec, ref = tasks.reference(ctx, str(version))
        events = data.safety[data.safety["model_version"] == str(version)]
        checks.append(tasks.check_version(ctx, spec, ref, group, data.labels, folder / f"v{version}", events))
    summary = summarize(data, checks, folder, service)
    if summary.report is not None:
        tasks.write_summary(summary)  # before the MLflow runs, which keep it among their reports
        runs = {c.version: tasks.log_check(ctx, data.window, c, folder, service) for c in checks}
        service_run = tasks.log_service(ctx, data.window, service, folder) if service.files else None
        summary = replace(summary, mlflow_runs=runs, service_run=service_run)
    dashboard_error: DashboardError | None = None
    if summary.report is not None and ctx.params.monitoring.dashboard.enabled:
        try:
            shown = tasks.record_dashboard(ctx, data.window, checks, service)
            if shown is not None:
                summary = replace(summary, dashboard_project=shown.project, dashboard_run=shown.run_id)
        except DashboardError as exc:
            dashboard_error = exc  # raised once the check's reports, alerts and summary are done
    tasks.publish(summary)
    tasks.advance_window(ctx, data.window, service)
    delivery_error: AlertDeliveryError | None = None
    try:
        summary = replace(summary, alerts=tasks.send_alerts(ctx, [*checks, service], data.window, folder))
    except AlertDeliveryError as exc:
        delivery_error = exc  # raised once the retraining and the summary are done
    if ctx.params.monitoring.retrain.enabled and summary.verdict in RETRAIN_ON:
        summary = replace(summary, retraining=retraining(params_path, overrides))
    if summary.report is not None:
        tasks.write_summary(summary)
    if delivery_error is not None:
        raise delivery_error
    if dashboard_error is not None:
        raise dashboard_error
    get_run_logger().info("monitoring verdict: %s (%s)", summary.verdict, summary.message)
    return Completed(
        name=STATE_NAMES[summary.verdict], message=f"{summary.verdict}: {summary.message}"[:500], data=summary
    )


def run_monitoring(
    params_path: str, start: str | None = None, end: str | None = None, params: Params | None = None
) -> MonitoringSummary:
    """The monitoring flow, called for its summary: Prefect hands back the data of the state the flow returns."""
    summary: object = monitoring(params_path=params_path, start=start, end=end, params=params)
    if not isinstance(summary, MonitoringSummary):
        raise TypeError(f"the monitoring flow returned {type(summary).__name__}, not a MonitoringSummary")
    return summary


@flow(
    name="retraining",
    description="Train on the window moved up to the newest labelled data; the gate, and the release, as always.",
)
def retraining(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> RetrainingResult:
    """Train on the window moved up to the newest labelled data; the candidate meets the same gate, and the
    release (with monitoring.retrain.deploy) the same staging checks, as any other. Started by a monitoring
    check that found drift (monitoring.retrain.enabled), or by hand from its deployment."""
    from flowship.flows.release import release_flow
    from flowship.flows.training import training

    ctx = context(params_path, overrides)
    path = ctx.root / Path(params_path).name
    values = tasks.move_training_window(ctx, path)
    if values is None:
        return RetrainingResult("skipped", reason="no labelled data newer than the training window")
    try:
        trained = training(params_path=str(path), overrides=overrides)
    except QualityGateFailed as exc:
        return RetrainingResult("gate_failed", window=values, reason=str(exc))
    trained_version = trained.registered
    assert trained_version is not None  # a failed gate raised QualityGateFailed above
    registered = RetrainingResult("registered", window=values, version=trained_version.version)
    if not (ctx.params.monitoring.retrain.deploy and trained_version.new):
        return registered
    try:
        released = release_flow(params_path=str(path), overrides=overrides)
    except FlowshipError as exc:
        return replace(registered, release=f"not released: {exc}")
    return replace(registered, release=released.as_dict()["production"])
