"""Monitoring fixtures: a trained flights project whose production log is written by the real log writer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import Project, default_params, trained_flights_project


def production_month(project: Project, month: int) -> pd.DataFrame:
    """The project's production rows of one month (the default data's July–December), in time order."""
    frame = pd.read_parquet(project.root / "data" / "prepared" / "production.parquet")
    return frame[frame["time_hour"].dt.month == month].sort_values("time_hour", kind="stable")


def log_predictions(
    project: Project,
    frame: pd.DataFrame,
    version: str,
    when: datetime | None = None,
    batch: int = 50,
    labels: bool = True,
    rename: dict[str, str] | None = None,
) -> list[tuple[str, int]]:
    """Score `frame` with the registered `version` and write what production would log (InferenceLog, the
    serving app's own writer), `batch` records per request; with `labels`, their true labels as they
    arrive afterwards. `rename` renames logged features (a schema change). Returns the (request_id, row) keys."""
    from flowship.config import load_params
    from flowship.pipeline.training import coerce_features
    from flowship.serving.inference_log import InferenceEntry, InferenceLog
    from flowship.serving.labels import Label, write_labels

    params = load_params(project.params_path, check_estimator=False)
    features = params.data.features
    model = project.tracker().load_model(f"models:/{params.project.name}/{version}")
    x = coerce_features(frame[features.all], features.numeric, features.categorical)
    predictions = model.predict(x)
    probabilities = model.predict_proba(x)
    logged = frame[features.all].rename(columns=rename or {})
    records = logged.astype(object).where(logged.notna(), None).to_dict(orient="records")
    # A moment ago: a default window ends a settle time before now (records still on their way to the disk).
    when = when or datetime.now(UTC) - timedelta(seconds=5)
    keys: list[tuple[str, int]] = []
    with InferenceLog(project.root / "logs" / "inference") as log:
        for start in range(0, len(records), batch):
            request_id = uuid.uuid4().hex
            chunk = records[start : start + batch]
            log.append(
                InferenceEntry(
                    when,
                    request_id,
                    params.project.name,
                    version,
                    chunk,
                    [int(p) for p in predictions[start : start + batch]],
                    [
                        {str(c): float(v) for c, v in zip(model.classes_, row, strict=True)}
                        for row in probabilities[start : start + batch]
                    ],
                )
            )
            keys += [(request_id, i) for i in range(len(chunk))]
    if labels:
        target = frame[params.data.target.column].tolist()
        times = frame[params.data.time_column].tolist()
        write_labels(
            project.root / "logs" / "labels",
            [Label(rid, row, int(target[i]), times[i].to_pydatetime()) for i, (rid, row) in enumerate(keys)],
        )
    return keys


def monitoring_params(**overrides: Any) -> dict[str, Any]:
    params = default_params()
    # The sampled data has about 1,400 flights a month: small windows still get a verdict.
    params["monitoring"].update({"min_records": 200, "reference_rows": 5000, "sample_rows": 2000})
    params["monitoring"]["quality"]["min_labels"] = 100
    for key, value in overrides.items():
        params["monitoring"][key] = value
    return params


@pytest.fixture(scope="module")
def trained_project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None
) -> Iterator[Project]:
    """A flights project with v1 registered (and made champion), shared by a module's tests."""
    base = tmp_path_factory.mktemp("monitoring")
    project = trained_flights_project(base, flights_sample, monitoring_params())
    project.tracker().set_alias(project.params()["project"]["name"], "champion", "1")
    yield project
