"""The training reference a check compares with: the serving version's spec, features and predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowship.config import TaskType
from flowship.errors import MonitoringError
from flowship.files import atomic_write
from flowship.pipeline.training import coerce_features

NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
TASKS: dict[str, TaskType] = {"classification": "classification", "regression": "regression"}


@dataclass(frozen=True)
class ModelSpec:
    """What a registered version expects and what it was trained on (from its signature and lineage)."""

    name: str
    version: str
    task: TaskType
    target: str
    numeric: list[str]
    categorical: list[str]
    train_md5: str
    holdout_metrics: dict[str, float]

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def spec_from_registry(
    name: str,
    version: str,
    tags: dict[str, str],
    inputs: list[dict[str, str]],
    run_params: dict[str, str],
    metrics: dict[str, float],
) -> ModelSpec:
    train_md5 = tags.get("flowship.data.train_md5", "unknown")
    if train_md5 in ("", "unknown"):
        raise MonitoringError(
            f"{name} v{version} has no flowship.data.train_md5 lineage tag: its training data cannot be found "
            "to compare with (was it registered by flowship?)"
        )
    tag = tags.get("flowship.task") or "classification"
    task = TASKS.get(tag)
    if task is None:
        raise MonitoringError(f"{name} v{version} has the flowship.task tag {tag!r}: expected one of {sorted(TASKS)}")
    numeric = [i["name"] for i in inputs if i["type"] in NUMERIC_TYPES]
    categorical = [i["name"] for i in inputs if i["type"] not in NUMERIC_TYPES]
    return ModelSpec(
        name=name,
        version=version,
        task=task,
        target=run_params.get("target", ""),
        numeric=numeric,
        categorical=categorical,
        train_md5=train_md5,
        holdout_metrics={k: float(v) for k, v in metrics.items() if not k.startswith("trial_")},
    )


@dataclass(frozen=True)
class Reference:
    """A version's training data as the checks need it: a sample with the model's outputs, and the full
    data's ranges and categories. Built once per version and kept on disk."""

    frame: pd.DataFrame  # features, `prediction`, `target` (as the model saw them)
    ranges: dict[str, tuple[float, float]]
    categories: dict[str, list[str]]
    classes: list[str]  # classifiers: class labels as strings (the log's probability keys)
    missing_share: dict[str, float]


def build_reference(train: pd.DataFrame, spec: ModelSpec, model: Any, rows: int, seed: int) -> Reference:
    missing = [c for c in [*spec.features, spec.target] if c not in train.columns]
    if missing:
        raise MonitoringError(f"the training data of v{spec.version} lacks columns {missing}")
    sample = train.sample(n=min(rows, len(train)), random_state=seed).sort_index()
    x = sample[spec.features]
    frame = x.copy()
    for column in spec.categorical:
        frame[column] = as_text(frame[column])
    predictions = model.predict(_model_input(x, spec))
    classes: list[str] = []
    if spec.task == "classification":
        classes = [str(c) for c in model.classes_]
        frame["prediction"] = [str(p) for p in predictions]
        frame["target"] = sample[spec.target].astype(str).to_numpy()
    else:
        frame["prediction"] = np.asarray(predictions, dtype=float)
        frame["target"] = sample[spec.target].astype(float).to_numpy()
    ranges = {c: (float(train[c].min()), float(train[c].max())) for c in spec.numeric if train[c].notna().any()}
    categories = {c: sorted(str(v) for v in train[c].dropna().unique()) for c in spec.categorical}
    missing_share = {c: float(train[c].isna().mean()) for c in spec.features}
    return Reference(frame.reset_index(drop=True), ranges, categories, classes, missing_share)


def _model_input(x: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    return coerce_features(x, spec.numeric, spec.categorical)


def save_reference(reference: Reference, folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    reference.frame.to_parquet(folder / f"{key}.parquet")
    meta = {
        "ranges": reference.ranges,
        "categories": reference.categories,
        "classes": reference.classes,
        "missing_share": reference.missing_share,
    }
    atomic_write(folder / f"{key}.json", json.dumps(meta))  # written last: its presence means the entry is whole


def load_reference(folder: Path, key: str) -> Reference | None:
    meta_file, frame_file = folder / f"{key}.json", folder / f"{key}.parquet"
    if not meta_file.exists() or not frame_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    return Reference(
        frame=pd.read_parquet(frame_file),
        ranges={k: (float(v[0]), float(v[1])) for k, v in meta["ranges"].items()},
        categories=meta["categories"],
        classes=meta["classes"],
        missing_share=meta["missing_share"],
    )


def reference_key(spec: ModelSpec, rows: int, seed: int) -> str:
    return f"{spec.name}-v{spec.version}-{spec.train_md5[:12]}-{rows}-{seed}"


def as_text(values: pd.Series) -> pd.Series:
    """Category values as plain strings, missing as NaN (how the model and Evidently both see them)."""
    missing = values.isna()
    return values.astype(object).map(str).where(~missing, np.nan)
