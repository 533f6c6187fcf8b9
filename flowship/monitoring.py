"""Monitoring: read a window of the inference log, compare it with the serving version's training data,
decide a verdict and which alerts go out. Plain data in, typed summaries out; the reports themselves are
made by the Evidently adapter (flowship/adapters/drift.py)."""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowship.adapters.drift import ColumnDrift, ColumnQuality
from flowship.config import LOWER_IS_BETTER, MonitoringConfig
from flowship.errors import FlowshipError
from flowship.serving.inference_log import FILE_PREFIX, FILE_SUFFIX, _file_day, _parse_line, _utc, parse_lines

# Records reach the log within the writer's flush interval (0.5 s): a default window ends this long ago,
# so a record is never written behind a window that was already checked.
SETTLE = timedelta(seconds=2)
FEATURE_PREFIX = "features."
PROBA_PREFIX = "probabilities."
VERDICT_ORDER = ("no_data", "insufficient_data", "ok", "drift", "quality_drop")
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})


class MonitoringError(FlowshipError):
    """A check that cannot be made (a bad window, a version without lineage)."""


# ----------------------------------------------------------------------------------------------- window


@dataclass(frozen=True)
class Window:
    start: datetime | None  # None: from the first record
    end: datetime
    default: bool  # "since the last check": a finished check moves the state on

    def label(self) -> str:
        start = self.start.isoformat(timespec="seconds") if self.start else "the first record"
        return f"{start} to {self.end.isoformat(timespec='seconds')}"


def parse_time(value: str, what: str) -> datetime:
    try:
        stamp = _utc(value)
    except ValueError:
        raise MonitoringError(
            f"{what}: {value!r} is not a date or ISO time (e.g. 2026-11-23 or 2026-11-23T06:00)"
        ) from None
    assert stamp is not None
    return stamp


def resolve_window(state: dict[str, Any], start: str | None, end: str | None, now: datetime | None = None) -> Window:
    """The given window, or since the end of the last check up to a moment ago."""
    now = now or datetime.now(UTC)
    lower = parse_time(start, "start") if start else None
    upper = parse_time(end, "end") if end else None
    default = start is None and end is None
    if default and state.get("last_end"):
        lower = parse_time(state["last_end"], "monitoring state last_end")
    upper = upper or now - SETTLE
    if lower is not None and upper <= lower:
        raise MonitoringError(
            f"the window {lower.isoformat()} to {upper.isoformat()} is empty: its end is not after its start"
        )
    return Window(lower, upper, default)


def read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise MonitoringError(f"{path}: not valid JSON ({exc}); delete it to start the checks afresh") from None
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class LogWindow:
    records: pd.DataFrame  # time, request_id, row, model_name, model_version, prediction, probabilities.*, features.*
    skipped: int  # lines that could not be read (cut by a crash, corrupt)
    files: int


def read_log_window(folder: Path, window: Window, schema: dict[str, str] | None = None) -> LogWindow:
    """The window's records as one flat frame, read column-wise (pyarrow) so a million records stay cheap.

    `schema` (feature -> "numeric" | "categorical") fixes the feature types; other logged features are read
    as they come. A cut last line or a corrupt line is skipped and counted, never fatal.
    """
    frames: list[pd.DataFrame] = []
    skipped = files = 0
    for path in sorted(folder.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
        day = _file_day(path)
        if day is None:
            continue
        if window.start is not None and day < window.start.date():
            continue
        if day > window.end.date():
            continue
        frame, bad = _read_file(path, schema or {})
        files += 1
        skipped += bad
        if len(frame):
            # Each file is cut to the window before the next is read: only the window's records stay in memory.
            frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
            keep = frame["time"] < pd.Timestamp(window.end)
            if window.start is not None:
                keep &= frame["time"] >= pd.Timestamp(window.start)
            if keep.any():
                frames.append(frame.loc[keep])
    if frames:
        records = pd.concat(frames, ignore_index=True, sort=False)
        del frames
    else:
        records = pd.DataFrame(
            {c: pd.Series(dtype=object) for c in ("request_id", "row", "model_name", "model_version", "prediction")}
        )
        records.insert(0, "time", pd.Series(dtype="datetime64[us, UTC]"))
    records["model_version"] = records["model_version"].astype(str)
    return LogWindow(records, skipped, files)


def _read_file(path: Path, schema: dict[str, str]) -> tuple[pd.DataFrame, int]:
    import pyarrow as pa
    import pyarrow.json as pj

    data = path.read_bytes()
    skipped = 0
    if data and not data.endswith(b"\n"):
        # A writer stopped mid-line: the last line is cut.
        data = data[: data.rfind(b"\n") + 1]
        skipped += 1
    if not data.strip():
        return pd.DataFrame(), skipped
    types = {"numeric": pa.float64(), "categorical": pa.string()}
    explicit = pa.schema(
        [
            ("time", pa.string()),
            ("request_id", pa.string()),
            ("row", pa.int64()),
            ("model_version", pa.string()),
            ("features", pa.struct([(name, types[kind]) for name, kind in schema.items()])),
        ]
    )
    try:
        table = pj.read_json(
            io.BytesIO(data),
            parse_options=pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"),
        )
        frame = _flat(table.flatten().to_pandas())
        if frame[["time", "request_id", "prediction"]].isna().any().any():
            raise ValueError("a line without time, request_id or prediction")
    except (pa.ArrowInvalid, KeyError, ValueError):
        # A corrupt line somewhere in the file: read it line by line and skip what cannot be read.
        frame, bad = _read_lines(data)
        skipped += bad
    return frame, skipped


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Nested columns flattened by pyarrow come as `features.x`; top level columns keep their names."""
    if "row" not in frame:
        frame["row"] = 0
    frame["row"] = frame["row"].fillna(0).astype("int64")
    return frame


def _read_lines(data: bytes) -> tuple[pd.DataFrame, int]:
    rows = []
    records, skipped = parse_lines(data.splitlines(), _parse_line)
    for record in records:
        flat = {k: v for k, v in record.items() if k not in ("features", "probabilities")}
        flat["time"] = record["time"].isoformat()
        flat.update({FEATURE_PREFIX + k: v for k, v in record["features"].items()})
        for k, v in (record.get("probabilities") or {}).items():
            flat[PROBA_PREFIX + k] = v
        rows.append(flat)
    return _flat(pd.DataFrame(rows)), skipped


def features_of(records: pd.DataFrame) -> pd.DataFrame:
    """The logged feature columns, named as the model names them."""
    columns = [c for c in records.columns if c.startswith(FEATURE_PREFIX)]
    return records[columns].rename(columns=lambda c: c[len(FEATURE_PREFIX) :])


# ----------------------------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class ModelSpec:
    """What a registered version expects and what it was trained on (from its signature and lineage)."""

    name: str
    version: str
    task: str
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
    numeric = [i["name"] for i in inputs if i["type"] in NUMERIC_TYPES]
    categorical = [i["name"] for i in inputs if i["type"] not in NUMERIC_TYPES]
    return ModelSpec(
        name=name,
        version=version,
        task=tags.get("flowship.task") or "classification",
        target=run_params.get("target", ""),
        numeric=numeric,
        categorical=categorical,
        train_md5=train_md5,
        holdout_metrics={k: float(v) for k, v in metrics.items() if not k.startswith("trial_")},
    )


@dataclass
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
        frame[column] = _text(frame[column])
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
    from flowship.training import coerce_features

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
    tmp = folder / f"{key}.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / f"{key}.json")  # written last: its presence means the cache entry is whole


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


# ----------------------------------------------------------------------------------------------- current


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
        frame[column] = _text(features[column]) if column in features else np.nan
    if spec.task == "classification":
        frame["prediction"] = records["prediction"].astype(str).to_numpy()
    else:
        frame["prediction"] = pd.to_numeric(records["prediction"], errors="coerce").to_numpy()
    return frame, absent, unexpected


def _text(values: pd.Series) -> pd.Series:
    """Category values as plain strings, missing as NaN (how the model and Evidently both see them)."""
    missing = values.isna()
    return values.astype(object).map(str).where(~missing, np.nan)


def sample_rows(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows, drawn uniformly: drift statistics on a large sample match the full data's."""
    return frame if len(frame) <= limit else frame.sample(n=limit, random_state=seed)


# ----------------------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Quality:
    labelled: int
    metrics: dict[str, float]  # on the labelled records; {} below the minimum
    metric: str
    holdout: float | None
    drop: float | None  # how much worse than on the holdout (positive = worse)


def join_labels(records: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The records whose label has arrived, with a `label` column."""
    if labels.empty or records.empty:
        return records.iloc[0:0].assign(label=pd.Series(dtype=object))
    keyed = labels[["request_id", "row", "label"]].drop_duplicates(["request_id", "row"], keep="last")
    keyed = keyed.astype({"request_id": str, "row": "int64"})
    return records.reset_index(drop=True).merge(keyed, on=["request_id", "row"], how="inner")


def model_quality(
    labelled: pd.DataFrame, spec: ModelSpec, reference: Reference, cfg: MonitoringConfig, metric: str
) -> Quality:
    from flowship.evaluation import classification_metrics, regression_metrics

    holdout = spec.holdout_metrics.get(metric)
    if len(labelled) < cfg.quality.min_labels:
        return Quality(len(labelled), {}, metric, holdout, None)
    if spec.task == "classification":
        classes = np.array(reference.classes, dtype=object)
        columns = [PROBA_PREFIX + c for c in reference.classes]
        if any(c not in labelled for c in columns):
            raise MonitoringError(f"v{spec.version}: the log has no probabilities for classes {reference.classes}")
        proba = labelled[columns].to_numpy(dtype=float)
        y = labelled["label"].map(_label_text)
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


def _label_text(value: Any) -> str:
    """A label as the log's class keys spell it: 1.0 -> '1', True -> 'True'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------------------------------- verdict


@dataclass
class VersionCheck:
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    version: str,
    records: int,
    drift: list[ColumnDrift],
    absent: list[str],
    unexpected: list[str],
    quality: Quality | None,
    cfg: MonitoringConfig,
    target_drift: ColumnDrift | None = None,
) -> VersionCheck:
    features = [d for d in drift if d.column != "prediction"]
    prediction = next((d for d in drift if d.column == "prediction"), None)
    drifted = [d for d in features if d.drifted]
    share = len(drifted) / len(features) if features else 0.0
    check = VersionCheck(version, records, "ok", [], drift=features, drift_share=share, prediction_drift=prediction)
    check.absent, check.unexpected, check.quality = absent, unexpected, quality
    check.target_drift = target_drift
    if records < cfg.min_records:
        check.verdict = "insufficient_data"
        check.reasons.append(f"{records} records: fewer than monitoring.min_records ({cfg.min_records}), no verdict")
        return check
    kinds: list[str] = []
    if share > cfg.drift.share:
        names = ", ".join(d.column for d in drifted)
        check.reasons.append(
            f"{len(drifted)} of {len(features)} features drifted ({share:.0%} > {cfg.drift.share:.0%}): {names}"
        )
        kinds.append("drift_share")
    for d in drifted:
        if d.column in cfg.drift.key_features:
            check.reasons.append(
                f"key feature {d.column} drifted ({d.method} {d.score:.3g}, threshold {d.threshold:g})"
            )
            kinds.append(f"key_feature:{d.column}")
    if prediction is not None and prediction.drifted:
        check.reasons.append(
            f"predictions drifted ({prediction.method} {prediction.score:.3g}, threshold {prediction.threshold:g})"
        )
        kinds.append("prediction")
    if target_drift is not None and target_drift.drifted:
        check.reasons.append(
            f"the labels drifted ({target_drift.method} {target_drift.score:.3g}, threshold {target_drift.threshold:g})"
        )
        kinds.append("target")
    if absent or unexpected:
        parts = []
        if absent:
            parts.append(f"no values logged for {', '.join(absent)}")
        if unexpected:
            parts.append(f"logged features the model does not know: {', '.join(unexpected)}")
        check.reasons.append("schema: " + "; ".join(parts))
        kinds.append("schema")
    if kinds:
        check.verdict = "drift"
    if quality is not None and quality.drop is not None and quality.drop > cfg.quality.max_drop:
        value = quality.metrics[quality.metric]
        check.reasons.append(
            f"{quality.metric} {value:.4f} on {quality.labelled} labelled records vs "
            f"{quality.holdout:.4f} on the holdout (worse by {quality.drop:.4f} > {cfg.quality.max_drop})"
        )
        kinds.append("quality")
        check.verdict = "quality_drop"
    check.alert_kinds = kinds
    return check


def overall(checks: list[VersionCheck]) -> str:
    if not checks:
        return "no_data"
    return max((c.verdict for c in checks), key=VERDICT_ORDER.index)


# ----------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    time: str
    model: str
    version: str
    verdict: str
    kinds: list[str]
    reasons: list[str]
    window: str
    report: str
    new: list[str]  # kinds not alerted within the cool-down: these make the alert go out


def plan_alerts(
    model: str,
    checks: list[VersionCheck],
    window: Window,
    report: Path,
    state: dict[str, Any],
    cooldown_hours: float,
    now: datetime,
) -> list[Alert]:
    """One alert per version with a problem; only kinds not already alerted within the cool-down are new."""
    sent: dict[str, str] = state.get("alerts", {})
    alerts = []
    for check in checks:
        if not check.alert_kinds:
            continue
        fresh = []
        for kind in check.alert_kinds:
            last = sent.get(f"{model}:v{check.version}:{kind}")
            if last is None or now - datetime.fromisoformat(last) >= timedelta(hours=cooldown_hours):
                fresh.append(kind)
        alerts.append(
            Alert(
                time=now.isoformat(timespec="seconds"),
                model=model,
                version=check.version,
                verdict=check.verdict,
                kinds=check.alert_kinds,
                reasons=check.reasons,
                window=window.label(),
                report=str(report),
                new=fresh,
            )
        )
    return alerts


def mark_sent(state: dict[str, Any], alert: Alert, now: datetime) -> None:
    sent = state.setdefault("alerts", {})
    for kind in alert.new:
        sent[f"{alert.model}:v{alert.version}:{kind}"] = now.isoformat(timespec="seconds")


def append_alert_log(path: Path, alert: Alert, delivery: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**asdict(alert), "delivery": delivery}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- presenting


def drift_table(check: VersionCheck) -> list[dict[str, Any]]:
    rows = [*check.drift, *(d for d in (check.prediction_drift, check.target_drift) if d is not None)]
    return [
        {
            "version": check.version,
            "feature": d.column,
            "method": d.method,
            "score": round(d.score, 4),
            "threshold": d.threshold,
            "drifted": d.drifted,
        }
        for d in rows
    ]


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Monitoring: {summary['verdict'].replace('_', ' ').upper()}",
        "",
        f"- window: {summary['window']}",
        f"- records: {summary['records']} (unreadable lines skipped: {summary['skipped_lines']})",
        f"- report: `{summary['report']}`",
    ]
    if summary.get("mlflow_runs"):
        lines.append("- MLflow: " + ", ".join(f"[v{v}]({url})" for v, url in summary["mlflow_runs"].items()))
    for check in summary["versions"]:
        lines += ["", f"## v{check['version']}: {check['verdict']} ({check['records']} records)"]
        lines += [f"- {r}" for r in check["reasons"]] or ["- no feature past its threshold"]
        quality = check.get("quality")
        if quality and quality["metrics"]:
            lines.append(
                f"- {quality['metric']}: {quality['metrics'][quality['metric']]:.4f} "
                f"on {quality['labelled']} labelled records (holdout {quality['holdout']})"
            )
        elif quality:
            lines.append(f"- labels arrived for {quality['labelled']} records: too few for model quality")
    if summary.get("alerts"):
        lines += ["", "## Alerts"] + [f"- v{a['version']}: {a['delivery']}" for a in summary["alerts"]]
    return "\n".join(lines) + "\n"
