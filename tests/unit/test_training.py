"""Training: every estimator builds and fits for its task; seeded search trials; best-trial choice."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import pytest

from flowship.config import LOWER_IS_BETTER, metrics_for
from flowship.errors import ConfigError
from flowship.estimators import ESTIMATORS, make_estimator, search_trials
from flowship.pipeline.search import TrialResult, best_trial, score_trial, search_validation_split
from flowship.pipeline.training import build_pipeline, coerce_features, fit
from tests.unit.conftest import SMALL_HYPERPARAMS, make_frame, make_params

CASES = [
    pytest.param(task, estimator, n_classes, id=f"{task}-{estimator}" + (f"-{n_classes}class" if n_classes else ""))
    for task, estimators in ESTIMATORS.items()
    for estimator in estimators
    for n_classes in ([2, 3] if task == "classification" else [None])
]


def estimator_params(task, estimator):
    return make_params(task, estimator)


def search_params(space, n_trials=4, seed=7, base=None, **search):
    return make_params(
        project={"seed": seed},
        train={
            "params": base if base is not None else SMALL_HYPERPARAMS["hist_gradient_boosting"],
            "search": {"enabled": True, "n_trials": n_trials, "space": space, **search},
        },
    )


def test_every_estimator_is_covered():
    assert {e for estimators in ESTIMATORS.values() for e in estimators} <= set(SMALL_HYPERPARAMS)


@pytest.mark.parametrize(("task", "estimator", "n_classes"), CASES)
def test_fit_learns_and_predicts_for_every_estimator(task, estimator, n_classes):
    params = estimator_params(task, estimator)
    data = make_frame(task, n=300, n_classes=n_classes or 2).drop(columns=["ts"])
    train, test = data.iloc[:220], data.iloc[220:]
    model = fit(train, params, params.train.params)
    x = test[params.data.features.all]
    predicted = model.predict(x)
    assert predicted.shape == (len(test),)
    if task == "classification":
        assert sorted(model.classes_) == sorted(train["y"].unique()) and len(model.classes_) == n_classes
        proba = model.predict_proba(x)
        assert proba.shape == (len(test), n_classes)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        majority = test["y"].value_counts(normalize=True).max()
        assert (predicted == test["y"].to_numpy()).mean() > majority + 0.1  # better than always guessing
    else:
        baseline = np.mean((test["y"] - train["y"].mean()) ** 2)
        assert np.mean((predicted - test["y"].to_numpy()) ** 2) < 0.5 * baseline


@pytest.mark.parametrize(("task", "estimator", "n_classes"), [c for c in CASES if c.values[2] != 3])
def test_unseen_categories_and_missing_values_are_predicted(task, estimator, n_classes):
    params = estimator_params(task, estimator)
    data = make_frame(task, n=200).drop(columns=["ts"])
    model = fit(data, params, params.train.params)
    odd = pd.DataFrame(
        {
            "x1": [np.nan, 0.5, "1.5"],
            "x2": [0.1, np.nan, 0.3],
            "color": pd.array(["purple", pd.NA, "red"], dtype="string"),
        }
    )
    predicted = model.predict(odd)
    assert len(predicted) == 3
    if task == "regression":
        assert np.isfinite(predicted).all()


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "random_forest"])
def test_fit_is_reproducible_with_the_same_seed(estimator):
    data = make_frame(n=200).drop(columns=["ts"])
    # Feature subsampling makes the boosted trees depend on the seed too.
    extra = {"max_features": 0.5} if estimator == "hist_gradient_boosting" else {}

    def proba(seed):
        params = make_params(estimator=estimator, project={"seed": seed}, train={"params": extra})
        return fit(data, params, params.train.params).predict_proba(data[params.data.features.all])

    np.testing.assert_array_equal(proba(1), proba(1))
    assert not np.array_equal(proba(1), proba(2))


def test_native_categorical_support_for_hist_gradient_boosting():
    params = estimator_params("classification", "hist_gradient_boosting")
    model = fit(make_frame(n=100).drop(columns=["ts"]), params, params.train.params)
    assert model.named_steps["model"].is_categorical_ is not None
    assert model.named_steps["model"].is_categorical_.sum() == 1


def test_build_pipeline_applies_hyperparameters_and_seed():
    params = make_params(estimator="random_forest", project={"seed": 11})
    model = build_pipeline(params, {"n_estimators": 5, "max_depth": 2}).named_steps["model"]
    assert (model.n_estimators, model.max_depth, model.random_state) == (5, 2, 11)


def test_make_estimator_keeps_an_explicit_random_state():
    assert make_estimator("regression", "random_forest", {"random_state": 3}, seed=99).random_state == 3
    assert make_estimator("regression", "random_forest", {}, seed=99).random_state == 99


def test_make_estimator_rejects_unknown_names_and_values():
    with pytest.raises(ConfigError, match="unknown estimator 'ridge' for classification"):
        make_estimator("classification", "ridge", {}, seed=0)
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['depth'\]"):
        make_estimator("regression", "random_forest", {"depth": 3}, seed=0)
    with pytest.raises(ConfigError, match="n_estimators"):
        make_estimator("regression", "random_forest", {"n_estimators": 0}, seed=0)


def test_coerce_features_casts_raw_records():
    raw = pd.DataFrame({"n": ["1.5", "oops", None, 4], "c": [1, "a", "b", 2.0]})
    out = coerce_features(raw, numeric=["n"], categorical=["c"])
    assert out["n"].dtype == "float64"
    assert out["n"].iloc[0] == 1.5 and out["n"].iloc[3] == 4.0
    assert np.isnan(out["n"].iloc[1]) and np.isnan(out["n"].iloc[2])
    assert out["c"].tolist() == ["1", "a", "b", "2.0"]
    assert list(out.columns) == ["n", "c"]


@pytest.mark.parametrize(
    "values",
    [
        pd.array(["a", pd.NA, "b"], dtype="string"),  # as ingest writes categorical columns
        pd.Series(["a", None, "b"], dtype=object),  # as a JSON request arrives
    ],
    ids=["string-dtype", "object-none"],
)
def test_coerce_features_keeps_missing_categories_missing(values):
    out = coerce_features(pd.DataFrame({"c": values}), numeric=[], categorical=["c"])
    assert out["c"].iloc[0] == "a"
    assert pd.isna(out["c"].iloc[1])


# --- search trials --------------------------------------------------------------------------------------------


def test_no_trials_when_search_is_disabled_or_empty():
    assert search_trials(make_params()) == []
    assert search_trials(make_params(train={"search": {"space": {"max_iter": [5, 10]}}})) == []
    assert search_trials(make_params(train={"search": {"enabled": True}})) == []


def test_small_grid_is_tried_in_full_on_top_of_the_base_params():
    space = {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [7, 15, 31]}
    trials = search_trials(search_params(space, n_trials=6, base={"max_iter": 15, "max_leaf_nodes": 3}))
    assert len(trials) == 6
    combos = {(t["learning_rate"], t["max_leaf_nodes"]) for t in trials}
    assert combos == set(itertools.product(space["learning_rate"], space["max_leaf_nodes"]))
    assert all(t["max_iter"] == 15 for t in trials)  # base params carried into every trial


def test_large_grid_is_sampled_without_repeats():
    space = {"learning_rate": [0.01, 0.05, 0.1, 0.2], "max_leaf_nodes": [7, 15, 31, 63]}
    trials = search_trials(search_params(space, n_trials=5))
    assert len(trials) == 5
    combos = [(t["learning_rate"], t["max_leaf_nodes"]) for t in trials]
    assert len(set(combos)) == 5
    assert set(combos) <= set(itertools.product(space["learning_rate"], space["max_leaf_nodes"]))


def test_distributions_are_sampled_within_bounds_as_plain_python_values():
    space = {
        "learning_rate": {"distribution": "loguniform", "low": 0.01, "high": 0.3},
        "l2_regularization": {"distribution": "uniform", "low": 0.0, "high": 2.0},
        "max_leaf_nodes": {"distribution": "randint", "low": 4, "high": 40},
        "max_depth": [3, None],
    }
    trials = search_trials(search_params(space, n_trials=12))
    assert len(trials) == 12
    for t in trials:
        assert 0.01 <= t["learning_rate"] <= 0.3
        assert 0.0 <= t["l2_regularization"] <= 2.0
        assert type(t["max_leaf_nodes"]) is int and 4 <= t["max_leaf_nodes"] < 40
        assert t["max_depth"] in (3, None)
        assert type(t["learning_rate"]) is float
    assert len({t["learning_rate"] for t in trials}) == 12


def test_sampled_trials_are_fixed_by_the_seed():
    space = {"learning_rate": {"distribution": "loguniform", "low": 0.01, "high": 0.3}, "max_leaf_nodes": [7, 15]}
    first = search_trials(search_params(space, n_trials=5, seed=1))
    assert first == search_trials(search_params(space, n_trials=5, seed=1))
    assert first != search_trials(search_params(space, n_trials=5, seed=2))


def test_search_validation_split_without_time_is_a_seeded_shuffle():
    data = make_frame(n=100).drop(columns=["ts"])
    params = make_params(train={"search": {"validation_fraction": 0.25}})
    fit_part, valid_part = search_validation_split(data, params)
    assert (len(fit_part), len(valid_part)) == (75, 25)
    assert set(fit_part.index).isdisjoint(valid_part.index)
    assert set(valid_part.index) != set(range(75, 100))
    again = search_validation_split(data, params)[1]
    assert list(again.index) == list(valid_part.index)


def test_search_validation_split_with_time_scores_on_the_latest_rows():
    data = make_frame(n=100)
    params = make_params(
        data={"time_column": "ts"},
        split={"method": "time", "train_start": "2024-01-01", "train_end": "2024-02-01"},
        train={"search": {"validation_fraction": 0.2}},
    )
    fit_part, valid_part = search_validation_split(data, params)
    assert len(valid_part) == 20
    assert fit_part["ts"].max() < valid_part["ts"].min()


def test_score_trial_reports_the_search_metric():
    data = make_frame(n=200).drop(columns=["ts"])
    params = make_params(train={"search": {"metric": "log_loss"}})
    started = time.perf_counter()
    result = score_trial(3, data, params, {"max_iter": 10})
    took = time.perf_counter() - started
    assert (result.index, result.metric, result.params) == (3, "log_loss", {"max_iter": 10})
    assert 0 < result.score < np.log(2)  # better than a coin flip
    assert 0 < result.seconds <= took  # the trial's own duration, in seconds (not a timestamp, not milliseconds)
    assert result.as_dict()["score"] == result.score and result.as_dict()["seconds"] == result.seconds


# --- best trial -----------------------------------------------------------------------------------------------


def trials(metric, scores):
    return [TrialResult(i, {"i": i}, metric, s, 0.1) for i, s in enumerate(scores)]


@pytest.mark.parametrize("metric", sorted(set(metrics_for("classification")) | set(metrics_for("regression"))))
def test_best_trial_follows_the_metric_direction(metric):
    results = trials(metric, [0.4, 0.9, 0.1, 0.6])
    best = best_trial(list(reversed(results)))
    assert best.index == (2 if metric in LOWER_IS_BETTER else 1)


def test_best_trial_ties_go_to_the_earliest_trial_whatever_the_completion_order():
    results = trials("rmse", [2.0, 1.0, 3.0, 1.0])
    assert best_trial(results).index == 1
    assert best_trial([results[3], results[2], results[1], results[0]]).index == 1
    results = trials("roc_auc", [0.7, 0.8, 0.8])
    assert best_trial(results[::-1]).index == 1


def test_best_trial_needs_results():
    with pytest.raises(ValueError, match="no trial results"):
        best_trial([])
