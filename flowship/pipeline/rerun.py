"""Is there anything to do? A re-run with nothing changed is answered from DVC and MLflow, without a flow.

Nothing changed means: `dvc status` is clean for every stage and for the raw data, the MLflow run of this
model on this holdout exists with its gate decision, the champion it was compared with is still the
champion, and (when it passed) it is registered. Anything else goes through the flow.
"""

from __future__ import annotations

from pathlib import Path

from flowship.adapters.dvc_repo import DvcProject
from flowship.adapters.tracking import CHAMPION, TAG, Tracker
from flowship.config import Params
from flowship.errors import StageError
from flowship.paths import RAW_DATA, STAGES, Layout
from flowship.pipeline.lineage import candidate_key, gate_hash
from flowship.pipeline.outcome import DataCounts, RecordedDecision, Registration, RunLink, TrainingSummary

MODEL_OUT = "models/candidate"
HOLDOUT_OUT = "data/prepared/holdout.parquet"


def candidate_run(tracker: Tracker, hashes: dict[str, str], name: str) -> RunLink | None:
    """The MLflow run that trained the model in `dvc.lock` (`hashes`, as `DvcProject.lock_hashes` gives them) on its
    holdout, in the experiment `name`; None when there is none."""
    if MODEL_OUT not in hashes or HOLDOUT_OUT not in hashes:
        return None
    experiment = tracker.client.get_experiment_by_name(name)
    if experiment is None:
        return None
    experiment_id = str(experiment.experiment_id)
    run_id = tracker.find_run(experiment_id, candidate_key(hashes[MODEL_OUT], hashes[HOLDOUT_OUT]))
    return None if run_id is None else RunLink(run_id, tracker.run_url(experiment_id, run_id))


def registered_candidate(root: Path, name: str) -> str:
    """The registered version of the model that the working tree's `dvc.lock` records: what `flowship train`
    registered from this commit, whatever the `challenger` alias points to since. StageError naming why when there
    is none (never trained here, or its gate failed)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        raise StageError(f"no {lock}: run `flowship train` first")
    tracker = Tracker(root)
    tracker.check_available()
    run = candidate_run(tracker, DvcProject(root).lock_hashes(), name)
    if run is None:
        raise StageError(
            f"no MLflow run of {name} trained the model that {lock.name} records (at {tracker.uri}): "
            "run `flowship train` here first"
        )
    versions = tracker.versions_of_run(name, run.run_id)
    if not versions:
        raise StageError(f"the model that {lock.name} records (run {run.run_id}) is not registered: its gate failed")
    return versions[-1].version


def last_outcome_if_unchanged(params: Params, root: Path) -> TrainingSummary | None:
    """The previous run's summary (as the training flow returns it) when a re-run would change nothing."""
    dvc = DvcProject(root)
    if not (root / f"{RAW_DATA}.dvc").exists() or not (root / "dvc.lock").exists():
        return None
    if dvc.pipeline_changes():
        return None
    hashes = dvc.lock_hashes()
    if MODEL_OUT not in hashes or HOLDOUT_OUT not in hashes:
        return None
    tracker = Tracker(root)
    tracker.check_available()
    name = params.project.name
    candidate = candidate_run(tracker, hashes, name)
    if candidate is None:
        return None
    run_id = candidate.run_id
    tags = tracker.run_tags(run_id)
    decision = RecordedDecision.from_tags(tags)
    if decision is None or tags.get(f"{TAG}gate.config_hash") != gate_hash(params):
        return None
    champion = tracker.version_by_alias(name, CHAMPION)
    own_champion = champion is not None and champion.run_id == run_id  # released since: no other model to beat
    if not own_champion and decision.champion_version != (champion.version if champion else None):
        return None  # the champion moved since: the gate must be run again
    registered = None
    if decision.passed:
        versions = tracker.versions_of_run(name, run_id)
        if not versions:
            return None
        registered = Registration(versions[-1], new=False)
    return TrainingSummary(
        data_version=dvc.tracked_hash(RAW_DATA),
        stages=dict.fromkeys(STAGES, False),
        candidate=candidate,
        decision=decision,
        registered=registered,
        data=DataCounts.read(Layout(root).validation_report),
    )
