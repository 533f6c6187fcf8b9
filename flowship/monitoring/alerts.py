"""Which alerts go out, their cool-down, and the alert log."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flowship.adapters.alerts import Webhook
from flowship.errors import AlertDeliveryError
from flowship.files import append_durably
from flowship.monitoring.checks import VersionCheck
from flowship.monitoring.window import Window


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


def plan_alerts(
    model: str,
    checks: list[VersionCheck],
    window: Window,
    report: Path,
    state: dict[str, Any],
    cooldown_hours: float,
    now: datetime,
) -> list[Alert]:
    """One alert per version with a problem; only kinds not already alerted within the cool-down are new."""
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
        deliveries.append(AlertDelivery(alert.version, alert.kinds, alert.new, delivery))
    return Deliveries(deliveries, state["alerts"], failures)


def mark_sent(state: dict[str, Any], alert: Alert, now: datetime) -> None:
    sent = state.setdefault("alerts", {})
    for kind in alert.new:
        sent[f"{alert.model}:v{alert.version}:{kind}"] = now.isoformat(timespec="seconds")


def append_alert_log(path: Path, alert: Alert, delivery: str) -> None:
    line = json.dumps({**asdict(alert), "delivery": delivery}) + "\n"
    append_durably(path, line.encode())
