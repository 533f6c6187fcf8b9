"""Stage bodies shared by `dvc repro` (`python -m flowship.pipeline.stages NAME`) and the Prefect tasks.

Each reads its inputs from the layout, calls the library, and writes its outputs.

Each stage imports its own library modules inside its body, so a stage's process runs exactly the flowship
code that its `deps` in dvc.yaml list (tests/flows/test_stage_deps.py checks both ways): editing one stage's
code re-runs that stage, and only the stages that run it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from flowship.config import Params, load_params
from flowship.errors import DataValidationError, FlowshipError
from flowship.files import atomic_path, atomic_write, digest
from flowship.paths import STAGES, Layout

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from flowship.pipeline.search import TrialResult

log = logging.getLogger(__name__)


def _write_json(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def run_ingest(params: Params, layout: Layout) -> dict[str, Any]:
    from flowship.pipeline.ingest import ingest

    ingested = ingest(params.data, layout.root)
    _write_parquet(ingested.frame, layout.ingested)
    _write_json(layout.ingest_report, ingested.report())
    return ingested.report()


def run_validate(params: Params, layout: Layout) -> dict[str, Any]:
    from flowship.pipeline.validation import validate

    frame = pd.read_parquet(layout.ingested)
    target_missing = int(json.loads(layout.ingest_report.read_text())["target_missing"])
    try:
        report = validate(frame, params, target_missing)
    except DataValidationError as exc:
        # The report stays on disk for people; the stage still fails.
        _write_json(layout.validation_report, exc.report)
        raise
    _write_json(layout.validation_report, report)
    return report


def run_prepare(params: Params, layout: Layout) -> dict[str, Any]:
    from flowship.pipeline.prepare import split

    report = json.loads(layout.validation_report.read_text())
    if not report.get("valid"):
        raise DataValidationError(report)
    splits = split(pd.read_parquet(layout.ingested), params)
    _write_parquet(splits.train, layout.train_split)
    _write_parquet(splits.holdout, layout.holdout_split)
    _write_parquet(splits.production, layout.production_split)
    return {"train": len(splits.train), "holdout": len(splits.holdout), "production": len(splits.production)}


def score_trials(params: Params, train: pd.DataFrame, executor: Executor | None = None) -> list[TrialResult]:
    from flowship import estimators
    from flowship.pipeline import search

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


def run_train(params: Params, layout: Layout, trial_results: list[TrialResult] | None = None) -> dict[str, Any]:
    """Fit the final model (with a search, on the best trial's hyperparameters) and profile its training data."""
    from flowship.pipeline import search, training, training_profile

    train = pd.read_parquet(layout.train_split)
    if trial_results is None:
        trial_results = score_trials(params, train)
    hyperparams = dict(params.train.params)
    best = None
    if trial_results:
        best = search.best_trial(trial_results)
        hyperparams = best.params
    model = training.fit(train, params, hyperparams)
    with atomic_path(layout.model_file) as tmp, tmp.open("wb") as fh:
        pickle.dump(model, fh, protocol=5)
    data = params.data
    _write_json(
        layout.profile_file, training_profile.profile_training_data(train, data.features, data.target.column, data.task)
    )
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


class PartTimer:
    """Wall seconds of each named part of a stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)


def run_evaluate(params: Params, layout: Layout) -> dict[str, float]:
    """Holdout metrics, golden set, plots and permutation importance; what each part cost goes to
    reports/evaluation-timings.json (beside, not in, the metrics the gate reads and the stage's DVC outputs), with
    the golden set's digest: whoever reads it can tell whether it belongs to the evaluation in reports/evaluation."""
    timer = PartTimer()
    with timer.part("load"):
        from flowship.pipeline import evaluation

        model = load_candidate(layout)
        holdout = pd.read_parquet(layout.holdout_split)
    with timer.part("metrics"):
        metrics = evaluation.compute_metrics(model, holdout, params)
    with timer.part("golden_set"):
        golden = evaluation.golden_set(model, holdout, params)
    importance = None
    settings = params.evaluate
    if settings.importance:
        with timer.part("importance"):
            importance = evaluation.feature_importance(model, holdout, params)
    with timer.part("plots"):
        evaluation.write_plots(model, holdout, params, layout.evaluation_dir, importance)
    _write_json(layout.golden_file, golden)
    _write_json(layout.metrics_file, metrics)
    _write_json(
        layout.evaluation_timings,
        {
            "seconds": timer.seconds,
            "total_seconds": round(sum(timer.seconds.values()), 4),
            "holdout_rows": len(holdout),
            "golden_sha256": digest(layout.golden_file),
            "importance": {
                "rows": min(settings.importance_rows, len(holdout)),
                "repeats": settings.importance_repeats,
                "features": len(params.data.features.all),
            }
            if settings.importance
            else None,
        },
    )
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
    # as `flowship` does (cli/main.py): young collections every 50,000 new objects, not 700 (the stage's libraries
    # and data were walked for next to no garbage: 0.15 to 0.25 s of a train or evaluate process), and the stage's
    # data and model left to the process's end (0.4 s)
    gc.set_threshold(50_000, 20, 10)
    atexit.register(gc.freeze)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # The estimator check runs estimators.py (and imports scikit-learn): only the train stage builds an
        # estimator, so only its process runs that code and lists it in dvc.yaml. The guardrails' policy is the
        # serving app's: no stage checks it.
        params = load_params(args.params, check_estimator=args.stage == "train", check_serving=False)
        RUNNERS[args.stage](params, Layout(args.params.resolve().parent))
    except FlowshipError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
