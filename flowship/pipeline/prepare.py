"""Prepare: split the modelling table into train, holdout and production replay parts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from flowship.config import Params, RandomSplit, TimeSplit
from flowship.errors import DataValidationError


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    holdout: pd.DataFrame
    production: pd.DataFrame


def _utc(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize("UTC")


def _window(frame: pd.DataFrame, column: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    times = frame[column]
    return frame.loc[(times >= _utc(start)) & (times < _utc(end))]


def _too_small(name: str, rows: int, needed: int, detail: str) -> DataValidationError:
    return DataValidationError(
        {
            "rows": rows,
            "valid": False,
            "failures": [{"column": "<split>", "check": f"{name} rows>={needed}", "count": rows, "examples": [detail]}],
        }
    )


def split(frame: pd.DataFrame, params: Params) -> Splits:
    cfg = params.split
    if isinstance(cfg, TimeSplit):
        column = params.data.time_column
        assert column is not None  # enforced by the config model
        window = _window(frame, column, cfg.train_start, cfg.train_end).sort_values(column, kind="stable")
        cut = int(len(window) * (1 - cfg.holdout_fraction))
        train, holdout = window.iloc[:cut], window.iloc[cut:]
        if cfg.production_start and cfg.production_end:
            production = _window(frame, column, cfg.production_start, cfg.production_end)
        else:
            production = frame.iloc[0:0]
        detail = f"training window {cfg.train_start} to {cfg.train_end}"
    else:
        assert isinstance(cfg, RandomSplit)
        shuffled = frame.sample(frac=1.0, random_state=params.project.seed)
        n_holdout = int(len(shuffled) * cfg.holdout_fraction)
        n_production = int(len(shuffled) * cfg.production_fraction)
        production = shuffled.iloc[:n_production]
        holdout = shuffled.iloc[n_production : n_production + n_holdout]
        train = shuffled.iloc[n_production + n_holdout :]
        detail = f"random split of {len(frame)} rows"
    minimum = max(2, params.validate_.min_rows // 10)
    if len(train) < params.validate_.min_rows:
        raise _too_small("train", len(train), params.validate_.min_rows, detail)
    if len(holdout) < minimum:
        raise _too_small("holdout", len(holdout), minimum, detail)
    if params.data.task == "classification" and train[params.data.target.column].nunique() < 2:
        raise _too_small("train classes", int(train[params.data.target.column].nunique()), 2, detail)
    return Splits(train.reset_index(drop=True), holdout.reset_index(drop=True), production.reset_index(drop=True))
