"""A canary step's numbers and verdict, from access-log lines and predictions (tests/release/test_gateway.py runs
the steps against a real gateway)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flowship.config import CanaryConfig
from flowship.release.live import StepMeasure, Traffic, judge_step, prediction_distance, read_access_log, traffic


def line(
    pool: str, status: int = 200, seconds: float = 0.004, path: str = "/predict", upstream: str = "1.2.3.4:8000"
) -> dict[str, Any]:
    return {"pool": pool, "status": status, "request_time": seconds, "path": path, "upstream": upstream}


def test_each_side_counts_its_own_answers_and_server_errors() -> None:
    lines = [line("canary"), line("canary", 502), line("canary", 422), line("stable"), line("stable", seconds=0.1)]
    lines += [line("canary", 429, upstream=""), line("canary", path="/health")]  # refused at the gateway; a probe
    canary, stable = traffic(lines, "canary"), traffic(lines, "stable")
    assert (canary.requests, canary.server_errors) == (3, 1) and canary.success_rate == pytest.approx(2 / 3)
    assert (stable.requests, stable.server_errors, stable.p99_ms) == (2, 0, 100.0)
    assert math.isnan(traffic([], "canary").success_rate)
    # stable's replicas standing in for a canary that took no connection: their answers are not the canary's
    stood_in = [{**line("canary"), "version": "1"}, {**line("canary", 500), "version": "2"}]
    assert traffic(stood_in, "canary", answered_elsewhere="1") == Traffic(1, 1, 4.0)


def test_the_access_log_is_read_from_the_steps_start(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    log.write_text(json.dumps(line("stable")) + "\n")
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write(json.dumps(line("canary")) + "\n{cut by a crash\n" + json.dumps(line("canary", 500)) + "\n")
    assert [entry["status"] for entry in read_access_log(log, offset)] == [200, 500]
    assert read_access_log(tmp_path / "missing.jsonl", 0) == []


def test_prediction_distance_is_zero_for_the_same_mix_and_grows_as_it_moves() -> None:
    same = prediction_distance([True, False] * 50, [False, True] * 50, "classification")
    moved = prediction_distance([True] * 90 + [False] * 10, [True] * 50 + [False] * 50, "classification")
    disjoint = prediction_distance(["a"] * 10, ["b"] * 10, "classification")
    assert same == pytest.approx(0.0) and 0.2 < moved < 0.5 and disjoint == pytest.approx(1.0)
    shifted = prediction_distance([x + 1.0 for x in range(100)], [float(x) for x in range(100)], "regression")
    assert shifted == pytest.approx(1.0 / 28.866, rel=1e-3)  # one unit over stable's standard deviation
    assert prediction_distance([], [1.0], "regression") is None


def measure(canary: Traffic, stable: Traffic, distance: float | None = 0.01) -> StepMeasure:
    return StepMeasure(5, 30.0, canary, stable, distance)


def test_a_step_passes_only_when_every_check_does() -> None:
    cfg = CanaryConfig(min_requests=100, min_success_rate=0.99, max_p99_ratio=1.5, max_prediction_distance=0.1)
    good = judge_step(measure(Traffic(200, 1, 12.0), Traffic(4000, 0, 10.0)), cfg)
    assert all(c.passed for c in good) and [c.name for c in good] == [
        "canary_requests", "success_rate", "request_duration", "prediction_distance"
    ]  # fmt: skip
    failing = {
        "canary_requests": measure(Traffic(99, 0, 10.0), Traffic(4000, 0, 10.0)),
        "success_rate": measure(Traffic(200, 3, 10.0), Traffic(4000, 0, 10.0)),
        "request_duration": measure(Traffic(200, 0, 15.1), Traffic(4000, 0, 10.0)),
        "prediction_distance": measure(Traffic(200, 0, 10.0), Traffic(4000, 0, 10.0), 0.2),
    }
    for name, m in failing.items():
        assert [c.name for c in judge_step(m, cfg) if not c.passed] == [name]
    assert not judge_step(measure(Traffic(200, 0, 10.0), Traffic(4000, 0, 10.0), None), cfg)[3].passed
    capped = CanaryConfig(max_p99_ms=8.0)
    assert not judge_step(measure(Traffic(200, 0, 9.0), Traffic(4000, 0, 10.0)), capped)[2].passed


@pytest.mark.parametrize("weights", [[50, 25], [0, 50], [5, 100], [5, 5], []])
def test_step_weights_must_rise_below_100(weights: list[int]) -> None:
    with pytest.raises(ValidationError, match="step_weights"):
        CanaryConfig(step_weights=weights)


def test_a_shadows_answers_are_matched_to_stables_by_request_and_row() -> None:
    import pandas as pd

    from flowship.config import ShadowConfig
    from flowship.release.live import ShadowMeasure, compare_answers, judge_shadow, upstream_p99

    def frame(predictions: list[object], probabilities: list[dict[str, float]] | None = None) -> pd.DataFrame:
        n = len(predictions)
        return pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "row": [0] * n, "prediction": predictions,
                             "probabilities": probabilities or [None] * n})  # fmt: skip

    stable = frame([True, True, False, False], [{"True": 0.9, "False": 0.1}] * 4)
    shadow = frame([True, False, False], [{"True": 0.6, "False": 0.4}] * 3)  # r3 never answered by the shadow
    assert compare_answers(stable, shadow, "classification") == (3, pytest.approx(2 / 3), pytest.approx(0.3), None)
    values = frame([1.0, 2.0, 3.0])
    assert compare_answers(values, frame([1.5, 2.5, 3.5]), "regression")[3] == pytest.approx(0.5 / 0.8165, rel=1e-3)
    assert (
        compare_answers(stable, frame([])[["request_id", "row", "prediction", "probabilities"]], "classification")[0]
        == 0
    )

    lines = [{"path": "/predict", "upstream_time": "0.010"}, {"path": "/predict", "upstream_time": "0.002, 0.030"},
             {"path": "/predict", "upstream_time": "-"}, {"path": "/health", "upstream_time": "0.500"}]  # fmt: skip
    assert upstream_p99(lines) == pytest.approx(10.0)  # the first try's time; probes and no-answers left out

    cfg = ShadowConfig(min_requests=3, min_agreement=0.9, max_p99_ratio=2.0)
    good = judge_shadow(ShadowMeasure(5.0, 3, 1.0, 0.01, None, 8.0, 5.0), cfg)
    assert all(c.passed for c in good) and [c.name for c in good] == [
        "shadow_requests",
        "agreement",
        "request_duration",
    ]
    bad = judge_shadow(ShadowMeasure(5.0, 2, 0.5, 0.4, None, 11.0, 5.0), cfg)
    assert [c.name for c in bad if not c.passed] == ["shadow_requests", "agreement", "request_duration"]
    regression = judge_shadow(ShadowMeasure(5.0, 3, None, None, 0.2, 5.0, 5.0), ShadowConfig(max_mean_difference=0.1))
    assert [c.name for c in regression if not c.passed] == ["shadow_requests", "mean_difference"]
