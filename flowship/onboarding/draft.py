"""A complete, commented params.yaml drafted from a profile of the data: features and their validation rules, a split
from the data's own dates (or a random one), a gate a little below what a quick baseline scores, the baseline's most
important features as monitoring's key features, free ports. Checked as `flowship train` would read it before it is
written."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from flowship.config import LOWER_IS_BETTER, TaskType, missing_tracked_params, parse_params
from flowship.errors import FlowshipError, OnboardingError
from flowship.files import atomic_write
from flowship.onboarding.profile import Feature, Profile, associations, profile
from flowship.pipeline.ingest import read_table
from flowship.release.runtime import port_taken

RAW = Path("data") / "raw"
PRIMARY: dict[TaskType, str] = {"classification": "roc_auc", "regression": "r2"}
GATE_MARGIN = 0.05  # the gate sits this far below the quick baseline's holdout score
HYPERPARAMS = {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "early_stopping": False}
BASELINE_ROWS = 50_000  # the baseline trains on at most this many rows
HOLDOUT, PRODUCTION = 0.2, 0.2
KEY_FEATURES = 3
# A first latency budget for staging's single-record requests, that a busy laptop meets too; yours goes here.
LATENCY_P95_MS = 250


@dataclass
class Draft:
    """What `flowship init` decided, for the params file and for the person reading its output."""

    params_path: Path
    source: Path  # relative to the project root
    copied_from: Path | None
    profile: Profile
    raw: dict[str, Any]
    baseline: dict[str, float] = field(default_factory=dict)
    associated: list[tuple[str, float]] = field(default_factory=list)
    key_features: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return PRIMARY[self.profile.task]

    @property
    def associated_text(self) -> str:
        """The features most associated with the target, with their mutual information: `a (0.99), b (0.40)`."""
        return ", ".join(f"{name} ({score:.2f})" for name, score in self.associated)


def init_project(
    data: Path,
    target: str,
    root: Path,
    time_column: str | None = None,
    task: TaskType | None = None,
    force: bool = False,
    time_format: str | None = None,
) -> Draft:
    """Profile `data`, draft params.yaml in `root` and write it (with the data copied under data/raw/ if it is not
    there yet). Nothing is written when anything is wrong; an existing params.yaml is kept unless `force`."""
    params_path = root / "params.yaml"
    if params_path.exists() and not force:
        raise OnboardingError(f"{params_path} exists: keep it, or run again with --force to replace it")
    if not (root / "dvc.yaml").exists():
        raise OnboardingError(f"no dvc.yaml in {root}: run init in a flowship project (a clone of the repository)")
    if time_format is not None and (time_column is None or "%" not in time_format):
        raise OnboardingError(
            f"--time-format {time_format!r}: the strftime layout of --time-column's values, e.g. '%d/%m/%Y'"
        )
    frame = read_table(data)
    prof = profile(frame, target, time_column, task, time_format)
    source, copy_from = _placed(data, root)
    draft = Draft(params_path, source, copy_from, prof, _params(prof, data, source))
    made = [p for p in reversed((root / source).parents) if p.is_relative_to(root) and not p.exists()]
    if copy_from is not None:
        (root / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copy_from, root / source)
    try:
        _fit_baseline(draft, root, frame)
        text = render(draft)
        _check(text, root)
    except BaseException:  # nothing written: the copy and the folders made for it go again
        if copy_from is not None:
            (root / source).unlink(missing_ok=True)
        for folder in reversed(made):
            folder.rmdir()
        raise
    atomic_write(params_path, text)
    return draft


def _placed(data: Path, root: Path) -> tuple[Path, Path | None]:
    """Where the data lives in the project (under data/raw/, so DVC versions it) and what to copy there, if
    anything."""
    raw = (root / RAW).resolve()
    resolved = data.resolve()
    if resolved.is_relative_to(raw):
        return resolved.relative_to(root.resolve()), None
    target = raw / data.name
    if target.exists() and target.read_bytes() != resolved.read_bytes():
        raise OnboardingError(f"{RAW / data.name} exists and differs from {data}: rename one of them")
    return RAW / data.name, (None if target.exists() else resolved)


def _name(data: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.name.split(".")[0]).strip("-._")
    return name or "model"


def _params(prof: Profile, data: Path, source: Path) -> dict[str, Any]:
    labelled = prof.rows
    split = _split(prof)
    first_part = _first_replayed(prof, split)
    return {
        "project": {"name": _name(data), "seed": 42},
        "data": {
            "source": str(source),
            "format": "auto",
            "join": None,
            "target": {"column": prof.target, "derive_from": None, "above": None},
            "task": prof.task,
            "time_column": prof.time_column,
            "time_format": prof.time_format,
            "features": {"numeric": prof.names("numeric"), "categorical": prof.names("categorical")},
        },
        "validate": {
            "min_rows": max(10, min(1000, labelled // 4)),
            "defaults": {"max_null_fraction": 0.5},
            "columns": {f.name: _rule(f) for f in prof.features},
        },
        "split": split,
        "train": {
            "estimator": "hist_gradient_boosting",
            "params": dict(HYPERPARAMS),
            "search": {
                "enabled": False,
                "n_trials": 6,
                "metric": None,
                "validation_fraction": 0.2,
                "max_workers": 2,
                "space": {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31, 63]},
            },
        },
        "evaluate": {"golden_size": max(1, min(50, int(labelled * HOLDOUT * 0.5)))},
        "gate": {"primary_metric": PRIMARY[prof.task], "thresholds": {}, "max_regression": {PRIMARY[prof.task]: 0.01}},
        "release": {
            **dict(zip(("production_port", "staging_port"), _free_ports(), strict=True)),
            "latency_requests": 200,
            "latency_p95_ms": LATENCY_P95_MS,
            "golden_tolerance": 1.0e-6,
            "max_batch": 1000,
            "health_timeout_s": 60,
        },
        "monitoring": {
            "min_records": max(10, min(500, first_part // 2)),
            "reference_rows": 50000,
            "sample_rows": 100000,
            "drift": {
                "num_method": "wasserstein",
                "cat_method": "jensenshannon",
                "threshold": 0.1,
                "share": 0.3,
                "key_features": [],
            },
            "quality": {"metric": None, "max_drop": 0.05, "min_labels": max(10, min(200, first_part // 2))},
            "alerts": {"webhook": None, "cooldown_hours": 24},
            "service": {
                "max_error_ratio": 0.01,
                "p99_ms": 1000,
                "min_requests": 100,
                "error_budget": {"target": 0.995, "days": 7},
            },
            "retrain": {"enabled": False, "deploy": False},
        },
        "compute": {"engine": "threads", "dask": {"address": None, "workers": 2, "threads_per_worker": 1}},
    }


def _rule(feature: Feature) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if feature.kind == "numeric" and feature.low is not None and feature.high is not None:
        rule["min"], rule["max"] = _range(feature.low, feature.high)
    if feature.categories is not None:
        rule["categories"] = list(feature.categories)
    rule["max_null_fraction"] = min(1.0, math.ceil((feature.null_share + 0.05) * 100) / 100)
    return rule


def _range(low: float, high: float) -> tuple[float | int, float | int]:
    """The observed range widened by a tenth of its span on each side (not below zero for a column that never is),
    rounded outwards to a step of the margin's own size."""
    span = high - low
    margin = span * 0.1 if span > 0 else max(abs(high) * 0.1, 1.0)
    step = 10.0 ** math.floor(math.log10(margin))
    lo = math.floor((low - margin) / step) * step
    if low >= 0 > lo:
        lo = 0.0
    hi = math.ceil((high + margin) / step) * step
    return _plain(lo), _plain(hi)


def _plain(value: float) -> float | int:
    """Six significant digits; a whole number without its `.0`."""
    number = float(f"{value:.6g}")
    return int(number) if number.is_integer() and abs(number) < 1e15 else number


def _split(prof: Profile) -> dict[str, Any]:
    if prof.time_column is None:
        return {"method": "random", "holdout_fraction": HOLDOUT, "production_fraction": PRODUCTION}
    days = pd.DatetimeIndex(prof.times).tz_convert("UTC").tz_localize(None).normalize()
    first, last = days[0], days[-1]
    if first == last:
        raise OnboardingError(
            f"every time in {prof.time_column!r} falls on {first:%Y-%m-%d}: a time split needs several days "
            "(leave --time-column out for a random split)"
        )
    cut = days[int(len(days) * (1 - PRODUCTION))]
    cut = min(max(cut, first + pd.Timedelta(days=1)), last)
    return {
        "method": "time",
        "train_start": f"{first:%Y-%m-%d}",
        "train_end": f"{cut:%Y-%m-%d}",
        "holdout_fraction": HOLDOUT,
        "production_start": f"{cut:%Y-%m-%d}",
        "production_end": f"{last + pd.Timedelta(days=1):%Y-%m-%d}",
    }


def _first_replayed(prof: Profile, split: dict[str, Any]) -> int:
    """The rows `flowship replay` sends first: the production share's first month (by time), else all of it."""
    if split["method"] != "time":
        return int(prof.rows * PRODUCTION)
    times = pd.DatetimeIndex(prof.times).tz_convert("UTC").tz_localize(None)
    start = pd.Timestamp(split["production_start"])
    return int(((times >= start) & (times < start.to_period("M").end_time)).sum())


def _free_ports(start: int = 8000) -> tuple[int, int]:
    port = start
    while port_taken(port) or port_taken(port + 1):
        port += 2
    return port, port + 1


def _fit_baseline(draft: Draft, root: Path, frame: pd.DataFrame) -> None:
    """Train the drafted model as the pipeline will (on a sample of a big training part), and set the gate a little
    below its holdout score; its most important features become monitoring's key features."""
    from sklearn.inspection import permutation_importance
    from threadpoolctl import threadpool_limits

    from flowship.pipeline import evaluation, training
    from flowship.pipeline.ingest import ingest
    from flowship.pipeline.prepare import split

    params = parse_params(draft.raw)
    try:
        splits = split(ingest(params.data, root).frame, params)
    except FlowshipError as exc:
        raise OnboardingError(f"the drafted split does not work on this data: {exc}") from None
    train = splits.train
    if len(train) > BASELINE_ROWS:  # quick on big data: a sample (the score barely moves); else the very model
        train = train.sample(BASELINE_ROWS, random_state=params.project.seed)
    model = training.fit(train, params, dict(HYPERPARAMS))
    draft.baseline = evaluation.compute_metrics(model, splits.holdout, params)
    score = draft.baseline[draft.primary]
    lower = draft.primary in LOWER_IS_BETTER
    threshold = score + GATE_MARGIN if lower else score - GATE_MARGIN
    draft.raw["gate"]["thresholds"] = {draft.primary: round(threshold, 2)}
    x, y = training.split_xy(splits.holdout.head(2000), params)
    scoring = None  # regression: the estimator's own score (R²)
    if params.data.task == "classification":
        scoring = "roc_auc" if y.nunique() == 2 else "roc_auc_ovr"
    try:
        with threadpool_limits(limits=1, user_api="openmp"):  # as the evaluate stage: too few rows to share out
            importance = permutation_importance(model, x, y, n_repeats=3, random_state=0, scoring=scoring)
        ranked = sorted(zip(x.columns, importance.importances_mean, strict=True), key=lambda p: -p[1])
        draft.key_features = [str(n) for n, _ in ranked[:KEY_FEATURES]]
    except ValueError:  # a holdout the scorer cannot use (one class in it): the first features then
        draft.key_features = list(x.columns[:KEY_FEATURES])
    draft.raw["monitoring"]["drift"]["key_features"] = draft.key_features
    draft.associated = associations(frame, draft.profile)


def _check(text: str, root: Path) -> None:
    raw = yaml.safe_load(text)
    parse_params(raw)  # a ConfigError here is a bug of init: nothing is written
    missing = missing_tracked_params(raw, root / "dvc.yaml")
    if missing:
        raise OnboardingError("the drafted params leave out keys dvc.yaml tracks: " + "; ".join(missing))


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("\n...")


def render(draft: Draft) -> str:
    """The params as YAML, with what was decided and why in comments."""
    p, prof = draft.raw, draft.profile
    d, v, s, t, g, r, m = (p[k] for k in ("data", "validate", "split", "train", "gate", "release", "monitoring"))
    out = [
        f"# flowship pipeline parameters, drafted by `flowship init` from {draft.source}",
        f"# ({prof.rows} rows with a target value). One section per stage (see dvc.yaml); every key dvc.yaml tracks is",
        "# written out. Edit freely.",
        "",
        "project:",
        f"  name: {_flow(p['project']['name'])}  # registered model name and MLflow experiment",
        "  seed: 42",
        "",
        "data:",
        f"  source: {_flow(d['source'])}",
        "  format: auto                 # auto | csv | parquet",
        "  join: null                   # or {source, by: [keys], how: left|inner}: a second table merged on keys",
        "  target:",
        f"    column: {_flow(prof.target)}",
        "    derive_from: null          # or a numeric column, with above: a binary target from a threshold",
        "    above: null",
        f"  task: {prof.task}  # {prof.task_reason}; classification | regression",
        f"  time_column: {_flow(prof.time_column)}",
        f"  time_format: {_flow(prof.time_format)}  # the time column's layout when not ISO 8601, e.g. '%d/%m/%Y'",
        "  features:",
        f"    numeric: {_flow(d['features']['numeric'])}",
        f"    categorical: {_flow(d['features']['categorical'])}",
    ]
    for gone in prof.left_out:
        out.append(f"    # left out: {gone.name}: {gone.reason}")
    if draft.associated:
        out.append(f"    # most associated with the target (mutual information): {draft.associated_text}.")
        out.append("    # If any of these is known only after the target, it leaks the answer: remove it.")
    out += [
        "",
        "validate:                      # rules from the data: its ranges widened a little, its categories, its nulls",
        f"  min_rows: {v['min_rows']}",
        "  defaults:                    # for every feature without a value of its own below",
        "    max_null_fraction: 0.5",
        "  columns:",
    ]
    out += [f"    {_flow(name)}: {_flow(rule)}" for name, rule in v["columns"].items()]
    out += ["", "split:"]
    if s["method"] == "time":
        out += [
            f"  method: time                 # by {prof.time_column}: the data's own dates",
            f"  train_start: {_flow(s['train_start'])}     # training window (its last part, by time, is the holdout)",
            f"  train_end: {_flow(s['train_end'])}",
            f"  holdout_fraction: {s['holdout_fraction']}",
            f"  production_start: {_flow(s['production_start'])} # kept aside and replayed as production traffic",
            f"  production_end: {_flow(s['production_end'])}",
        ]
    else:
        out += [
            "  method: random               # no time column: shuffled (seeded)",
            f"  holdout_fraction: {s['holdout_fraction']}",
            f"  production_fraction: {s['production_fraction']}     # kept aside and replayed as production traffic",
        ]
    search = t["search"]
    out += [
        "",
        "train:",
        "  estimator: hist_gradient_boosting  # handles missing values and categories natively",
        f"  params: {_flow(t['params'])}",
        "  search:",
        "    enabled: false             # true: try the space below and keep the best on a validation part",
        f"    n_trials: {search['n_trials']}",
        "    metric: null               # default: gate.primary_metric",
        f"    validation_fraction: {search['validation_fraction']}",
        f"    max_workers: {search['max_workers']}",
        f"    space: {_flow(search['space'])}",
        "",
        "evaluate:",
        f"  golden_size: {p['evaluate']['golden_size']}",
        "",
        "gate:",
        f"  primary_metric: {g['primary_metric']}",
        f"  thresholds: {_flow(g['thresholds'])}  # a quick baseline scored {draft.baseline[draft.primary]:.4f}",
        f"  max_regression: {_flow(g['max_regression'])}  # how much worse than the champion the candidate may be",
        "",
        "release:                       # staging checks and serving, on 127.0.0.1 (ports free when drafted)",
        f"  production_port: {r['production_port']}",
        f"  staging_port: {r['staging_port']}",
        f"  latency_requests: {r['latency_requests']}",
        f"  latency_p95_ms: {r['latency_p95_ms']}          # a first budget a busy laptop meets: set your own",
        f"  golden_tolerance: {r['golden_tolerance']}",
        f"  max_batch: {r['max_batch']}",
        f"  health_timeout_s: {r['health_timeout_s']}",
        "",
        "monitoring:",
        f"  min_records: {m['min_records']}  # a window with fewer gets no verdict (half what replay sends first)",
        f"  reference_rows: {m['reference_rows']}",
        f"  sample_rows: {m['sample_rows']}",
        "  drift:",
        "    num_method: wasserstein",
        "    cat_method: jensenshannon",
        "    threshold: 0.1",
        "    share: 0.3",
        f"    key_features: {_flow(m['drift']['key_features'])}  # the quick baseline's most important features",
        "  quality:",
        "    metric: null",
        "    max_drop: 0.05",
        f"    min_labels: {m['quality']['min_labels']}",
        "  alerts:",
        "    webhook: null              # a URL to POST each alert to; logs/alerts.jsonl always gets it",
        "    cooldown_hours: 24",
        "  service:                     # the gateway's access log (docs/runbook.md)",
        f"    max_error_ratio: {m['service']['max_error_ratio']}      # alert above this share of server errors",
        f"    p99_ms: {m['service']['p99_ms']}               # alert when the gateway's p99 latency is above this",
        f"    min_requests: {m['service']['min_requests']}          # fewer requests in a window: no verdict",
        f"    error_budget: {_flow(m['service']['error_budget'])}  # this share good over the last days",
        "    # cost: {vcpu_hour: 0.04, gb_hour: 0.005, max_per_1000: 0.05}  # your prices: cost per 1,000 predictions",
        "  retrain:",
        "    enabled: false",
        "    deploy: false",
        "",
        "guardrails:                    # each record and answer checked against the training data (README: Safety)",
        "  out_of_range: {action: flag, bounds: observed, margin: 0.1}  # flag | refuse | fallback | off",
        "  unseen_category: {action: flag}",
        "  missing: {action: flag, max_share: 0.5}",
        "  low_confidence: {action: 'off', min_confidence: 0.6}  # classification: off | flag | fallback",
        "  output_range: {action: flag, margin: 0.1}  # regression: off | flag | clip",
        "  fallback: {kind: abstain, value: null}  # abstain | prior | constant",
        "",
        "compute:",
        "  engine: threads              # threads | dask (needs a Prefect server)",
        "  dask: {address: null, workers: 2, threads_per_worker: 1}",
        "",
    ]
    return "\n".join(out)
