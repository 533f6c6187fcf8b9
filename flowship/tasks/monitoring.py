"""Monitoring tasks: read the window, build the reference, run the checks, record them, send alerts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flowship.adapters.alerts import Webhook
from flowship.adapters.dvc_repo import DvcProject
from flowship.adapters.tracking import Tracker
from flowship.errors import AlertDeliveryError, RegistryError
from flowship.monitoring import checks
from flowship.monitoring.alerts import AlertDelivery, Judged, deliver_alerts, judge_service, plan_alerts
from flowship.monitoring.checks import VersionCheck
from flowship.monitoring.cost import read_usage_window, with_cost
from flowship.monitoring.dashboard import DashboardRecord, record_check
from flowship.monitoring.privacy import protect_reference
from flowship.monitoring.reference import (
    ModelSpec,
    Reference,
    build_reference,
    load_reference,
    reference_key,
    save_reference,
    spec_from_registry,
)
from flowship.monitoring.report import (
    MonitoringSummary,
    drift_table,
    run_metrics,
    run_name,
    run_tags,
    service_metrics,
    service_run_metrics,
    service_table,
    service_tags,
    summary_markdown,
    version_figures,
)
from flowship.monitoring.report import write_summary as write_summary_file
from flowship.monitoring.retention import past_retention
from flowship.monitoring.retraining import newer_split, rewrite_split
from flowship.monitoring.service import (
    ServiceCheck,
    day_counts,
    error_budget,
    merge_days,
    read_access_window,
    recent_days,
    service_window,
)
from flowship.monitoring.window import Window, WindowData, read_state, resolve_window, window_data, write_state
from flowship.serving.labels import read_labels
from flowship.serving.privacy import project_key
from flowship.tasks.common import Context, is_transient


@task(name="read_window")
def read_window(ctx: Context, start: str | None, end: str | None) -> WindowData:
    """The window's inference records (grouped later by model version) and the labels arrived so far."""
    window = resolve_window(read_state(ctx.layout.monitoring_state), start, end)
    features = ctx.params.data.features
    left_out = ctx.params.privacy.unmonitored(features.numeric)
    data = window_data(
        ctx.layout.inference_log_dir, ctx.layout.label_dirs, window, features.numeric, features.categorical, left_out
    )
    data = past_retention(data, ctx.params.retention, datetime.now(UTC).date())
    if data.expired is not None:
        get_run_logger().info("window %s: %s", window.label(), data.expired)
        return data
    versions = data.records["model_version"].value_counts().to_dict() if len(data.records) else {}
    get_run_logger().info(
        "window %s: %d records %s from %d files, %d unreadable lines skipped; %d labels arrived; %d safety events",
        window.label(),
        len(data.records),
        versions,
        data.files,
        data.skipped,
        data.labels_arrived,
        len(data.safety),
    )
    return data


@task(name="check_service")
def check_service(ctx: Context, window: Window, predictions: dict[str, int] | None = None) -> ServiceCheck:
    """The service's figures from the gateway's access log, per version and in all, the error budget over its days
    (this window's tally added to the earlier checks'), the serving processes' cost from their usage log for the
    window's `predictions` (records per version), and the service's alerts."""
    cfg = ctx.params.monitoring.service
    access = read_access_window(ctx.layout.gateway_log_dir, window)
    samples, usage = read_usage_window(ctx.layout.inference_log_dir, window)
    found = with_cost(service_window(access.lines, window), samples, usage, window, predictions or {}, cfg.cost)
    days = day_counts(access.lines)
    tally = merge_days(read_state(ctx.layout.monitoring_state).get("service_days", {}), days)
    budget = error_budget(tally, cfg.error_budget.target, cfg.error_budget.days, window.end)
    # an empty window alerts only if production is meant to be answering
    serving = found.total.requests > 0 or (access.files > 0 and production_serving(ctx))
    check = judge_service(found, budget, cfg, serving, access.skipped, access.files, days)
    get_run_logger().info(
        "service %s: %d requests from %d access-log files, %d unreadable lines skipped; %s",
        window.label(),
        check.total.requests,
        access.files,
        access.skipped,
        "; ".join(check.reasons) or check.verdict,
    )
    if check.usage is not None:
        get_run_logger().info(
            "cost %s: %d usage-log files, %d unreadable lines skipped%s",
            window.label(),
            check.usage.files,
            check.usage.skipped,
            "".join(f"; {note}" for note in check.usage.notes),
        )
    return check


def production_serving(ctx: Context) -> bool:
    """Whether a runtime of this project holds a running production deployment."""
    from flowship.release.discovery import runtimes

    for runtime in runtimes(ctx.root, ctx.params.project.name):
        deployed = runtime.deployed("production")
        if deployed is not None and deployed.status == "running":
            return True
    return False


@task(name="reference", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=is_transient)
def reference(ctx: Context, version: str) -> tuple[ModelSpec, Reference]:
    """The serving version's training data (found through its lineage), sampled and scored once per version."""
    tracker = Tracker(ctx.root)
    name = ctx.params.project.name
    ref = tracker.version(name, version)
    if ref.run_id is None:
        raise RegistryError(f"{name} v{version} has no MLflow run: its lineage is unknown")
    params, metrics = tracker.run_data(ref.run_id)
    spec = spec_from_registry(name, version, ref.tags, tracker.input_schema(ref.uri), params, metrics)
    rows, seed = ctx.params.monitoring.reference_rows, ctx.params.project.seed
    key = reference_key(spec, rows, seed)
    cached = load_reference(ctx.layout.reference_cache, key)
    logger = get_run_logger()
    if cached is not None:
        logger.info("reference of v%s from the cache (%s)", version, key)
        return _as_logged(ctx, spec, cached)
    path = DvcProject(ctx.root).object_path(spec.train_md5, f"the training data of v{version}")
    train = pd.read_parquet(path)
    built = build_reference(train, spec, tracker.load_model(ref.uri), rows, seed)
    save_reference(built, ctx.layout.reference_cache, key)
    logger.info(
        "reference of v%s: %d of %d training rows (md5 %s)", version, len(built.frame), len(train), spec.train_md5
    )
    return _as_logged(ctx, spec, built)


def _as_logged(ctx: Context, spec: ModelSpec, ref: Reference) -> tuple[ModelSpec, Reference]:
    """The reference as the log keeps the sensitive columns (params.yaml `privacy:`): hashed alike, or left out."""
    policy = ctx.params.privacy
    if not policy.columns:
        return spec, ref
    key = project_key(ctx.layout.privacy_key).encode() if policy.needs_key else None
    left_out = policy.unmonitored(spec.numeric)
    if left_out:
        get_run_logger().info("left out of the checks by privacy (mode %s): %s", policy.mode, ", ".join(left_out))
    return protect_reference(spec, ref, policy, key)


@task(name="check_version")
def check_version(
    ctx: Context,
    spec: ModelSpec,
    ref: Reference,
    records: pd.DataFrame,
    labels: pd.DataFrame,
    folder: Path,
    events: pd.DataFrame,
) -> VersionCheck:
    """Drift (features and prediction), data quality, the guardrails' rates and, with enough labels, model quality:
    HTML + numbers."""
    check = checks.check_version(
        spec,
        ref,
        records,
        labels,
        folder,
        ctx.params.monitoring,
        ctx.params.quality_metric,
        ctx.params.project.seed,
        events,
    )
    get_run_logger().info("v%s: %s %s", spec.version, check.verdict, "; ".join(check.reasons))
    return check


@task(name="write_summary")
def write_summary(summary: MonitoringSummary) -> Path:
    """The run's summary as `summary.json` in its report folder."""
    assert summary.report is not None, "a summary without checks has no report folder"
    return write_summary_file(Path(summary.report), summary)


@task(name="log_check", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def log_check(
    ctx: Context, window: Window, check: VersionCheck, folder: Path, service: ServiceCheck | None = None
) -> str:
    """The check as a run of the monitoring experiment, tagged with the model version, with the version's service
    figures (`service.*`); returns its URL."""
    name = ctx.params.project.name
    files = [Path(p) for p in check.reports.values()] + [folder / "summary.json"]
    _, url = Tracker(ctx.root).log_check(
        f"{name}-monitoring",
        run_name(window, check),
        run_tags(name, window, check),
        run_metrics(check) | (service_metrics(fig) if (fig := version_figures(service, check.version)) else {}),
        [f for f in files if f.exists()],
    )
    return url


@task(name="log_service", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def log_service(ctx: Context, window: Window, check: ServiceCheck, folder: Path) -> str:
    """The service's check as a run of the monitoring experiment (tag monitoring.scope=service); returns its URL."""
    name = ctx.params.project.name
    files = [f for f in (folder / "summary.json",) if f.exists()]
    _, url = Tracker(ctx.root).log_check(
        f"{name}-monitoring",
        f"service-{window.end:%Y%m%dT%H%M%S}",
        service_tags(name, window, check),
        service_run_metrics(check),
        files,
    )
    return url


@task(name="record_dashboard")
def record_dashboard(
    ctx: Context, window: Window, checks: list[VersionCheck], service: ServiceCheck | None
) -> DashboardRecord | None:
    """The check's run in the model's project of the dashboard's workspace (the Evidently UI's folder), at the
    window's end; the dashboard's panels drawn for every version seen so far."""
    cfg = ctx.params.monitoring
    folder = ctx.root / cfg.dashboard.workspace
    began = time.monotonic()
    record = record_check(
        folder, ctx.params.project.name, window.end, checks, service, cfg.drift.key_features, ctx.params.quality_metric
    )
    if record is None:
        get_run_logger().info("dashboard: nothing to add (no record, no request)")
        return None
    get_run_logger().info(
        "dashboard: run %s added to project %s in %s in %.2f s; versions %s%s",
        record.run_id,
        record.project,
        folder,
        time.monotonic() - began,
        ", ".join(f"v{v}" for v in record.versions),
        " (panels redrawn)" if record.panels_changed else "",
    )
    return record


@task(name="publish")
def publish(summary: MonitoringSummary) -> None:
    """The drift table, the service table and the verdict with its links, as Prefect artifacts."""
    rows = [row for check in summary.versions for row in drift_table(check)]
    if rows:
        create_table_artifact(key="monitoring-drift", table=rows, description="per-feature drift, by model version")
    if summary.service is not None and summary.service.total.requests:
        create_table_artifact(
            key="monitoring-service",
            table=service_table(summary.service),
            description="traffic, errors and latency at the gateway, and the serving processes' cost, by model version "
            "and in all (*)",
        )
    create_markdown_artifact(
        key="monitoring-summary",
        markdown=summary_markdown(summary),
        description=f"monitoring: {summary.verdict}",
    )


@task(name="send_alerts")
def send_alerts(ctx: Context, found: list[Judged], window: Window, folder: Path) -> list[AlertDelivery]:
    """An alert per version with a problem (and one for the service), into the local alert log; new ones also to
    the webhook. A failed delivery fails the run (after everything else is written) and is tried again by the next
    check: its cool-down is not started."""
    cfg = ctx.params.monitoring.alerts
    state = read_state(ctx.layout.monitoring_state)
    now = datetime.now(UTC)
    alerts = plan_alerts(ctx.params.project.name, found, window, folder, state, cfg.cooldown_hours, now)
    if not alerts:
        return []
    webhook = Webhook(cfg.webhook) if cfg.webhook else None
    done = deliver_alerts(alerts, webhook, ctx.layout.alert_log, state.get("alerts", {}), cfg.cooldown_hours, now)
    logger = get_run_logger()
    for alert, delivered in zip(alerts, done.deliveries, strict=True):
        logger.warning(
            "ALERT %s %s %s: %s (%s; runbook: %s)",
            alert.model,
            f"v{alert.version}" if alert.version else "service",
            alert.verdict,
            "; ".join(alert.reasons),
            delivered.delivery,
            ", ".join(alert.runbook),
        )
    write_state(ctx.layout.monitoring_state, {**read_state(ctx.layout.monitoring_state), "alerts": done.sent})
    if done.failures:
        raise AlertDeliveryError("; ".join(done.failures) + f" (the alert is in {ctx.layout.alert_log})")
    return done.deliveries


@task(name="advance_window")
def advance_window(ctx: Context, window: Window, service: ServiceCheck | None = None) -> None:
    """A finished default check moves 'since the last check' to its end, and adds its requests to the error
    budget's daily tally (kept for the budget's days). A check of a window given by hand may overlap checked ones:
    it changes neither."""
    if not window.default:
        return
    state = read_state(ctx.layout.monitoring_state)
    state["last_end"] = window.end.isoformat()
    if service is not None:
        tally = merge_days(state.get("service_days", {}), service.days)
        state["service_days"] = recent_days(tally, ctx.params.monitoring.service.error_budget.days, window.end)
    write_state(ctx.layout.monitoring_state, state)


@task(name="move_training_window")
def move_training_window(ctx: Context, params_file: Path) -> dict[str, str | None] | None:
    """The training split moved up to the newest labelled data and written into `params_file` (comments kept);
    None, and the file untouched, when no label is newer than the training window."""
    labels, _ = read_labels(ctx.layout.label_dirs)
    values = newer_split(ctx.params, labels)
    logger = get_run_logger()
    if values is None:
        logger.info("retraining skipped: no label is newer than the training window")
        return None
    rewrite_split(params_file, values)
    logger.info("retraining on the newer window %s (params.yaml split updated)", values)
    return values
