"""Train: build the estimator named in config, search hyperparameters, fit the final model."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from flowship.config import Distribution, FeaturesConfig, Params, TaskType
from flowship.errors import ConfigError

# name -> (estimator class, how categorical features are encoded for it)
ESTIMATORS: dict[TaskType, dict[str, tuple[type[BaseEstimator], str]]] = {
    "classification": {
        "hist_gradient_boosting": (HistGradientBoostingClassifier, "native"),
        "random_forest": (RandomForestClassifier, "ordinal"),
        "logistic_regression": (LogisticRegression, "onehot"),
    },
    "regression": {
        "hist_gradient_boosting": (HistGradientBoostingRegressor, "native"),
        "random_forest": (RandomForestRegressor, "ordinal"),
        "ridge": (Ridge, "onehot"),
    },
}


def coerce_features(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Cast raw records (from a file or a JSON request) to the types the model was fitted on."""
    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        values = frame[column].astype("object")
        missing = values.isna()
        out[column] = values.map(str).where(~missing, np.nan)
    return out


def _estimator_class(task: TaskType, name: str) -> tuple[type[BaseEstimator], str]:
    try:
        return ESTIMATORS[task][name]
    except KeyError:
        raise ConfigError(
            [f"train.estimator: unknown estimator {name!r} for {task}; allowed: {', '.join(ESTIMATORS[task])}"]
        ) from None


def make_estimator(task: TaskType, name: str, hyperparams: dict[str, Any], seed: int) -> BaseEstimator:
    cls, _ = _estimator_class(task, name)
    estimator = cls()
    valid = estimator.get_params()
    unknown = sorted(set(hyperparams) - set(valid))
    if unknown:
        raise ConfigError(
            [f"train.params: unknown hyperparameter(s) {unknown} for {name}; allowed: {', '.join(sorted(valid))}"]
        )
    settings = dict(hyperparams)
    if "random_state" in valid and "random_state" not in settings:
        settings["random_state"] = seed
    estimator.set_params(**settings)
    try:
        estimator._validate_params()  # scikit-learn's own declared constraints, before any fit
    except InvalidParameterError as exc:
        raise ConfigError([f"train.params ({name}): {exc}"]) from None
    return estimator


def build_pipeline(params: Params, hyperparams: dict[str, Any]) -> Pipeline:
    features = params.data.features
    _, encoding = _estimator_class(params.data.task, params.train.estimator)
    estimator = make_estimator(params.data.task, params.train.estimator, hyperparams, params.project.seed)
    coerce = FunctionTransformer(
        coerce_features,
        kw_args={"numeric": features.numeric, "categorical": features.categorical},
        feature_names_out="one-to-one",
    )
    return Pipeline([("coerce", coerce), ("encode", _encoder(features, encoding)), ("model", estimator)])


def _encoder(features: FeaturesConfig, encoding: str) -> ColumnTransformer:
    if encoding == "onehot":
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        categorical = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="__missing__"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        return ColumnTransformer(
            [("numeric", numeric, features.numeric), ("categorical", categorical, features.categorical)]
        )
    # Unknown and missing categories both become NaN: the trees route them as missing values.
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    transformer = ColumnTransformer(
        [("categorical", ordinal, features.categorical), ("numeric", "passthrough", features.numeric)],
        verbose_feature_names_out=False,
    )
    return transformer.set_output(transform="pandas")


def _with_native_categories(pipeline: Pipeline, params: Params) -> Pipeline:
    _, encoding = _estimator_class(params.data.task, params.train.estimator)
    if encoding == "native" and params.data.features.categorical:
        pipeline.set_params(model__categorical_features=list(params.data.features.categorical))
    return pipeline


def check_estimator_config(params: Params) -> None:
    """Fail at start for an unknown estimator, hyperparameter, or a value scikit-learn rejects."""
    make_estimator(params.data.task, params.train.estimator, params.train.params, params.project.seed)
    for trial in search_trials(params):
        make_estimator(params.data.task, params.train.estimator, trial, params.project.seed)


def _sampler_value(spec: list[Any] | Distribution) -> Any:
    if isinstance(spec, list):
        return spec
    if spec.distribution == "uniform":
        return stats.uniform(spec.low, spec.high - spec.low)
    if spec.distribution == "loguniform":
        return stats.loguniform(spec.low, spec.high)
    return stats.randint(int(spec.low), int(spec.high))


def search_trials(params: Params) -> list[dict[str, Any]]:
    """The hyperparameter sets to try, fixed by the seed: a grid when it is small enough."""
    search = params.train.search
    if not search.enabled or not search.space:
        return []
    space = {name: _sampler_value(spec) for name, spec in search.space.items()}
    base = dict(params.train.params)
    if all(isinstance(v, list) for v in space.values()):
        grid = list(ParameterGrid(space))
        if len(grid) <= search.n_trials:
            return [{**base, **trial} for trial in grid]
    sampler = ParameterSampler(space, n_iter=search.n_trials, random_state=params.project.seed)
    return [{**base, **{k: _plain(v) for k, v in trial.items()}} for trial in sampler]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def split_xy(frame: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.Series]:
    return frame[params.data.features.all], frame[params.data.target.column]


def search_validation_split(train: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last part of the (time-ordered) training split scores the trials."""
    fraction = params.train.search.validation_fraction
    if params.data.time_column is None:
        train = train.sample(frac=1.0, random_state=params.project.seed)
    cut = int(len(train) * (1 - fraction))
    return train.iloc[:cut], train.iloc[cut:]


@dataclass(frozen=True)
class TrialResult:
    index: int
    params: dict[str, Any]
    metric: str
    score: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit(train: pd.DataFrame, params: Params, hyperparams: dict[str, Any]) -> Pipeline:
    pipeline = _with_native_categories(build_pipeline(params, hyperparams), params)
    x, y = split_xy(train, params)
    return pipeline.fit(x, y)


def score_trial(index: int, train: pd.DataFrame, params: Params, hyperparams: dict[str, Any]) -> TrialResult:
    from flowship.evaluation import score

    started = time.perf_counter()
    fit_part, valid_part = search_validation_split(train, params)
    model = fit(fit_part, params, hyperparams)
    value = score(model, valid_part, params, params.search_metric)
    return TrialResult(index, hyperparams, params.search_metric, value, time.perf_counter() - started)


def best_trial(results: list[TrialResult]) -> TrialResult:
    from flowship.config import LOWER_IS_BETTER

    if not results:
        raise ValueError("no trial results to choose from")
    metric = results[0].metric
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    # Ties go to the earliest trial, so the choice does not depend on completion order.
    return max(sorted(results, key=lambda r: r.index), key=lambda r: sign * r.score)
