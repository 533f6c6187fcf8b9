"""MLflow: runs, logged models and the registry. The only module that imports mlflow."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import pandas as pd

from flowship.errors import RegistryError, TrackingUnavailable

# Modules that pickled models name, moved since: old name -> where it is now.
MOVED_MODULES = {"flowship.training": "flowship.pipeline.training"}

# Packages the model needs to be loaded and served, pinned to the versions it was trained with.
MODEL_REQUIREMENTS = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle", "pyarrow")

CHAMPION, CHALLENGER = "champion", "challenger"
_EXPORTED_LOCAL_URIS: set[str] = set()
log = logging.getLogger(__name__)
TAG = "flowship."


@dataclass(frozen=True)
class CandidateRun:
    run_id: str
    model_uri: str
    experiment_id: str
    reused: bool


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _mlflow() -> Any:
    import mlflow

    return mlflow


def metric_key(name: str) -> str:
    """`name` as MLflow takes a metric's name (alphanumerics and `_-. :/`): a feature named `length (cm)` gives
    `length _cm_`."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def open_store_early(root: Path) -> None:
    """Open the tracking store now: MLflow's import, and for a database its engine and schema check (a second or two),
    while the caller would only wait (for a Prefect API to start); MLflow keeps the store, so the flow that opens it
    next finds it open. A store that cannot be opened is left for that flow's own check to report, in its words."""
    try:
        Tracker(root)
    except Exception:  # noqa: BLE001 - reported by the flow's check_tracking
        log.debug("the tracking store did not open early", exc_info=True)


class Tracker:
    """Talks to the tracking store named by MLFLOW_TRACKING_URI, or the local one under `mlruns/`."""

    def __init__(self, root: Path, tracking_uri: str | None = None) -> None:
        self.root = root.resolve()
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a value we exported is not the user's choice.
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env in _EXPORTED_LOCAL_URIS:
            from_env = None
        self.local = tracking_uri is None and not from_env
        self.uri = tracking_uri or from_env or self._local_uri()
        if self.local:
            _EXPORTED_LOCAL_URIS.add(self.uri)
        # A server that does not answer should fail in seconds; the Prefect tasks retry on top.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow = _mlflow()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _local_uri(self) -> str:
        store = self.root / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{store / 'mlflow.db'}"

    def check_available(self, timeout: float = 5.0) -> None:
        if not self.uri.startswith(("http://", "https://")):
            return
        url = self.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only
                if response.status != 200:
                    raise TrackingUnavailable(f"MLflow tracking server {self.uri} answered {response.status}")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise TrackingUnavailable(f"MLflow tracking server {self.uri} does not answer ({exc})") from exc

    def experiment_id(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = (self.root / "mlruns" / "artifacts").as_uri() if self.local else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def find_run(self, experiment_id: str, run_key: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG}run_key` = '{run_key}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def model_uri_of_run(self, run_id: str) -> str:
        uri = self.run_tags(run_id).get(f"{TAG}model_uri")
        if not uri:
            raise RegistryError(f"run {run_id} has no logged model")
        return uri

    def log_candidate(
        self,
        experiment: str,
        run_key: str,
        run_name: str,
        model: Any,
        input_example: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: list[Path],
        model_files: list[Path],
    ) -> CandidateRun:
        """One run per trained model: a re-run with the same key reuses the finished run."""
        mlflow = _mlflow()
        experiment_id = self.experiment_id(experiment)
        found = self.find_run(experiment_id, run_key)
        if found:
            return CandidateRun(found, self.model_uri_of_run(found), experiment_id, reused=True)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run, warnings.catch_warnings():
            # The output schema is integer class labels; MLflow's hint about missing integers is about inputs.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            mlflow.set_tags({**tags, f"{TAG}run_key": "pending"})
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            for path in artifacts:
                mlflow.log_artifact(str(path), artifact_path="evaluation")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=input_example,
                pip_requirements=[f"{p}=={installed_version(p)}" for p in MODEL_REQUIREMENTS],
                # skops refuses the tree and pipeline types of these models; the artifact is our own.
                serialization_format="cloudpickle",
                extra_files=[str(p) for p in model_files],
                tags=tags,
            )
            # Only a run that got this far is found again by its key.
            mlflow.set_tags({f"{TAG}model_uri": info.model_uri, f"{TAG}run_key": run_key})
        return CandidateRun(run.info.run_id, info.model_uri, experiment_id, reused=False)

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def run_data(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """A run's params and metrics."""
        data = self.client.get_run(run_id).data
        return dict(data.params), {k: float(v) for k, v in data.metrics.items()}

    def log_check(
        self, experiment: str, run_name: str, tags: dict[str, str], metrics: dict[str, float], files: list[Path]
    ) -> tuple[str, str]:
        """One monitoring check as a finished run (reports as artifacts); returns its id and URL."""
        experiment_id = self.experiment_id(experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}
            for key, value in finite.items():
                self.client.log_metric(run_id, metric_key(key), value)
            for path in files:
                self.client.log_artifact(run_id, str(path), artifact_path="reports")
        except Exception:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id, self.run_url(experiment_id, run_id)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def version_by_alias(self, name: str, alias: str) -> VersionRef | None:
        mlflow = _mlflow()
        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise
        return VersionRef(name, str(mv.version), mv.run_id, mv.source, dict(mv.tags))

    def versions_of_run(self, name: str, run_id: str) -> list[VersionRef]:
        found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        return [VersionRef(name, str(v.version), v.run_id, v.source, dict(v.tags)) for v in found]

    def versions(self, name: str) -> list[VersionRef]:
        found = self.client.search_model_versions(f"name = '{name}'")
        refs = [VersionRef(name, str(v.version), v.run_id, v.source, dict(v.tags)) for v in found]
        return sorted(refs, key=lambda r: int(r.version))

    def aliases(self, name: str) -> dict[str, str]:
        mlflow = _mlflow()
        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except mlflow.exceptions.MlflowException:
            return {}

    def load_model(self, uri: str) -> Any:
        try:
            return _mlflow().sklearn.load_model(uri)
        except ModuleNotFoundError as exc:
            # A model logged before flowship's library moved into sub-packages names its feature step by the
            # module it had then: that name is pointed at the module it has now, and the model loaded again.
            if exc.name not in MOVED_MODULES:
                raise
            sys.modules[exc.name] = importlib.import_module(MOVED_MODULES[exc.name])
            return _mlflow().sklearn.load_model(uri)

    def version(self, name: str, version: str) -> VersionRef:
        mlflow = _mlflow()
        try:
            mv = self.client.get_model_version(name, version)
        except mlflow.exceptions.MlflowException as exc:
            raise RegistryError(f"{name} v{version} is not in the model registry ({tracking_message(exc)})") from None
        return VersionRef(name, str(mv.version), mv.run_id, mv.source, dict(mv.tags))

    def input_schema(self, uri: str) -> list[dict[str, str]]:
        """The model signature's inputs: [{"name", "type"}], the serving app's request schema."""
        info = _mlflow().models.get_model_info(uri)
        if info.signature is None:
            raise RegistryError(f"{uri} was logged without a signature")
        return [{"name": str(c["name"]), "type": str(c["type"])} for c in info.signature.inputs.to_dict()]

    def download(self, uri: str, dest: Path) -> Path:
        """A logged model's files (MLmodel, the pickle, extra files such as the golden set)."""
        return Path(_mlflow().artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def delete_version_tags(self, name: str, version: str, keys: list[str]) -> None:
        for key in keys:
            self.client.delete_model_version_tag(name, version, key)

    def register(self, name: str, model_uri: str, run_id: str, tags: dict[str, str], alias: str) -> VersionRef:
        """A new version with its tags and alias, or nothing at all: a half-done version is deleted."""
        mlflow = _mlflow()
        try:
            self.client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            self.client.create_registered_model(name, description="Registered by flowship.")
        # A logged model (models:/m-<id>) is named by its id too: a tracking server refuses the source without it.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = self.client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        try:
            self.client.set_registered_model_alias(name, alias, mv.version)
        except Exception as exc:
            self.client.delete_model_version(name, mv.version)
            raise RegistryError(
                f"could not set alias {alias!r} on {name} v{mv.version}; the version was removed: {exc}"
            ) from exc
        return VersionRef(name, str(mv.version), run_id, mv.source, tags)

    def recent_runs(self, experiment: str, limit: int = 5) -> list[dict[str, Any]]:
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            return []
        runs = self.client.search_runs(
            [existing.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"]
        )
        return [
            {
                "run_id": r.info.run_id,
                "started": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC").isoformat(timespec="seconds"),
                "status": r.info.status,
                "verdict": r.data.tags.get(f"{TAG}gate.verdict", "–"),
                "metrics": dict(r.data.metrics),
            }
            for r in runs
        ]

    def run_url(self, experiment_id: str, run_id: str) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"mlflow ui --backend-store-uri {self.uri}  →  experiment {experiment_id}, run {run_id}"


def tracking_message(exc: Exception) -> str:
    return str(getattr(exc, "message", exc)).splitlines()[0][:300]
