"""The evaluation gate: absolute thresholds plus a maximum regression against the champion."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from flowship.config import LOWER_IS_BETTER, GateConfig, Params

if TYPE_CHECKING:
    import pandas as pd

    from flowship.adapters.tracking import Tracker


@dataclass(frozen=True)
class GateRow:
    metric: str
    candidate: float
    champion: float | None
    threshold: float | None
    max_regression: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    rows: list[GateRow]
    champion_version: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [r.reason for r in self.rows if not r.passed] or ["all checks passed"]

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "reasons": self.reasons}


# Exactly `max_regression` worse passes: differences this small are floating-point noise, not regressions.
TOLERANCE_SLACK = 1e-9


def _row(metric: str, candidate: float, champion: float | None, cfg: GateConfig) -> GateRow:
    lower = metric in LOWER_IS_BETTER
    threshold = cfg.thresholds.get(metric)
    tolerance = cfg.max_regression.get(metric)
    problems = []
    if math.isnan(candidate):
        problems.append(f"{metric} could not be computed on the holdout")
    if threshold is not None and not math.isnan(candidate):
        ok = candidate <= threshold if lower else candidate >= threshold
        if not ok:
            problems.append(f"{metric} {candidate:.4f} {'above' if lower else 'below'} threshold {threshold:.4f}")
    if tolerance is not None and champion is not None and not math.isnan(candidate) and not math.isnan(champion):
        worse_by = candidate - champion if lower else champion - candidate
        if worse_by > tolerance + TOLERANCE_SLACK:
            problems.append(
                f"{metric} {candidate:.4f} is {worse_by:.4f} worse than champion {champion:.4f} "
                f"(max regression {tolerance:.4f})"
            )
    reason = "; ".join(problems) if problems else f"{metric} ok"
    return GateRow(metric, candidate, champion, threshold, tolerance, not problems, reason)


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    cfg: GateConfig,
    champion_version: str | None = None,
    notes: list[str] | None = None,
) -> Decision:
    """Every metric the gate names is a row; with no champion the absolute thresholds decide."""
    names = [cfg.primary_metric, *cfg.thresholds, *cfg.max_regression]
    ordered = list(dict.fromkeys(names))
    rows = [_row(name, candidate[name], None if champion is None else champion.get(name), cfg) for name in ordered]
    return Decision(all(r.passed for r in rows), rows, champion_version, notes or [])


def champion_on_holdout(
    params: Params, tracker: Tracker, holdout: pd.DataFrame
) -> tuple[dict[str, float] | None, str | None, list[str]]:
    """The champion's metrics on this holdout, its version and a note on how it was scored (None metrics: no champion,
    or one that cannot score this holdout; the absolute thresholds then decide)."""
    from flowship.adapters.tracking import CHAMPION
    from flowship.pipeline import evaluation  # scikit-learn: only when a champion is scored

    champion = tracker.version_by_alias(params.project.name, CHAMPION)
    if champion is None:
        return None, None, ["no champion yet: the absolute thresholds decide"]
    try:
        model = tracker.load_model(champion.uri)
        metrics = evaluation.compute_metrics(model, holdout, params)
    except (KeyError, ValueError, TypeError) as exc:
        # A champion trained on other features or another target cannot score this holdout.
        return (
            None,
            champion.version,
            [f"champion v{champion.version} cannot be scored on this holdout ({exc}); the absolute thresholds decide"],
        )
    return metrics, champion.version, [f"champion v{champion.version} scored on the same holdout"]


def markdown_table(decision: Decision) -> str:
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    lines = [
        "| metric | candidate | champion | threshold | max regression | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in decision.rows:
        verdict = "pass" if r.passed else f"**fail**: {r.reason}"
        lines.append(
            f"| {r.metric} | {fmt(r.candidate)} | {fmt(r.champion)} | {fmt(r.threshold)} | "
            f"{fmt(r.max_regression)} | {verdict} |"
        )
    return "\n".join(lines)
