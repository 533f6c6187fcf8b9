"""Validation: one lazy pass over the schema, a report naming every failing column and check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowship.errors import DataValidationError
from flowship.pipeline.validation import MAX_EXAMPLES, build_schema, validate
from tests.unit.conftest import make_frame, make_params

RULES = {
    "x1": {"min": -5, "max": 5},
    "x2": {"max_null_fraction": 0.1},
    "color": {"categories": ["red", "green", "blue"]},
}


def params(task="classification", min_rows=50, null_default=0.0, **validate):
    """Strict about missing values unless told (`null_default`, validate.defaults.max_null_fraction)."""
    defaults = {"max_null_fraction": null_default}
    return make_params(task, validate={"min_rows": min_rows, "defaults": defaults, "columns": validate or RULES})


def frame(task="classification", n=200):
    return make_frame(task, n=n).drop(columns=["ts"])


def failures_of(data, p):
    with pytest.raises(DataValidationError) as caught:
        validate(data, p)
    report = caught.value.report
    assert report["valid"] is False
    assert report["rows"] == len(data)
    for failure in report["failures"]:
        assert set(failure) == {"column", "check", "count", "examples"}
        assert len(failure["examples"]) <= MAX_EXAMPLES
        assert failure["column"] in str(caught.value)  # the message names every failing column
    return {(f["column"], f["check"]): f for f in report["failures"]}


def only(failures, column, check_prefix):
    found = [f for (c, check), f in failures.items() if c == column and check.startswith(check_prefix)]
    assert len(found) == 1, failures
    return found[0]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_valid_frame_passes(task):
    data = frame(task)
    report = validate(data, params(task), target_missing=3)
    assert report == {
        "rows": len(data),
        "target_missing": 3,
        "columns": ["x1", "x2", "color", "y"],
        "failures": [],
        "valid": True,
    }


def test_extra_columns_are_allowed():
    assert validate(frame().assign(note="anything"), params())["valid"] is True


def test_out_of_range_values_are_counted_with_examples():
    data = frame()
    data.loc[[3, 7], "x1"] = [-9.0, -6.5]
    data.loc[[11], "x1"] = 50.0
    failures = failures_of(data, params())
    low = only(failures, "x1", "greater_than_or_equal_to")
    assert low["count"] == 2 and sorted(low["examples"]) == [-9.0, -6.5]
    high = only(failures, "x1", "less_than_or_equal_to")
    assert high["count"] == 1 and high["examples"] == [50.0]
    assert len(failures) == 2


def test_unknown_category():
    data = frame()
    data.loc[[0, 1, 2], "color"] = ["purple", "purple", "teal"]
    failures = failures_of(data, params())
    failure = only(failures, "color", "isin")
    assert failure["count"] == 3
    assert set(failure["examples"]) == {"purple", "teal"}
    assert len(failures) == 1


def test_all_null_column():
    data = frame().assign(x2=np.nan)
    failure = only(failures_of(data, params()), "x2", "max_null_fraction")
    assert failure["count"] == len(data)
    assert failure["examples"] == [f"{len(data)} of {len(data)} values missing"]


def test_null_fraction_within_the_limit_passes_and_above_it_fails():
    data = frame(n=200)
    data.loc[data.index[:20], "x2"] = np.nan  # 10%: the limit
    assert validate(data, params())["valid"] is True
    data.loc[data.index[:21], "x2"] = np.nan
    assert only(failures_of(data, params()), "x2", "max_null_fraction")["count"] == 21


def test_a_feature_without_a_limit_of_its_own_is_held_to_the_default():
    data = frame(n=200)
    data.loc[5, "x1"] = np.nan
    failure = only(failures_of(data, params(null_default=0.0)), "x1", "max_null_fraction")
    assert failure["count"] == 1 and failure["check"] == "max_null_fraction=0.0"
    data.loc[data.index[:100], ["x1", "color"]] = np.nan  # half the rows: the shipped default still allows it
    shipped = make_params(validate={"min_rows": 50, "columns": {"x2": {"max_null_fraction": 0.1}}})
    assert shipped.validate_.defaults.max_null_fraction == 0.5
    assert validate(data, shipped)["valid"] is True
    data.loc[data.index[:101], "x1"] = np.nan
    failure = only(failures_of(data, shipped), "x1", "max_null_fraction")
    assert failure["check"] == "max_null_fraction=0.5" and failure["examples"] == ["101 of 200 values missing"]
    # a column's own limit wins over the default, both ways
    data.loc[data.index[:101], "x1"] = 1.0
    data.loc[data.index[:60], "x2"] = np.nan  # 30%: within the default, over x2's own 0.1
    failure = only(failures_of(data, shipped), "x2", "max_null_fraction")
    assert failure["check"] == "max_null_fraction=0.1"
    lenient = {"max_null_fraction": 0.6}
    assert validate(data, params(null_default=0.0, x2=lenient, color=lenient))["valid"] is True


def test_non_numeric_values_in_a_numeric_column():
    data = frame()
    data["x1"] = data["x1"].astype(object)
    data.loc[[4, 9], "x1"] = ["abc", "n/a"]
    data.loc[10, "x1"] = 99.0  # out of range too, but the type problem is the one reported for the column
    failures = failures_of(data, params())
    failure = only(failures, "x1", "coerce_dtype")
    assert failure["count"] == 2
    assert sorted(failure["examples"]) == ["abc", "n/a"]
    assert [key for key in failures if key[0] == "x1"] == [("x1", failure["check"])]


def test_single_class_target():
    data = frame().assign(y=1)
    failure = only(failures_of(data, params()), "y", "at_least_two_classes")
    assert failure["count"] == len(data)
    assert "1" in failure["examples"][0]


def test_single_value_regression_target_is_fine():
    assert validate(frame("regression").assign(y=3.0), params("regression"))["valid"] is True


def test_missing_target_values_fail():
    data = frame("regression")
    data.loc[[1, 2], "y"] = np.nan
    failures = failures_of(data, params("regression"))
    assert any(column == "y" for column, _ in failures)


def test_too_few_rows():
    data = frame(n=30)
    failure = only(failures_of(data, params(min_rows=50)), "<table>", "min_rows")
    assert failure["count"] == 30
    assert "30" in failure["examples"][0]


def test_missing_column_is_named():
    failures = failures_of(frame().drop(columns=["x2"]), params())
    assert only(failures, "x2", "column_in_dataframe")["examples"] == ["column missing"]


def test_one_report_lists_every_problem():
    data = frame()
    data.loc[0, "x1"] = 100.0
    data.loc[1, "color"] = "purple"
    data["x2"] = np.nan
    failures = failures_of(data, params())
    assert {column for column, _ in failures} == {"x1", "color", "x2"}


def test_examples_are_capped():
    data = frame()
    data.loc[data.index[:20], "x1"] = 10.0 + np.arange(20)
    failure = only(failures_of(data, params()), "x1", "less_than_or_equal_to")
    assert failure["count"] == 20
    assert len(failure["examples"]) == MAX_EXAMPLES


def test_rules_apply_to_the_target_but_nulls_in_it_are_a_separate_matter():
    schema = build_schema(params("regression", y={"min": 0}))
    names = [check.name for check in schema.columns["y"].checks]
    assert not any(name.startswith("max_null_fraction") for name in names)
    data = frame("regression")
    data.loc[0, "y"] = -100.0
    data.loc[1, "y"] = 100.0
    failure = only(failures_of(data, params("regression", y={"min": -50})), "y", "greater_than_or_equal_to")
    assert failure["examples"] == [-100.0]


def test_string_categories_from_a_nullable_string_column():
    data = frame()
    data["color"] = data["color"].astype("string")
    data.loc[3, "color"] = pd.NA
    failure = only(failures_of(data, params()), "color", "max_null_fraction")
    assert failure["count"] == 1
