"""Evidently: drift, data-quality and model-quality reports. The only module that imports evidently.

Each report is saved as HTML for people; the numbers come back as plain rows for the code that decides.
Methods and thresholds are always given (Evidently's own defaults change with the row count).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from flowship.config import P_VALUE_METHODS

TARGET, PREDICTION = "target", "prediction"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class ColumnQuality:
    column: str
    missing: int
    missing_share: float
    out_of_range: int  # numeric: outside the training min..max
    unseen: int  # categorical: a value training never saw


def _evidently() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently

    return evidently


def _definition(numeric: list[str], categorical: list[str], **kwargs: Any) -> Any:
    return _evidently().DataDefinition(numerical_columns=numeric, categorical_columns=categorical, **kwargs)


def _dataset(frame: pd.DataFrame, definition: Any) -> Any:
    return _evidently().Dataset.from_pandas(frame, data_definition=definition)


def _values(snapshot: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """(metric type, config, value) for every metric of a run report."""
    return [(m["config"]["type"].rsplit(":", 1)[-1], m["config"], m["value"]) for m in snapshot.dict()["metrics"]]


def drifted(method: str, score: float, threshold: float) -> bool:
    """A p-value drifts below the threshold, a distance at or above it (Evidently's own rule)."""
    if math.isnan(score):
        return False
    return score < threshold if method in P_VALUE_METHODS else score >= threshold


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    num_method: str,
    cat_method: str,
    threshold: float,
    html: Path,
) -> list[ColumnDrift]:
    """Per-column drift of `current` against `reference` (the prediction is just another column here)."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    columns = [*numeric, *categorical]
    methods = {**dict.fromkeys(numeric, num_method), **dict.fromkeys(categorical, cat_method)}
    metrics: list[Any] = [ValueDrift(column=c, method=methods[c], threshold=threshold) for c in columns]
    metrics.insert(
        0, DriftedColumnsCount(columns=columns, num_method=num_method, cat_method=cat_method, threshold=threshold)
    )
    definition = _definition(numeric, categorical)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report(metrics).run(
            current_data=_dataset(current[columns], definition), reference_data=_dataset(reference[columns], definition)
        )
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html))
    rows = []
    for kind, config, value in _values(snapshot):
        if kind != "ValueDrift":
            continue
        column = config["column"]
        score = float(value) if value is not None else math.nan
        rows.append(ColumnDrift(column, methods[column], score, threshold, drifted(methods[column], score, threshold)))
    return rows


def data_quality_report(
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    ranges: dict[str, tuple[float, float]],
    categories: dict[str, list[str]],
    html: Path,
) -> list[ColumnQuality]:
    """Missing values, values outside the training range and categories training never saw, on every record."""
    from evidently import Report
    from evidently.metrics import MissingValueCount, OutListValueCount, OutRangeValueCount

    metrics: list[Any] = [MissingValueCount(column=c) for c in [*numeric, *categorical]]
    metrics += [OutRangeValueCount(column=c, left=ranges[c][0], right=ranges[c][1]) for c in numeric if c in ranges]
    metrics += [OutListValueCount(column=c, values=categories[c]) for c in categorical if c in categories]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report(metrics).run(
            current_data=_dataset(current[[*numeric, *categorical]], _definition(numeric, categorical)),
            reference_data=None,
        )
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html))
    found: dict[str, dict[str, Any]] = {c: {} for c in [*numeric, *categorical]}
    for kind, config, value in _values(snapshot):
        found[config["column"]][kind] = value
    rows = []
    for column, values in found.items():
        missing = values.get("MissingValueCount", {"count": 0, "share": 0.0})
        out = values.get("OutRangeValueCount", {"count": 0})
        unseen = values.get("OutListValueCount", {"count": 0})
        # OutList counts a missing value as "not in the list": those are already counted as missing.
        unseen_count = int(unseen["count"]) - (int(missing["count"]) if "OutListValueCount" in values else 0)
        rows.append(
            ColumnQuality(
                column=column,
                missing=int(missing["count"]),
                missing_share=float(missing["share"]),
                out_of_range=int(out["count"]),
                unseen=max(unseen_count, 0),
            )
        )
    return rows


def model_quality_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    task: Literal["classification", "regression"],
    classes: list[Any],
    html: Path,
    method: str,
    threshold: float,
) -> ColumnDrift:
    """Model quality of the labelled records (columns `target` and `prediction`), beside the reference's;
    returns the drift of the target itself (the delay rate, for the default data)."""
    from evidently import BinaryClassification, MulticlassClassification, Regression, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, RegressionPreset

    if task == "regression":
        definition = _definition(
            [TARGET, PREDICTION], [], regression=[Regression(target=TARGET, prediction=PREDICTION)]
        )
        preset: Any = RegressionPreset()
    elif len(classes) == 2:
        definition = _definition(
            [],
            [TARGET, PREDICTION],
            classification=[BinaryClassification(target=TARGET, prediction_labels=PREDICTION, pos_label=classes[1])],
        )
        preset = ClassificationPreset()
    else:
        definition = _definition(
            [],
            [TARGET, PREDICTION],
            classification=[MulticlassClassification(target=TARGET, prediction_labels=PREDICTION)],
        )
        preset = ClassificationPreset()
    columns = [TARGET, PREDICTION]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([ValueDrift(column=TARGET, method=method, threshold=threshold), preset]).run(
            current_data=_dataset(current[columns], definition), reference_data=_dataset(reference[columns], definition)
        )
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html))
    for kind, config, value in _values(snapshot):
        if kind == "ValueDrift" and config["column"] == TARGET:
            score = float(value) if value is not None else math.nan
            return ColumnDrift(TARGET, method, score, threshold, drifted(method, score, threshold))
    raise RuntimeError("Evidently returned no target drift")  # pragma: no cover - the metric was asked for
