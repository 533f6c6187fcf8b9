"""One version's check: the current data against the reference, model quality from labels, the verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from flowship.adapters import drift as reports
from flowship.adapters.drift import ColumnDrift, ColumnQuality
from flowship.config import LOWER_IS_BETTER, MonitoringConfig
from flowship.errors import MonitoringError
from flowship.monitoring.reference import ModelSpec, Reference, as_text
from flowship.monitoring.window import PROBA_PREFIX, features_of
from flowship.pipeline.evaluation import classification_metrics, regression_metrics

VERDICT_ORDER = ("no_data", "insufficient_data", "ok", "drift", "quality_drop")


def current_frame(records: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The group's features as the reference has them, the prediction, and schema problems.

    Returns (frame, absent, unexpected): features the version expects but the log has no value for, and
    logged features the version does not know (a rename or a schema change).
    """
    features = features_of(records)
    logged = {c for c in features.columns if features[c].notna().any()}
    absent = [c for c in spec.features if c not in logged]
    unexpected = sorted(logged - set(spec.features))
    frame = pd.DataFrame(index=records.index)
    for column in spec.numeric:
        frame[column] = pd.to_numeric(features[column], errors="coerce") if column in features else np.nan
    for column in spec.categorical:
        frame[column] = as_text(features[column]) if column in features else np.nan
    if spec.task == "classification":
        frame["prediction"] = records["prediction"].astype(str).to_numpy()
    else:
        frame["prediction"] = pd.to_numeric(records["prediction"], errors="coerce").to_numpy()
    return frame, absent, unexpected


def sample_rows(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows, drawn uniformly: drift statistics on a large sample match the full data's."""
    return frame if len(frame) <= limit else frame.sample(n=limit, random_state=seed)


@dataclass(frozen=True)
class Quality:
    labelled: int
    metrics: dict[str, float]  # on the labelled records; {} below the minimum
    metric: str
    holdout: float | None
    drop: float | None  # how much worse than on the holdout (positive = worse)


def join_labels(records: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The records whose label has arrived, with a `label` column (a rating alone is no label)."""
    if labels.empty or records.empty:
        return records.iloc[0:0].assign(label=pd.Series(dtype=object))
    keyed = labels.loc[labels["label"].notna(), ["request_id", "row", "label"]]
    keyed = keyed.drop_duplicates(["request_id", "row"], keep="last").astype({"request_id": str, "row": "int64"})
    return records.reset_index(drop=True).merge(keyed, on=["request_id", "row"], how="inner")


@dataclass(frozen=True)
class Ratings:
    """What users said of the answers to a window's records: how many they rated, and the share of thumbs up."""

    count: int
    share: float | None  # None: none rated


def join_ratings(records: pd.DataFrame, labels: pd.DataFrame) -> Ratings:
    """The ratings (`POST /feedback`) of the records: the last rating of each record counts."""
    if labels.empty or records.empty or "rating" not in labels:
        return Ratings(0, None)
    rated = labels.loc[labels["rating"].notna(), ["request_id", "row", "rating"]]
    rated = rated.drop_duplicates(["request_id", "row"], keep="last").astype({"request_id": str, "row": "int64"})
    joined = records[["request_id", "row"]].merge(rated, on=["request_id", "row"], how="inner")
    if joined.empty:
        return Ratings(0, None)
    return Ratings(len(joined), float((joined["rating"] == 1).mean()))


def model_quality(
    labelled: pd.DataFrame, spec: ModelSpec, reference: Reference, cfg: MonitoringConfig, metric: str
) -> Quality:
    holdout = spec.holdout_metrics.get(metric)
    if len(labelled) < cfg.quality.min_labels:
        return Quality(len(labelled), {}, metric, holdout, None)
    if spec.task == "classification":
        classes = np.array(reference.classes, dtype=object)
        columns = [PROBA_PREFIX + c for c in reference.classes]
        if any(c not in labelled for c in columns):
            raise MonitoringError(f"v{spec.version}: the log has no probabilities for classes {reference.classes}")
        proba = labelled[columns].to_numpy(dtype=float)
        y = labelled["label"].map(label_text)
        metrics = classification_metrics(y.astype(object), proba, classes)
    else:
        metrics = regression_metrics(
            labelled["label"].astype(float), pd.to_numeric(labelled["prediction"], errors="coerce").to_numpy()
        )
    value = metrics.get(metric)
    drop = None
    if value is not None and holdout is not None and not math.isnan(value):
        drop = value - holdout if metric in LOWER_IS_BETTER else holdout - value
    return Quality(len(labelled), metrics, metric, holdout, drop)


def label_text(value: Any) -> str:
    """A label as the log's class keys spell it: 1.0 -> '1', True -> 'True'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class GuardrailRate:
    """How often one guardrail fired on one feature (None: on the record or the answer as a whole) in a window."""

    guardrail: str
    feature: str | None
    action: str
    records: int
    share: float  # of the version's records in the window (answered, and refused by a guardrail)

    def sentence(self) -> str:
        what = {
            "out_of_range": f"are outside the training range of {self.feature}",
            "unseen_category": f"have a category of {self.feature} unseen in training",
            "missing": f"miss {self.feature}, never missing in training"
            if self.feature
            else "miss more of their features than allowed",
            "low_confidence": "were answered with low confidence",
            "output_range": "were answered outside the training target's range",
        }.get(self.guardrail, f"tripped {self.guardrail}")
        return f"{self.share:.1%} of the records {what} ({self.records} records; {self.action})"


def guardrail_rates(events: pd.DataFrame, answered: int) -> list[GuardrailRate]:
    """Each (guardrail, feature, action) that fired, by the share of records it fired on: of the records answered
    plus those a guardrail refused (which never reach the inference log). Most frequent first."""
    if events.empty:
        return []
    keyed = events.assign(feature=events["feature"].astype(object).where(events["feature"].notna(), ""))
    refused = keyed.loc[keyed["action"] == "refuse", ["request_id", "row"]].drop_duplicates()
    total = answered + len(refused)
    counts = (
        keyed.drop_duplicates(["request_id", "row", "guardrail", "feature", "action"])
        .groupby(["guardrail", "feature", "action"])
        .size()
    )
    rates = []
    for key, n in counts.items():
        guardrail, feature, action = (str(part) for part in cast(tuple[Any, ...], key))
        rates.append(GuardrailRate(guardrail, feature or None, action, int(n), int(n) / total if total else 0.0))
    return sorted(rates, key=lambda r: (-r.records, r.guardrail, r.feature or ""))


@dataclass(frozen=True)
class VersionCheck:
    """One version's check: its verdict with the reasons, the numbers behind them and the reports written."""

    version: str
    records: int
    verdict: str
    reasons: list[str]
    drift: list[ColumnDrift] = field(default_factory=list)
    drift_share: float = 0.0
    prediction_drift: ColumnDrift | None = None
    target_drift: ColumnDrift | None = None  # the labels' own drift (needs enough labels)
    data_quality: list[ColumnQuality] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    quality: Quality | None = None
    sampled: int = 0
    reports: dict[str, str] = field(default_factory=dict)
    alert_kinds: list[str] = field(default_factory=list)
    guardrails: list[GuardrailRate] = field(default_factory=list)
    feedback_count: int = 0  # records of the version in the window that users rated
    feedback_rating_share: float | None = None  # the share of them rated thumbs up

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_version(
    spec: ModelSpec,
    ref: Reference,
    records: pd.DataFrame,
    labels: pd.DataFrame,
    folder: Path,
    cfg: MonitoringConfig,
    quality_metric: str,
    seed: int,
    events: pd.DataFrame | None = None,
) -> VersionCheck:
    """Drift (features and prediction), data quality, the guardrails' rates (from the version's safety `events`),
    the users' ratings and, with enough labels, model quality of one version's records: the HTML reports go to
    `folder`, the numbers and the verdict come back."""
    current, absent, unexpected = current_frame(records, spec)
    folder.mkdir(parents=True, exist_ok=True)
    numeric = [c for c in spec.numeric if c not in absent]
    categorical = [c for c in spec.categorical if c not in absent]
    paths: dict[str, str] = {}
    drift: list[ColumnDrift] = []
    quality_rows: list[ColumnQuality] = []
    if len(current) >= cfg.min_records:
        # the prediction is compared as the model gives it: a number for a regressor, a class for a classifier
        regression = spec.task == "regression"
        drift = reports.drift_report(
            ref.frame,
            sample_rows(current, cfg.sample_rows, seed),
            [*numeric, *(["prediction"] if regression else [])],
            [*categorical, *([] if regression else ["prediction"])],
            cfg.drift.num_method,
            cfg.drift.cat_method,
            cfg.drift.threshold,
            folder / "drift.html",
        )
        paths["drift"] = str(folder / "drift.html")
        quality_rows = reports.data_quality_report(
            current, numeric, categorical, ref.ranges, ref.categories, folder / "data-quality.html"
        )
        paths["data_quality"] = str(folder / "data-quality.html")
    labelled = join_labels(records, labels)
    quality = model_quality(labelled, spec, ref, cfg, quality_metric)
    target_drift: ColumnDrift | None = None
    if quality.metrics:
        method = cfg.drift.num_method if spec.task == "regression" else cfg.drift.cat_method
        target_drift = reports.model_quality_report(
            ref.frame,
            graded_frame(labelled, spec),
            spec.task,
            ref.classes,
            folder / "model-quality.html",
            method,
            cfg.drift.threshold,
        )
        paths["model_quality"] = str(folder / "model-quality.html")
    rates = guardrail_rates(events, len(records)) if events is not None else []
    check = judge_version(spec.version, len(records), drift, absent, unexpected, quality, cfg, target_drift, rates)
    ratings = join_ratings(records, labels)
    return replace(
        check,
        data_quality=quality_rows,
        sampled=min(len(current), cfg.sample_rows),
        reports=paths,
        feedback_count=ratings.count,
        feedback_rating_share=ratings.share,
    )


def graded_frame(labelled: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The labelled records as `target` and `prediction`, typed as the reference has them."""
    if spec.task == "classification":
        return pd.DataFrame(
            {"target": labelled["label"].map(label_text), "prediction": labelled["prediction"].astype(str)}
        )
    return pd.DataFrame(
        {"target": labelled["label"].astype(float), "prediction": pd.to_numeric(labelled["prediction"])}
    )


def judge_version(
    version: str,
    records: int,
    drift: list[ColumnDrift],
    absent: list[str],
    unexpected: list[str],
    quality: Quality | None,
    cfg: MonitoringConfig,
    target_drift: ColumnDrift | None = None,
    guardrails: list[GuardrailRate] | None = None,
) -> VersionCheck:
    """One version's verdict from its drift, schema problems, guardrails' rates and quality (the gate's `decide`
    judges candidates). Records the guardrails fire on often left what the model knows: a drift verdict."""
    features = [d for d in drift if d.column != "prediction"]
    prediction = next((d for d in drift if d.column == "prediction"), None)
    drifted = [d for d in features if d.drifted]
    share = len(drifted) / len(features) if features else 0.0
    found = partial(
        VersionCheck,
        version,
        records,
        drift=features,
        drift_share=share,
        prediction_drift=prediction,
        target_drift=target_drift,
        absent=absent,
        unexpected=unexpected,
        quality=quality,
        guardrails=guardrails or [],
    )
    if records < cfg.min_records:
        reason = f"{records} records: fewer than monitoring.min_records ({cfg.min_records}), no verdict"
        return found("insufficient_data", [reason])
    reasons: list[str] = []
    kinds: list[str] = []
    if share > cfg.drift.share:
        names = ", ".join(d.column for d in drifted)
        reasons.append(
            f"{len(drifted)} of {len(features)} features drifted ({share:.0%} > {cfg.drift.share:.0%}): {names}"
        )
        kinds.append("drift_share")
    for d in drifted:
        if d.column in cfg.drift.key_features:
            reasons.append(f"key feature {d.column} drifted ({d.method} {d.score:.3g}, threshold {d.threshold:g})")
            kinds.append(f"key_feature:{d.column}")
    if prediction is not None and prediction.drifted:
        reasons.append(
            f"predictions drifted ({prediction.method} {prediction.score:.3g}, threshold {prediction.threshold:g})"
        )
        kinds.append("prediction")
    if target_drift is not None and target_drift.drifted:
        reasons.append(
            f"the labels drifted ({target_drift.method} {target_drift.score:.3g}, threshold {target_drift.threshold:g})"
        )
        kinds.append("target")
    if absent or unexpected:
        parts = []
        if absent:
            parts.append(f"no values logged for {', '.join(absent)}")
        if unexpected:
            parts.append(f"logged features the model does not know: {', '.join(unexpected)}")
        reasons.append("schema: " + "; ".join(parts))
        kinds.append("schema")
    limit = cfg.guardrails.max_share
    for rate in guardrails or []:
        if rate.share > limit:
            reasons.append(f"guardrails: {rate.sentence()}, above monitoring.guardrails.max_share ({limit:.0%})")
            kinds.append(f"guardrail:{rate.guardrail}:{rate.feature or '*'}")
    verdict = "drift" if kinds else "ok"
    if quality is not None and quality.drop is not None and quality.drop > cfg.quality.max_drop:
        value = quality.metrics[quality.metric]
        reasons.append(
            f"{quality.metric} {value:.4f} on {quality.labelled} labelled records vs "
            f"{quality.holdout:.4f} on the holdout (worse by {quality.drop:.4f} > {cfg.quality.max_drop})"
        )
        kinds.append("quality")
        verdict = "quality_drop"
    return found(verdict, reasons, alert_kinds=kinds)


def overall(checks: list[VersionCheck]) -> str:
    if not checks:
        return "no_data"
    return max((c.verdict for c in checks), key=VERDICT_ORDER.index)
