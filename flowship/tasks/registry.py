"""The gate against the champion, and registration of a candidate that passed it."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flowship.adapters.tracking import CHALLENGER, TAG, Tracker
from flowship.errors import QualityGateFailed
from flowship.pipeline.gate import Decision, champion_on_holdout, decide, markdown_table
from flowship.pipeline.lineage import gate_hash
from flowship.pipeline.outcome import Candidate, Registration, decision_tags
from flowship.tasks.common import Context, is_transient


@task(name="gate", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def gate(ctx: Context, candidate: Candidate) -> Decision:
    """Compare with the champion on the same holdout; record the decision; raise if it failed."""
    tracker = Tracker(ctx.root)
    holdout = pd.read_parquet(ctx.layout.holdout_split)
    champion, champion_version, notes = champion_on_holdout(ctx.params, tracker, holdout)
    decision = decide(candidate.metrics, champion, ctx.params.gate, champion_version, notes)
    tracker.set_run_tags(candidate.run_id, {**decision_tags(decision), f"{TAG}gate.config_hash": gate_hash(ctx.params)})
    create_markdown_artifact(
        key="training-gate",
        markdown=_gate_markdown(decision, candidate),
        description=f"evaluation gate: {decision.verdict}",
    )
    get_run_logger().info("gate %s: %s", decision.verdict, "; ".join(decision.reasons))
    if not decision.passed:
        raise QualityGateFailed(decision)
    return decision


def _gate_markdown(decision: Decision, candidate: Candidate) -> str:
    notes = "\n".join(f"- {n}" for n in decision.notes)
    return (
        f"# Evaluation gate: {decision.verdict.upper()}\n\n{markdown_table(decision)}\n\n{notes}\n\n"
        f"MLflow run: [{candidate.run_id}]({candidate.url})\n"
    )


@task(name="register", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def register(ctx: Context, candidate: Candidate, decision: Decision) -> Registration:
    """A new version with alias `challenger`; a re-run of the same model registers nothing new."""
    tracker = Tracker(ctx.root)
    name = ctx.params.project.name
    log = get_run_logger()
    existing = tracker.versions_of_run(name, candidate.run_id)
    if existing:
        version = existing[-1]
        log.info("model already registered as %s v%s: nothing to register", name, version.version)
        return Registration(version, new=False)
    tags = {**candidate.tags, **decision_tags(decision), f"{TAG}mlflow.run_id": candidate.run_id}
    version = tracker.register(name, candidate.model_uri, candidate.run_id, tags, alias=CHALLENGER)
    log.info("registered %s v%s with alias %r", name, version.version, CHALLENGER)
    return Registration(version, new=True)
