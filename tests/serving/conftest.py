"""Small real models (fitted here on synthetic data), written as bundles with `write_bundle`, and apps around them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from flowship.features import FeatureLists
from flowship.pipeline.training import coerce_features
from flowship.pipeline.training_profile import profile_training_data
from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle, load_bundle, write_bundle
from flowship.serving.settings import ServingSettings

with warnings.catch_warnings():
    # Starlette nudges towards httpx2; its test client works the same with httpx, which is what is installed.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

NUMERIC = ["distance", "temp", "hour"]
CATEGORICAL = ["carrier"]
CARRIERS = ["AA", "DL", "UA", "B6"]


def synthetic_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance": rng.uniform(100, 3000, n),
            "temp": rng.normal(60, 15, n),
            "hour": rng.integers(5, 23, n).astype(float),
            "carrier": rng.choice(CARRIERS, n).astype(object),
        }
    )
    frame.loc[rng.random(n) < 0.1, "temp"] = np.nan
    frame.loc[rng.random(n) < 0.05, "carrier"] = None
    signal = 0.002 * frame["distance"] - 0.05 * frame["temp"].fillna(60) + 0.2 * frame["hour"]
    signal += frame["carrier"].map({"AA": 1.0, "DL": -1.0, "UA": 0.5, "B6": 0.0}).fillna(0)
    frame["late"] = signal + rng.normal(0, 1, n) > signal.median()
    frame["delay"] = 10 * signal + rng.normal(0, 5, n)
    return frame


def _coerce() -> FunctionTransformer:
    # the training pipeline's own first step (pickled by value into the bundle)
    return FunctionTransformer(
        coerce_features, kw_args={"numeric": NUMERIC, "categorical": CATEGORICAL}, feature_names_out="one-to-one"
    )


def fit_classifier(frame: pd.DataFrame) -> Pipeline:
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan),
                CATEGORICAL,
            ),
            ("numeric", "passthrough", NUMERIC),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features=CATEGORICAL, random_state=0)
    pipeline = Pipeline([("coerce", _coerce()), ("encode", encode), ("model", model)])
    return pipeline.fit(frame[NUMERIC + CATEGORICAL], frame["late"])


def fit_regressor(frame: pd.DataFrame) -> Pipeline:
    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="__missing__"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                CATEGORICAL,
            ),
        ]
    )
    pipeline = Pipeline([("coerce", _coerce()), ("encode", encode), ("model", Ridge(alpha=1.0))])
    return pipeline.fit(frame[NUMERIC + CATEGORICAL], frame["delay"])


def metadata(task: str, name: str, classes: list[Any] | None) -> dict[str, Any]:
    return {
        "name": name,
        "version": "3",
        "task": task,
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "classes": classes,
        "lineage": {"data_hash": "abc123", "git_commit": "deadbeef", "mlflow_run": "r1"},
        "input_schema": [{"name": n, "type": "double"} for n in NUMERIC]
        + [{"name": n, "type": "string"} for n in CATEGORICAL],
    }


def golden(pipeline: Pipeline, frame: pd.DataFrame, task: str) -> list[dict[str, Any]]:
    """As flowship.pipeline.evaluation.golden_set makes it."""
    x = frame[NUMERIC + CATEGORICAL].head(8)
    records = x.astype(object).where(x.notna(), None).to_dict(orient="records")
    predictions = pipeline.predict(x)
    out = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"features": record, "prediction": predictions[i].item()}
        if task == "classification":
            proba = pipeline.predict_proba(x)[i]
            row["probabilities"] = {str(c): float(p) for c, p in zip(pipeline.classes_, proba, strict=True)}
        out.append(row)
    return out


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, training_frame: pd.DataFrame) -> Path:
    pipeline = fit_classifier(training_frame)
    meta = metadata("classification", "flights-delay", pipeline.classes_.tolist())
    return write_bundle(
        tmp_path_factory.mktemp("classifier"), pipeline, meta, golden(pipeline, training_frame, "classification")
    )


@pytest.fixture(scope="session")
def regressor_dir(tmp_path_factory: pytest.TempPathFactory, training_frame: pd.DataFrame) -> Path:
    pipeline = fit_regressor(training_frame)
    meta = metadata("regression", "arrival-delay", None)
    return write_bundle(
        tmp_path_factory.mktemp("regressor"), pipeline, meta, golden(pipeline, training_frame, "regression")
    )


def profile(frame: pd.DataFrame, task: str) -> dict[str, Any]:
    """The training profile, as the train stage makes it."""
    target = "late" if task == "classification" else "delay"
    return profile_training_data(frame, FeatureLists(numeric=NUMERIC, categorical=CATEGORICAL), target, task)


@pytest.fixture(scope="session")
def guarded_classifier(tmp_path_factory: pytest.TempPathFactory, training_frame: pd.DataFrame) -> ModelBundle:
    """The classifier with the profile of its training data (a version registered since guardrails exist)."""
    pipeline = fit_classifier(training_frame)
    meta = metadata("classification", "flights-delay", pipeline.classes_.tolist())
    folder = write_bundle(
        tmp_path_factory.mktemp("guarded-classifier"),
        pipeline,
        meta,
        golden(pipeline, training_frame, "classification"),
        profile(training_frame, "classification"),
    )
    return load_bundle(folder)


@pytest.fixture(scope="session")
def guarded_regressor(tmp_path_factory: pytest.TempPathFactory, training_frame: pd.DataFrame) -> ModelBundle:
    pipeline = fit_regressor(training_frame)
    folder = write_bundle(
        tmp_path_factory.mktemp("guarded-regressor"),
        pipeline,
        metadata("regression", "arrival-delay", None),
        golden(pipeline, training_frame, "regression"),
        profile(training_frame, "regression"),
    )
    return load_bundle(folder)


@pytest.fixture(scope="session")
def classifier(classifier_dir: Path) -> ModelBundle:
    return load_bundle(classifier_dir)


@pytest.fixture(scope="session")
def regressor(regressor_dir: Path) -> ModelBundle:
    return load_bundle(regressor_dir)


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"distance": 1200.0, "temp": 55.5, "hour": 17, "carrier": "DL"}
    return {**base, **overrides}


def settings_for(tmp_path: Path, **overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {"model_dir": tmp_path / "model", "log_dir": tmp_path / "logs", "log_flush_seconds": 0.05}
    return ServingSettings(**{**values, **overrides})


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, classifier: ModelBundle) -> Iterator[MakeClient]:
    """A started app (lifespan on) for a bundle and settings overrides; stopped at the end of the test."""
    clients: list[TestClient] = []

    def make(bundle: ModelBundle | None = None, **overrides: Any) -> TestClient:
        app: FastAPI = create_app(bundle or classifier, settings_for(tmp_path, **overrides))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()
