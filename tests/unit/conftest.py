"""Unit-test helpers: a params factory (plain dicts through `parse_params`) and small in-memory frames."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowship.config import Params, parse_params

DROP = object()  # an override value that removes the key

NUMERIC = ["x1", "x2"]
CATEGORICAL = ["color"]
COLORS = ["red", "green", "blue"]
START = pd.Timestamp("2024-01-01", tz="UTC")

# Small models: the whole unit suite has to stay fast.
SMALL_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"max_iter": 15},
    "random_forest": {"n_estimators": 10},
    "logistic_regression": {"max_iter": 200},
    "ridge": {},
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, section by section; `DROP` removes a key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def raw_params(
    task: str = "classification", estimator: str = "hist_gradient_boosting", **overrides: Any
) -> dict[str, Any]:
    """A valid params dict (as `yaml.safe_load` would give) for the frames below, with section overrides.

    `estimator` picks the model and its small default hyperparameters; `train.params` overrides merge into those.
    """
    raw: dict[str, Any] = {
        "project": {"name": "unit-test", "seed": 7},
        "data": {
            "source": "data/raw/table.csv",
            "target": {"column": "y"},
            "task": task,
            "features": {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        },
        "validate": {"min_rows": 50},
        "split": {"method": "random", "holdout_fraction": 0.25},
        "train": {"estimator": estimator, "params": dict(SMALL_HYPERPARAMS[estimator])},
        "evaluate": {"golden_size": 10},
        "gate": {"primary_metric": "roc_auc" if task == "classification" else "rmse"},
    }
    return merge(raw, overrides)


def make_params(task: str = "classification", estimator: str = "hist_gradient_boosting", **overrides: Any) -> Params:
    return parse_params(raw_params(task, estimator, **overrides))


def make_frame(
    task: str = "classification",
    n: int = 300,
    seed: int = 0,
    n_classes: int = 2,
    freq: str = "h",
) -> pd.DataFrame:
    """`n` rows with a learnable target: numeric x1, x2, categorical color, UTC timestamps `ts` in order."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    color = rng.choice(COLORS, size=n)
    signal = 2.0 * x1 - x2 + 1.5 * (color == "red") + rng.normal(scale=0.5, size=n)
    if task == "regression":
        y: Any = signal
    elif n_classes == 2:
        y = (signal > 0.5).astype("int64")
    else:
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])).astype("int64")
    return pd.DataFrame(
        {
            "ts": pd.date_range(START, periods=n, freq=freq),
            "x1": x1,
            "x2": x2,
            "color": pd.array(color, dtype="string"),
            "y": y,
        }
    )


@pytest.fixture(scope="package", autouse=True)
def single_threaded_models() -> Iterator[None]:
    """One OpenMP thread: the frames are tiny, and spinning worker threads on a busy machine cost seconds per fit."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture
def params_factory() -> Callable[..., Params]:
    return make_params


@pytest.fixture
def frame_factory() -> Callable[..., pd.DataFrame]:
    return make_frame
