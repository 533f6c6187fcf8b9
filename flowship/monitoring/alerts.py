"""The service's verdict, which alerts go out, their cool-down, their runbook sections, and the alert log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from flowship.adapters.alerts import Webhook
from flowship.config import ServiceAlertConfig
from flowship.errors import AlertDeliveryError
from flowship.files import append_durably
from flowship.monitoring.service import ErrorBudget, ServiceCheck, ServiceFigures, ServiceWindow
from flowship.monitoring.window import Window

RUNBOOK = "docs/runbook.md"
# Each alert kind's section of the runbook, by the kind's first part (`key_feature:temp` -> key_feature).
RUNBOOK_SECTIONS = {
    "drift_share": "drift-share",
    "key_feature": "key-feature-drift",
    "prediction": "prediction-drift",
    "target": "label-drift",
    "schema": "schema",
    "guardrail": "guardrail-rate",
    "quality": "quality-drop",
    "service:error_ratio": "error-ratio",
    "service:p99": "p99-latency",
    "service:no_traffic": "no-traffic",
    "service:error_budget": "error-budget",
    "service:cost": "cost-per-1000-predictions",
}


def runbook_link(kind: str) -> str:
    """The runbook section that answers an alert kind: `docs/runbook.md#<anchor>`."""
    parts = kind.split(":")
    family = ":".join(parts[:2]) if parts[0] == "service" else parts[0]
    return f"{RUNBOOK}#{RUNBOOK_SECTIONS[family]}"


class Judged(Protocol):
    """A check alerts are planned from: a model version's (`VersionCheck`) or the service's (`ServiceCheck`)."""

    @property
    def version(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def alert_kinds(self) -> list[str]: ...


def judge_service(
    found: ServiceWindow,
    budget: ErrorBudget,
    cfg: ServiceAlertConfig,
    serving: bool,
    skipped: int = 0,
    files: int = 0,
    days: dict[str, list[int]] | None = None,
) -> ServiceCheck:
    """The service's verdict from a window's figures: server errors past `max_error_ratio`, a p99 at the gateway
    past `p99_ms` (each for the whole service, and for each version when more than one answered; none below
    `min_requests`), no request at all while production is `serving`, the error budget spent, and a cost per 1,000
    predictions past `cost.max_per_1000` (as errors and latency: per scope, none below `min_requests`). Without an
    access log (`files` 0) there is no verdict."""
    if not files:
        # no gateway in front of production (a process without nginx), or it never started: nothing to judge
        reason = "no gateway access log to read: production has no gateway, or it has not written yet"
        return ServiceCheck(
            "no_log", [reason], found.total, found.versions, budget, skipped, files, days or {}, usage=found.usage
        )
    ceiling = cfg.cost.max_per_1000 if cfg.cost is not None else None
    reasons: list[str] = []
    kinds: list[str] = []
    total = found.total
    scopes = [total, *(found.versions if len(found.versions) > 1 else [])]
    for fig in scopes:
        if fig.requests < cfg.min_requests:
            continue
        who = "the service" if fig.version == "*" else f"v{fig.version}"
        suffix = "" if fig.version == "*" else f":v{fig.version}"
        if fig.error_ratio > cfg.max_error_ratio:
            reasons.append(
                f"{who}: {fig.errors} of {fig.requests} requests failed with a server error ({fig.error_ratio:.1%} > "
                f"monitoring.service.max_error_ratio {cfg.max_error_ratio:.1%})"
            )
            kinds.append("service:error_ratio" + suffix)
        p99 = fig.gateway_ms.p99
        if p99 is not None and p99 > cfg.p99_ms:
            reasons.append(
                f"{who}: p99 latency {p99:.0f} ms at the gateway > monitoring.service.p99_ms ({cfg.p99_ms:g})"
            )
            kinds.append("service:p99" + suffix)
        cost = fig.cost
        if ceiling is not None and cost is not None and cost.cost_per_1000 is not None and cost.cost_per_1000 > ceiling:
            reasons.append(
                f"{who}: {cost.cost_per_1000:.4g} per 1,000 predictions > monitoring.service.cost.max_per_1000 "
                f"({ceiling:g}): {cost.cost:.4g} for {cost.predictions} predictions ({cost.cpu_seconds:.1f} "
                f"CPU-seconds, {cost.memory_gb_hours:.4f} GiB-hours of {_processes(cost.processes)})"
            )
            kinds.append("service:cost" + suffix)
    if total.requests == 0 and serving:
        reasons.append("no request reached the gateway in the window while production is serving")
        kinds.append("service:no_traffic")
    left = budget.left
    if left is not None and budget.requests >= cfg.min_requests and left <= 0:
        reasons.append(
            f"error budget spent: {budget.good_ratio:.2%} of {budget.requests} requests good over {budget.days} days "
            f"(target {budget.target:.2%}), {budget.errors} server errors of {budget.allowed:.0f} allowed "
            f"({left:.0%} of the budget left)"
        )
        kinds.append("service:error_budget")
    if kinds:
        verdict = "no_traffic" if kinds == ["service:no_traffic"] else "degraded"
    elif total.requests < cfg.min_requests:
        verdict = "insufficient_data"
        reasons.append(
            f"{total.requests} requests: fewer than monitoring.service.min_requests ({cfg.min_requests}), no verdict"
        )
    else:
        verdict = "ok"
    return ServiceCheck(
        verdict, reasons, total, found.versions, budget, skipped, files, days or {}, kinds, usage=found.usage
    )


def figures_line(fig: ServiceFigures) -> str:
    """One line of a version's figures, for the CLI and the Markdown."""
    p = fig.gateway_ms
    latency = (
        f"p50/p95/p99 {p.p50:.0f}/{p.p95:.0f}/{p.p99:.0f} ms"
        if p.p99 is not None and p.p50 is not None and p.p95 is not None
        else "no latency"
    )
    rejected = ", ".join(f"{k} {n}" for k, n in fig.rejected.items()) or "none"
    return (
        f"{fig.requests} requests ({fig.per_second:.2f}/s), server errors {fig.error_ratio:.2%}, "
        f"client errors {fig.client_error_ratio:.2%}, {latency}; not answered: {rejected}"
    )


def cost_line(fig: ServiceFigures) -> str | None:
    """What a version's processes used in the window and, priced, what it cost; None without a usage sample."""
    cost = fig.cost
    if cost is None:
        return None
    used = (
        f"{cost.cpu_seconds:.1f} CPU-seconds, {cost.memory_gb_hours:.4f} GiB-hours ({_processes(cost.processes)}, "
        f"{cost.samples} samples)"
    )
    if cost.cost is None:
        return f"{used}; {cost.predictions} predictions"
    per_1000 = "no prediction" if cost.cost_per_1000 is None else f"{cost.cost_per_1000:.4g} per 1,000 predictions"
    return f"cost {cost.cost:.4g} for {cost.predictions} predictions: {per_1000}; {used}"


def _processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


@dataclass(frozen=True)
class Alert:
    time: str
    model: str
    version: str
    verdict: str
    kinds: list[str]
    reasons: list[str]
    window: str
    report: str
    new: list[str]  # kinds not alerted within the cool-down: these make the alert go out
    runbook: list[str] = field(default_factory=list)  # the runbook's sections for its kinds


def plan_alerts(
    model: str,
    checks: Sequence[Judged],
    window: Window,
    report: Path,
    state: dict[str, Any],
    cooldown_hours: float,
    now: datetime,
) -> list[Alert]:
    """One alert per version with a problem (and one for the service, version ""); only kinds not already alerted
    within the cool-down are new."""
    sent: dict[str, str] = state.get("alerts", {})
    alerts = []
    for check in checks:
        if not check.alert_kinds:
            continue
        fresh = []
        for kind in check.alert_kinds:
            last = sent.get(f"{model}:v{check.version}:{kind}")
            if last is None or now - datetime.fromisoformat(last) >= timedelta(hours=cooldown_hours):
                fresh.append(kind)
        alerts.append(
            Alert(
                time=now.isoformat(timespec="seconds"),
                model=model,
                version=check.version,
                verdict=check.verdict,
                kinds=check.alert_kinds,
                reasons=check.reasons,
                window=window.label(),
                report=str(report),
                new=fresh,
                runbook=list(dict.fromkeys(runbook_link(k) for k in check.alert_kinds)),
            )
        )
    return alerts


@dataclass(frozen=True)
class AlertDelivery:
    """What became of one alert: the summary's and the alert log's account of it."""

    version: str
    kinds: list[str]
    new: list[str]
    delivery: str
    runbook: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Deliveries:
    """The alerts' fate, the cool-down marks to keep (the monitoring state's `alerts`), and the failures."""

    deliveries: list[AlertDelivery]
    sent: dict[str, str]
    failures: list[str]


def deliver_alerts(
    alerts: list[Alert],
    webhook: Webhook | None,
    alert_log: Path,
    sent: dict[str, str],
    cooldown_hours: float,
    now: datetime,
) -> Deliveries:
    """Each alert into the alert log; new ones also to the webhook when there is one. A failed delivery does not
    start the cool-down, so the next check alerts again."""
    state: dict[str, Any] = {"alerts": dict(sent)}
    deliveries: list[AlertDelivery] = []
    failures: list[str] = []
    for alert in alerts:
        if not alert.new:
            delivery = f"within the {cooldown_hours:g} h cool-down of an earlier alert: logged only"
        elif webhook is None:
            delivery = f"logged to {alert_log}"
            mark_sent(state, alert, now)
        else:
            try:
                webhook.send(asdict(alert))
                delivery = f"sent to {webhook.url}"
                mark_sent(state, alert, now)
            except AlertDeliveryError as exc:
                delivery = str(exc)
                failures.append(delivery)
        append_alert_log(alert_log, alert, delivery)
        deliveries.append(AlertDelivery(alert.version, alert.kinds, alert.new, delivery, alert.runbook))
    return Deliveries(deliveries, state["alerts"], failures)


def mark_sent(state: dict[str, Any], alert: Alert, now: datetime) -> None:
    sent = state.setdefault("alerts", {})
    for kind in alert.new:
        sent[f"{alert.model}:v{alert.version}:{kind}"] = now.isoformat(timespec="seconds")


def append_alert_log(path: Path, alert: Alert, delivery: str) -> None:
    line = json.dumps({**asdict(alert), "delivery": delivery}) + "\n"
    append_durably(path, line.encode())
