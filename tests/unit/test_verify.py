"""Release checks over measured answers: golden set, latency percentiles, the summary."""

from __future__ import annotations

import math

import pytest

from flowship.release.checks import (
    UNSEEN,
    Check,
    golden_check,
    guardrail_trips,
    guardrails_check,
    latency_check,
    percentile,
    status_check,
    summary,
)
from flowship.serving.guardrails import GuardrailPolicy, TrainingProfile

GOLDEN = [
    {"features": {"x": 1.0}, "prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}},
    {"features": {"x": 2.0}, "prediction": 0, "probabilities": {"0": 0.9, "1": 0.1}},
]


def answers(*rows: tuple[int, float]) -> list[dict[str, object]]:
    return [{"prediction": p, "probabilities": {"0": 1 - q, "1": q}} for p, q in rows]


def test_golden_set_matches_within_tolerance() -> None:
    check = golden_check(GOLDEN, answers((1, 0.75 + 1e-9), (0, 0.1)), tolerance=1e-6)
    assert check.passed and check.measured["mismatches"] == 0
    assert check.measured["max_probability_difference"] == pytest.approx(1e-9, abs=1e-12)


def test_golden_set_names_the_record_that_differs() -> None:
    check = golden_check(GOLDEN, answers((1, 0.75), (1, 0.6)), tolerance=1e-6)
    assert not check.passed
    assert "1 of 2 records differ" in check.detail and "record 1: prediction 1, expected 0" in check.detail


def test_golden_set_catches_a_probability_drift_with_the_same_label() -> None:
    check = golden_check(GOLDEN, answers((1, 0.70), (0, 0.1)), tolerance=1e-6)
    assert not check.passed and "record 0: P(0)" in check.detail


def test_golden_set_wrong_count_and_missing_class() -> None:
    assert not golden_check(GOLDEN, answers((1, 0.75)), 1e-6).passed
    missing = [{"prediction": 1, "probabilities": {"1": 0.75}}, {"prediction": 0, "probabilities": {"1": 0.1}}]
    check = golden_check(GOLDEN, missing, 1e-6)
    assert not check.passed and "no probability for class '0'" in check.detail


def test_regression_golden_set_compares_numbers() -> None:
    golden = [{"features": {}, "prediction": 10.5}]
    assert golden_check(golden, [{"prediction": 10.5000000001}], 1e-6).passed
    assert not golden_check(golden, [{"prediction": 10.6}], 1e-6).passed


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 50) == 50.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 95))


def test_latency_budget() -> None:
    fast = latency_check([1.0] * 95 + [30.0] * 5, budget_ms=5.0)
    assert fast.passed and fast.measured["p95_ms"] == 1.0
    slow = latency_check([1.0] * 90 + [30.0] * 10, budget_ms=5.0)
    assert not slow.passed and "over budget" in slow.detail and slow.measured["p95_ms"] == 30.0
    assert not latency_check([0.4], budget_ms=0.0).passed  # a zero budget can never be met
    assert not latency_check([], budget_ms=10.0).passed


def test_status_check_and_summary() -> None:
    ok = status_check("bad_input", 422, range(400, 500), "a wrong type")
    server_error = status_check("bad_input", 500, range(400, 500), "a wrong type")
    assert ok.passed and not server_error.passed
    assert summary([ok]) == (True, "all checks passed")
    passed, reasons = summary([ok, server_error, Check("latency", False, "p95 9 ms")])
    assert not passed and reasons == "bad_input: a wrong type: HTTP 500; latency: p95 9 ms"


PROFILE = TrainingProfile.model_validate(
    {
        "rows": 100,
        "numeric": {
            "temp": {"min": -10, "max": 100, "low": 0, "high": 90, "missing": 0.1},
            "hour": {"min": 5, "max": 23, "low": 5, "high": 23, "missing": 0.0},
        },
        "categorical": {"carrier": {"values": ["AA", "DL"], "missing": 0.0}},
        "target": {"prior": {"True": 0.2, "False": 0.8}},
    }
)
EXAMPLE = {"temp": 50.0, "hour": 9.0, "carrier": "AA"}


def test_a_trip_record_is_built_for_each_input_guardrail_that_is_on() -> None:
    policy = GuardrailPolicy.model_validate({"unseen_category": {"action": "refuse"}, "missing": {"action": "off"}})
    trips = guardrail_trips(policy, PROFILE, EXAMPLE)
    assert [(t.guardrail, t.action, t.feature) for t in trips] == [
        ("out_of_range", "flag", "temp"),
        ("unseen_category", "refuse", "carrier"),
    ]
    assert trips[0].record["temp"] > 100 and trips[0].record["hour"] == 9.0
    assert trips[1].record["carrier"] == UNSEEN
    missing = guardrail_trips(GuardrailPolicy(), PROFILE, EXAMPLE)[2]
    assert (missing.feature, missing.record["hour"]) == ("hour", None)  # temp was missing in training: not it


def test_the_guardrails_check_wants_each_action_as_configured() -> None:
    policy = GuardrailPolicy.model_validate({"unseen_category": {"action": "refuse"}, "missing": {"action": "off"}})
    trips = guardrail_trips(policy, PROFILE, EXAMPLE)
    flagged = {"warnings": [[{"guardrail": "out_of_range", "feature": "temp", "action": "flag"}]]}
    refused = {"guardrails": [{"record": 0, "guardrail": "unseen_category", "feature": "carrier"}]}
    good = guardrails_check(trips, {"out_of_range": (200, flagged), "unseen_category": (422, refused)})
    assert good.passed and good.detail == "each acted as the policy says (out_of_range: flag, unseen_category: refuse)"
    silent = guardrails_check(trips, {"out_of_range": (200, {"warnings": [[]]}), "unseen_category": (200, {})})
    assert not silent.passed
    assert silent.detail == (
        "out_of_range (temp): expected a 200 with a flag warning, got a 200 without it; "
        "unseen_category (carrier): expected a 422 naming it, got HTTP 200"
    )
    assert guardrails_check([], {}).detail == "no input guardrail is on"


def test_a_golden_record_is_named_by_its_place_in_the_set_when_some_were_left_out() -> None:
    # records 0 and 2 of a three-record set compared (1 answered by a guardrail's fallback): record 2 differs
    check = golden_check(GOLDEN, answers((1, 0.75), (1, 0.1)), 1e-6, positions=[0, 2])
    assert not check.passed and "record 2: prediction 1, expected 0" in check.detail
