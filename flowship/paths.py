"""The project's file layout: one place names every artifact that `dvc.yaml` lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The pipeline's stages, in order, as named in dvc.yaml.
STAGES = ("ingest", "validate", "prepare", "train", "evaluate")
# The raw data folder, versioned with `dvc add`: its hash is the data version.
RAW_DATA = "data/raw"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def ingested(self) -> Path:
        return self.root / "data" / "ingested.parquet"

    @property
    def ingest_report(self) -> Path:
        return self.root / "reports" / "ingest.json"

    @property
    def validation_report(self) -> Path:
        return self.root / "reports" / "validation.json"

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def train_split(self) -> Path:
        return self.prepared_dir / "train.parquet"

    @property
    def holdout_split(self) -> Path:
        return self.prepared_dir / "holdout.parquet"

    @property
    def production_split(self) -> Path:
        return self.prepared_dir / "production.parquet"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "candidate"

    @property
    def model_file(self) -> Path:
        return self.model_dir / "model.pkl"

    @property
    def profile_file(self) -> Path:
        """The training data's profile (ranges, known categories, missing shares): the guardrails' reference."""
        return self.model_dir / "profile.json"

    @property
    def search_results(self) -> Path:
        return self.model_dir / "search.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "reports" / "evaluation"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics" / "holdout.json"

    @property
    def golden_file(self) -> Path:
        return self.evaluation_dir / "golden.json"

    @property
    def evaluation_timings(self) -> Path:
        """Seconds spent in each part of the evaluate stage (not a metric: the gate never reads it). Beside the
        stage's DVC outputs, not in them: seconds differ from run to run, and in `reports/evaluation` they would give
        it a new hash, and dvc.lock a change, at every run."""
        return self.root / "reports" / "evaluation-timings.json"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    def bundle_dir(self, project: str, version: str) -> Path:
        """The serving bundle of one model version (`model.pkl`, `metadata.json`, `golden.json`, `profile.json`), as
        exported."""
        return self.root / "build" / f"{project}-v{version}" / "model"

    @property
    def inference_log_dir(self) -> Path:
        """Production's inference log (`inference-<YYYYMMDD>.jsonl`), bind-mounted into the container."""
        return self.root / "logs" / "inference"

    @property
    def shadow_inference_log_dir(self) -> Path:
        """A shadow's inference log: its answers to mirrored traffic, compared with production's, never monitored."""
        return self.root / "logs" / "inference-shadow"

    @property
    def staging_inference_log_dir(self) -> Path:
        """Staging's inference log: its checks' requests never mix with production traffic."""
        return self.root / "logs" / "inference-staging"

    @property
    def labels_dir(self) -> Path:
        """True labels as they arrive in batches (`labels-<YYYYMMDD>.jsonl`: the replay, a labelling job), keyed by
        request id and row."""
        return self.root / "logs" / "labels"

    @property
    def label_dirs(self) -> tuple[Path, Path]:
        """Every folder of production's label log: the batches', and the inference log's, where each replica
        writes what `POST /feedback` brings (`labels-<YYYYMMDD>.<writer>.jsonl`, comments beside them)."""
        return self.labels_dir, self.inference_log_dir

    @property
    def gateway_log_dir(self) -> Path:
        """The gateway's JSON access log (`access.jsonl`) and its shadow log, and their rotated daily files."""
        return self.root / "logs" / "gateway"

    @property
    def privacy_key(self) -> Path:
        """The key of the logs' privacy hash when FLOWSHIP_PRIVACY_KEY is not set (made once; never in git)."""
        return self.root / ".flowship" / "privacy.key"

    @property
    def alert_log(self) -> Path:
        return self.root / "logs" / "alerts.jsonl"

    @property
    def monitoring_reports(self) -> Path:
        """One folder per check: the Evidently HTML reports and the summary."""
        return self.root / "reports" / "monitoring"

    def last_monitoring_report(self) -> Path | None:
        """The folder of the latest check that wrote a summary, if any (folders are named by when the check ran)."""
        summaries = sorted(self.monitoring_reports.glob("*/summary.json"))
        return summaries[-1].parent if summaries else None

    @property
    def monitoring_state(self) -> Path:
        """Where the last check ended, and the alert cool-downs."""
        return self.root / ".flowship" / "monitoring" / "state.json"

    @property
    def replayed(self) -> Path:
        """The months `flowship replay` sent to this project, and when (`--once` skips them)."""
        return self.root / ".flowship" / "replayed.json"

    @property
    def reference_cache(self) -> Path:
        """Per model version: its reference sample with the model's predictions, computed once."""
        return self.root / ".flowship" / "monitoring" / "reference"
