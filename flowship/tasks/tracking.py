"""MLflow tracking: one run per trained model, with params, metrics, plots, the model and lineage."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.runtime import flow_run

from flowship.adapters.dvc_repo import DvcProject
from flowship.adapters.tracking import TAG, Tracker
from flowship.files import digest
from flowship.paths import Layout
from flowship.pipeline import lineage, stages
from flowship.pipeline.outcome import Candidate, DataCounts
from flowship.pipeline.training import coerce_features, split_xy
from flowship.tasks.common import Context, is_transient


@task(name="check_tracking", retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=is_transient)
def check_tracking(ctx: Context) -> str:
    """Fail early (after retries) when the tracking server does not answer."""
    tracker = Tracker(ctx.root)
    tracker.check_available()
    return tracker.uri


def lineage_tags(ctx: Context, data_version: str) -> dict[str, str]:
    hashes = DvcProject(ctx.root).lock_hashes()
    git = lineage.git_state(ctx.root)
    layout = ctx.layout
    rel = {
        name: str(path.relative_to(ctx.root))
        for name, path in {
            "ingested": layout.ingested,
            "train": layout.train_split,
            "holdout": layout.holdout_split,
            "production": layout.production_split,
            "model": layout.model_dir,
        }.items()
    }
    return {
        f"{TAG}data.raw_md5": data_version,
        **{f"{TAG}data.{name}_md5": hashes.get(path, "unknown") for name, path in rel.items() if name != "model"},
        f"{TAG}model.md5": hashes.get(rel["model"], "unknown"),
        f"{TAG}git.commit": git.commit,
        f"{TAG}git.dirty": str(git.dirty).lower(),
        f"{TAG}params_hash": lineage.params_hash(ctx.params),
        f"{TAG}prefect.flow_run_id": str(flow_run.id or "none"),
        f"{TAG}estimator": ctx.params.train.estimator,
        f"{TAG}task": ctx.params.data.task,
    }


def _run_params(ctx: Context, summary: dict[str, Any]) -> dict[str, Any]:
    p = ctx.params
    flat: dict[str, Any] = {
        "estimator": p.train.estimator,
        "task": p.data.task,
        "target": p.data.target.column,
        "features.numeric": ",".join(p.data.features.numeric),
        "features.categorical": ",".join(p.data.features.categorical),
        "split": json.dumps(p.split.model_dump(mode="json")),
        "search.enabled": p.train.search.enabled,
        "seed": p.project.seed,
        "train_rows": summary["train_rows"],
    }
    flat.update({f"hp.{k}": v for k, v in summary["hyperparams"].items()})
    return flat


def evaluation_timings(layout: Layout) -> dict[str, float]:
    """The evaluate stage's cost per part as run metrics (`evaluate_seconds_plots`, ...); none before it ran, and
    none when they belong to another evaluation than the one in reports/evaluation (restored by `dvc checkout` or
    DVC's run cache, which leave the timings beside it as they were)."""
    if not layout.evaluation_timings.exists() or not layout.golden_file.exists():
        return {}
    timings = json.loads(layout.evaluation_timings.read_text())
    if timings.get("golden_sha256") != digest(layout.golden_file):
        return {}
    seconds = {f"evaluate_seconds_{part}": float(value) for part, value in timings["seconds"].items()}
    return {**seconds, "evaluate_seconds_total": float(timings["total_seconds"])}


@task(name="log_candidate", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def log_candidate(ctx: Context, data_version: str) -> Candidate:
    layout = ctx.layout
    tags = lineage_tags(ctx, data_version)
    counts = DataCounts.read(layout.validation_report)
    tags.update(counts.tags() if counts else {})
    key = lineage.candidate_key(tags[f"{TAG}model.md5"], tags[f"{TAG}data.holdout_md5"])
    summary = json.loads(layout.search_results.read_text())
    metrics = json.loads(layout.metrics_file.read_text())
    for trial in summary["search"]["trials"]:
        metrics[f"trial_{trial['metric']}_{trial['index']}"] = trial["score"]
    metrics.update(evaluation_timings(layout))
    holdout = pd.read_parquet(layout.holdout_split)
    x, _ = split_xy(holdout.head(5), ctx.params)
    features = ctx.params.data.features
    tracker = Tracker(ctx.root)
    run = tracker.log_candidate(
        experiment=ctx.params.project.name,
        run_key=key,
        run_name=f"{ctx.params.train.estimator}-{tags[f'{TAG}model.md5'][:8]}",
        model=stages.load_candidate(layout),
        input_example=coerce_features(x, features.numeric, features.categorical),
        params=_run_params(ctx, summary),
        metrics=metrics,
        tags=tags,
        artifacts=[*sorted(layout.evaluation_dir.glob("*.png")), layout.search_results, layout.validation_report],
        model_files=[layout.golden_file, layout.profile_file],
    )
    log = get_run_logger()
    if run.reused:
        log.info("model unchanged: reusing MLflow run %s", run.run_id)
    else:
        log.info("logged MLflow run %s (%s)", run.run_id, run.model_uri)
    return Candidate(
        run_id=run.run_id,
        model_uri=run.model_uri,
        experiment_id=run.experiment_id,
        reused=run.reused,
        url=tracker.run_url(run.experiment_id, run.run_id),
        metrics=json.loads(layout.metrics_file.read_text()),
        tags=tags,
    )
