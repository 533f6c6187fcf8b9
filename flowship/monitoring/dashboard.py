"""The monitoring dashboard: what each check adds to the model's project in the Evidently UI's workspace, and the
panels flowship draws there, each over time and split by model version.

A check adds one run per model, at its window's end, tagged with the versions it judged. The run's data is one row
of the check's figures: per version, the numbers its MLflow run carries (traffic, errors and latency at the gateway,
cost, drift, model quality, feedback) and the data-quality shares, each as a column `<figure>@v<version>`.
Evidently's dashboard keys a line by its metric and column, not by the run's tags: a column per version is what splits
a panel by version, and one run per check (every version in it) keeps each version's line unbroken. The figures come
from the check itself (its drift from Evidently's drift report): nothing is computed twice.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from flowship.adapters import drift as evidently
from flowship.adapters.drift import DashboardPanel, PanelLine
from flowship.monitoring.checks import VersionCheck
from flowship.monitoring.report import run_metrics, service_metrics, version_figures
from flowship.monitoring.service import ServiceCheck, ServiceFigures

# The cost of the serving processes per 1,000 predictions, as the service's metrics (`report.cost_metrics`) name it.
COST_PER_1000 = "service.cost.per_1000"
MISSING = "data_quality.missing_pct"
OUT_OF_RANGE = "data_quality.out_of_range_pct"
UNSEEN = "data_quality.unseen_pct"
_COLUMN = re.compile(r"^(?P<figure>.+)@v(?P<version>[^@]+)$")


def column(figure: str, version: str) -> str:
    """The run's column of one version's figure."""
    return f"{figure}@v{version}"


def versions_of(columns: list[str]) -> list[str]:
    """The versions the columns are of, in version order (numbers as numbers)."""
    found = {m.group("version") for c in columns if (m := _COLUMN.match(c))}
    return sorted(found, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))


def data_quality_shares(check: VersionCheck) -> dict[str, float]:
    """The percentages of the monitored values that were missing, outside the training range (numbers) and unseen
    in training (categories), over every column of the version's records."""
    rows = check.data_quality
    if not rows or not check.records:
        return {}
    values = check.records * len(rows)
    return {
        MISSING: 100 * sum(q.missing for q in rows) / values,
        OUT_OF_RANGE: 100 * sum(q.out_of_range for q in rows) / values,
        UNSEEN: 100 * sum(q.unseen for q in rows) / values,
    }


def figures(check: VersionCheck | None, service: ServiceFigures | None) -> dict[str, float]:
    """One version's figures in a check: its MLflow run's metrics, the data-quality shares and the holdout score
    its model quality is judged against (finite numbers only)."""
    found: dict[str, float] = {}
    if check is not None:
        found |= run_metrics(check) | data_quality_shares(check)
        if check.quality is not None and check.quality.holdout is not None:
            found[f"holdout.{check.quality.metric}"] = check.quality.holdout
    if service is not None:
        found |= service_metrics(service)
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float) and math.isfinite(v)}


@dataclass(frozen=True)
class Panel:
    """One panel of the dashboard: the figures it draws (figure, label), a line each per version."""

    title: str
    subtitle: str
    drawn: tuple[tuple[str, str], ...]
    plot: Literal["line", "bar"] = "line"


def panel_specs(key_features: list[str], metric: str) -> list[Panel]:
    features = tuple((f"drift.{f}", f) for f in key_features) + (("drift.prediction", "prediction"),)
    latency = tuple((f"service.gateway_{p}_ms", p) for p in ("p50", "p95", "p99"))
    return [
        Panel(
            "Traffic",
            "requests at the gateway, and predictions logged, in each check's window",
            (("service.requests", "requests"), ("records", "predictions")),
            plot="bar",
        ),
        Panel(
            "Errors",
            "share of the requests answered with a server error (5xx) or refused as the client's fault (4xx)",
            (("service.error_ratio", "5xx"), ("service.client_error_ratio", "4xx")),
        ),
        Panel("Latency at the gateway (ms)", "p50, p95 and p99 of the requests that reached a version", latency),
        Panel(
            "Cost per 1,000 predictions",
            "the serving containers' CPU and memory at the prices in params.yaml",
            ((COST_PER_1000, ""),),
        ),
        Panel("Drift share", "share of the features that drifted from the training data", (("drift_share", ""),)),
        Panel("Drift of the key features", "drift score of each key feature and of the prediction", features),
        Panel(
            "Data quality (% of the values)",
            "missing, outside the training range, or of a category training never saw",
            ((MISSING, "missing"), (OUT_OF_RANGE, "out of range"), (UNSEEN, "unseen")),
        ),
        Panel(
            f"Model quality: {metric}",
            f"{metric} on the labelled records, beside the version's holdout score",
            ((f"quality.{metric}", ""), (f"holdout.{metric}", "holdout")),
        ),
        Panel("Feedback rating", "share of thumbs up among the answers users rated", (("feedback_rating_share", ""),)),
    ]


def panels(versions: list[str], key_features: list[str], metric: str) -> list[DashboardPanel]:
    """The dashboard: each panel's lines for every version."""
    return [
        DashboardPanel(
            spec.title,
            spec.subtitle,
            tuple(
                PanelLine(f"v{v} {label}".strip(), column(figure, v)) for v in versions for figure, label in spec.drawn
            ),
            plot=spec.plot,
        )
        for spec in panel_specs(key_features, metric)
    ]


def run_values(checks: list[VersionCheck], service: ServiceCheck | None, drawn: set[str]) -> dict[str, float]:
    """The check's run: the figures the dashboard draws (`drawn`: figure names) of every version it judged or that
    answered at the gateway."""
    by_version = {c.version: c for c in checks}
    versions = set(by_version) | {f.version for f in (service.versions if service is not None else [])}
    values: dict[str, float] = {}
    for version in versions:
        found = figures(by_version.get(version), version_figures(service, version))
        values |= {column(f, version): v for f, v in found.items() if f in drawn}
    return values


@dataclass(frozen=True)
class DashboardRecord:
    """What a check added to the dashboard: its run, the versions the dashboard shows, and whether its panels
    changed (a version seen for the first time)."""

    project: str
    run_id: str
    run_file: str
    versions: list[str]
    panels_changed: bool


def record_check(
    folder: Path,
    model: str,
    window_end: datetime,
    checks: list[VersionCheck],
    service: ServiceCheck | None,
    key_features: list[str],
    metric: str,
) -> DashboardRecord | None:
    """Add the check's run to the model's project in the workspace `folder`, and draw every version seen so far;
    None when the check has no figure to add (no record, no request). A `DashboardError` names a folder that is
    missing or cannot be read."""
    drawn = {figure for spec in panel_specs(key_features, metric) for figure, _ in spec.drawn}
    values = run_values(checks, service, drawn)
    if not values:
        return None
    versions = versions_of(list(values))
    stored = evidently.add_dashboard_run(folder, model, values, [f"v{v}" for v in versions], window_end)
    shown = versions_of([*evidently.dashboard_columns(folder, model), *values])
    changed = evidently.save_dashboard(folder, model, panels(shown, key_features, metric))
    return DashboardRecord(stored.project_id, stored.run_id, stored.path, shown, changed)
