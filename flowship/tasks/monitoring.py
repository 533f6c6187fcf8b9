"""Monitoring tasks: read the window, build the reference, run the checks, record them, send alerts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flowship.adapters import drift as reports
from flowship.adapters.dvc_repo import DvcProject
from flowship.adapters.tracking import TAG, Tracker
from flowship.errors import FlowshipError, RegistryError
from flowship.monitoring.alerts import Alert, append_alert_log, mark_sent
from flowship.monitoring.checks import (
    VersionCheck,
    current_frame,
    decide,
    join_labels,
    label_text,
    model_quality,
    sample_rows,
)
from flowship.monitoring.labels import read_labels
from flowship.monitoring.reference import (
    ModelSpec,
    Reference,
    build_reference,
    load_reference,
    reference_key,
    save_reference,
    spec_from_registry,
)
from flowship.monitoring.report import drift_table, summary_markdown
from flowship.monitoring.window import Window, read_log_window, read_state, resolve_window, write_state
from flowship.tasks.common import Context, is_transient


class AlertDeliveryError(FlowshipError):
    """An alert could not be delivered to its channel (it is kept in the local alert log)."""


@dataclass
class WindowData:
    window: Window
    records: pd.DataFrame
    skipped: int
    files: int
    labels: pd.DataFrame
    labels_skipped: int


@task(name="read_window")
def read_window(ctx: Context, start: str | None, end: str | None) -> WindowData:
    """The window's inference records (grouped later by model version) and the labels arrived so far."""
    state = read_state(ctx.layout.monitoring_state)
    window = resolve_window(state, start, end)
    features = ctx.params.data.features
    schema = {**dict.fromkeys(features.numeric, "numeric"), **dict.fromkeys(features.categorical, "categorical")}
    log = read_log_window(ctx.layout.inference_log_dir, window, schema)
    # Every label that has arrived by now: a label usually comes after its prediction's window closed.
    labels, labels_skipped = read_labels(ctx.layout.labels_dir)
    logger = get_run_logger()
    versions = log.records["model_version"].value_counts().to_dict() if len(log.records) else {}
    logger.info(
        "window %s: %d records %s from %d files, %d unreadable lines skipped; %d labels arrived",
        window.label(),
        len(log.records),
        versions,
        log.files,
        log.skipped,
        len(labels),
    )
    return WindowData(window, log.records, log.skipped, log.files, labels, labels_skipped)


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
    cfg = ctx.params.monitoring
    key = reference_key(spec, cfg.reference_rows, ctx.params.project.seed)
    cached = load_reference(ctx.layout.reference_cache, key)
    logger = get_run_logger()
    if cached is not None:
        logger.info("reference of v%s from the cache (%s)", version, key)
        return spec, cached
    path = DvcProject(ctx.root).object_path(spec.train_md5, f"the training data of v{version}")
    train = pd.read_parquet(path)
    built = build_reference(train, spec, tracker.load_model(ref.uri), cfg.reference_rows, ctx.params.project.seed)
    save_reference(built, ctx.layout.reference_cache, key)
    logger.info(
        "reference of v%s: %d of %d training rows (md5 %s)", version, len(built.frame), len(train), spec.train_md5
    )
    return spec, built


@task(name="check_version")
def check_version(
    ctx: Context, spec: ModelSpec, ref: Reference, records: pd.DataFrame, labels: pd.DataFrame, folder: Path
) -> VersionCheck:
    """Drift (features and prediction), data quality and, with enough labels, model quality: HTML + numbers."""
    cfg = ctx.params.monitoring
    seed = ctx.params.project.seed
    current, absent, unexpected = current_frame(records, spec)
    folder.mkdir(parents=True, exist_ok=True)
    numeric = [c for c in spec.numeric if c not in absent]
    categorical = [c for c in spec.categorical if c not in absent]
    prediction_numeric = spec.task == "regression"
    paths: dict[str, str] = {}
    drift: list[reports.ColumnDrift] = []
    sampled = min(len(current), cfg.sample_rows)
    quality_rows: list[reports.ColumnQuality] = []
    target_drift: reports.ColumnDrift | None = None
    if len(current) >= cfg.min_records:
        sample = sample_rows(current, cfg.sample_rows, seed)
        drift = reports.drift_report(
            ref.frame,
            sample,
            [*numeric, *(["prediction"] if prediction_numeric else [])],
            [*categorical, *([] if prediction_numeric else ["prediction"])],
            cfg.drift.num_method,
            cfg.drift.cat_method,
            cfg.drift.threshold,
            folder / "drift.html",
        )
        paths["drift"] = str(folder / "drift.html")
        quality_rows = reports.data_quality_report(
            current, numeric, categorical, ref.ranges, ref.categories, folder / "data-quality.html"
        )
        paths["data_quality"] = str(folder / "data-quality.html")
    labelled = join_labels(records, labels)
    quality = model_quality(labelled, spec, ref, cfg, ctx.params.quality_metric)
    if quality.metrics:
        graded = pd.DataFrame(
            {
                "target": labelled["label"].map(label_text)
                if spec.task == "classification"
                else labelled["label"].astype(float),
                "prediction": labelled["prediction"].astype(str)
                if spec.task == "classification"
                else pd.to_numeric(labelled["prediction"]),
            }
        )
        method = cfg.drift.num_method if spec.task == "regression" else cfg.drift.cat_method
        target_drift = reports.model_quality_report(
            ref.frame,
            graded,
            spec.task,
            ref.classes,
            folder / "model-quality.html",
            method,
            cfg.drift.threshold,  # type: ignore[arg-type]
        )
        paths["model_quality"] = str(folder / "model-quality.html")
    check = decide(spec.version, len(records), drift, absent, unexpected, quality, cfg, target_drift)
    check.data_quality, check.sampled, check.reports = quality_rows, sampled, paths
    get_run_logger().info("v%s: %s %s", spec.version, check.verdict, "; ".join(check.reasons))
    return check


@task(name="log_check", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def log_check(ctx: Context, window: Window, check: VersionCheck, folder: Path) -> str:
    """The check as a run of the monitoring experiment, tagged with the model version; returns its URL."""
    tracker = Tracker(ctx.root)
    name = ctx.params.project.name
    metrics: dict[str, float] = {"records": check.records, "drift_share": check.drift_share, "sampled": check.sampled}
    metrics.update({f"drift.{d.column}": d.score for d in check.drift})
    if check.prediction_drift is not None:
        metrics["drift.prediction"] = check.prediction_drift.score
    if check.target_drift is not None:
        metrics["drift.target"] = check.target_drift.score
    for q in check.data_quality:
        metrics[f"missing_share.{q.column}"] = q.missing_share
        if q.out_of_range:
            metrics[f"out_of_range.{q.column}"] = q.out_of_range
        if q.unseen:
            metrics[f"unseen.{q.column}"] = q.unseen
    if check.quality is not None:
        metrics["labelled"] = check.quality.labelled
        metrics.update({f"quality.{k}": v for k, v in check.quality.metrics.items()})
    tags = {
        f"{TAG}model_name": name,
        f"{TAG}model_version": check.version,
        f"{TAG}monitoring.verdict": check.verdict,
        f"{TAG}monitoring.window_start": window.start.isoformat() if window.start else "",
        f"{TAG}monitoring.window_end": window.end.isoformat(),
        f"{TAG}monitoring.reasons": "; ".join(check.reasons)[:4000],
    }
    files = [Path(p) for p in check.reports.values()] + [folder / "summary.json"]
    _, url = tracker.log_check(
        f"{name}-monitoring",
        f"v{check.version}-{window.end:%Y%m%dT%H%M%S}",
        tags,
        metrics,
        [f for f in files if f.exists()],
    )
    return url


@task(name="publish")
def publish(summary: dict[str, Any], checks: list[VersionCheck]) -> None:
    """The drift table and the verdict with its links, as Prefect artifacts."""
    rows = [row for check in checks for row in drift_table(check)]
    if rows:
        create_table_artifact(key="monitoring-drift", table=rows, description="per-feature drift, by model version")
    create_markdown_artifact(
        key="monitoring-summary",
        markdown=summary_markdown(summary),
        description=f"monitoring: {summary['verdict']}",
    )


@task(name="send_alerts")
def send_alerts(ctx: Context, alerts: list[Alert]) -> list[dict[str, Any]]:
    """Each alert into the local alert log; new ones also to the webhook. A failed delivery fails the run
    (after everything else is written) and is tried again by the next check: its cool-down is not started."""
    cfg = ctx.params.monitoring.alerts
    state = read_state(ctx.layout.monitoring_state)
    now = datetime.now(UTC)
    logger = get_run_logger()
    delivered: list[dict[str, Any]] = []
    failures: list[str] = []
    for alert in alerts:
        if not alert.new:
            delivery = f"within the {cfg.cooldown_hours:g} h cool-down of an earlier alert: logged only"
        elif cfg.webhook:
            try:
                response = httpx.post(cfg.webhook, json=asdict(alert), timeout=10.0)
                response.raise_for_status()
                delivery = f"sent to {cfg.webhook}"
                mark_sent(state, alert, now)
            except httpx.HTTPError as exc:
                delivery = f"webhook {cfg.webhook} failed: {exc}"
                failures.append(delivery)
        else:
            delivery = f"logged to {ctx.layout.alert_log}"
            mark_sent(state, alert, now)
        append_alert_log(ctx.layout.alert_log, alert, delivery)
        logger.warning(
            "ALERT %s v%s %s: %s (%s)", alert.model, alert.version, alert.verdict, "; ".join(alert.reasons), delivery
        )
        delivered.append({"version": alert.version, "kinds": alert.kinds, "new": alert.new, "delivery": delivery})
    write_state(
        ctx.layout.monitoring_state, {**read_state(ctx.layout.monitoring_state), "alerts": state.get("alerts", {})}
    )
    if failures:
        raise AlertDeliveryError("; ".join(failures) + f" (the alert is in {ctx.layout.alert_log})")
    return delivered


@task(name="advance_window")
def advance_window(ctx: Context, window: Window) -> None:
    """A finished default check moves 'since the last check' to its end."""
    if not window.default:
        return
    state = read_state(ctx.layout.monitoring_state)
    state["last_end"] = window.end.isoformat()
    write_state(ctx.layout.monitoring_state, state)
