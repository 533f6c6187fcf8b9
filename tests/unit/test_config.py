"""params.yaml parsing: valid configs become typed models; every bad key or value is named in a ConfigError."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from flowship.config import (
    LOWER_IS_BETTER,
    Params,
    RandomSplit,
    TimeSplit,
    TrainConfig,
    load_params,
    metrics_for,
    params_section,
    parse_params,
)
from flowship.errors import ConfigError
from flowship.estimators import check_estimator_config
from tests.unit.conftest import DROP, make_params, raw_params

TIME_SPLIT = {
    "method": "time",
    "train_start": "2024-01-01",
    "train_end": "2024-03-01",
    "production_start": "2024-03-01",
    "production_end": "2024-04-01",
    "holdout_fraction": 0.2,
}


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert caught.value.problems, "a ConfigError must list at least one problem"
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def one_problem(raw: object) -> str:
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    return problems[0]


# --- valid configurations -------------------------------------------------------------------------------------


def test_valid_random_split_config_parses_to_typed_sections():
    params = make_params(validate={"columns": {"x1": {"min": -10, "max": 10}}})
    assert isinstance(params, Params)
    assert isinstance(params.split, RandomSplit)
    assert params.data.features.all == ["x1", "x2", "color"]
    assert params.data.source == Path("data/raw/table.csv")
    assert params.validate_.min_rows == 50
    assert params.validate_.columns["x1"].max == 10
    assert params.train.params == {"max_iter": 15}


def test_valid_time_split_config_parses_dates():
    params = make_params(data={"time_column": "ts"}, split=TIME_SPLIT)
    assert isinstance(params.split, TimeSplit)
    assert params.split.train_start == dt.date(2024, 1, 1)
    assert params.split.production_end == dt.date(2024, 4, 1)


def test_defaults_fill_optional_sections():
    raw = raw_params(train=DROP, evaluate=DROP, validate=DROP)
    params = parse_params(raw)
    assert params.train.estimator == "hist_gradient_boosting"
    assert params.train.search.enabled is False
    assert params.validate_.min_rows >= 1
    assert params.evaluate.golden_size >= 1


def test_search_metric_falls_back_to_the_primary_metric():
    assert make_params().search_metric == "roc_auc"
    assert make_params(train={"search": {"metric": "log_loss"}}).search_metric == "log_loss"


def test_params_are_frozen():
    params = make_params()
    with pytest.raises(ValueError):
        params.project.seed = 1  # type: ignore[misc]


def test_params_section_uses_the_yaml_key_names():
    params = make_params(validate={"min_rows": 77})
    assert params_section(params, "validate")["min_rows"] == 77
    assert params_section(params, "train")["params"] == {"max_iter": 15}
    with pytest.raises(KeyError):
        params_section(params, "validate_")


def test_metrics_for_each_task_are_disjoint_and_lower_is_better_are_known_metrics():
    classification, regression = set(metrics_for("classification")), set(metrics_for("regression"))
    assert not classification & regression
    assert LOWER_IS_BETTER <= classification | regression
    assert "rmse" in LOWER_IS_BETTER and "r2" not in LOWER_IS_BETTER
    assert "log_loss" in LOWER_IS_BETTER and "roc_auc" not in LOWER_IS_BETTER


# --- load_params ----------------------------------------------------------------------------------------------


def test_load_params_reads_a_yaml_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(data={"time_column": "ts"}, split=TIME_SPLIT)))
    params = load_params(path)
    assert params.split.train_end == dt.date(2024, 3, 1)  # type: ignore[union-attr]


def test_load_params_rejects_unquoted_yaml_dates_naming_the_key(tmp_path):
    text = yaml.safe_dump(raw_params(data={"time_column": "ts"}, split=TIME_SPLIT), sort_keys=False)
    text = text.replace("train_start: '2024-01-01'", "train_start: 2024-01-01")
    assert "train_start: 2024-01-01\n" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    (problem,) = caught.value.problems
    assert problem.startswith("split.train_start:")
    assert '"2024-01-01"' in problem  # says how to write it instead


def test_unquoted_dates_are_all_reported():
    raw = raw_params(
        data={"time_column": "ts"},
        split={**TIME_SPLIT, "train_start": dt.date(2024, 1, 1), "production_end": dt.date(2024, 4, 1)},
    )
    problems = problems_of(raw)
    assert [p.split(":")[0] for p in problems] == ["split.train_start", "split.production_end"]


def test_load_params_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "nope.yaml")
    assert "nope.yaml" in caught.value.problems[0]
    assert "cannot read" in caught.value.problems[0]


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("project: {name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert "not valid YAML" in caught.value.problems[0]


@pytest.mark.parametrize("raw", [None, [], "project: x", 3])
def test_top_level_must_be_a_mapping(raw):
    assert "expected a mapping" in one_problem(raw)


# --- unknown keys and bad values ------------------------------------------------------------------------------


def test_unknown_key_is_named_with_its_path():
    problem = one_problem(raw_params(data={"colour": "blue"}))
    assert problem.startswith("data.colour:")
    assert "unknown key" in problem


def test_unknown_top_level_section_is_named():
    problem = one_problem(raw_params(trian={"estimator": "ridge"}))
    assert problem.startswith("trian:")
    assert "unknown key" in problem


def test_missing_required_key_is_named():
    problem = one_problem(raw_params(gate={"primary_metric": DROP}))
    assert problem.startswith("gate.primary_metric:")
    assert "missing" in problem


def test_bad_value_names_key_value_and_what_is_allowed():
    problem = one_problem(raw_params(data={"task": "clustering"}))
    assert problem.startswith("data.task:")
    assert "'clustering'" in problem
    assert "classification" in problem and "regression" in problem


def test_out_of_range_number_names_key_value_and_bound():
    problem = one_problem(raw_params(validate={"min_rows": 0}))
    assert problem.startswith("validate.min_rows:")  # the YAML name, not the Python attribute
    assert "(got 0)" in problem
    assert "greater than or equal to 1" in problem


def test_every_problem_is_reported_at_once():
    problems = problems_of(raw_params(data={"task": "clustering", "colour": 1}, validate={"min_rows": -1}))
    assert {p.split(":")[0] for p in problems} == {"data.task", "data.colour", "validate.min_rows"}


def test_split_errors_name_the_yaml_key():
    problem = one_problem(raw_params(split={"holdout_fraction": 1.5}))
    assert problem.startswith("split.holdout_fraction:")


def test_split_value_error_names_the_field_and_value():
    problem = one_problem(raw_params(split={"holdout_fraction": 1.5}))
    assert "holdout_fraction" in problem
    assert "1.5" in problem
    assert "less than 1" in problem


def test_unknown_split_method_names_the_allowed_methods():
    problem = one_problem(raw_params(split={"method": "kfold"}))
    assert problem.startswith("split")
    assert "kfold" in problem
    assert "time" in problem and "random" in problem


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"project": {"name": "has spaces"}}, ["project.name", "has spaces"]),
        ({"data": {"target": {"derive_from": "delay"}}}, ["derive_from and above"]),
        ({"data": {"features": {"numeric": ["x1"], "categorical": ["x1"]}}}, ["both numeric and categorical", "x1"]),
        ({"data": {"features": {"numeric": [], "categorical": []}}}, ["at least one"]),
        ({"data": {"features": {"numeric": ["x1", "y"]}}}, ["'y'", "also listed as a feature"]),
        (
            {
                "data": {"task": "regression", "target": {"derive_from": "delay", "above": 1}},
                "gate": {"primary_metric": "rmse"},
            },
            ["needs task: classification"],
        ),
        ({"validate": {"columns": {"nope": {"min": 0}}}}, ["validate.columns", "nope"]),
        ({"validate": {"columns": {"x1": {"max_null_fraction": 2}}}}, ["max_null_fraction", "2"]),
        ({"data": {"time_format": "dd/mm/yyyy"}}, ["data.time_format", "should match pattern"]),
        ({"validate": {"defaults": {"max_null_fraction": -0.1}}}, ["validate.defaults.max_null_fraction", "-0.1"]),
        ({"validate": {"defaults": {"min": 0}}}, ["validate.defaults.min: unknown key"]),
        ({"split": {"holdout_fraction": 0.5, "production_fraction": 0.45}}, ["at least 10% to train"]),
        ({"train": {"search": {"space": {"max_iter": []}}}}, ["'max_iter'", "empty list"]),
        (
            {"train": {"search": {"space": {"learning_rate": {"distribution": "uniform", "low": 1, "high": 0.1}}}}},
            ["high 0.1 must be above low 1"],
        ),
        (
            {"train": {"search": {"space": {"learning_rate": {"distribution": "loguniform", "low": 0, "high": 1}}}}},
            ["loguniform needs low > 0"],
        ),
        ({"gate": {"max_regression": {"roc_auc": -0.1}}}, ["max_regression['roc_auc']", "-0.1", ">= 0"]),
    ],
)
def test_invalid_values_are_explained(overrides, fragments):
    problems = problems_of(raw_params(**overrides))
    assert any(all(fragment in problem for fragment in fragments) for problem in problems), (fragments, problems)


# --- cross-section checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "overrides", "where", "metric"),
    [
        ("classification", {"gate": {"primary_metric": "rmse"}}, "gate.primary_metric", "rmse"),
        ("regression", {"gate": {"primary_metric": "roc_auc"}}, "gate.primary_metric", "roc_auc"),
        ("regression", {"gate": {"thresholds": {"accuracy": 0.9}}}, "gate.thresholds", "accuracy"),
        ("classification", {"gate": {"max_regression": {"r2": 0.1}}}, "gate.max_regression", "r2"),
        ("classification", {"train": {"search": {"metric": "mae"}}}, "train.search.metric", "mae"),
    ],
)
def test_metric_must_be_computed_for_the_task(task, overrides, where, metric):
    problem = one_problem(raw_params(task, **overrides))
    assert where in problem
    assert repr(metric) in problem
    for allowed in metrics_for(task):  # type: ignore[arg-type]
        assert allowed in problem


def test_metrics_valid_for_the_task_are_accepted():
    params = make_params(
        "regression",
        gate={"primary_metric": "r2", "thresholds": {"rmse": 2.0}, "max_regression": {"mae": 0.1}},
        train={"search": {"metric": "mae"}},
    )
    assert params.search_metric == "mae"


def test_time_split_needs_a_time_column():
    problem = one_problem(raw_params(split=TIME_SPLIT))
    assert "time_column" in problem


def test_production_window_must_not_overlap_training():
    problem = one_problem(
        raw_params(data={"time_column": "ts"}, split={**TIME_SPLIT, "production_start": "2024-02-15"})
    )
    assert "overlap" in problem


def test_production_window_may_start_where_training_ends():
    params = make_params(data={"time_column": "ts"}, split={**TIME_SPLIT, "production_start": "2024-03-01"})
    assert params.split.production_start == params.split.train_end  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("split", "fragment"),
    [
        ({**TIME_SPLIT, "train_end": "2023-12-01"}, "must be after train_start"),
        ({**TIME_SPLIT, "production_end": DROP}, "given together"),
        ({**TIME_SPLIT, "production_end": "2024-03-01"}, "production_end must be after production_start"),
    ],
)
def test_time_windows_must_be_ordered(split, fragment):
    split = {k: v for k, v in split.items() if v is not DROP}
    raw = raw_params(data={"time_column": "ts"})
    raw["split"] = split
    assert fragment in one_problem(raw)


# --- estimator and hyperparameters ----------------------------------------------------------------------------


def test_unknown_estimator_names_it_and_the_allowed_ones():
    problem = one_problem(raw_params(train={"estimator": "xgboost"}))
    assert problem.startswith("train.estimator:")
    assert "'xgboost'" in problem
    assert "random_forest" in problem and "logistic_regression" in problem


def test_estimator_must_exist_for_the_task():
    problem = one_problem(raw_params("regression", train={"estimator": "logistic_regression", "params": {}}))
    assert "'logistic_regression'" in problem and "ridge" in problem


def test_unknown_hyperparameter_is_named():
    problem = one_problem(raw_params(train={"params": {"max_itr": 10}}))
    assert problem.startswith("train.params")
    assert "max_itr" in problem
    assert "max_iter" in problem  # the allowed names are listed


@pytest.mark.parametrize(("name", "value"), [("max_iter", -3), ("learning_rate", "fast")])
def test_invalid_hyperparameter_value_is_named(name, value):
    problem = one_problem(raw_params(train={"params": {name: value}}))
    assert problem.startswith("train.params")
    assert name in problem
    assert repr(value) in problem or str(value) in problem


def test_invalid_value_in_the_search_space_is_rejected():
    problem = one_problem(raw_params(train={"search": {"enabled": True, "space": {"max_leaf_nodes": [15, 1]}}}))
    assert "max_leaf_nodes" in problem


def test_check_estimator_config_directly():
    params = make_params()
    check_estimator_config(params)  # valid: no error
    bad = params.model_copy(update={"train": TrainConfig(estimator="svm")})
    with pytest.raises(ConfigError) as caught:
        check_estimator_config(bad)
    assert "'svm'" in caught.value.problems[0]
    bad = params.model_copy(update={"train": TrainConfig(params={"n_estimators": 5})})
    with pytest.raises(ConfigError) as caught:
        check_estimator_config(bad)
    assert "n_estimators" in caught.value.problems[0]
