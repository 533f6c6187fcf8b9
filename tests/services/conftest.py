"""`flowship up` on a trained project, shared by the tests of the local services (the servers, the worker, the
deployments, the Prefect, MLflow and Evidently UIs): started once for this folder's tests on free loopback ports,
stopped with `flowship down` when they are done (so that the rest of the suite does not run beside a server and a
scheduled check)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, Project, trained_flights_project
from tests.helpers import flowship, free_port, prefect_api, tail, wait_until
from tests.monitoring.conftest import log_predictions, monitoring_params, production_month
from tests.monitoring.test_schedule import FINAL
from tests.unit.test_dashboard import record_two_checks

# The monitoring deployment's schedule, replaced for the tests: a run every this many seconds.
INTERVAL_S = 15
# A run whose heartbeats stop is marked Crashed after this many seconds (`flowship up --crash-after`; 90 by default):
# the killed-worker test waits less for it.
CRASH_AFTER_S = 50
# The worker `flowship up` starts asks for runs every 2 s (not 10): the tests wait less for each run.
QUICK_WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "2"}


class Up:
    """A project whose services `flowship up` started, with what the tests ask its servers."""

    def __init__(self, project: Project, prefect_port: int, mlflow_port: int, evidently_port: int) -> None:
        self.project = project
        self.root = project.root
        self.prefect_port = prefect_port
        self.mlflow_port = mlflow_port
        self.evidently_port = evidently_port
        self.prefect = f"http://127.0.0.1:{prefect_port}"
        self.api = f"{self.prefect}/api"
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"
        self.evidently = f"http://127.0.0.1:{evidently_port}"
        self.model = project.params()["project"]["name"]
        self.up_output = ""
        self._training_run_id: str | None = None
        self._training_run: dict[str, Any] | None = None
        self._monitoring_run: dict[str, Any] | None = None

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["up", "--prefect-port", str(self.prefect_port), "--mlflow-port", str(self.mlflow_port),
                "--evidently-port", str(self.evidently_port), *extra]  # fmt: skip
        return flowship(args, self.root, **QUICK_WORKER)

    def down(self) -> subprocess.CompletedProcess[str]:
        return flowship(["down"], self.root)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((self.root / "logs" / "services").glob("*.log")))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return prefect_api(method, f"{self.api}{path}", body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def deployment(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get(f"/deployments/name/{name}")
        return found

    def start_run(self, deployment: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.deployment(deployment)
        body: dict[str, Any] = {"state": {"type": "SCHEDULED"}}
        if parameters is not None:
            body["parameters"] = parameters
        run: dict[str, Any] = self.post(f"/deployments/{d['id']}/create_flow_run", body)
        return run

    def flow_run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get(f"/flow_runs/{run_id}")
        return found

    def wait_final(self, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run = self.flow_run(run_id)
            return run if run["state"]["type"] in FINAL else None

        return wait_until(final, timeout, f"flow run {run_id} to finish", 1.0, self.logs)

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
        return found

    def artifacts(self, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        return {a["key"]: a for a in found if a.get("key")}

    def start_training_run(self) -> None:
        """Start the manual run of training/dev that `training_run` hands out (at most once)."""
        if self._training_run_id is None:
            self._training_run_id = self.start_run("training/dev")["id"]

    def training_run(self) -> dict[str, Any]:
        """A completed manual run of training/dev (started once, on the worker, for the tests that need one)."""
        if self._training_run is None:
            self.start_training_run()
            assert self._training_run_id is not None
            self._training_run = self.wait_final(self._training_run_id)
        return self._training_run

    def scheduled_monitoring_run(self, timeout: float = 240.0) -> dict[str, Any]:
        """The first monitoring/dev run that the server's scheduler created and that has finished. The
        deployment is then paused (as from the UI), so that checks every few seconds don't pile up behind
        the tests that follow."""
        d = self.deployment("monitoring/dev")
        if self._monitoring_run is not None:
            return self._monitoring_run
        body = {
            "flow_runs": {"deployment_id": {"any_": [d["id"]]}, "state": {"type": {"any_": FINAL}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 1,
        }
        runs: list[dict[str, Any]] = wait_until(
            lambda: self.post("/flow_runs/filter", body),
            timeout,
            "a scheduled monitoring run to finish",
            2.0,
            self.logs,
        )
        self.pause_and_wait_idle(d["id"])
        self._monitoring_run = runs[0]
        return runs[0]

    def pause_and_wait_idle(self, deployment_id: str, timeout: float = 120.0) -> None:
        """Pause the deployment (the scheduler drops the runs it planned) and wait for its started runs."""
        self.request("PATCH", f"/deployments/{deployment_id}", {"paused": True})
        active = ["PENDING", "RUNNING", "CANCELLING"]
        body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": active}}}}
        deadline = time.monotonic() + timeout
        while self.post("/flow_runs/filter", body) and time.monotonic() < deadline:
            time.sleep(1.0)

    # MLflow's REST API
    def registered_model(self) -> dict[str, Any]:
        response = httpx.get(
            f"{self.mlflow}/api/2.0/mlflow/registered-models/get", params={"name": self.model}, timeout=15.0
        )
        response.raise_for_status()
        found: dict[str, Any] = response.json()["registered_model"]
        return found

    def versions(self) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.mlflow}/api/2.0/mlflow/model-versions/search",
            params={"filter": f"name='{self.model}'"},
            timeout=15.0,
        )
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json().get("model_versions", [])
        return sorted(found, key=lambda v: int(v["version"]))


# Two earlier checks of two versions (v1, then v1 and a canary v2), in the dashboard's workspace before `flowship up`
# starts the Evidently UI: it shows them, and the scheduled check's run added while it runs.
EARLIER_CHECKS_END = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def services_project(base: Path, flights_sample: Path) -> Project:
    """A trained project (v1 champion) holding the code a worker runs (the flowship package, deployments), with July's
    traffic in its inference log for the scheduled monitoring check, and two earlier checks on its dashboard."""
    project = trained_flights_project(base, flights_sample, monitoring_params())
    project.tracker().set_alias(project.params()["project"]["name"], "champion", "1")
    # (the flowship package, flows and tasks included, is already in the project: dvc.yaml names its stage code)
    shutil.copytree(REPO / "deployments", project.root / "deployments")
    log_predictions(project, production_month(project, 7), "1")
    record_two_checks(project.root / "reports" / "evidently", EARLIER_CHECKS_END)
    return project


@pytest.fixture(scope="package")
def up(tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None) -> Iterator[Up]:
    project = services_project(tmp_path_factory.mktemp("services"), flights_sample)
    services = Up(project, free_port(), free_port(), free_port())
    done = services.up("--interval", str(INTERVAL_S), "--crash-after", str(CRASH_AFTER_S))
    services.up_output = done.stdout
    try:
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{services.logs()}"
        # The manual training run starts at once, beside the first scheduled check; the monitoring deployment is
        # paused as soon as that check has finished: every 15 s, checks would otherwise run back to back on the
        # worker, taking a core from the tests for as long as the deployment stays active.
        services.start_training_run()
        services.scheduled_monitoring_run()
        yield services
    finally:
        services.down()
