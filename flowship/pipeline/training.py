"""Train: build the estimator named in config, search hyperparameters, fit the final model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from flowship.config import FeaturesConfig, Params
from flowship.estimators import estimator_class, make_estimator


def coerce_features(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Cast raw records (from a file or a JSON request) to the types the model was fitted on."""
    columns: dict[str, pd.Series] = {}
    for column in numeric:
        columns[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        values = frame[column].astype("object")
        missing = values.isna()
        columns[column] = values.map(str).where(~missing, np.nan)
    # one frame built at once: inserting the columns one by one costs more than the casts (a model's every call)
    return pd.DataFrame(columns, index=frame.index)


def build_pipeline(params: Params, hyperparams: dict[str, Any]) -> Pipeline:
    features = params.data.features
    _, encoding = estimator_class(params.data.task, params.train.estimator)
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
    _, encoding = estimator_class(params.data.task, params.train.estimator)
    if encoding == "native" and params.data.features.categorical:
        pipeline.set_params(model__categorical_features=list(params.data.features.categorical))
    return pipeline


def split_xy(frame: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.Series]:
    return frame[params.data.features.all], frame[params.data.target.column]


def fit(train: pd.DataFrame, params: Params, hyperparams: dict[str, Any]) -> Pipeline:
    pipeline = _with_native_categories(build_pipeline(params, hyperparams), params)
    x, y = split_xy(train, params)
    return pipeline.fit(x, y)
