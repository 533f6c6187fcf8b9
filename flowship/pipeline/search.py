"""The hyperparameter search: each trial fitted on the training split and scored on its latest part."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from flowship.config import LOWER_IS_BETTER, Params
from flowship.pipeline.evaluation import score
from flowship.pipeline.training import fit


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


def score_trial(index: int, train: pd.DataFrame, params: Params, hyperparams: dict[str, Any]) -> TrialResult:
    started = time.perf_counter()
    fit_part, valid_part = search_validation_split(train, params)
    model = fit(fit_part, params, hyperparams)
    value = score(model, valid_part, params, params.search_metric)
    return TrialResult(index, hyperparams, params.search_metric, value, time.perf_counter() - started)


def best_trial(results: list[TrialResult]) -> TrialResult:
    if not results:
        raise ValueError("no trial results to choose from")
    metric = results[0].metric
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    # Ties go to the earliest trial, so the choice does not depend on completion order.
    return max(sorted(results, key=lambda r: r.index), key=lambda r: sign * r.score)
