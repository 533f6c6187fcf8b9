"""Evidently: drift, data-quality and model-quality reports, and the monitoring dashboard's workspace (the folder the
Evidently UI serves). The only module that imports evidently.

Each report is saved as HTML for people; the numbers come back as plain rows for the code that decides.
Methods and thresholds are always given (Evidently's own defaults change with the row count).
"""

from __future__ import annotations

import functools
import json
import math
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from flowship.config import P_VALUE_METHODS
from flowship.errors import DashboardError

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


# --- the dashboard's workspace ---

# A project's id is derived from the model's name: every check finds the same project, without a lookup by name.
PROJECT_NAMESPACE = uuid.UUID("5d0c7a52-4f8e-4a8b-9a53-2a8f1d3c6e10")
DASHBOARD_TAB = "Monitoring"
FIGURE_METRIC = "evidently:metric_v2:CheckFigure"


@dataclass(frozen=True)
class PanelLine:
    """One line of a dashboard panel: a column of the runs' data, drawn over the runs' times."""

    legend: str
    column: str


@dataclass(frozen=True)
class DashboardPanel:
    title: str
    subtitle: str
    lines: tuple[PanelLine, ...]
    plot: Literal["line", "bar"] = "line"
    size: Literal["half", "full"] = "half"


@dataclass(frozen=True)
class StoredRun:
    """A check's run in the workspace: its project (one per model) and the run's own file."""

    project_id: str
    run_id: str
    path: str


def project_id(project: str) -> str:
    return str(uuid.uuid5(PROJECT_NAMESPACE, project))


def _workspace(folder: Path) -> Any:
    """The workspace's files in `folder`, made when the folder is missing but its parent is there (the first check).

    Written through the `LocalState` that Evidently's `Workspace` writes with: a `Workspace` reads every stored run
    of every project when it is opened (2 s at 300 runs, each time), this reads and writes only the files asked for.
    """
    if not folder.exists():
        if not folder.parent.is_dir():
            raise DashboardError(str(folder), f"is missing, and so is the folder it belongs in ({folder.parent})")
        try:
            folder.mkdir()
        except OSError as exc:
            raise DashboardError(str(folder), f"is missing and cannot be made ({exc.strerror})") from None
    if not folder.is_dir():
        raise DashboardError(str(folder), "is not a folder")
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise DashboardError(str(folder), "cannot be read and written by this user")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently.ui.storage.local.base import LocalState

    return LocalState(str(folder))


def _project(state: Any, folder: Path, name: str) -> uuid.UUID:
    """The model's project (made at its first check): its id comes from the model's name."""
    from evidently.sdk.models import ProjectModel

    found_id = uuid.UUID(project_id(name))
    try:
        state.read_project(found_id)
    except FileNotFoundError:
        description = f"flowship's monitoring checks of {name}, one run per check"
        state.write_project(ProjectModel(id=found_id, name=name, description=description))
    except (OSError, ValueError) as exc:  # a cut or corrupt metadata.json: pydantic's errors are ValueErrors
        raise DashboardError(
            str(folder), f"holds an unreadable project file {found_id}/metadata.json ({exc})"
        ) from None
    return found_id


@functools.cache
def _check_figure() -> Any:
    """`CheckFigure`: the value of a one-row column, with a counter as its widget. Evidently's own statistics
    (MeanValue) draw a histogram per column: 50 ms and 20 KB each, for a single number."""
    from evidently.core.metric_types import ColumnMetric, SingleValueCalculation, SingleValueMetric

    class CheckFigure(ColumnMetric, SingleValueMetric):  # type: ignore[misc]
        pass

    class CheckFigureCalculation(SingleValueCalculation[CheckFigure]):  # type: ignore[misc]
        def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
            return self.result(float(current_data.column(self.metric.column).data.iloc[0])), None

        def display_name(self) -> str:
            return str(self.metric.column)

    return CheckFigure


def add_dashboard_run(
    folder: Path, project: str, values: Mapping[str, float], tags: Sequence[str], timestamp: datetime
) -> StoredRun:
    """A check's figures as a run of the model's project: one column each (a single row), a `CheckFigure` metric
    each, that the dashboard draws at the run's `timestamp` (the window's end)."""
    from evidently import Report

    figure = _check_figure()
    from evidently.legacy.core import new_id

    state = _workspace(folder)
    found = _project(state, folder, project)
    columns = list(values)
    frame = pd.DataFrame([{c: float(values[c]) for c in columns}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([figure(column=c) for c in columns], tags=list(tags)).run(
            _dataset(frame, _definition(columns, [])), None, timestamp=timestamp
        )
    run_id = new_id()
    try:
        state.write_snapshot(found, run_id, snapshot.to_snapshot_model())  # as `Workspace.add_run` does
    except OSError as exc:
        raise DashboardError(str(folder), f"cannot take the run ({exc})") from None
    return StoredRun(str(found), str(run_id), str(folder / str(found) / "snapshots" / f"{run_id}.json"))


def dashboard_columns(folder: Path, project: str) -> list[str]:
    """The columns the model's dashboard draws now (none before its first check)."""
    state = _workspace(folder)
    model = _dashboard(state, folder, _project(state, folder, project))
    return [value.metric_labels.get("column", "") for panel in model.panels for value in panel.values]


def _dashboard(state: Any, folder: Path, found_id: uuid.UUID) -> Any:
    try:
        return state.read_dashboard(found_id)
    except (OSError, ValueError) as exc:
        raise DashboardError(str(folder), f"holds an unreadable {found_id}/dashboard.json ({exc})") from None


def save_dashboard(folder: Path, project: str, panels: Sequence[DashboardPanel]) -> bool:
    """The model's dashboard as `panels` say, in one tab; the ids come from the titles, so saving the same panels
    again changes nothing. Returns whether the dashboard changed."""
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric

    state = _workspace(folder)
    found = _project(state, folder, project)
    plots = [
        DashboardPanelPlot(
            id=uuid.uuid5(found, panel.title),
            title=panel.title,
            subtitle=panel.subtitle,
            size=panel.size,
            values=[
                PanelMetric(legend=line.legend, metric=FIGURE_METRIC, metric_labels={"column": line.column})
                for line in panel.lines
            ],
            plot_params={"plot_type": panel.plot},
        )
        for panel in panels
    ]
    tab = DashboardTabModel(id=uuid.uuid5(found, DASHBOARD_TAB), title=DASHBOARD_TAB, panels=[p.id for p in plots])
    wanted = DashboardModel(tabs=[tab], panels=plots)
    if json.dumps(_dashboard(state, folder, found).dict(), default=str) == json.dumps(wanted.dict(), default=str):
        return False
    try:
        state.write_dashboard(found, wanted)
    except OSError as exc:
        raise DashboardError(str(folder), f"cannot take the dashboard ({exc})") from None
    return True
