"""Release checks over measured answers: golden set, latency percentiles, the summary."""

from __future__ import annotations

import math

import pytest

from flowship.release.checks import Check, golden_check, latency_check, percentile, status_check, summary

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
