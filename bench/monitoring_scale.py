"""The cost of one monitoring check at 100k, 300k and 1M logged records, beside Evidently run directly.

For each size N, an inference log of N records (15 features: 12 numeric, 3 categorical; predictions 0/1 with
their probabilities) is written with the serving app's own writer (`InferenceLog`, 100 records per request,
spread over 7 days), drifted in a few features against a generated training frame of 128,000 rows. Writing
it is setup: its time is printed, not measured. Once per run (as the flow does once per model version), a
small scikit-learn model is fitted on the training frame and flowship's reference is built from it and saved
(`build_reference` + `save_reference`, monitoring.reference_rows of params.yaml).

Then two measurements, each in a fresh subprocess, so that peak RSS belongs to one of them:

* flowship: what the monitoring flow does for one model version, without Prefect and MLflow:
  `load_reference` -> `read_log_window` (all of the log) -> group by model version -> `current_frame` ->
  `sample_rows` (monitoring.sample_rows) -> `drift_report` (features + prediction, on the sample) ->
  `data_quality_report` (every record) -> `judge_version`; both reports saved as HTML.
* evidently: the obvious way without flowship: `pandas.read_json(lines=True)` per log file, a DataFrame of
  the `features` dicts, and one Evidently `Report` of `DataDriftPreset` over the features and the prediction
  against the FULL training frame (with the model's predictions), plus the same data-quality metrics
  (missing values, values outside the training range, unseen categories); `save_html` and `dict()`.

Drift methods and threshold are params.yaml's (monitoring.drift). In each child, wall time is taken after its
imports: read (log and reference), check (the rest) and total; imports are timed on their own, and the
whole process (interpreter start included) from the parent. Peak RSS is the child's VmHWM at its end (and
after each step): its `ru_maxrss` would include the parent's peak, which Linux carries over at exec.
Figures are printed and written to bench/results/monitoring_scale.json; nothing is asserted. The issue's aim
is printed beside them: 1,000,000 records in <= 60 s and <= 2 GB peak, growing no faster than linearly.

    .venv/bin/python bench/monitoring_scale.py [--sizes 100000,300000,1000000] [--keep]

One child on its own (the setup of a --keep run stays in its work folder), e.g. under py-spy:

    .venv/bin/python bench/monitoring_scale.py --child flowship --workdir DIR --size N --out FILE
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
OUT_JSON = RESULTS / "monitoring_scale.json"
PYTHON = Path(sys.executable)
SIZES = (100_000, 300_000, 1_000_000)
TRAIN_ROWS = 128_000
ROWS_PER_REQUEST = 100
DAYS = 7  # the log's records are spread over this many days (one file per day)
SEED = 42
CHILD_TIMEOUT = 3600.0
MODEL_NAME, MODEL_VERSION = "bench-model", "1"
NUMERIC = [f"num{i:02d}" for i in range(12)]
INTEGER = {"num09", "num10", "num11"}  # logged as JSON integers, as a client sends counts and hours
CATEGORICAL = ["carrier", "origin", "dest"]
# Drift in production: num00 shifted, num01 wider, num05 missing more often, carrier reweighted, dest gains
# a destination training never saw. The other features keep their training distribution.
DRIFTED = ["num00", "num01", "carrier", "dest"]
START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
AIM_SECONDS, AIM_MB, AIM_N = 60.0, 2048.0, 1_000_000
VARIANTS = {"flowship": "flowship check", "evidently": "Evidently directly"}


# --- setup: training frame, model, reference, log ---------------------------------------------------------


def draw(n: int, seed: int, drift: bool) -> Any:
    """n rows of the 15 features; `drift` moves a few of them as production would."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        if name in INTEGER:
            columns[name] = rng.integers(0, 24 * (i - 8), n)
        elif i % 3 == 2:  # skewed, like distances and wind speeds
            columns[name] = rng.lognormal(mean=2.0 + i / 10, sigma=0.6, size=n).round(2)
        else:
            columns[name] = rng.normal(loc=10.0 * i, scale=1.0 + i, size=n).round(2)
    if drift:
        columns["num00"] = columns["num00"] + 0.5  # half a standard deviation
        columns["num01"] = (10.0 + (columns["num01"] - 10.0) * 1.5).round(2)
    for name, share in (("num04", 0.01), ("num05", 0.03 if drift else 0.01)):
        values = columns[name].astype(float)
        values[rng.random(n) < share] = np.nan
        columns[name] = values
    carriers = [f"C{i:02d}" for i in range(16)]
    weights = np.linspace(2.0, 0.5, 16)
    if drift:
        weights[3] *= 4.0
    columns["carrier"] = rng.choice(carriers, size=n, p=weights / weights.sum())
    columns["origin"] = rng.choice(["EWR", "JFK", "LGA"], size=n, p=[0.36, 0.33, 0.31])
    dests = np.array([f"D{i:03d}" for i in range(100)] + (["NEW"] if drift else []))
    popularity = 1.0 / np.arange(1, 101) ** 0.8
    if drift:
        popularity = np.append(popularity * 0.99 / popularity.sum(), 0.01)  # 1% to a new destination
    columns["dest"] = rng.choice(dests, size=n, p=popularity / popularity.sum())
    return pd.DataFrame(columns)


def training_frame(rows: int) -> Any:
    import numpy as np

    frame = draw(rows, SEED, drift=False)
    rng = np.random.default_rng(SEED + 1)
    score = (
        0.8 * (frame["num00"] - frame["num00"].mean()) / frame["num00"].std()
        - 0.5 * (frame["num03"] - frame["num03"].mean()) / frame["num03"].std()
        + 0.6 * frame["carrier"].isin(["C03", "C07", "C11"])
        - 0.7
    )
    frame["target"] = (rng.random(rows) < 1.0 / (1.0 + np.exp(-score.fillna(0.0)))).astype("int64")
    return frame


def fit_model(train: Any) -> Any:
    """A small classifier that takes the features as flowship coerces them (categories as text, NaN missing)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from flowship.pipeline.training import coerce_features

    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"), OneHotEncoder(handle_unknown="ignore")
                ),
                CATEGORICAL,
            ),
        ]
    )
    model = make_pipeline(encode, LogisticRegression(max_iter=300))
    model.fit(coerce_features(train, NUMERIC, CATEGORICAL), train["target"])
    return model


def spec() -> Any:
    from flowship.monitoring.reference import ModelSpec

    return ModelSpec(MODEL_NAME, MODEL_VERSION, "classification", "target", NUMERIC, CATEGORICAL, "0" * 32, {})


def monitoring_config() -> Any:
    import yaml

    from flowship.config import MonitoringConfig

    return MonitoringConfig.model_validate(yaml.safe_load((REPO / "params.yaml").read_text())["monitoring"])


def prepare_run(workdir: Path) -> tuple[Any, dict[str, Any]]:
    """Once per run: the training frame (with the model's predictions, for Evidently run directly), the model
    and flowship's reference of it, on disk. Returns the model and the figures of the setup."""
    from flowship.monitoring.reference import build_reference, reference_key, save_reference
    from flowship.pipeline.training import coerce_features

    started = time.perf_counter()
    cfg = monitoring_config()
    train = training_frame(TRAIN_ROWS)
    model = fit_model(train)
    fitted = time.perf_counter() - started
    full = train.copy()
    full["prediction"] = model.predict(coerce_features(train, NUMERIC, CATEGORICAL))
    full.to_parquet(workdir / "train.parquet")
    began = time.perf_counter()
    reference = build_reference(train, spec(), model, cfg.reference_rows, SEED)
    key = reference_key(spec(), cfg.reference_rows, SEED)
    save_reference(reference, workdir / "reference", key)
    built = time.perf_counter() - began
    setup = {
        "train_rows": TRAIN_ROWS,
        "reference_rows": len(reference.frame),
        "reference_key": key,
        "fit_seconds": fitted,
        "build_reference_seconds": built,
        "monitoring": cfg.model_dump(),
    }
    (workdir / "setup.json").write_text(json.dumps(setup, indent=2))
    return model, setup


def write_log(folder: Path, model: Any, n: int, fast: bool) -> dict[str, Any]:
    """n drifted records, scored by the model, written as production writes them: `InferenceLog` (or, with
    `fast`, the very lines `InferenceEntry.encode()` makes, appended straight to the day's file)."""
    from flowship.pipeline.training import coerce_features
    from flowship.serving.inference_log import InferenceEntry, InferenceLog, log_path

    started = time.perf_counter()
    folder.mkdir(parents=True)
    requests = math.ceil(n / ROWS_PER_REQUEST)
    step = dt.timedelta(days=DAYS) / requests
    chunk_rows = 100_000  # generated and scored a chunk at a time: memory stays flat
    writer = None if fast else InferenceLog(folder).start()
    handles: dict[dt.date, Any] = {}
    request = positives = 0
    try:
        for offset in range(0, n, chunk_rows):
            rows = min(chunk_rows, n - offset)
            frame = draw(rows, SEED + 100 + offset // chunk_rows, drift=True)
            x = coerce_features(frame, NUMERIC, CATEGORICAL)
            predictions = model.predict(x).tolist()
            probabilities = [
                {str(c): float(p) for c, p in zip(model.classes_, row, strict=True)} for row in model.predict_proba(x)
            ]
            # Python values, missing as null: what the serving app logs (integer columns stay JSON integers)
            records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
            positives += sum(predictions)
            for start in range(0, rows, ROWS_PER_REQUEST):
                end = start + ROWS_PER_REQUEST
                entry = InferenceEntry(
                    START + request * step,
                    f"{request:032x}",
                    MODEL_NAME,
                    MODEL_VERSION,
                    records[start:end],
                    predictions[start:end],
                    probabilities[start:end],
                )
                request += 1
                if writer is not None:
                    writer.append(entry)
                    continue
                day, blob = entry.encode()
                if day not in handles:
                    handles[day] = log_path(folder, day).open("ab")
                handles[day].write(blob)
    finally:
        if writer is not None:
            writer.close()
        for handle in handles.values():
            handle.close()
    files = sorted(folder.iterdir())
    last = START + (request - 1) * step
    return {
        "records": n,
        "requests": request,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "writer": "InferenceLog" if writer is not None else "InferenceEntry.encode() written directly",
        "window_end": (last + dt.timedelta(seconds=1)).isoformat(),
        "seconds": time.perf_counter() - started,
        "positive_share": positives / n,
    }


# --- the measured children ---------------------------------------------------------------------------------


class Steps:
    """Wall time of each step, and the peak and current RSS after it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = call()
        self.rows.append(
            {"step": name, "seconds": time.perf_counter() - started, "peak_mb": peak_mb(), "rss_mb": rss_mb()}
        )
        return value

    def seconds(self, names: set[str]) -> float:
        return float(sum(r["seconds"] for r in self.rows if r["step"] in names))


def peak_mb() -> float:
    """The process's peak RSS so far (VmHWM). Not `ru_maxrss`: at exec, Linux folds the peak of the memory the
    process had before exec into it, which for a subprocess is its parent's (here the log generator's)."""
    return status_mb("VmHWM")


def rss_mb() -> float:
    return status_mb("VmRSS")


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return math.nan


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_flowship(workdir: Path, size: int, setup: dict[str, Any], steps: Steps) -> dict[str, Any]:
    from flowship.adapters import drift as reports
    from flowship.config import MonitoringConfig
    from flowship.monitoring.checks import current_frame, judge_version, sample_rows
    from flowship.monitoring.reference import load_reference
    from flowship.monitoring.window import Window, read_log_window

    cfg = MonitoringConfig.model_validate(setup["monitoring"])
    model = spec()
    schema = {**dict.fromkeys(NUMERIC, "numeric"), **dict.fromkeys(CATEGORICAL, "categorical")}
    window = Window(None, dt.datetime.fromisoformat(setup["log"]["window_end"]), True)
    out = workdir / f"reports-{size}" / "flowship"

    reference = steps.run("load_reference", lambda: load_reference(workdir / "reference", setup["reference_key"]))
    assert reference is not None, "the reference is not in the work folder"
    log = steps.run("read_log_window", lambda: read_log_window(workdir / f"log-{size}", window, schema))
    # The flow checks each model version on its own group of the window's records (here there is one).
    group = steps.run("group_by_version", lambda: next(iter(log.records.groupby("model_version", sort=True)))[1])
    current, absent, unexpected = steps.run("current_frame", lambda: current_frame(group, model))
    sample = steps.run("sample_rows", lambda: sample_rows(current, cfg.sample_rows, SEED))
    drift = steps.run(
        "drift_report",
        lambda: reports.drift_report(
            reference.frame,
            sample,
            NUMERIC,
            [*CATEGORICAL, "prediction"],
            cfg.drift.num_method,
            cfg.drift.cat_method,
            cfg.drift.threshold,
            out / "drift.html",
        ),
    )
    quality = steps.run(
        "data_quality_report",
        lambda: reports.data_quality_report(
            current, NUMERIC, CATEGORICAL, reference.ranges, reference.categories, out / "data-quality.html"
        ),
    )
    check = steps.run(
        "judge_version", lambda: judge_version(MODEL_VERSION, len(group), drift, absent, unexpected, None, cfg)
    )
    return {
        "records": len(log.records),
        "skipped_lines": log.skipped,
        "sampled": len(sample),
        "verdict": check.verdict,
        "drift_scores": {d.column: d.score for d in drift},
        "drifted": [d.column for d in drift if d.drifted],
        "out_of_range": {q.column: q.out_of_range for q in quality if q.out_of_range},
        "unseen": {q.column: q.unseen for q in quality if q.unseen},
        "read_steps": ["load_reference", "read_log_window"],
    }


def child_evidently(workdir: Path, size: int, setup: dict[str, Any], steps: Steps) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, OutListValueCount, OutRangeValueCount
    from evidently.presets import DataDriftPreset

    drift_cfg = setup["monitoring"]["drift"]
    columns = [*NUMERIC, *CATEGORICAL, "prediction"]
    out = workdir / f"reports-{size}" / "evidently"

    def read_log() -> Any:
        files = sorted((workdir / f"log-{size}").glob("inference-*.jsonl"))
        records = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
        features = pd.DataFrame(records["features"].tolist())
        return features.assign(prediction=records["prediction"])

    current = steps.run("read_json", read_log)
    train = steps.run("read_training_frame", lambda: pd.read_parquet(workdir / "train.parquet"))

    def report() -> Any:
        metrics: list[Any] = [
            DataDriftPreset(
                columns=columns,
                num_method=drift_cfg["num_method"],
                cat_method=drift_cfg["cat_method"],
                threshold=drift_cfg["threshold"],
            )
        ]
        metrics += [MissingValueCount(column=c) for c in [*NUMERIC, *CATEGORICAL]]
        metrics += [OutRangeValueCount(column=c, left=train[c].min(), right=train[c].max()) for c in NUMERIC]
        metrics += [OutListValueCount(column=c, values=sorted(train[c].dropna().unique())) for c in CATEGORICAL]
        definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=[*CATEGORICAL, "prediction"])
        return Report(metrics).run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(train[columns], data_definition=definition),
        )

    snapshot = steps.run("report_run", report)
    out.mkdir(parents=True, exist_ok=True)
    steps.run("save_html", lambda: snapshot.save_html(str(out / "report.html")))
    values = steps.run("snapshot_dict", lambda: snapshot.dict()["metrics"])
    scores = {m["config"]["column"]: float(m["value"]) for m in values if m["config"]["type"].endswith(":ValueDrift")}
    threshold = drift_cfg["threshold"]
    return {
        "records": len(current),
        "sampled": len(current),
        "drift_scores": scores,
        "drifted": [c for c, s in scores.items() if s > threshold],
        "read_steps": ["read_json", "read_training_frame"],
    }


def child_main(variant: str, workdir: Path, size: int, out: Path) -> None:
    """One measurement: imports, then the variant's steps; figures as JSON in `out`."""
    setup = json.loads((workdir / "setup.json").read_text())
    setup["log"] = json.loads((workdir / f"log-{size}.json").read_text())
    warnings.simplefilter("ignore")  # Evidently and pandas warn at length; the figures are what matter here
    started = time.perf_counter()
    import pandas  # noqa: F401
    import pyarrow.json  # noqa: F401
    from evidently import Report  # noqa: F401
    from evidently.metrics import ValueDrift  # noqa: F401

    if variant == "flowship":
        from flowship.adapters import drift  # noqa: F401
        from flowship.monitoring import checks, reference, window  # noqa: F401
    else:
        from evidently.presets import DataDriftPreset  # noqa: F401
    imports = time.perf_counter() - started
    after_imports = {"peak_mb": peak_mb(), "rss_mb": rss_mb()}
    steps = Steps()
    began, cpu = time.perf_counter(), time.process_time()
    found = (child_flowship if variant == "flowship" else child_evidently)(workdir, size, setup, steps)
    total = time.perf_counter() - began
    read = steps.seconds(set(found.pop("read_steps")))
    figures = {
        "variant": variant,
        "size": size,
        "imports_seconds": imports,
        "read_seconds": read,
        "check_seconds": total - read,
        "total_seconds": total,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": peak_mb(),
        "ru_maxrss_mb": maxrss_mb(),  # for comparison: includes the parent's peak (see peak_mb)
        "after_imports": after_imports,
        "steps": steps.rows,
        **found,
    }
    out.write_text(json.dumps(figures, indent=2))


# --- the parent: sizes, children, report ---------------------------------------------------------------


def child_command(variant: str, workdir: Path, size: int, out: Path) -> list[str]:
    script = Path(__file__).resolve()
    return [str(PYTHON), str(script), "--child", variant, "--workdir", str(workdir), "--size", str(size)] + [
        "--out",
        str(out),
    ]


def measure(variant: str, workdir: Path, size: int) -> dict[str, Any]:
    out = workdir / f"{variant}-{size}.json"
    command = child_command(variant, workdir, size, out)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    log = workdir / f"{variant}-{size}.log"
    with log.open("w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT)
    process = time.perf_counter() - started
    if done.returncode != 0:
        lines = log.read_text().splitlines()
        return {
            "variant": variant,
            "size": size,
            "failed": f"exit code {done.returncode}: {lines[-1] if lines else ''}"[:300],
            "command": shlex.join(command),
        }
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["process_seconds"] = process
    figures["load_1min"] = {"start": load, "end": os.getloadavg()[0]}
    figures["command"] = shlex.join(command)
    return figures


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The slope of log(value) over log(N): 1 is linear growth, below 1 slower."""
    points = [(math.log(n), math.log(v)) for n, v in zip(sizes, values, strict=True) if v > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def growth(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for variant in VARIANTS:
        done = sorted((r for r in runs if r["variant"] == variant and "failed" not in r), key=lambda r: r["size"])
        sizes = [r["size"] for r in done]
        out[variant] = {
            "time_exponent": exponent(sizes, [r["total_seconds"] for r in done]),
            # memory above what the imports alone take: what the records cost
            "memory_exponent": exponent(sizes, [r["peak_rss_mb"] - r["after_imports"]["rss_mb"] for r in done]),
        }
    return out


def aim(runs: list[dict[str, Any]], grown: dict[str, dict[str, float | None]]) -> list[str]:
    at = next((r for r in runs if r["variant"] == "flowship" and r["size"] == AIM_N and "failed" not in r), None)
    if at is None:
        return [f"aim: not judged ({AIM_N:,} records were not measured)"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    seconds, mb = at["total_seconds"], at["peak_rss_mb"]
    time_exp = grown["flowship"]["time_exponent"]
    mem_exp = grown["flowship"]["memory_exponent"]
    linear = time_exp is not None and time_exp <= 1.05 and (mem_exp is None or mem_exp <= 1.05)
    return [
        f"aim at {AIM_N:,} records (flowship): {seconds:.1f} s <= {AIM_SECONDS:.0f} s: "
        f"{verdict(seconds <= AIM_SECONDS)}; peak {mb:.0f} MB <= {AIM_MB:.0f} MB: {verdict(mb <= AIM_MB)}; "
        f"growth no faster than linear: {verdict(linear)}",
    ]


def growth_lines(runs: list[dict[str, Any]], grown: dict[str, dict[str, float | None]]) -> list[str]:
    """Per variant: the growth exponents, and what each further 100k records cost (smallest to largest N)."""
    lines = ["growth (slope of log figure over log N: 1 = linear, below 1 = fixed costs still dominate):"]
    for variant, label in VARIANTS.items():
        done = sorted((r for r in runs if r["variant"] == variant and "failed" not in r), key=lambda r: r["size"])
        shown = (
            f"  {label:<18}  time {fmt_exp(grown[variant]['time_exponent'])}, "
            f"memory above imports {fmt_exp(grown[variant]['memory_exponent'])}"
        )
        if len(done) >= 2 and done[-1]["size"] > done[0]["size"]:
            first, last = done[0], done[-1]
            per = (last["size"] - first["size"]) / 100_000
            shown += (
                f"; each further 100k records: {(last['total_seconds'] - first['total_seconds']) / per:+.2f} s, "
                f"{(last['peak_rss_mb'] - first['peak_rss_mb']) / per:+.0f} MB "
                f"({first['size']:,} to {last['size']:,})"
            )
        lines.append(shown)
    return lines


def fmt_exp(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(runs: list[dict[str, Any]]) -> list[str]:
    header = (
        f"  {'N':>9}  {'variant':<18}  {'read s':>7}  {'check s':>7}  {'total s':>7}  {'imports s':>9}  "
        f"{'process s':>9}  {'peak RSS MB':>11}  {'s / 100k':>8}  {'load':>9}"
    )
    lines = [header]
    for r in runs:
        label = VARIANTS[r["variant"]]
        if "failed" in r:
            lines.append(f"  {r['size']:>9,}  {label:<18}  FAILED: {r['failed']}")
            continue
        lines.append(
            f"  {r['size']:>9,}  {label:<18}  {r['read_seconds']:7.1f}  {r['check_seconds']:7.1f}  "
            f"{r['total_seconds']:7.1f}  {r['imports_seconds']:9.1f}  {r['process_seconds']:9.1f}  "
            f"{r['peak_rss_mb']:11.0f}  {r['total_seconds'] / r['size'] * 100_000:8.2f}  "
            f"{r['load_1min']['start']:4.1f}>{r['load_1min']['end']:<4.1f}"
        )
    return lines


def steps_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in runs:
        if "failed" in r:
            continue
        shown = ", ".join(f"{s['step']} {s['seconds']:.1f} s ({s['peak_mb']:.0f} MB)" for s in r["steps"])
        after = r["after_imports"]["rss_mb"]
        lines.append(f"  {r['size']:>9,} {r['variant']:<9} imports {after:.0f} MB; {shown}")
    return lines


def agreement(runs: list[dict[str, Any]]) -> list[str]:
    """flowship's scores (sample vs reference sample) beside Evidently's (full frames), per size."""
    lines = []
    for size in sorted({r["size"] for r in runs}):
        pair = {r["variant"]: r for r in runs if r["size"] == size and "failed" not in r}
        if len(pair) < 2:
            continue
        fl, ev = pair["flowship"]["drift_scores"], pair["evidently"]["drift_scores"]
        common = [c for c in fl if c in ev]
        worst = max(common, key=lambda c: abs(fl[c] - ev[c]))
        lines.append(
            f"  {size:>9,}: drifted flowship {pair['flowship']['drifted']}, evidently {pair['evidently']['drifted']}; "
            f"largest score difference {abs(fl[worst] - ev[worst]):.4f} ({worst}: {fl[worst]:.4f} vs {ev[worst]:.4f})"
        )
    return lines


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    memory = next(
        (int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line),
        None,
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: metadata.version(p) for p in ("pandas", "pyarrow", "numpy", "evidently", "scikit-learn")},
    }


def uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True)
    return done.stdout.strip()


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "one monitoring check (one model version, 15 features) over N logged records",
        "",
        *table(result["runs"]),
        "",
        "read = log (+ reference or training frame); check = the rest; total = read + check, imports excluded;",
        "process = the whole child, interpreter start and imports included; peak RSS = the child's VmHWM;",
        "load = 1-min load average at the start > end of the child.",
        "",
        "steps (seconds, peak RSS after the step):",
        *steps_table(result["runs"]),
        "",
        "drift found (flowship: a sample of monitoring.sample_rows records against the reference's rows;",
        "Evidently: every record against the full training frame):",
        *agreement(result["runs"]),
        "",
        *growth_lines(result["runs"], result["growth"]),
        *aim(result["runs"], result["growth"]),
        "",
        "setup (not measured): training frame {train_rows:,} rows, model fitted in {fit_seconds:.1f} s, "
        "reference of {reference_rows:,} rows built in {build_reference_seconds:.1f} s".format(**result["setup"]),
        *(
            f"  log of {g['records']:,} records: {g['files']} files, {g['bytes'] / 2**20:.0f} MiB, "
            f"written in {g['seconds']:.1f} s ({g['writer']})"
            for g in result["logs"].values()
        ),
        "",
        f"command: {result['command']}",
        "children (one at a time; the work folder is removed at the end unless --keep):",
        *(f"  {r['command']}" for r in result["runs"]),
        "",
        "machine: {cpu_count} CPUs ({cpus_usable} usable), {memory_mb} MB, Python {python}, {platform}".format(**m),
        "         " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"uptime before: {result['uptime']['before']}",
        f"uptime after:  {result['uptime']['after']}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="comma-separated record counts")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, reference, reports)")
    parser.add_argument(
        "--fast-write",
        action="store_true",
        help="write the log's lines (InferenceEntry.encode()) straight to the files instead of through InferenceLog",
    )
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.workdir is None or args.size is None or args.out is None:
            parser.error("--child needs --workdir, --size and --out")
        child_main(args.child, args.workdir, args.size, args.out)
        return
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes: give at least one positive record count")

    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    before = uptime()
    print(f"uptime: {before}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="flowship-monitoring-scale-"))
    runs: list[dict[str, Any]] = []
    logs: dict[str, dict[str, Any]] = {}
    try:
        model, setup = prepare_run(workdir)
        print(
            f"setup: model fitted in {setup['fit_seconds']:.1f} s, reference built in "
            f"{setup['build_reference_seconds']:.1f} s ({workdir})",
            flush=True,
        )
        for size in sizes:
            logs[str(size)] = write_log(workdir / f"log-{size}", model, size, args.fast_write)
            (workdir / f"log-{size}.json").write_text(json.dumps(logs[str(size)]))
            g = logs[str(size)]
            print(f"{size:,} records: log written in {g['seconds']:.1f} s ({g['bytes'] / 2**20:.0f} MiB)", flush=True)
            for variant in VARIANTS:
                runs.append(measure(variant, workdir, size))
                r = runs[-1]
                shown = r.get("failed") or f"{r['total_seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MB"
                print(f"  {VARIANTS[variant]}: {shown}", flush=True)
            if not args.keep:
                shutil.rmtree(workdir / f"log-{size}", ignore_errors=True)
                shutil.rmtree(workdir / f"reports-{size}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "workdir": str(workdir) if args.keep else f"{workdir} (removed)",
        "sizes": sizes,
        "setup": setup,
        "logs": logs,
        "runs": runs,
        "growth": growth(runs),
        "uptime": {"before": before, "after": uptime()},
        "machine": machine(),
    }
    print()
    print(report(result))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
