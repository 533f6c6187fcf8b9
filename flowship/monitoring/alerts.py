"""Which alerts go out, their cool-down, and the alert log."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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


def mark_sent(state: dict[str, Any], alert: Alert, now: datetime) -> None:
    sent = state.setdefault("alerts", {})
    for kind in alert.new:
        sent[f"{alert.model}:v{alert.version}:{kind}"] = now.isoformat(timespec="seconds")


def append_alert_log(path: Path, alert: Alert, delivery: str) -> None:
    line = json.dumps({**asdict(alert), "delivery": delivery}) + "\n"
    append_durably(path, line.encode())
