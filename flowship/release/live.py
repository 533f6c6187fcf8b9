"""Steps on live traffic (a canary's share, a shadow's copies) judged from what production wrote: the gateway's
access logs (which side answered, status, time) and the inference logs (each record's version and prediction).
Pure functions; the release flow measures and decides one step at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from flowship.config import CanaryConfig, ShadowConfig, TaskType
from flowship.release.checks import Check, percentile

PREDICT = "/predict"


@dataclass(frozen=True)
class Traffic:
    """One side's answers to /predict during a step, as the gateway saw them."""

    requests: int
    server_errors: int  # 5xx, the gateway's own (502, 504) included
    p99_ms: float

    @property
    def success_rate(self) -> float:
        return 1.0 - self.server_errors / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class StepMeasure:
    weight: float
    seconds: float
    canary: Traffic
    stable: Traffic
    prediction_distance: float | None  # None: one side has no logged prediction in the step

    def as_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "seconds": round(self.seconds, 1),
            "canary": {**self.canary.__dict__, "success_rate": self.canary.success_rate},
            "stable": {**self.stable.__dict__, "success_rate": self.stable.success_rate},
            "prediction_distance": self.prediction_distance,
        }


@dataclass(frozen=True)
class ShadowMeasure:
    seconds: float
    compared: int  # records both answered, matched by request id and row
    agreement: float | None  # classification: share given the same class
    max_probability_difference: float | None  # classification: the largest over records and classes
    mean_difference: float | None  # regression: mean |shadow - stable| over stable's standard deviation
    shadow_p99_ms: float  # the model's time (upstream) at the gateway
    stable_p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class LiveStep:
    """One step on live traffic (`name`: "canary 5%", "shadow"), what was measured and how it was judged."""

    name: str
    measure: StepMeasure | ShadowMeasure
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, **self.measure.as_dict(), "passed": self.passed,
                "checks": [c.as_dict() for c in self.checks]}  # fmt: skip


def steps_markdown(version: str, steps: Sequence[LiveStep], outcome: str) -> str:
    """The steps so far as a table, for the Prefect artifact and the record."""
    lines = [f"# v{version} on live traffic: {outcome}", "", "| step | check | verdict | detail |", "| --- " * 4 + "|"]
    for step in steps:
        for c in step.checks:
            lines.append(f"| {step.name} | {c.name} | {'pass' if c.passed else '**fail**'} | {c.detail} |")
    return "\n".join(lines) + "\n"


def read_access_log(path: Path, offset: int) -> list[dict[str, Any]]:
    """The access log's lines written after byte `offset` (a step's start); an unreadable line is skipped."""
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(offset)
        raw = handle.read()
    lines = []
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def traffic(lines: Iterable[dict[str, Any]], pool: str, answered_elsewhere: str | None = None) -> Traffic:
    """The /predict answers of `pool` ("canary" or "stable") among access-log `lines`; those answered by version
    `answered_elsewhere` (stable's replicas standing in for a canary that took no connection) are not its own."""
    times, errors = [], 0
    for line in lines:
        if line.get("pool") != pool or line.get("path") != PREDICT or line.get("upstream") in (None, "", "-"):
            continue  # refused by the gateway itself (429, 401, ...): never reached a side
        if answered_elsewhere is not None and str(line.get("version")) == answered_elsewhere:
            continue
        times.append(float(line.get("request_time") or 0.0) * 1000)
        errors += int(line.get("status", 0)) >= 500
    return Traffic(len(times), errors, percentile(times, 99) if times else math.nan)


def prediction_distance(canary: Sequence[Any], stable: Sequence[Any], task: TaskType) -> float | None:
    """How far the canary's predictions are from stable's: the Jensen-Shannon distance of the predicted classes'
    shares (0 same, 1 disjoint), or the Wasserstein distance of the predicted values over stable's standard
    deviation. None when a side has no prediction."""
    if not len(canary) or not len(stable):
        return None
    if task == "classification":
        classes = sorted({str(c) for c in (*canary, *stable)})
        share = [np.array([sum(str(c) == k for c in side) for k in classes], dtype=float) for side in (canary, stable)]
        return float(jensenshannon(share[0] / share[0].sum(), share[1] / share[1].sum(), base=2))
    values = np.asarray(stable, dtype=float)
    scale = float(values.std()) or 1.0
    return float(wasserstein_distance(np.asarray(canary, dtype=float), values) / scale)


def judge_step(measure: StepMeasure, cfg: CanaryConfig) -> tuple[Check, ...]:
    """The step's checks: enough canary answers, its success rate, its p99 against stable's (and the cap), how
    far its predictions moved. Every check is reported."""
    canary, stable = measure.canary, measure.stable
    checks = [
        Check(
            "canary_requests",
            canary.requests >= cfg.min_requests,
            f"{canary.requests} canary answers (at least {cfg.min_requests})",
            {"canary": canary.requests, "stable": stable.requests},
        )
    ]
    rate = canary.success_rate
    checks.append(
        Check(
            "success_rate",
            canary.requests > 0 and rate >= cfg.min_success_rate,
            f"{rate:.2%} of the canary's answers were not 5xx (at least {cfg.min_success_rate:.2%}; stable "
            f"{stable.success_rate:.2%})",
            {"canary": rate, "stable": stable.success_rate, "canary_5xx": canary.server_errors},
        )
    )
    limit = stable.p99_ms * cfg.max_p99_ratio if stable.requests else math.inf
    if cfg.max_p99_ms is not None:
        limit = min(limit, cfg.max_p99_ms)
    checks.append(
        Check(
            "request_duration",
            canary.requests > 0 and canary.p99_ms <= limit,
            f"p99 {canary.p99_ms:.1f} ms (stable {stable.p99_ms:.1f} ms; limit {limit:.1f} ms)",
            {"canary_p99_ms": canary.p99_ms, "stable_p99_ms": stable.p99_ms, "limit_ms": limit},
        )
    )
    distance = measure.prediction_distance
    checks.append(
        Check(
            "prediction_distance",
            distance is not None and distance <= cfg.max_prediction_distance,
            "no predictions of one side in the step"
            if distance is None
            else f"{distance:.3f} from stable's predictions (at most {cfg.max_prediction_distance:g})",
            {"distance": distance},
        )
    )
    return tuple(checks)


def upstream_p99(lines: Iterable[dict[str, Any]], pool: str | None = None) -> float:
    """The p99 of the model's time (the gateway's upstream time, first try) over /predict lines (of `pool`)."""
    times = []
    for line in lines:
        if (pool is not None and line.get("pool") != pool) or not str(line.get("path", "")).startswith(PREDICT):
            continue
        first = str(line.get("upstream_time", "")).split(",")[0].strip()
        try:
            times.append(float(first) * 1000)
        except ValueError:
            continue
    return percentile(times, 99) if times else math.nan


def compare_answers(
    stable: pd.DataFrame, shadow: pd.DataFrame, task: TaskType
) -> tuple[int, float | None, float | None, float | None]:
    """Stable's and the shadow's answers to the same records (inference-log frames, matched on request id and row):
    how many, the share given the same class and the largest probability difference (classification), the mean
    absolute difference over stable's standard deviation (regression)."""
    both = stable.merge(shadow, on=["request_id", "row"], suffixes=("_stable", "_shadow"))
    if both.empty:
        return 0, None, None, None
    if task == "classification":
        same = (both["prediction_stable"].astype(str) == both["prediction_shadow"].astype(str)).mean()
        largest = 0.0
        for ours, theirs in zip(both["probabilities_stable"], both["probabilities_shadow"], strict=True):
            for cls, p in (ours or {}).items():
                largest = max(largest, abs(float(p) - float((theirs or {}).get(cls, 0.0))))
        return len(both), float(same), largest, None
    values = both["prediction_stable"].astype(float)
    scale = float(values.std(ddof=0)) or 1.0
    difference = (both["prediction_shadow"].astype(float) - values).abs().mean() / scale
    return len(both), None, None, float(difference)


def judge_shadow(measure: ShadowMeasure, cfg: ShadowConfig) -> tuple[Check, ...]:
    """Enough records compared, agreement with stable (or a small difference, for regression), the model's p99."""
    checks = [
        Check("shadow_requests", measure.compared >= cfg.min_requests,
              f"{measure.compared} records answered by both (at least {cfg.min_requests})",
              {"compared": measure.compared}),
    ]  # fmt: skip
    if measure.mean_difference is None:
        agreement = measure.agreement
        checks.append(Check(
            "agreement", agreement is not None and agreement >= cfg.min_agreement,
            "nothing compared" if agreement is None else f"{agreement:.2%} of the records got stable's class (at least "
            f"{cfg.min_agreement:.0%}); largest probability difference {measure.max_probability_difference:.3f}",
            {"agreement": agreement, "max_probability_difference": measure.max_probability_difference},
        ))  # fmt: skip
    else:
        checks.append(Check(
            "mean_difference", measure.mean_difference <= cfg.max_mean_difference,
            f"mean difference {measure.mean_difference:.3f} of stable's standard deviation (at most "
            f"{cfg.max_mean_difference:g})", {"mean_difference": measure.mean_difference},
        ))  # fmt: skip
    limit = measure.stable_p99_ms * cfg.max_p99_ratio
    if cfg.max_p99_ms is not None:
        limit = min(limit, cfg.max_p99_ms)
    checks.append(Check(
        "request_duration", measure.shadow_p99_ms <= limit,
        f"the model's p99 {measure.shadow_p99_ms:.1f} ms (stable {measure.stable_p99_ms:.1f} ms; limit {limit:.1f} ms)",
        {"shadow_p99_ms": measure.shadow_p99_ms, "stable_p99_ms": measure.stable_p99_ms, "limit_ms": limit},
    ))  # fmt: skip
    return tuple(checks)
