"""What a table holds, column by column: the kinds of feature, the ones to leave out and why, the task its target
asks for, and the columns that tell the most about the target (possible leaks, the user's call)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from flowship.config import TaskType
from flowship.errors import OnboardingError
from flowship.pipeline.ingest import TIME_LAYOUTS, parse_times
from flowship.values import plain

# Below these, a model can be neither trained nor judged: a train part, a holdout and a production share each need rows.
MIN_ROWS = 100
MIN_CLASS_ROWS = 5
# A numeric target with at most this many distinct whole values is taken for classes (said, and overridable).
MAX_CLASSES = 20
# Categories listed in the validation rules (more: the column is a feature, its values are not listed).
MAX_LISTED_CATEGORIES = 30
# Text columns with more distinct values than this share of the rows look like identifiers or free text.
TEXT_ID_SHARE = 0.5

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    null_share: float
    low: float | None = None  # numeric: the observed range
    high: float | None = None
    categories: tuple[str, ...] | None = None  # categorical: the values seen, when few enough to list


@dataclass(frozen=True)
class LeftOut:
    name: str
    reason: str


@dataclass(frozen=True)
class Profile:
    rows: int
    target: str
    task: TaskType
    task_reason: str
    target_missing: int
    features: tuple[Feature, ...]
    left_out: tuple[LeftOut, ...]
    time_column: str | None = None
    time_format: str | None = None  # the time column's layout, when given (strftime)
    times: tuple[pd.Timestamp, ...] = ()  # the labelled rows' times, in order (with a time column)

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def names(self, kind: Kind) -> list[str]:
        return [f.name for f in self.features if f.kind == kind]


def profile(
    frame: pd.DataFrame,
    target: str,
    time_column: str | None = None,
    task: TaskType | None = None,
    time_format: str | None = None,
) -> Profile:
    """The table as flowship would model it; an `OnboardingError` naming the problem when it cannot be modelled."""
    columns = [str(c) for c in frame.columns]
    for what, name in (("target", target), ("time", time_column)):
        if name is not None and name not in columns:
            raise OnboardingError(f"no {what} column {name!r} in the data; its columns: {', '.join(columns)}")
    labels = frame[target]
    missing = int(labels.isna().sum())
    labelled = frame.loc[labels.notna()].reset_index(drop=True)
    if labelled.empty:
        raise OnboardingError(f"the target {target!r} has no value in any row")
    if len(labelled) < MIN_ROWS:
        raise OnboardingError(
            f"{len(labelled)} rows with a target value: at least {MIN_ROWS} are needed "
            "(to train on, to judge the model on a holdout, and to replay as production traffic)"
        )
    chosen, reason = _task(labelled[target], task)
    if chosen == "classification":
        _check_classes(labelled[target], target)
    times: tuple[pd.Timestamp, ...] = ()
    if time_column is not None:
        times = _times(labelled[time_column], time_column, time_format)
    features: list[Feature] = []
    left_out: list[LeftOut] = []
    for name in columns:
        if name in (target, time_column):
            continue
        kept = _feature(labelled[name])
        if isinstance(kept, Feature):
            features.append(kept)
        else:
            left_out.append(kept)
    if not features:
        raise OnboardingError(
            "no column is left to learn from: "
            + "; ".join(f"{c.name} ({c.reason})" for c in left_out or [LeftOut("(none)", "the table has no other")])
        )
    return Profile(
        rows=len(labelled),
        target=target,
        task=chosen,
        task_reason=reason,
        target_missing=missing,
        features=tuple(features),
        left_out=tuple(left_out),
        time_column=time_column,
        time_format=time_format,
        times=times,
    )


def _task(values: pd.Series, asked: TaskType | None) -> tuple[TaskType, str]:
    distinct = values.nunique()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if asked == "regression" and not numeric:
        raise OnboardingError(f"--task regression needs a numeric target; {values.name!r} holds text or booleans")
    if asked is not None:
        return asked, "as asked (--task)"
    if not numeric:
        return "classification", f"inferred: {values.name!r} holds {distinct} distinct non-numeric values"
    whole = bool(np.all(np.mod(values.astype("float64"), 1) == 0))
    if whole and distinct <= MAX_CLASSES:
        return "classification", f"inferred: {values.name!r} holds {distinct} distinct whole numbers"
    return "regression", f"inferred: {values.name!r} holds {distinct} distinct numbers"


def _check_classes(values: pd.Series, target: str) -> None:
    counts = values.value_counts()
    if len(counts) < 2:
        raise OnboardingError(f"the target {target!r} has one class only ({counts.index[0]!r}): nothing to learn")
    rare = counts[counts < MIN_CLASS_ROWS]
    if len(rare):
        shown = ", ".join(f"{k!r} ({n} row{'s' if n > 1 else ''})" for k, n in rare.items())
        raise OnboardingError(
            f"class(es) of {target!r} with fewer than {MIN_CLASS_ROWS} rows: {shown}; a model cannot learn them nor "
            "be judged on them: merge them into another class or drop their rows, then run init again"
        )


def _times(values: pd.Series, column: str, layout: str | None) -> tuple[pd.Timestamp, ...]:
    parsed = parse_times(values, layout)
    bad = values[parsed.isna()]
    if len(bad):
        accepted = (
            f"the layout {layout!r} (--time-format)" if layout else f"{TIME_LAYOUTS}; init takes it as --time-format"
        )
        raise OnboardingError(
            f"time column {column!r} has {len(bad)} value(s) that are not timestamps, e.g. "
            f"{bad.head(3).tolist()}; accepted: {accepted}"
        )
    return tuple(parsed.sort_values(kind="stable"))


def _feature(values: pd.Series) -> Feature | LeftOut:
    name = str(values.name)
    present = values.dropna()
    if present.empty:
        return LeftOut(name, "every value is missing")
    distinct = present.nunique()
    if distinct == 1:
        return LeftOut(name, f"constant: always {plain(present.iloc[0])!r}")
    null_share = float(values.isna().mean())
    if pd.api.types.is_bool_dtype(values):
        return Feature(name, "categorical", null_share, categories=tuple(sorted(map(str, present.unique()))))
    if pd.api.types.is_numeric_dtype(values):
        whole = pd.api.types.is_integer_dtype(values) or bool(np.all(np.mod(present, 1) == 0))
        if whole and distinct == len(present) and len(present) > MAX_CLASSES:
            return LeftOut(name, "identifier: every value is a distinct whole number")
        return Feature(name, "numeric", null_share, float(present.min()), float(present.max()))
    text = present.astype(str)
    if _looks_like_times(text):
        return LeftOut(name, "date or time: give it as --time-column, or derive features from it")
    if distinct == len(present) or (distinct > TEXT_ID_SHARE * len(present) and distinct > MAX_CLASSES):
        return LeftOut(name, f"identifier or free text: {distinct} distinct values in {len(present)} rows")
    listed = tuple(sorted(text.unique())) if distinct <= MAX_LISTED_CATEGORIES else None
    return Feature(name, "categorical", null_share, categories=listed)


def _looks_like_times(text: pd.Series) -> bool:
    sample = text.head(200)
    if not sample.str.contains(r"\d[-/.: T]\d", regex=True).all():  # digits apart: 2021/01/31, 10:00, not 02134
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bool(parse_times(sample).notna().mean() > 0.9)


def associations(frame: pd.DataFrame, prof: Profile, limit: int = 3, sample: int = 5000) -> list[tuple[str, float]]:
    """The features that tell the most about the target (mutual information, in nats, on a sample), highest first:
    what a leak would look like, for the user to judge."""
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    rows = frame.loc[frame[prof.target].notna()]
    rows = rows.sample(min(sample, len(rows)), random_state=0) if len(rows) > sample else rows
    encoded = pd.DataFrame(index=rows.index)
    for feature in prof.features:
        if feature.kind == "numeric":
            column = pd.to_numeric(rows[feature.name], errors="coerce")
            encoded[feature.name] = column.fillna(column.median() if column.notna().any() else 0.0)
        else:
            encoded[feature.name] = rows[feature.name].astype(str).astype("category").cat.codes
    discrete = [f.kind == "categorical" for f in prof.features]
    if prof.task == "classification":
        scores = mutual_info_classif(encoded, rows[prof.target].astype(str), discrete_features=discrete, random_state=0)
    else:
        target = rows[prof.target].astype("float64")
        scores = mutual_info_regression(encoded, target, discrete_features=discrete, random_state=0)
    ranked = sorted(zip(encoded.columns, scores, strict=True), key=lambda p: -p[1])
    return [(str(n), round(float(s), 3)) for n, s in ranked[:limit] if not math.isnan(s)]
