"""Evaluate: holdout metrics, the plots a person looks at, and the golden set."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import label_binarize
from threadpoolctl import threadpool_limits

from flowship.config import LOWER_IS_BETTER, Params
from flowship.pipeline.training import split_xy
from flowship.values import plain


def classification_metrics(
    y: pd.Series, proba: np.ndarray, classes: np.ndarray, only: str | None = None
) -> dict[str, float]:
    """roc_auc, pr_auc, f1, accuracy and log_loss of the class probabilities `proba`; `only` one of them (each
    costs a few milliseconds, mostly sklearn's checks: permutation importance asks for one, dozens of times)."""
    predicted = classes[np.argmax(proba, axis=1)]
    binary = len(classes) == 2

    def roc_auc() -> float:
        if binary:
            y_pos = (y.to_numpy() == classes[1]).astype(int)
            return float(skm.roc_auc_score(y_pos, proba[:, 1])) if len(set(y_pos)) > 1 else math.nan
        y_onehot = label_binarize(y, classes=classes)
        present = y_onehot.sum(axis=0) > 0
        if present.sum() <= 1:
            return math.nan
        return float(skm.roc_auc_score(y_onehot[:, present], proba[:, present], average="macro"))

    def pr_auc() -> float:
        if binary:
            y_pos = (y.to_numpy() == classes[1]).astype(int)
            return float(skm.average_precision_score(y_pos, proba[:, 1])) if y_pos.any() else math.nan
        y_onehot = label_binarize(y, classes=classes)
        present = y_onehot.sum(axis=0) > 0
        return float(skm.average_precision_score(y_onehot[:, present], proba[:, present], average="macro"))

    def f1() -> float:
        if binary:
            return float(skm.f1_score(y, predicted, pos_label=classes[1], zero_division=0))
        return float(skm.f1_score(y, predicted, average="macro", zero_division=0))

    metrics: dict[str, Callable[[], float]] = {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "f1": f1,
        "accuracy": lambda: float(skm.accuracy_score(y, predicted)),
        "log_loss": lambda: float(skm.log_loss(y, proba, labels=classes)),
    }
    return {name: compute() for name, compute in metrics.items() if only in (None, name)}


def regression_metrics(y: pd.Series, predicted: np.ndarray, only: str | None = None) -> dict[str, float]:
    """rmse, mae and r2 of `predicted`; `only` one of them."""
    metrics: dict[str, Callable[[], float]] = {
        "rmse": lambda: float(skm.root_mean_squared_error(y, predicted)),
        "mae": lambda: float(skm.mean_absolute_error(y, predicted)),
        "r2": lambda: float(skm.r2_score(y, predicted)),
    }
    return {name: compute() for name, compute in metrics.items() if only in (None, name)}


def compute_metrics(model: Pipeline, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    x, y = split_xy(frame, params)
    if params.data.task == "classification":
        return classification_metrics(y, model.predict_proba(x), model.classes_)
    return regression_metrics(y, model.predict(x))


def score(model: Pipeline, frame: pd.DataFrame, params: Params, metric: str) -> float:
    return compute_metrics(model, frame, params)[metric]


def golden_set(model: Pipeline, holdout: pd.DataFrame, params: Params) -> list[dict[str, Any]]:
    """A fixed sample of holdout records with this model's outputs, replayed against built images."""
    size = min(params.evaluate.golden_size, len(holdout))
    sample = holdout.sample(n=size, random_state=params.project.seed).sort_index()
    x, _ = split_xy(sample, params)
    records = x.astype(object).where(x.notna(), None).to_dict(orient="records")
    predictions = model.predict(x)
    probabilities = model.predict_proba(x) if params.data.task == "classification" else None
    golden = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"features": record, "prediction": plain(predictions[i])}
        if probabilities is not None:
            row["probabilities"] = {str(c): float(p) for c, p in zip(model.classes_, probabilities[i], strict=True)}
        golden.append(row)
    return golden


def write_plots(
    model: Pipeline, frame: pd.DataFrame, params: Params, out_dir: Path, importance: pd.Series | None = None
) -> list[Path]:
    """ROC/PR curves, confusion matrix and calibration (residuals for regression), and the feature importance
    when it was computed (`feature_importance`; None when `evaluate.importance` is off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = split_xy(frame, params)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    if params.data.task == "classification":
        classes = model.classes_
        proba = model.predict_proba(x)
        fig, ax = plt.subplots(figsize=(6, 5))
        skm.ConfusionMatrixDisplay.from_predictions(y, classes[np.argmax(proba, axis=1)], labels=classes, ax=ax)
        save(fig, "confusion_matrix.png")
        if len(classes) == 2:
            y_pos = (y.to_numpy() == classes[1]).astype(int)
            for name, display in (
                ("roc_curve.png", skm.RocCurveDisplay),
                ("pr_curve.png", skm.PrecisionRecallDisplay),
            ):
                fig, ax = plt.subplots(figsize=(6, 5))
                display.from_predictions(y_pos, proba[:, 1], ax=ax)
                save(fig, name)
            fig, ax = plt.subplots(figsize=(6, 5))
            CalibrationDisplay.from_predictions(y_pos, proba[:, 1], n_bins=10, ax=ax)
            save(fig, "calibration.png")
    else:
        predicted = model.predict(x)
        fig, ax = plt.subplots(figsize=(6, 5))
        skm.PredictionErrorDisplay.from_predictions(y, predicted, kind="residual_vs_predicted", ax=ax)
        save(fig, "residuals.png")
        fig, ax = plt.subplots(figsize=(6, 5))
        skm.PredictionErrorDisplay.from_predictions(y, predicted, kind="actual_vs_predicted", ax=ax)
        save(fig, "actual_vs_predicted.png")

    if importance is not None:
        fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(importance))))
        importance.sort_values().plot.barh(ax=ax)
        ax.set_xlabel(f"drop in {params.gate.primary_metric} when permuted")
        save(fig, "feature_importance.png")
    return written


def feature_importance(model: Pipeline, frame: pd.DataFrame, params: Params) -> pd.Series:
    """Permutation importance on a sample of `evaluate.importance_rows` rows, `evaluate.importance_repeats` times
    per feature: its cost is one prediction over the sample per feature and repeat, whatever the holdout's size."""
    settings = params.evaluate
    sample = frame.sample(n=min(settings.importance_rows, len(frame)), random_state=params.project.seed)
    x, y = split_xy(sample, params)
    metric = params.gate.primary_metric
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def scoring(estimator: Pipeline, features: pd.DataFrame, target: pd.Series) -> float:
        # The gate's own metric (whatever the class labels are), greater is better.
        if params.data.task == "classification":
            values = classification_metrics(target, estimator.predict_proba(features), estimator.classes_, metric)
        else:
            values = regression_metrics(target, estimator.predict(features), metric)
        return sign * values[metric]

    # One OpenMP thread: a few thousand rows per prediction are too few to share out, and the threads' hand-offs
    # cost more than the trees (measured: importance 4.6 s with two threads, 2.9 s with one, on two cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        result = permutation_importance(
            model, x, y, scoring=scoring, n_repeats=settings.importance_repeats, random_state=params.project.seed
        )
    return pd.Series(result.importances_mean, index=x.columns, name="importance")
