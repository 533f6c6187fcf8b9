"""Checks a release must pass in staging: pure functions over what was measured over HTTP."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from flowship.serving.guardrails import GuardrailPolicy, TrainingProfile

# a category no training data has
UNSEEN = "__flowship_unseen__"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    measured: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=tolerance)
    return str(a) == str(b)


def golden_check(
    golden: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    tolerance: float,
    positions: Sequence[int] | None = None,
) -> Check:
    """Each answer (prediction, probabilities) must match what the model gave at training time; a record is named
    by its position in the golden set (`positions`, when only some of its records were compared)."""
    if len(answers) != len(golden):
        return Check("golden_set", False, f"{len(answers)} answers for {len(golden)} golden records")
    mismatches = []
    worst = 0.0
    for j, (expected, got) in enumerate(zip(golden, answers, strict=True)):
        i = positions[j] if positions is not None else j
        if not _close(expected["prediction"], got.get("prediction"), tolerance):
            mismatches.append(f"record {i}: prediction {got.get('prediction')!r}, expected {expected['prediction']!r}")
            continue
        for cls, p in (expected.get("probabilities") or {}).items():
            q = (got.get("probabilities") or {}).get(str(cls))
            if q is None:
                mismatches.append(f"record {i}: no probability for class {cls!r}")
                break
            worst = max(worst, abs(float(p) - float(q)))
            if abs(float(p) - float(q)) > tolerance:
                mismatches.append(f"record {i}: P({cls}) {q:.8f}, expected {p:.8f}")
                break
    measured = {"records": len(golden), "mismatches": len(mismatches), "max_probability_difference": worst}
    if mismatches:
        shown = "; ".join(mismatches[:3])
        return Check("golden_set", False, f"{len(mismatches)} of {len(golden)} records differ: {shown}", measured)
    return Check("golden_set", True, f"{len(golden)} records match (tolerance {tolerance:g})", measured)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_check(latencies_ms: list[float], budget_ms: float) -> Check:
    p50, p95 = percentile(latencies_ms, 50), percentile(latencies_ms, 95)
    measured = {"requests": len(latencies_ms), "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "budget_ms": budget_ms}
    passed = bool(latencies_ms) and p95 <= budget_ms
    detail = f"p95 {p95:.2f} ms over {len(latencies_ms)} requests (budget {budget_ms:g} ms)"
    return Check("latency", passed, detail if passed else detail + ": over budget", measured)


def status_check(name: str, status: int, expected: range | set[int], what: str) -> Check:
    ok = status in expected
    return Check(name, ok, f"{what}: HTTP {status}", {"status": status})


@dataclass(frozen=True)
class Trip:
    """A record built from `example` to trip one input guardrail, and the action the policy gives it."""

    guardrail: str
    action: str
    feature: str | None
    record: dict[str, Any]


def guardrail_trips(policy: GuardrailPolicy, profile: TrainingProfile, example: dict[str, Any]) -> list[Trip]:
    """One record per input guardrail the policy turns on (and the profile lets us build): a number far above its
    training range, an unknown category, a feature missing that training never had missing."""
    trips = []
    numeric = next(iter(profile.numeric.items()), None)
    if policy.out_of_range.action != "off" and numeric is not None:
        name, known = numeric
        far = known.max + 10 * (known.max - known.min) + 1
        trips.append(Trip("out_of_range", policy.out_of_range.action, name, {**example, name: far}))
    categorical = next(iter(profile.categorical), None)
    if policy.unseen_category.action != "off" and categorical is not None:
        trips.append(
            Trip("unseen_category", policy.unseen_category.action, categorical, {**example, categorical: UNSEEN})
        )
    shares = {
        **{n: p.missing for n, p in profile.numeric.items()},
        **{n: p.missing for n, p in profile.categorical.items()},
    }
    never_missing = [name for name, share in shares.items() if share == 0]
    if policy.missing.action != "off" and never_missing:
        name = never_missing[0]
        trips.append(Trip("missing", policy.missing.action, name, {**example, name: None}))
    return trips


def guardrails_check(trips: Sequence[Trip], results: dict[str, tuple[int, dict[str, Any]]]) -> Check:
    """Each trip's answer (status, body) against its action: `refuse` a 422 naming the guardrail and feature, `flag`
    and `fallback` a 200 whose warning names them (a fallback's answer also replaces the model's)."""
    if not trips:
        return Check("guardrails", True, "no input guardrail is on")
    wrong = []
    for trip in trips:
        status, body = results.get(trip.guardrail, (0, {}))
        if trip.action == "refuse":
            named = [(r.get("guardrail"), r.get("feature")) for r in body.get("guardrails") or []]
            if status != 422 or (trip.guardrail, trip.feature) not in named:
                wrong.append(f"{trip.guardrail} ({trip.feature}): expected a 422 naming it, got HTTP {status}")
            continue
        warnings = (body.get("warnings") or [[]])[0]
        acted = [(w.get("guardrail"), w.get("feature"), w.get("action")) for w in warnings]
        if status != 200 or (trip.guardrail, trip.feature, trip.action) not in acted:
            got = "a 200 without it" if status == 200 else f"HTTP {status}"
            wrong.append(f"{trip.guardrail} ({trip.feature}): expected a 200 with a {trip.action} warning, got {got}")
    tried = ", ".join(f"{t.guardrail}: {t.action}" for t in trips)
    measured = {"tried": len(trips), "wrong": len(wrong)}
    if wrong:
        return Check("guardrails", False, "; ".join(wrong), measured)
    return Check("guardrails", True, f"each acted as the policy says ({tried})", measured)


def summary(checks: list[Check]) -> tuple[bool, str]:
    failed = [c for c in checks if not c.passed]
    if not failed:
        return True, "all checks passed"
    return False, "; ".join(f"{c.name}: {c.detail}" for c in failed)
