"""Bad input against a project that already has a champion: a clear error, nothing registered, no alias moved."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flowship.errors import ConfigError, DataLoadError, DataValidationError, TrackingUnavailable
from tests.conftest import Project, default_params, trained_flights_project

pytestmark = pytest.mark.integration

NAME = "flights-delay"
ALIASES = {"champion": "1", "challenger": "1"}


@pytest.fixture(scope="module")
def champion_project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None
) -> Iterator[Project]:
    """A project whose first model (v1) is both champion and challenger."""
    project = trained_flights_project(tmp_path_factory.mktemp("champion"), flights_sample, default_params())
    project.tracker().client.set_registered_model_alias(NAME, "champion", "1")
    yield project


def flights(project: Project) -> pd.DataFrame:
    return pd.read_csv(project.root / "data/raw/flights.csv", low_memory=False)


def write_flights(project: Project, frame: pd.DataFrame) -> None:
    frame.to_csv(project.root / "data/raw/flights.csv", index=False)


def set_null(column: str) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        write_flights(project, flights(project).assign(**{column: None}))

    return change


def set_value(column: str, value: Any, every: int = 1) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        frame = flights(project)
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index[::every], column] = value
        write_flights(project, frame)

    return change


def drop(column: str) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        write_flights(project, flights(project).drop(columns=[column]))

    return change


def keep_rows(n: int) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        write_flights(project, flights(project).head(n))

    return change


def remove_file(project: Project) -> None:
    (project.root / "data/raw/flights.csv").unlink()


def truncated_zip(project: Project) -> None:
    raw = project.root / "data/raw"
    flights(project).to_csv(raw / "flights.csv.zip", index=False)  # a real zip archive...
    data = (raw / "flights.csv.zip").read_bytes()
    (raw / "flights.csv.zip").write_bytes(data[: len(data) // 2])  # ...cut in half
    (raw / "flights.csv").unlink()
    params = project.params()
    params["data"]["source"] = "data/raw/flights.csv.zip"
    project.write_params(params)


def csv_declared_parquet(project: Project) -> None:
    params = project.params()
    params["data"]["format"] = "parquet"
    project.write_params(params)


def set_param(section: str, key: str, value: Any) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        params = project.params()
        params[section][key] = value
        project.write_params(params)

    return change


def set_train_param(name: str, value: Any) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        params = project.params()
        params["train"]["params"][name] = value
        project.write_params(params)

    return change


CASES = {
    "missing data file": (remove_file, DataLoadError, r"data file not found: .*flights\.csv"),
    "unreadable (truncated) file": (truncated_zip, DataLoadError, r"flights\.csv\.zip: not a readable csv file"),
    "wrong format": (csv_declared_parquet, DataLoadError, r"flights\.csv: not a readable parquet file"),
    "missing target column": (
        drop("arr_delay"),
        DataLoadError,
        r"target source column\(s\) not found: \['arr_delay'\]",
    ),
    "missing feature column": (drop("carrier"), DataLoadError, r"feature column\(s\) not found: \['carrier'\]"),
    "all-null column": (set_null("temp"), DataValidationError, r"temp: max_null_fraction=0\.05 failed"),
    "wrong types": (set_value("distance", "far", every=7), DataValidationError, r"distance: coerce_dtype\('float64'\)"),
    "unknown category": (set_value("origin", "XXX", every=50), DataValidationError, r"origin: isin.* e\.g\. \['XXX'"),
    "single-class target": (set_value("arr_delay", 0), DataValidationError, r"late: at_least_two_classes .*\['0'\]"),
    "too few rows": (keep_rows(300), DataValidationError, r"<table>: min_rows=1000 failed"),
    "unknown estimator": (set_param("train", "estimator", "xgboost"), ConfigError, r"unknown estimator 'xgboost'"),
    "unknown hyperparameter": (set_train_param("max_depthh", 3), ConfigError, r"unknown hyperparameter.*max_depthh"),
    "bad hyperparameter value": (set_train_param("learning_rate", -1), ConfigError, r"learning_rate"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_leaves_the_registry_alone(champion_project: Project, case: str) -> None:
    change, error, message = CASES[case]
    raw, params_text = champion_project.root / "data/raw", champion_project.params_path.read_text()
    saved = champion_project.root / "saved-raw"
    shutil.copytree(raw, saved)
    try:
        change(champion_project)
        with pytest.raises(error, match=message):
            champion_project.train()
        tracker = champion_project.tracker()
        assert [v.version for v in tracker.versions(NAME)] == ["1"]
        assert tracker.aliases(NAME) == ALIASES
    finally:
        shutil.rmtree(raw)
        saved.rename(raw)
        champion_project.params_path.write_text(params_text)


def test_validation_failure_writes_a_report_and_trains_nothing(champion_project: Project) -> None:
    root = champion_project.root
    model_before = (root / "models/candidate/model.pkl").read_bytes()
    saved = root / "saved-flights.csv"
    shutil.copyfile(root / "data/raw/flights.csv", saved)
    try:
        set_null("humid")(champion_project)
        with pytest.raises(DataValidationError):
            champion_project.train()
        report = json.loads((root / "reports/validation.json").read_text())
        assert report["valid"] is False
        failures = {f["column"]: f for f in report["failures"]}
        assert list(failures) == ["humid"]
        assert failures["humid"]["count"] == report["rows"] > 10_000
        assert (root / "models/candidate/model.pkl").read_bytes() == model_before
    finally:
        saved.replace(root / "data/raw/flights.csv")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_tracking_server_that_does_not_answer_is_retried_then_named(
    champion_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from flowship.flows.training import training

    state = training(params_path=str(champion_project.params_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(TrackingUnavailable, match=rf"MLflow tracking server {uri} does not answer"):
        state.result()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    by_name = {t.name.rsplit("-", 1)[0]: t for t in task_runs}
    assert by_name["check_tracking"].run_count == 4  # the first try and three retries
    assert "version_data" not in by_name  # nothing else started
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracker = champion_project.tracker()
    assert tracker.aliases(NAME) == ALIASES
