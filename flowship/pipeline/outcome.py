"""What the training path hands on from step to step, and what a training run reports: each stage's run, the data
push, the candidate's MLflow run, the gate decision as recorded on that run, the registered version, the summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowship.adapters.tracking import CHALLENGER, TAG, VersionRef
from flowship.pipeline.gate import Decision


@dataclass(frozen=True)
class StageRun:
    """A DVC stage: run (with what the stage reports), or skipped because `dvc status` found it unchanged."""

    stage: str
    ran: bool
    summary: dict[str, Any] | None = None


@dataclass(frozen=True)
class DataPush:
    """The DVC remote the data and artifact versions went to (None: no remote configured) and how many files."""

    remote: str | None
    pushed: int


@dataclass(frozen=True)
class Candidate:
    """The MLflow run of the trained model, as the gate and the registry take it."""

    run_id: str
    model_uri: str
    experiment_id: str
    reused: bool  # a re-run of the same model on the same holdout found its run
    url: str
    metrics: dict[str, float]  # on the holdout, as the evaluate stage wrote them
    tags: dict[str, str]  # the lineage tags, handed on to the registered version


@dataclass(frozen=True)
class RunLink:
    """Where a person finds the candidate's MLflow run."""

    run_id: str
    url: str


@dataclass(frozen=True)
class RecordedDecision:
    """A gate decision as the MLflow run records it: just taken, or read back from the run's tags."""

    verdict: str
    reasons: list[str]
    champion_version: str | None

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @classmethod
    def of(cls, decision: Decision) -> RecordedDecision:
        return cls(decision.verdict, decision.reasons, decision.champion_version)

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RecordedDecision | None:
        """None when no gate decided on the run."""
        verdict = tags.get(f"{TAG}gate.verdict")
        if verdict is None:
            return None
        champion = tags.get(f"{TAG}gate.champion_version", "none")
        return cls(verdict, tags.get(f"{TAG}gate.reasons", "").split("; "), None if champion == "none" else champion)


def decision_tags(decision: Decision) -> dict[str, str]:
    """The decision as MLflow tags, on the candidate's run and on the version it becomes (MLflow's size limits)."""
    return {
        f"{TAG}gate.verdict": decision.verdict,
        f"{TAG}gate.reasons": "; ".join(decision.reasons)[:4000],
        f"{TAG}gate.champion_version": decision.champion_version or "none",
        f"{TAG}gate.decision": json.dumps(decision.as_dict(), default=str)[:4900],
    }


@dataclass(frozen=True)
class Registration:
    """The registered version of a candidate: `new` when this run registered it (with alias `challenger`)."""

    ref: VersionRef
    new: bool

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version


@dataclass(frozen=True)
class DataCounts:
    """The rows the run trained and evaluated on (before the split), and the rows of the source left out for want
    of a target value; as the validation report has them."""

    rows: int
    target_missing: int

    @classmethod
    def read(cls, validation_report: Path) -> DataCounts | None:
        if not validation_report.exists():
            return None
        report = json.loads(validation_report.read_text())
        return cls(int(report["rows"]), int(report.get("target_missing", 0)))

    def describe(self) -> str:
        left_out = f" ({self.target_missing:,} more without a target value, left out)" if self.target_missing else ""
        return f"{self.rows:,} rows{left_out}"

    def tags(self) -> dict[str, str]:
        return {f"{TAG}data.rows": str(self.rows), f"{TAG}data.target_missing": str(self.target_missing)}


@dataclass(frozen=True)
class TrainingSummary:
    """What a training run did, or (answered without a run) what the last one did when nothing changed since."""

    data_version: str
    stages: dict[str, bool]  # stage name -> whether it ran
    candidate: RunLink
    decision: RecordedDecision
    registered: Registration | None  # None when the gate failed
    remote: DataPush | None = None  # None when no run was needed: nothing was pushed
    data: DataCounts | None = None  # None when the validation report is gone

    def markdown(self) -> str:
        """The Prefect artifact a person reads first: where to look."""
        stages_line = ", ".join(
            f"{name}: {'ran' if did else 'skipped (unchanged)'}" for name, did in self.stages.items()
        )
        version = self.registered
        if version is None:
            registered = "nothing (the gate failed)"
        elif version.new:
            registered = f"{version.name} v{version.version} (alias `{CHALLENGER}`)"
        else:
            registered = f"{version.name} v{version.version} (already registered)"
        rows = f"- rows: {self.data.describe()}\n" if self.data else ""
        return (
            "# Training run\n\n"
            f"- data version (DVC, `data/raw`): `{self.data_version}`\n"
            f"{rows}"
            f"- stages: {stages_line}\n"
            f"- MLflow run: [{self.candidate.run_id}]({self.candidate.url})\n"
            f"- gate: {self.decision.verdict}\n"
            f"- registered: {registered}\n"
        )
