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
    def mlruns(self) -> Path:
        return self.root / "mlruns"
