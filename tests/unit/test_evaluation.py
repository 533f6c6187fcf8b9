"""Evaluation: the metric set per task, the golden set, and the plot files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from flowship.config import metrics_for
from flowship.pipeline.evaluation import (
    classification_metrics,
    compute_metrics,
    feature_importance,
    golden_set,
    regression_metrics,
    score,
    write_plots,
)
from flowship.pipeline.training import fit
from tests.unit.conftest import make_frame, make_params

PNG = b"\x89PNG\r\n\x1a\n"


def trained(task, n_classes=2, primary=None, labels=None, **params):
    overrides = {"gate": {"primary_metric": primary}} if primary else {}
    params = make_params(task, **overrides, **params)
    data = make_frame(task, n=240, n_classes=n_classes).drop(columns=["ts"])
    if labels is not None:
        data["y"] = np.asarray(labels)[data["y"]]
    train, holdout = data.iloc[:180].reset_index(drop=True), data.iloc[180:].reset_index(drop=True)
    return fit(train, params, params.train.params), holdout, params


@pytest.fixture(scope="module")
def binary():
    return trained("classification")


@pytest.fixture(scope="module")
def multiclass():
    return trained("classification", n_classes=3, primary="log_loss")


@pytest.fixture(scope="module")
def regression():
    return trained("regression")


# --- metrics --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "task"), [("binary", "classification"), ("multiclass", "classification"), ("regression", "regression")]
)
def test_metrics_are_exactly_those_of_the_task(case, task, request):
    model, holdout, params = request.getfixturevalue(case)
    values = compute_metrics(model, holdout, params)
    assert set(values) == set(metrics_for(task))
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    if task == "classification":
        for name in ("roc_auc", "pr_auc", "f1", "accuracy"):
            assert 0.0 <= values[name] <= 1.0
        assert values["roc_auc"] > 0.75  # the frames have a strong signal
        assert values["log_loss"] > 0
    else:
        assert 0 <= values["mae"] <= values["rmse"]
        assert values["r2"] > 0.5
    assert score(model, holdout, params, params.gate.primary_metric) == values[params.gate.primary_metric]


@pytest.mark.parametrize(
    ("case", "task"), [("binary", "classification"), ("multiclass", "classification"), ("regression", "regression")]
)
def test_one_metric_asked_is_that_metric_alone_and_the_same_value(case, task, request):
    model, holdout, params = request.getfixturevalue(case)
    x, y = holdout.drop(columns=["y"]), holdout["y"]
    for name in metrics_for(task):
        if task == "classification":
            proba = model.predict_proba(x)
            everything = classification_metrics(y, proba, model.classes_)
            alone = classification_metrics(y, proba, model.classes_, only=name)
        else:
            everything = regression_metrics(y, model.predict(x))
            alone = regression_metrics(y, model.predict(x), only=name)
        assert alone == {name: everything[name]}


def test_binary_metrics_by_hand():
    y = pd.Series(["no", "no", "yes", "yes"])
    classes = np.array(["no", "yes"])
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    values = classification_metrics(y, perfect, classes)
    assert values["roc_auc"] == values["pr_auc"] == values["f1"] == values["accuracy"] == 1.0
    assert values["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.7, 0.9])))
    # One positive ranked below a negative and predicted "no": accuracy 3/4, recall 1/2, precision 1.
    worse = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    values = classification_metrics(y, worse, classes)
    assert values["accuracy"] == 0.5
    assert values["f1"] == pytest.approx(0.5)
    assert values["roc_auc"] == pytest.approx(0.75)


def test_binary_auc_is_nan_when_the_holdout_has_one_class():
    y = pd.Series([0, 0, 0])
    values = classification_metrics(y, np.array([[0.8, 0.2], [0.6, 0.4], [0.9, 0.1]]), np.array([0, 1]))
    assert math.isnan(values["roc_auc"]) and math.isnan(values["pr_auc"])
    assert values["accuracy"] == 1.0


def test_multiclass_metrics_by_hand():
    y = pd.Series([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    values = classification_metrics(y, proba, np.array([0, 1, 2]))
    assert values["accuracy"] == 0.75
    assert values["roc_auc"] == pytest.approx(1.0)  # every class still ranked above the others
    assert values["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.7, 0.4])))


def test_regression_metrics_by_hand():
    y = pd.Series([1.0, 2.0, 3.0, 4.0])
    assert regression_metrics(y, y.to_numpy()) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}
    values = regression_metrics(y, np.array([2.0, 1.0, 4.0, 3.0]))
    assert values["rmse"] == pytest.approx(1.0) and values["mae"] == pytest.approx(1.0)
    assert values["r2"] == pytest.approx(1 - 4 / 5)


# --- golden set -----------------------------------------------------------------------------------------------


def test_golden_set_records_and_outputs(binary):
    model, holdout, params = binary
    golden = golden_set(model, holdout, params)
    assert len(golden) == params.evaluate.golden_size == 10
    x = holdout[params.data.features.all]
    rows = {tuple(r): i for i, r in enumerate(x.itertuples(index=False))}
    for entry in golden:
        assert set(entry) == {"features", "prediction", "probabilities"}
        assert list(entry["features"]) == params.data.features.all
        i = rows[tuple(entry["features"].values())]  # every record is a holdout row, unchanged
        assert entry["prediction"] == model.predict(x.iloc[[i]])[0]
        assert set(entry["probabilities"]) == {str(c) for c in model.classes_}
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0)
        assert entry["probabilities"] == pytest.approx(
            {str(c): p for c, p in zip(model.classes_, model.predict_proba(x.iloc[[i]])[0], strict=True)}
        )
    assert len({tuple(e["features"].values()) for e in golden}) == len(golden)
    json.dumps(golden)  # plain data: it ships with the model


def test_golden_set_is_fixed_by_the_seed(binary):
    model, holdout, params = binary
    assert golden_set(model, holdout, params) == golden_set(model, holdout, params)
    other = params.model_copy(update={"project": params.project.model_copy(update={"seed": params.project.seed + 1})})
    assert golden_set(model, holdout, other) != golden_set(model, holdout, params)


def test_golden_set_is_capped_by_the_holdout_and_keeps_missing_values_as_null(regression):
    model, holdout, params = regression
    small = holdout.head(4).copy()
    small.loc[0, "x1"] = np.nan
    small.loc[1, "color"] = pd.NA
    golden = golden_set(model, small, params)
    assert len(golden) == 4
    assert all(set(entry) == {"features", "prediction"} for entry in golden)
    assert [e["features"]["x1"] for e in golden][0] is None
    assert [e["features"]["color"] for e in golden][1] is None
    assert all(isinstance(e["prediction"], float) for e in golden)
    json.loads(json.dumps(golden))


# --- plots ----------------------------------------------------------------------------------------------------


def assert_pngs(paths, out_dir, names):
    assert sorted(p.name for p in paths) == sorted(names)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
    for path in paths:
        assert path.parent == out_dir
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_write_plots_binary(binary, tmp_path):
    model, holdout, params = binary
    out = tmp_path / "nested" / "plots"
    paths = write_plots(model, holdout, params, out, feature_importance(model, holdout, params))
    assert_pngs(
        paths,
        out,
        ["confusion_matrix.png", "roc_curve.png", "pr_curve.png", "calibration.png", "feature_importance.png"],
    )


def test_write_plots_multiclass(multiclass, tmp_path):
    model, holdout, params = multiclass
    assert_pngs(
        write_plots(model, holdout, params, tmp_path, feature_importance(model, holdout, params)),
        tmp_path,
        ["confusion_matrix.png", "feature_importance.png"],
    )


def test_write_plots_regression(regression, tmp_path):
    model, holdout, params = regression
    assert_pngs(
        write_plots(model, holdout, params, tmp_path, feature_importance(model, holdout, params)),
        tmp_path,
        ["residuals.png", "actual_vs_predicted.png", "feature_importance.png"],
    )


def test_write_plots_without_importance_draws_no_importance_plot(regression, tmp_path):
    model, holdout, params = regression
    assert_pngs(write_plots(model, holdout, params, tmp_path), tmp_path, ["residuals.png", "actual_vs_predicted.png"])


def test_feature_importance_ranks_the_informative_feature_first(regression):
    model, holdout, params = regression
    importance = feature_importance(model, holdout, params)
    assert list(importance.index) == params.data.features.all
    assert importance.idxmax() == "x1"  # the frames weigh x1 most


@pytest.mark.parametrize("primary", ["f1", "pr_auc"])
def test_feature_importance_with_string_labels(primary):
    model, holdout, params = trained("classification", primary=primary, labels=["no", "yes"])
    assert set(compute_metrics(model, holdout, params)) == set(metrics_for("classification"))
    importance = feature_importance(model, holdout, params)
    assert importance.idxmax() == "x1"
