"""Split: time windows (the holdout is the latest part of training) and a seeded random split."""

from __future__ import annotations

import pandas as pd
import pytest

from flowship.errors import DataValidationError
from flowship.pipeline.prepare import split
from tests.unit.conftest import make_frame, make_params

# 30 days of 6-hourly rows from 2024-01-01: 120 rows.
DAYS = 30


def utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def time_frame(**kw):
    return make_frame(n=DAYS * 4, freq="6h", **kw)


def time_params(min_rows=20, **split):
    cfg = {
        "method": "time",
        "train_start": "2024-01-03",
        "train_end": "2024-01-23",
        "production_start": "2024-01-25",
        "production_end": "2024-01-29",
        "holdout_fraction": 0.25,
        **split,
    }
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return make_params(data={"time_column": "ts"}, split=cfg, validate={"min_rows": min_rows})


def random_params(seed=7, min_rows=20, **split):
    return make_params(
        project={"seed": seed},
        split={"method": "random", "holdout_fraction": 0.2, "production_fraction": 0.1, **split},
        validate={"min_rows": min_rows},
    )


# --- time split -----------------------------------------------------------------------------------------------


def test_time_split_keeps_the_windows():
    data = time_frame()
    parts = split(data, time_params())
    modelled = pd.concat([parts.train, parts.holdout])
    assert modelled["ts"].min() >= utc("2024-01-03")
    assert modelled["ts"].max() < utc("2024-01-23")  # the end is exclusive
    assert len(modelled) == ((data["ts"] >= utc("2024-01-03")) & (data["ts"] < utc("2024-01-23"))).sum() == 80
    assert parts.production["ts"].min() >= utc("2024-01-25")
    assert parts.production["ts"].max() < utc("2024-01-29")
    assert len(parts.production) == 16
    # Nothing between the windows (23-25 January) and nothing outside them is used.
    used = pd.concat([modelled, parts.production])["ts"]
    assert not used.between(utc("2024-01-23"), utc("2024-01-25"), inclusive="left").any()
    assert used.is_unique


def test_time_split_holdout_is_the_latest_part_of_the_training_window():
    data = time_frame().sample(frac=1.0, random_state=3)  # order of the input does not matter
    parts = split(data, time_params(holdout_fraction=0.25))
    assert len(parts.holdout) == 20 and len(parts.train) == 60
    assert parts.train["ts"].max() < parts.holdout["ts"].min()
    assert parts.train["ts"].is_monotonic_increasing and parts.holdout["ts"].is_monotonic_increasing
    # Rows travel whole: each row's features still belong to its time stamp.
    original = data.set_index("ts")
    for part in (parts.train, parts.holdout, parts.production):
        assert (original.loc[part["ts"], "x1"].to_numpy() == part["x1"].to_numpy()).all()
        assert list(part.index) == list(range(len(part)))


def test_row_at_the_window_boundary_goes_to_production():
    data = time_frame()
    parts = split(data, time_params(train_end="2024-01-25"))
    assert utc("2024-01-25") in set(parts.production["ts"])
    assert utc("2024-01-25") not in set(parts.holdout["ts"])


def test_time_split_without_production_window_has_an_empty_production_part():
    parts = split(time_frame(), time_params(production_start=None, production_end=None))
    assert parts.production.empty
    assert list(parts.production.columns) == list(time_frame().columns)


def test_time_window_without_enough_rows():
    with pytest.raises(DataValidationError) as caught:
        split(time_frame(), time_params(train_start="2024-01-01", train_end="2024-01-04", min_rows=20))
    (failure,) = caught.value.report["failures"]
    assert failure["check"] == "train rows>=20"
    assert failure["count"] == 9  # 75% of the 12 rows in three days
    assert "2024-01-01" in failure["examples"][0]


def test_time_window_outside_the_data():
    with pytest.raises(DataValidationError, match="train rows"):
        split(time_frame(), time_params(train_start="2023-01-01", train_end="2023-06-01"))


def test_single_class_training_part():
    data = time_frame().assign(y=1)
    with pytest.raises(DataValidationError) as caught:
        split(data, time_params())
    assert caught.value.report["failures"][0]["check"].startswith("train classes")


# --- random split ---------------------------------------------------------------------------------------------


def test_random_split_sizes_and_disjoint_parts():
    data = make_frame(n=200)
    parts = split(data, random_params())
    assert (len(parts.train), len(parts.holdout), len(parts.production)) == (140, 40, 20)
    keys = [set(part["ts"]) for part in (parts.train, parts.holdout, parts.production)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert set().union(*keys) == set(data["ts"])


def test_random_split_is_reproducible_with_the_seed():
    data = make_frame(n=200)
    first, again = split(data, random_params(seed=1)), split(data, random_params(seed=1))
    other = split(data, random_params(seed=2))
    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.holdout, again.holdout)
    assert set(first.holdout["ts"]) != set(other.holdout["ts"])


def test_random_split_is_shuffled():
    data = make_frame(n=200)
    parts = split(data, random_params(production_fraction=0.0))
    assert parts.production.empty
    # The holdout is not simply the first or last rows of the file.
    assert not parts.holdout["ts"].is_monotonic_increasing
    assert set(parts.holdout["ts"]) != set(data["ts"].iloc[:40]) and set(parts.holdout["ts"]) != set(
        data["ts"].iloc[-40:]
    )


def test_random_split_too_small_for_training():
    with pytest.raises(DataValidationError) as caught:
        split(make_frame(n=60), random_params(min_rows=50))
    (failure,) = caught.value.report["failures"]
    assert failure["column"] == "<split>"
    assert failure["check"] == "train rows>=50"
    assert failure["count"] == 42
    assert "60 rows" in failure["examples"][0]


def test_random_split_holdout_too_small():
    # 100 training rows are enough, but a holdout of 1% (1 row) is below max(2, min_rows // 10) = 10.
    with pytest.raises(DataValidationError) as caught:
        split(make_frame(n=120), random_params(min_rows=100, holdout_fraction=0.01, production_fraction=0.0))
    assert caught.value.report["failures"][0]["check"] == "holdout rows>=10"
