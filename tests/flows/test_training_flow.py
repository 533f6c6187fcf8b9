"""The training flow end to end on small real data: a real git + DVC repo, a real MLflow store, the Prefect test API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flowship.errors import QualityGateFailed
from flowship.pipeline.outcome import DataCounts
from tests.conftest import default_params, run

pytestmark = pytest.mark.integration

NAME = "flights-delay"


def latest_artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=50)
    assert found, f"no Prefect artifact {key!r}"
    return str(max(found, key=lambda a: a.created).data)


def test_first_run_registers_a_challenger_with_lineage_and_a_rerun_does_nothing(flights_project):
    first = flights_project.train()
    assert all(first.stages.values())
    assert first.decision.verdict == "passed"
    assert first.decision.champion_version is None  # no champion yet: the thresholds decided
    assert first.registered is not None
    assert (first.registered.name, first.registered.version, first.registered.new) == (NAME, "1", True)
    assert first.registered.ref.tags["flowship.mlflow.run_id"] == first.candidate.run_id

    tracker = flights_project.tracker()
    assert tracker.aliases(NAME) == {"challenger": "1"}
    version = tracker.versions(NAME)[0]
    assert version.tags["flowship.gate.verdict"] == "passed"
    mlflow_run = tracker.client.get_run(first.candidate.run_id)
    tags, metrics = mlflow_run.data.tags, mlflow_run.data.metrics
    assert tags["flowship.data.raw_md5"] == first.data_version
    # The sampled flights include cancelled ones, without an arrival delay to derive `late` from: left out, counted.
    flights = pd.read_csv(flights_project.root / "data" / "raw" / "flights.csv")
    cancelled = int(flights["arr_delay"].isna().sum())
    assert first.data == DataCounts(rows=len(flights) - cancelled, target_missing=cancelled) and cancelled > 0
    assert tags["flowship.data.target_missing"] == str(cancelled) and tags["flowship.data.rows"] == str(first.data.rows)
    report = json.loads((flights_project.root / "reports" / "validation.json").read_text())
    assert (report["rows"], report["target_missing"]) == (first.data.rows, cancelled)
    assert tags["flowship.data.holdout_md5"] != "unknown"
    assert tags["flowship.git.commit"] == flights_project.git("rev-parse", "HEAD").strip()
    assert tags["flowship.git.dirty"] == "false"
    assert tags["flowship.prefect.flow_run_id"] not in ("", "none")
    assert len(tags["flowship.params_hash"]) == 16
    assert {"roc_auc", "pr_auc", "f1", "accuracy", "log_loss"} <= set(metrics)
    assert 0.6 < metrics["roc_auc"] < 1.0
    assert mlflow_run.data.params["hp.max_iter"] == "40"
    artifacts = {a.path for a in tracker.client.list_artifacts(mlflow_run.info.run_id, "evaluation")}
    assert {"evaluation/roc_curve.png", "evaluation/confusion_matrix.png"} <= artifacts

    # The golden set travels with the model: records, the model's own predictions and probabilities.
    import mlflow

    model_dir = mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(flights_project.root / "dl"))
    golden = json.loads(next(Path(model_dir).rglob("golden.json")).read_text())
    assert len(golden) == 20
    assert set(golden[0]) == {"features", "prediction", "probabilities"}
    assert set(golden[0]["features"]) == set(default_params()["data"]["features"]["numeric"]) | {
        "carrier",
        "origin",
        "dest",
    }

    gate_md = latest_artifact("training-gate")
    assert "| roc_auc |" in gate_md and "PASSED" in gate_md and first.candidate.run_id in gate_md

    # The data and artifact versions are on the DVC remote, and dvc agrees the pipeline is up to date.
    assert first.remote.pushed > 0
    assert "up to date" in run(["dvc", "status"], flights_project.root).stdout.lower()

    second = flights_project.train()
    assert not any(second.stages.values())
    assert second.candidate.run_id == first.candidate.run_id
    assert second.registered is not None
    assert (second.registered.name, second.registered.version, second.registered.new) == (NAME, "1", False)
    assert [v.version for v in tracker.versions(NAME)] == ["1"]
    assert "skipped (unchanged)" in latest_artifact("training-summary")
    assert second.data == first.data  # said again, from the validation report
    assert "more without a target value, left out" in latest_artifact("training-summary")


def test_dvc_repro_and_the_flow_agree_and_versions_come_back_from_the_remote(flights_project):
    root = flights_project.root
    repro = run(["dvc", "repro"], root)
    assert "Running stage 'evaluate'" in repro.stdout
    assert json.loads((root / "metrics" / "holdout.json").read_text())["roc_auc"] > 0.6

    result = flights_project.train()
    assert not any(result.stages.values()), "the flow re-ran stages that dvc repro had just produced"
    assert result.registered.version == "1"
    lock = (root / "dvc.lock").read_text()

    # Lose the local cache and the outputs: the remote gives them back, byte for byte.
    holdout_before = (root / "data/prepared/holdout.parquet").read_bytes()
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data" / "prepared")
    (root / "data" / "ingested.parquet").unlink()
    run(["dvc", "pull"], root)
    assert (root / "data/prepared/holdout.parquet").read_bytes() == holdout_before
    assert "up to date" in run(["dvc", "status"], root).stdout.lower()
    assert (root / "dvc.lock").read_text() == lock


def test_gate_failure_on_thresholds_registers_nothing_and_records_the_decision(flights_project):
    params = flights_project.params()
    params["gate"]["thresholds"] = {"roc_auc": 0.99, "log_loss": 0.05}
    flights_project.write_params(params)

    with pytest.raises(QualityGateFailed, match=r"roc_auc 0\.\d+ below threshold 0\.9900") as failure:
        flights_project.train()
    assert "log_loss" in str(failure.value)

    tracker = flights_project.tracker()
    assert tracker.versions(NAME) == []
    assert tracker.aliases(NAME) == {}
    runs = tracker.recent_runs(NAME)
    assert [r["verdict"] for r in runs] == ["failed"]
    gate_md = latest_artifact("training-gate")
    assert "FAILED" in gate_md and "below threshold 0.9900" in gate_md


def test_a_candidate_worse_than_the_champion_is_refused_and_the_champion_stays(flights_project):
    flights_project.train()
    tracker = flights_project.tracker()
    tracker.client.set_registered_model_alias(NAME, "champion", "1")

    params = flights_project.params()
    params["train"]["params"].update(max_iter=2, learning_rate=0.01, max_leaf_nodes=2)
    params["gate"]["thresholds"] = {}
    params["gate"]["max_regression"] = {"roc_auc": 0.0}
    flights_project.write_params(params)

    with pytest.raises(QualityGateFailed, match=r"worse than champion"):
        flights_project.train()
    assert [v.version for v in tracker.versions(NAME)] == ["1"]
    assert tracker.aliases(NAME) == {"champion": "1", "challenger": "1"}
    gate_md = latest_artifact("training-gate")
    assert "champion v1 scored on the same holdout" in gate_md


def test_multiclass_on_iris_with_a_parallel_search(make_project, prefect_harness):
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = frame.pop("target").map(dict(enumerate(iris.target_names)))
    params = {
        "project": {"name": "iris", "seed": 7},
        "data": {
            "source": "data/raw/iris.csv",
            "target": {"column": "species"},
            "task": "classification",
            "time_column": None,
            "features": {"numeric": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
        },
        "validate": {"min_rows": 50, "columns": {"species": {"categories": [str(n) for n in iris.target_names]}}},
        "split": {"method": "random", "holdout_fraction": 0.3},
        "train": {
            "estimator": "logistic_regression",
            "params": {"max_iter": 500},
            "search": {"enabled": True, "metric": "accuracy", "max_workers": 2, "space": {"C": [0.01, 1.0, 10.0]}},
        },
        "evaluate": {"golden_size": 10},
        "gate": {"primary_metric": "f1", "thresholds": {"accuracy": 0.8, "roc_auc": 0.9}},
    }
    project = make_project({"iris.csv": frame}, params)
    result = project.train()
    assert result.decision.verdict == "passed"
    assert result.registered.version == "1"
    run_data = project.tracker().client.get_run(result.candidate.run_id).data
    assert {"trial_accuracy_0", "trial_accuracy_1", "trial_accuracy_2"} <= set(run_data.metrics)
    best = max(range(3), key=lambda i: run_data.metrics[f"trial_accuracy_{i}"])
    assert run_data.params["hp.C"] == str([0.01, 1.0, 10.0][best])
    search = json.loads((project.root / "models/candidate/search.json").read_text())
    assert len(search["search"]["trials"]) == 3
    golden = json.loads((project.root / "reports/evaluation/golden.json").read_text())
    assert set(golden[0]["probabilities"]) == set(iris.target_names)


def test_regression_on_diabetes_from_parquet(make_project, prefect_harness):
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    frame["sex"] = frame["sex"].map({1.0: "f", 2.0: "m"})
    params = {
        "project": {"name": "diabetes", "seed": 3},
        "data": {
            "source": "data/raw/diabetes.parquet",
            "target": {"column": "progression"},
            "task": "regression",
            "time_column": None,
            "features": {"numeric": ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], "categorical": ["sex"]},
        },
        "validate": {"min_rows": 100},
        "split": {"method": "random", "holdout_fraction": 0.25},
        "train": {"estimator": "random_forest", "params": {"n_estimators": 50, "min_samples_leaf": 5}},
        "evaluate": {},
        "gate": {"primary_metric": "rmse", "thresholds": {"r2": 0.2, "rmse": 80.0}},
    }
    project = make_project({"diabetes.parquet": frame}, params)
    result = project.train()
    assert result.registered.version == "1"
    metrics = project.tracker().client.get_run(result.candidate.run_id).data.metrics
    assert metrics["r2"] > 0.2 and 0 < metrics["mae"] < metrics["rmse"] < 80
    assert (project.root / "reports/evaluation/residuals.png").exists()
    golden = json.loads((project.root / "reports/evaluation/golden.json").read_text())
    assert "probabilities" not in golden[0] and isinstance(golden[0]["prediction"], float)


def test_search_trials_are_skipped_with_the_train_stage(flights_project):
    params = flights_project.params()
    params["train"]["search"].update(enabled=True, n_trials=2, space={"max_leaf_nodes": [7, 15]})
    flights_project.write_params(params)
    first = flights_project.train()
    assert first.stages["train"]
    second = flights_project.train()
    assert not second.stages["train"]
    assert second.candidate.run_id == first.candidate.run_id
    trials = json.loads((flights_project.root / "models/candidate/search.json").read_text())["search"]["trials"]
    assert [t["params"]["max_leaf_nodes"] for t in trials] == [7, 15]


def test_a_stage_that_runs_again_starts_from_no_outputs_as_dvc_repro_does(flights_project):
    root = flights_project.root
    flights_project.train()
    stale = root / "reports" / "evaluation" / "stale.png"
    stale.write_bytes(b"a plot an earlier run left")
    params = flights_project.params()
    params["evaluate"]["golden_size"] = 10
    flights_project.write_params(params)

    second = flights_project.train()
    assert second.stages["evaluate"] and not second.stages["train"]
    assert not stale.exists()
    assert len(json.loads((root / "reports" / "evaluation" / "golden.json").read_text())) == 10
    assert "up to date" in run(["dvc", "status"], root).stdout.lower()
    # the seconds of each part are beside the stage's outputs, not among them
    assert json.loads((root / "reports" / "evaluation-timings.json").read_text())["seconds"]
    assert sorted(p.name for p in (root / "reports" / "evaluation").iterdir()) == [
        "calibration.png",
        "confusion_matrix.png",
        "feature_importance.png",
        "golden.json",
        "pr_curve.png",
        "roc_curve.png",
    ]
