"""Stage bodies shared by `dvc repro` (`python -m flowship.pipeline.stages NAME`) and the Prefect tasks.

Each reads its inputs from the layout, calls the library, and writes its outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from flowship import estimators
from flowship.config import Params, load_params
from flowship.errors import DataValidationError, FlowshipError
from flowship.paths import STAGES, Layout
from flowship.pipeline import evaluation, search, training
from flowship.pipeline.ingest import ingest
from flowship.pipeline.prepare import split
from flowship.pipeline.validation import validate

log = logging.getLogger(__name__)


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def run_ingest(params: Params, layout: Layout) -> dict[str, Any]:
    frame = ingest(params.data, layout.root)
    _write_parquet(frame, layout.ingested)
    return {"rows": len(frame), "columns": len(frame.columns)}


def run_validate(params: Params, layout: Layout) -> dict[str, Any]:
    frame = pd.read_parquet(layout.ingested)
    try:
        report = validate(frame, params)
    except DataValidationError as exc:
        # The report stays on disk for people; the stage still fails.
        _write_json(layout.validation_report, exc.report)
        raise
    _write_json(layout.validation_report, report)
    return report


def run_prepare(params: Params, layout: Layout) -> dict[str, Any]:
    report = json.loads(layout.validation_report.read_text())
    if not report.get("valid"):
        raise DataValidationError(report)
    splits = split(pd.read_parquet(layout.ingested), params)
    _write_parquet(splits.train, layout.train_split)
    _write_parquet(splits.holdout, layout.holdout_split)
    _write_parquet(splits.production, layout.production_split)
    return {"train": len(splits.train), "holdout": len(splits.holdout), "production": len(splits.production)}


def score_trials(params: Params, train: pd.DataFrame, executor: Executor | None = None) -> list[search.TrialResult]:
    trials = estimators.search_trials(params)
    if not trials:
        return []
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=params.train.search.max_workers)
    try:
        futures = [pool.submit(search.score_trial, i, train, params, t) for i, t in enumerate(trials)]
        return [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown()


def run_train(params: Params, layout: Layout, trial_results: list[search.TrialResult] | None = None) -> dict[str, Any]:
    """Fit the final model; with a search, on the best trial's hyperparameters."""
    train = pd.read_parquet(layout.train_split)
    if trial_results is None:
        trial_results = score_trials(params, train)
    hyperparams = dict(params.train.params)
    best = None
    if trial_results:
        best = search.best_trial(trial_results)
        hyperparams = best.params
    model = training.fit(train, params, hyperparams)
    layout.model_dir.mkdir(parents=True, exist_ok=True)
    tmp = layout.model_file.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(model, fh, protocol=5)
    tmp.replace(layout.model_file)
    summary = {
        "estimator": params.train.estimator,
        "hyperparams": hyperparams,
        "train_rows": len(train),
        "search": {
            "metric": params.search_metric,
            "best_index": best.index if best else None,
            "trials": [r.as_dict() for r in sorted(trial_results, key=lambda r: r.index)],
        },
    }
    _write_json(layout.search_results, summary)
    return summary


def load_candidate(layout: Layout) -> Pipeline:
    with layout.model_file.open("rb") as fh:
        model: Pipeline = pickle.load(fh)  # noqa: S301 - our own artifact, written by run_train
    return model


def run_evaluate(params: Params, layout: Layout) -> dict[str, float]:
    model = load_candidate(layout)
    holdout = pd.read_parquet(layout.holdout_split)
    metrics = evaluation.compute_metrics(model, holdout, params)
    layout.evaluation_dir.mkdir(parents=True, exist_ok=True)
    evaluation.write_plots(model, holdout, params, layout.evaluation_dir)
    _write_json(layout.golden_file, evaluation.golden_set(model, holdout, params))
    _write_json(layout.metrics_file, metrics)
    return metrics


RUNNERS: dict[str, Callable[[Params, Layout], Any]] = {
    "ingest": run_ingest,
    "validate": run_validate,
    "prepare": run_prepare,
    "train": run_train,
    "evaluate": run_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowship.pipeline.stages", description="Run one pipeline stage.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        RUNNERS[args.stage](params, Layout(args.params.resolve().parent))
    except FlowshipError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
