"""What the training path hands on: the decision as MLflow tags and back, the summary's artifact text."""

from __future__ import annotations

import dataclasses
import json

import cloudpickle
import pytest

from flowship.adapters.tracking import VersionRef
from flowship.pipeline.gate import decide
from flowship.pipeline.outcome import (
    DataPush,
    RecordedDecision,
    Registration,
    RunLink,
    TrainingSummary,
    decision_tags,
)
from tests.unit.conftest import make_params

METRICS = {"roc_auc": 0.80, "pr_auc": 0.7, "f1": 0.6, "accuracy": 0.75, "log_loss": 0.45}


def summary(registered: Registration | None, decision: RecordedDecision) -> TrainingSummary:
    return TrainingSummary(
        data_version="abc123",
        stages={"ingest": True, "validate": False},
        candidate=RunLink("run-1", "http://mlflow/#/experiments/1/runs/run-1"),
        decision=decision,
        registered=registered,
        remote=DataPush(remote="storage", pushed=3),
    )


def test_a_failed_decision_read_back_from_its_tags_is_the_one_recorded():
    cfg = make_params(gate={"primary_metric": "roc_auc", "thresholds": {"roc_auc": 0.9, "f1": 0.7}}).gate
    decision = decide(METRICS, {**METRICS, "roc_auc": 0.85}, cfg, champion_version="3")
    tags = decision_tags(decision)

    assert tags["flowship.gate.verdict"] == "failed"
    assert json.loads(tags["flowship.gate.decision"])["rows"][0]["metric"] == "roc_auc"
    recorded = RecordedDecision.from_tags(tags)
    assert recorded == RecordedDecision.of(decision)
    assert recorded is not None and not recorded.passed
    assert recorded.champion_version == "3"
    assert recorded.reasons == ["roc_auc 0.8000 below threshold 0.9000", "f1 0.6000 below threshold 0.7000"]


def test_a_passed_decision_without_a_champion_and_a_run_no_gate_decided_on():
    decision = decide(METRICS, None, make_params().gate)
    recorded = RecordedDecision.from_tags(decision_tags(decision))
    assert recorded == RecordedDecision("passed", ["all checks passed"], None) and recorded.passed
    assert RecordedDecision.from_tags({"flowship.model_uri": "models:/m-1"}) is None


def test_the_summary_artifact_says_what_ran_and_what_was_registered():
    ref = VersionRef("flights-delay", "2", "run-1", "models:/m-1", {})
    passed = RecordedDecision("passed", ["all checks passed"], None)
    text = summary(Registration(ref, new=True), passed).markdown()
    assert text.startswith("# Training run\n\n")
    assert "- data version (DVC, `data/raw`): `abc123`\n" in text
    assert "- stages: ingest: ran, validate: skipped (unchanged)\n" in text
    assert "- MLflow run: [run-1](http://mlflow/#/experiments/1/runs/run-1)\n" in text
    assert "- gate: passed\n" in text
    assert text.endswith("- registered: flights-delay v2 (alias `challenger`)\n")
    again = summary(Registration(ref, new=False), passed).markdown()
    assert again.endswith("- registered: flights-delay v2 (already registered)\n")


def test_hand_offs_are_frozen_and_survive_pickling_as_prefect_results_do():
    ref = VersionRef("flights-delay", "1", "run-1", "models:/m-1", {"flowship.git.commit": "abc"})
    done = summary(Registration(ref, new=True), RecordedDecision("passed", ["all checks passed"], None))
    assert cloudpickle.loads(cloudpickle.dumps(done)) == done
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.registered = None  # type: ignore[misc]
