"""How a check is shown and recorded: the run's summary, the drift table, the Markdown, the MLflow run's numbers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flowship.adapters.tracking import TAG
from flowship.monitoring.alerts import AlertDelivery
from flowship.monitoring.checks import VersionCheck, overall
from flowship.monitoring.retraining import RetrainingResult
from flowship.monitoring.service import Percentiles, ServiceCheck, ServiceCost, ServiceFigures
from flowship.monitoring.window import Window, WindowData


@dataclass(frozen=True)
class MonitoringSummary:
    """What a monitoring run found and did; `as_dict` is its `summary.json`."""

    verdict: str
    window: str
    window_start: str | None
    window_end: str
    records: int
    skipped_lines: int
    labels: int
    labels_skipped_lines: int
    report: str | None  # the folder of this run's reports; None when no version had records
    versions: list[VersionCheck]
    mlflow_runs: Mapping[str, str] = field(default_factory=dict)  # version -> the check's MLflow run URL
    alerts: list[AlertDelivery] = field(default_factory=list)
    retraining: RetrainingResult | None = None
    note: str | None = None  # why there is no verdict: the window's logs were deleted by the retention
    service: ServiceCheck | None = None  # the gateway's figures (None: no gateway log read)
    service_run: str | None = None  # the service check's MLflow run URL
    dashboard_project: str | None = None  # the model's project in the dashboard's workspace (the Evidently UI)
    dashboard_run: str | None = None  # this check's run in it

    @property
    def message(self) -> str:
        """The reasons of every version and the service's alerts, or why there is none, or how many records."""
        service = self.service.reasons if self.service is not None and self.service.alert_kinds else []
        reasons = [r for c in self.versions for r in c.reasons] + service
        return "; ".join(reasons) or self.note or f"{self.records} records"

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["mlflow_runs"] = dict(self.mlflow_runs)
        summary["service"] = self.service.as_dict() if self.service is not None else None
        summary["retraining"] = self.retraining.as_dict() if self.retraining is not None else None
        return summary


def summarize(
    data: WindowData, checks: list[VersionCheck], folder: Path, service: ServiceCheck | None = None
) -> MonitoringSummary:
    """The run's summary before it is recorded and alerted on. A window with requests has a report folder, even
    when none reached the inference log (every one refused): the service's figures are its report."""
    window = data.window
    expired = data.expired if not checks else None
    reported = bool(checks) or (service is not None and service.total.requests > 0)
    return MonitoringSummary(
        verdict="expired" if expired else overall(checks),
        window=window.label(),
        window_start=window.start.isoformat() if window.start else None,
        window_end=window.end.isoformat(),
        records=len(data.records),
        skipped_lines=data.skipped,
        labels=data.labels_arrived,
        labels_skipped_lines=data.labels_skipped,
        report=str(folder) if reported else None,
        versions=checks,
        note=expired,
        service=service,
    )


def report_folder(parent: Path, now: datetime) -> Path:
    """One folder per check, named by when it ran (UTC); never an earlier check's."""
    stamp = f"{now:%Y%m%dT%H%M%SZ}"
    folder, n = parent / stamp, 1
    while folder.exists():
        n += 1
        folder = parent / f"{stamp}-{n}"
    return folder


def write_summary(folder: Path, summary: MonitoringSummary) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    path.write_text(json.dumps(summary.as_dict(), indent=2, default=str))
    return path


def run_metrics(check: VersionCheck) -> dict[str, float]:
    """The check's numbers as metrics of its MLflow run."""
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
    for rate in check.guardrails:
        metrics[f"guardrail_share.{rate.guardrail}.{rate.feature or 'record'}.{rate.action}"] = rate.share
    metrics["feedback_count"] = check.feedback_count
    if check.feedback_rating_share is not None:
        metrics["feedback_rating_share"] = check.feedback_rating_share
    if check.quality is not None:
        metrics["labelled"] = check.quality.labelled
        metrics.update({f"quality.{k}": v for k, v in check.quality.metrics.items()})
    return metrics


def service_metrics(fig: ServiceFigures) -> dict[str, float]:
    """A version's (or the whole service's) figures as `service.*` metrics."""
    metrics: dict[str, float] = {
        "service.requests": fig.requests,
        "service.per_second": fig.per_second,
        "service.error_ratio": fig.error_ratio,
        "service.client_error_ratio": fig.client_error_ratio,
    }
    metrics.update({f"service.status.{k}": n for k, n in fig.status_classes.items()})
    metrics.update({f"service.rejected.{k}": n for k, n in fig.rejected.items()})
    for where, p in (("gateway", fig.gateway_ms), ("app", fig.app_ms)):
        for name, value in (("p50", p.p50), ("p95", p.p95), ("p99", p.p99)):
            if value is not None:
                metrics[f"service.{where}_{name}_ms"] = value
    return metrics | cost_metrics(fig)


def cost_metrics(fig: ServiceFigures) -> dict[str, float]:
    """What the serving processes used in the window and, priced, its cost: `service.cost.cpu_seconds`,
    `service.cost.memory_gb_hours`, `service.cost.total`, `service.cost.per_1000`; none without a usage sample."""
    cost = fig.cost
    if cost is None:
        return {}
    metrics = {"service.cost.cpu_seconds": cost.cpu_seconds, "service.cost.memory_gb_hours": cost.memory_gb_hours}
    if cost.cost is not None:
        metrics["service.cost.total"] = cost.cost
    if cost.cost_per_1000 is not None:
        metrics["service.cost.per_1000"] = cost.cost_per_1000
    return metrics


def service_run_metrics(check: ServiceCheck) -> dict[str, float]:
    """The service check's MLflow run: the whole service's figures and the error budget."""
    metrics = service_metrics(check.total)
    budget = check.budget
    metrics.update({"service.skipped_lines": check.skipped, "service.budget.requests": budget.requests,
                    "service.budget.errors": budget.errors})  # fmt: skip
    if budget.left is not None and budget.good_ratio is not None:
        metrics["service.budget.left"] = budget.left
        metrics["service.budget.good_ratio"] = budget.good_ratio
    if check.usage is not None:
        metrics["service.usage.skipped_lines"] = check.usage.skipped
    return metrics


def version_figures(service: ServiceCheck | None, version: str) -> ServiceFigures | None:
    if service is None:
        return None
    return next((f for f in service.versions if f.version == version), None)


def service_tags(model: str, window: Window, check: ServiceCheck) -> dict[str, str]:
    return {
        f"{TAG}model_name": model,
        f"{TAG}monitoring.scope": "service",
        f"{TAG}monitoring.verdict": check.verdict,
        f"{TAG}monitoring.window_start": window.start.isoformat() if window.start else "",
        f"{TAG}monitoring.window_end": window.end.isoformat(),
        f"{TAG}monitoring.reasons": "; ".join(check.reasons)[:4000],
    }


def service_table(check: ServiceCheck) -> list[dict[str, Any]]:
    """The service's figures, a row per version and one for all (version "*"), for the Prefect artifact; the usage
    columns when a version has a usage sample, the cost columns when they are priced (every row has them then)."""
    figures = [*check.versions, check.total]
    used = any(f.cost is not None for f in figures)
    priced = any(f.cost is not None and f.cost.cost is not None for f in figures)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    def cost_cells(cost: ServiceCost | None) -> dict[str, Any]:
        cells: dict[str, Any] = {}
        if used:
            cells["cpu_seconds"] = None if cost is None else round(cost.cpu_seconds, 2)
            cells["memory_gb_hours"] = None if cost is None else round(cost.memory_gb_hours, 5)
        if priced:
            cells["cost"] = None if cost is None or cost.cost is None else round(cost.cost, 6)
            per_1000 = None if cost is None else cost.cost_per_1000
            cells["cost_per_1000"] = None if per_1000 is None else round(per_1000, 6)
        return cells

    def row(fig: ServiceFigures) -> dict[str, Any]:
        g, a = fig.gateway_ms, fig.app_ms
        return {
            "version": fig.version,
            "requests": fig.requests,
            "per_second": round(fig.per_second, 3),
            "error_ratio": round(fig.error_ratio, 4),
            "client_error_ratio": round(fig.client_error_ratio, 4),
            "p50_ms": ms(g.p50),
            "p95_ms": ms(g.p95),
            "p99_ms": ms(g.p99),
            "app_p99_ms": ms(a.p99),
            "not_answered": ", ".join(f"{k} {n}" for k, n in fig.rejected.items()),
            **cost_cells(fig.cost),
        }

    return [row(f) for f in figures]


def _ms(p: Percentiles) -> str:
    cells = [p.p50, p.p95, p.p99]
    return " | ".join("–" if v is None else f"{v:.0f}" for v in cells)


def service_markdown(check: ServiceCheck) -> list[str]:
    lines = ["", f"## Service: {check.verdict.replace('_', ' ')} ({check.total.requests} requests)"]
    lines += [f"- {r}" for r in check.reasons]
    budget = check.budget
    if budget.left is not None and budget.good_ratio is not None:
        lines.append(
            f"- error budget ({budget.target:.2%} good over {budget.days} days): {budget.good_ratio:.3%} of "
            f"{budget.requests} requests good, {budget.left:.0%} left"
        )
    if check.skipped:
        lines.append(f"- unreadable access-log lines skipped: {check.skipped}")
    if check.usage is not None:
        lines += [f"- cost: {note}" for note in check.usage.notes]
        if check.usage.skipped:
            lines.append(f"- unreadable usage-log lines skipped: {check.usage.skipped}")
    lines += [
        "",
        "| version | requests | req/s | 5xx | 4xx | p50 ms | p95 ms | p99 ms | app p50 ms | app p95 ms | app p99 ms "
        "| not answered |",
        "| --- " * 12 + "|",
    ]
    for fig in [*check.versions, check.total]:
        name = "all" if fig.version == "*" else f"v{fig.version}"
        rejected = ", ".join(f"{k} {n}" for k, n in fig.rejected.items()) or "–"
        lines.append(
            f"| {name} | {fig.requests} | {fig.per_second:.2f} | {fig.error_ratio:.2%} | {fig.client_error_ratio:.2%} "
            f"| {_ms(fig.gateway_ms)} | {_ms(fig.app_ms)} | {rejected} |"
        )
    return lines + cost_markdown(check)


def cost_markdown(check: ServiceCheck) -> list[str]:
    """The serving processes' usage per version and in all, and its cost when priced; nothing when no version has a
    usage sample."""
    figures = [f for f in (*check.versions, check.total) if f.cost is not None]
    if not figures:
        return []
    priced = any(f.cost is not None and f.cost.cost is not None for f in figures)
    columns = ["version", "predictions", "processes", "CPU-seconds", "GiB-hours"]
    columns += ["cost", "per 1,000 predictions"] if priced else []
    lines = ["", "| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]
    for fig in figures:
        cost = fig.cost
        assert cost is not None
        cells = [
            "all" if fig.version == "*" else f"v{fig.version}",
            str(cost.predictions),
            str(cost.processes),
            f"{cost.cpu_seconds:.1f}",
            f"{cost.memory_gb_hours:.4f}",
        ]
        if priced:
            cells.append("–" if cost.cost is None else f"{cost.cost:.4g}")
            cells.append("–" if cost.cost_per_1000 is None else f"{cost.cost_per_1000:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_tags(model: str, window: Window, check: VersionCheck) -> dict[str, str]:
    """The tags that find the check's MLflow run by model version, verdict and window."""
    return {
        f"{TAG}model_name": model,
        f"{TAG}model_version": check.version,
        f"{TAG}monitoring.verdict": check.verdict,
        f"{TAG}monitoring.window_start": window.start.isoformat() if window.start else "",
        f"{TAG}monitoring.window_end": window.end.isoformat(),
        f"{TAG}monitoring.reasons": "; ".join(check.reasons)[:4000],
    }


def run_name(window: Window, check: VersionCheck) -> str:
    return f"v{check.version}-{window.end:%Y%m%dT%H%M%S}"


def alert_scope(version: str) -> str:
    """Who an alert is about: a model version, or the service (version "")."""
    return f"v{version}" if version else "service"


def drift_table(check: VersionCheck) -> list[dict[str, Any]]:
    rows = [*check.drift, *(d for d in (check.prediction_drift, check.target_drift) if d is not None)]
    return [
        {
            "version": check.version,
            "feature": d.column,
            "method": d.method,
            "score": round(d.score, 4),
            "threshold": d.threshold,
            "drifted": d.drifted,
        }
        for d in rows
    ]


def summary_markdown(summary: MonitoringSummary) -> str:
    lines = [
        f"# Monitoring: {summary.verdict.replace('_', ' ').upper()}",
        "",
        f"- window: {summary.window}",
        *([f"- {summary.note}"] if summary.note else []),
        f"- records: {summary.records} (unreadable lines skipped: {summary.skipped_lines})",
        f"- report: `{summary.report}`",
    ]
    if summary.mlflow_runs:
        lines.append("- MLflow: " + ", ".join(f"[v{v}]({url})" for v, url in summary.mlflow_runs.items()))
    if summary.dashboard_project:
        lines.append(
            f"- dashboard: run `{summary.dashboard_run}` of project `{summary.dashboard_project}` "
            f"(the Evidently UI of `flowship up`: `/projects/{summary.dashboard_project}`)"
        )
    for check in summary.versions:
        lines += ["", f"## v{check.version}: {check.verdict} ({check.records} records)"]
        lines += [f"- {r}" for r in check.reasons] or ["- no feature past its threshold"]
        quality = check.quality
        if quality is not None and quality.metrics:
            lines.append(
                f"- {quality.metric}: {quality.metrics[quality.metric]:.4f} "
                f"on {quality.labelled} labelled records (holdout {quality.holdout})"
            )
        elif quality is not None:
            lines.append(f"- labels arrived for {quality.labelled} records: too few for model quality")
        if check.feedback_count:
            lines.append(
                f"- feedback: {check.feedback_count} answers rated, {check.feedback_rating_share:.0%} thumbs up"
            )
        alerted = " ".join(check.reasons)
        lines += [f"- guardrails: {r.sentence()}" for r in check.guardrails if r.sentence() not in alerted]
    if summary.service is not None:
        lines += service_markdown(summary.service)
    if summary.alerts:
        lines += ["", "## Alerts"] + [f"- {alert_scope(a.version)}: {a.delivery}" for a in summary.alerts]
    return "\n".join(lines) + "\n"
