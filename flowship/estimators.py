"""The estimators flowship trains, by task and name, and the hyperparameter sets a search tries: what
`params.yaml`'s `train` section may name, checked when the params are loaded (so no runtime import of the config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.utils._param_validation import InvalidParameterError

from flowship.errors import ConfigError
from flowship.values import plain

if TYPE_CHECKING:
    from flowship.config import Distribution, Params, TaskType


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


def estimator_class(task: TaskType, name: str) -> tuple[type[BaseEstimator], str]:
    try:
        return ESTIMATORS[task][name]
    except KeyError:
        raise ConfigError(
            [f"train.estimator: unknown estimator {name!r} for {task}; allowed: {', '.join(ESTIMATORS[task])}"]
        ) from None


def make_estimator(task: TaskType, name: str, hyperparams: dict[str, Any], seed: int) -> BaseEstimator:
    cls, _ = estimator_class(task, name)
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
    return [{**base, **{k: plain(v) for k, v in trial.items()}} for trial in sampler]
