"""The gate: absolute thresholds in each metric's direction, maximum regression against the champion."""

from __future__ import annotations

import math

import pytest

from flowship.pipeline.gate import decide, markdown_table
from tests.unit.conftest import make_params


def gate(task="classification", **cfg):
    return make_params(task, gate=cfg).gate


def row(decision, metric):
    (found,) = [r for r in decision.rows if r.metric == metric]
    return found


CLASSIFICATION = {"roc_auc": 0.80, "pr_auc": 0.7, "f1": 0.6, "accuracy": 0.75, "log_loss": 0.45}
REGRESSION = {"rmse": 10.0, "mae": 8.0, "r2": 0.6}


# --- thresholds -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "passed"), [(0.80, True), (0.75, True), (0.7499, False), (0.5, False)])
def test_threshold_is_a_minimum_for_scores(value, passed):
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.75})
    decision = decide({**CLASSIFICATION, "roc_auc": value}, None, cfg)
    assert decision.passed is passed
    assert row(decision, "roc_auc").passed is passed
    if not passed:
        assert "below threshold 0.7500" in row(decision, "roc_auc").reason


@pytest.mark.parametrize(
    ("task", "metric", "limit", "value", "passed"),
    [
        ("classification", "log_loss", 0.5, 0.45, True),
        ("classification", "log_loss", 0.5, 0.5, True),
        ("classification", "log_loss", 0.5, 0.55, False),
        ("regression", "rmse", 12.0, 10.0, True),
        ("regression", "rmse", 9.0, 10.0, False),
        ("regression", "mae", 7.5, 8.0, False),
    ],
)
def test_threshold_is_a_maximum_for_losses(task, metric, limit, value, passed):
    base = CLASSIFICATION if task == "classification" else REGRESSION
    cfg = gate(task, primary_metric=metric, thresholds={metric: limit})
    decision = decide({**base, metric: value}, None, cfg)
    assert decision.passed is passed
    if not passed:
        assert "above threshold" in row(decision, metric).reason


def test_r2_threshold_is_a_minimum():
    cfg = gate("regression", primary_metric="rmse", thresholds={"r2": 0.7})
    assert not decide(REGRESSION, None, cfg).passed
    assert decide({**REGRESSION, "r2": 0.71}, None, cfg).passed


def test_every_failing_metric_is_a_reason():
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.9, "accuracy": 0.9, "f1": 0.5})
    decision = decide(CLASSIFICATION, None, cfg)
    assert not decision.passed
    assert decision.verdict == "failed"
    assert len(decision.reasons) == 2
    assert any(r.startswith("roc_auc") for r in decision.reasons)
    assert any(r.startswith("accuracy") for r in decision.reasons)
    assert row(decision, "f1").passed


# --- regression against the champion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "champion", "tolerance", "passed"),
    [
        (0.80, 0.80, 0.0, True),
        (0.85, 0.80, 0.0, True),  # better than the champion
        (0.79, 0.80, 0.02, True),
        (0.77, 0.80, 0.02, False),
        (0.7999, 0.80, 0.0, False),
    ],
)
def test_max_regression_for_a_score(candidate, champion, tolerance, passed):
    cfg = gate(primary_metric="roc_auc", max_regression={"roc_auc": tolerance})
    decision = decide({**CLASSIFICATION, "roc_auc": candidate}, {**CLASSIFICATION, "roc_auc": champion}, cfg)
    assert decision.passed is passed
    if not passed:
        assert "worse than champion" in row(decision, "roc_auc").reason


@pytest.mark.parametrize(
    ("candidate", "champion", "passed"),
    [(10.0, 10.0, True), (9.0, 10.0, True), (10.4, 10.0, True), (10.6, 10.0, False)],
)
def test_max_regression_for_a_loss(candidate, champion, passed):
    cfg = gate("regression", primary_metric="rmse", max_regression={"rmse": 0.5})
    decision = decide({**REGRESSION, "rmse": candidate}, {**REGRESSION, "rmse": champion}, cfg)
    assert decision.passed is passed
    assert row(decision, "rmse").champion == champion


def test_without_a_champion_the_thresholds_decide():
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.7}, max_regression={"roc_auc": 0.0})
    decision = decide({**CLASSIFICATION, "roc_auc": 0.71}, None, cfg)
    assert decision.passed
    assert decision.reasons == ["all checks passed"]
    assert row(decision, "roc_auc").champion is None
    assert decision.champion_version is None
    failing = decide({**CLASSIFICATION, "roc_auc": 0.69}, None, cfg)
    assert not failing.passed


def test_champion_and_threshold_both_apply():
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.7}, max_regression={"roc_auc": 0.01})
    champion = {**CLASSIFICATION, "roc_auc": 0.95}
    decision = decide({**CLASSIFICATION, "roc_auc": 0.9}, champion, cfg, champion_version="4", notes=["n"])
    assert not decision.passed  # above the threshold, but 0.05 worse than the champion
    assert decision.champion_version == "4"
    assert decision.notes == ["n"]
    as_dict = decision.as_dict()
    assert as_dict["verdict"] == "failed"
    assert as_dict["reasons"] == decision.reasons
    assert as_dict["rows"][0]["metric"] == "roc_auc"


def test_champion_without_the_metric_is_not_compared():
    cfg = gate(primary_metric="roc_auc", max_regression={"roc_auc": 0.0})
    decision = decide(CLASSIFICATION, {"accuracy": 0.99}, cfg)
    assert decision.passed
    assert row(decision, "roc_auc").champion is None


# --- metrics that could not be computed -----------------------------------------------------------------------


def test_nan_candidate_metric_fails_even_without_thresholds():
    cfg = gate(primary_metric="roc_auc")
    decision = decide({**CLASSIFICATION, "roc_auc": math.nan}, None, cfg)
    assert not decision.passed
    assert "could not be computed" in decision.reasons[0]


def test_nan_candidate_metric_fails_against_a_champion():
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.5}, max_regression={"roc_auc": 0.1})
    decision = decide({**CLASSIFICATION, "roc_auc": math.nan}, CLASSIFICATION, cfg)
    assert not decision.passed


def test_nan_champion_metric_leaves_the_thresholds_to_decide():
    cfg = gate(primary_metric="roc_auc", thresholds={"roc_auc": 0.5}, max_regression={"roc_auc": 0.0})
    assert decide(CLASSIFICATION, {**CLASSIFICATION, "roc_auc": math.nan}, cfg).passed


# --- rows and the table ---------------------------------------------------------------------------------------


def test_one_row_per_named_metric_primary_first_without_repeats():
    cfg = gate(
        primary_metric="roc_auc",
        thresholds={"accuracy": 0.5, "roc_auc": 0.5},
        max_regression={"log_loss": 0.1, "accuracy": 0.1},
    )
    decision = decide(CLASSIFICATION, CLASSIFICATION, cfg)
    assert [r.metric for r in decision.rows] == ["roc_auc", "accuracy", "log_loss"]
    assert row(decision, "accuracy").threshold == 0.5 and row(decision, "accuracy").max_regression == 0.1
    assert row(decision, "log_loss").threshold is None


def test_markdown_table_has_a_row_per_metric():
    cfg = gate(primary_metric="roc_auc", thresholds={"accuracy": 0.9}, max_regression={"log_loss": 0.1})
    decision = decide(CLASSIFICATION, None, cfg)
    lines = markdown_table(decision).splitlines()
    assert lines[0].startswith("| metric |") and lines[1].startswith("| --- |")
    body = lines[2:]
    assert len(body) == len(decision.rows) == 3
    assert [line.split("|")[1].strip() for line in body] == ["roc_auc", "accuracy", "log_loss"]
    assert all(line.count("|") == lines[0].count("|") for line in body)
    by_metric = {line.split("|")[1].strip(): line for line in body}
    assert "0.8000" in by_metric["roc_auc"] and by_metric["roc_auc"].rstrip().endswith("| pass |")
    assert "**fail**" in by_metric["accuracy"] and "0.9000" in by_metric["accuracy"]
    assert "–" in by_metric["log_loss"]  # no champion


def test_regression_of_exactly_the_tolerance_passes():
    cfg = gate(primary_metric="roc_auc", max_regression={"roc_auc": 0.01})
    assert decide({**CLASSIFICATION, "roc_auc": 0.84}, {**CLASSIFICATION, "roc_auc": 0.85}, cfg).passed
