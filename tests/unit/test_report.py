"""The model report's text for what the integration test does not reach: invalid params, changed data, a run on a
tracking server, a candidate without a run."""

from __future__ import annotations

from flowship.pipeline.changes import Changes, DataVersion, StageChange, ValueChange
from flowship.pipeline.gate import Decision, GateRow
from flowship.pipeline.outcome import RunLink
from flowship.pipeline.report import ModelReport


def changes(**kw: object) -> Changes:
    fields: dict[str, object] = {
        "base_ref": "main",
        "base_commit": "0123456789abcdef" * 2 + "01234567",
        "params": [],
        "data_before": DataVersion("a.dir", 10, 1),
        "data_after": DataVersion("a.dir", 10, 1),
        "stages": [],
        "base_metrics": {"roc_auc": 0.7},
    }
    fields.update(kw)
    return Changes(**fields)  # type: ignore[arg-type]


def decision(passed: bool = True) -> Decision:
    row = GateRow("roc_auc", 0.72, 0.71, 0.65, 0.01, passed, "roc_auc ok" if passed else "roc_auc 0.7200 below 0.8")
    return Decision(passed, [row], "3", ["champion v3 scored on the same holdout"])


def test_invalid_params_are_the_report_and_it_does_not_pass() -> None:
    report = ModelReport(None, changes(), problems=["params.yaml fails validation: gate.primary_metric: no"])
    text = report.markdown()
    assert text.startswith("## Model report: NOT CHECKED\n")
    assert "### Problems\n\n- params.yaml fails validation: gate.primary_metric: no" in text
    assert "### Gate" not in text and "### Holdout metrics" not in text
    assert not report.passed and report.as_dict()["verdict"] == "failed" and report.as_dict()["gate"] is None


def test_changed_data_says_whose_holdout_each_column_is_on() -> None:
    moved = changes(
        data_after=DataVersion("b.dir", 12, 1),
        params=[ValueChange("split.train_end", "2013-06-01", "2013-07-01")],
        stages=[StageChange("prepare", params=["split.train_end"], outs=["data/prepared/holdout.parquet"])],
    )
    report = ModelReport("m", moved, {"roc_auc": 0.72}, {"roc_auc": 0.71}, decision(), None, tracking="sqlite:///x.db")
    text = report.markdown()
    assert "- data: `a.dir` → `b.dir`" in text
    assert "- stage prepare: params: split.train_end" in text
    assert (
        "| roc_auc | 0.7200 | 0.7000 | 0.7100 |" in text
        and "| metric | candidate | base `main` | champion v3 |" in text
    )
    assert "the data changed: the base's metrics are on the base's own holdout, the champion's on this one" in text
    assert "MLflow run: none of this model on this holdout in sqlite:///x.db" in text


def test_a_run_on_a_tracking_server_is_a_link_and_a_failed_gate_does_not_pass() -> None:
    run = RunLink("abc", "http://mlflow:5000/#/experiments/1/runs/abc")
    report = ModelReport("m", changes(), {"roc_auc": 0.72}, {"roc_auc": 0.71}, decision(passed=False), run)
    text = report.markdown()
    assert text.startswith("## Model report: m: gate FAILED\n")
    assert "MLflow run: [abc](http://mlflow:5000/#/experiments/1/runs/abc)" in text
    assert "**fail**: roc_auc 0.7200 below 0.8" in text
    assert not report.passed and report.as_dict()["candidate"]["run"]["url"].startswith("http://")


def test_run_outputs_left_uncommitted_are_called_out() -> None:
    report = ModelReport(
        "m", changes(), {"roc_auc": 0.72}, {"roc_auc": 0.71}, decision(), None, uncommitted=["dvc.lock"]
    )
    assert (
        "- not committed: `dvc.lock`, as `flowship train` wrote them: commit them with the change" in report.markdown()
    )
    assert report.as_dict()["uncommitted"] == ["dvc.lock"]
    clean = ModelReport("m", changes(), {"roc_auc": 0.72}, {"roc_auc": 0.71}, decision(), None)
    assert "not committed" not in clean.markdown()
