"""The scheduled monitoring check as a user sets it up: a real `prefect server start`, `flowship schedule`
registering deployments/prefect.yaml, a process worker started elsewhere, and a run that the server's scheduler
creates (the ephemeral API and prefect_test_harness cannot schedule)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import BIN, REPO, Project, default_params
from tests.helpers import flowship, free_port, prefect_api, start, stop, tail, wait_until
from tests.monitoring.conftest import log_predictions, production_month

PREFECT = str(BIN / "prefect")
FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def bare_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    shutil.copytree(REPO / "deployments", root / "deployments")
    return root


@pytest.mark.integration  # the `flowship` executable in its own process
def test_schedule_without_a_server_named_says_how_to_start_one(tmp_path: Path) -> None:
    done = flowship(["schedule"], bare_project(tmp_path / "project"))
    assert done.returncode == 1
    assert "PREFECT_API_URL is not set" in done.stderr and "prefect server start" in done.stderr


@pytest.mark.integration  # the `flowship` executable in its own process
def test_schedule_with_no_server_answering_fails_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    # "At once": no retrying against a server that is not there (the deadline only guards against a hang).
    done = flowship(
        ["schedule", "--interval", "10"], bare_project(tmp_path / "project"), timeout=120, PREFECT_API_URL=url
    )
    assert done.returncode == 1
    assert f"no Prefect server answers at PREFECT_API_URL={url}" in done.stderr
    assert "prefect server start" in done.stderr


class Server:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME (a fresh SQLite database)."""

    def __init__(self, home: Path) -> None:
        self.log = home / "server.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        self.process = start(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            home,
            self.log,
            PREFECT_HOME=str(home),
        )

    def healthy(self, timeout: float = 120.0) -> str:
        """The API URL, once /api/health answers."""

        def answers() -> bool:
            assert self.process.poll() is None, f"prefect server exited ({self.process.returncode}):\n{tail(self.log)}"
            try:
                return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout, "the Prefect server's /api/health", 0.25, lambda: tail(self.log))
        return self.url


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Started first and waited for only when needed: it starts while the project trains."""
    server = Server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        stop(server.process)


def deployment(url: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = prefect_api("GET", f"{url}/deployments/name/{name}")
    return found


def first_final_run(url: str, deployment_id: str) -> dict[str, Any] | None:
    """The earliest run of the deployment that has finished, if any."""
    body = {
        "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": FINAL}}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 1,
    }
    runs: list[dict[str, Any]] = prefect_api("POST", f"{url}/flow_runs/filter", body)
    return runs[0] if runs else None


def pause_and_wait_idle(url: str, deployment_id: str, timeout: float = 90.0) -> None:
    """No more runs: pausing drops the runs the scheduler planned; a run already started finishes first (the
    worker runs each in its own process group, which stopping the worker would leave behind)."""
    prefect_api("PATCH", f"{url}/deployments/{deployment_id}", {"paused": True})
    body = {
        "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["PENDING", "RUNNING"]}}}
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not prefect_api("POST", f"{url}/flow_runs/filter", body):
            return
        time.sleep(1.0)


def git_status(project: Project) -> str:
    return project.git("status", "--porcelain", "--untracked-files=all")


@pytest.mark.integration
@pytest.mark.slow
def test_the_scheduler_runs_the_monitoring_check_on_a_worker(
    prefect_server: Server, trained_project: Project, tmp_path: Path
) -> None:
    project = trained_project
    # A clone holds the deployment definitions as well as the flowship package (already in the project: dvc.yaml
    # names its stage code).
    shutil.copytree(REPO / "deployments", project.root / "deployments")
    july = production_month(project, 7)
    log_predictions(project, july, "1")
    reports = project.root / "reports" / "monitoring"
    before = set(reports.glob("*/summary.json"))
    status_before = git_status(project)
    url = prefect_server.healthy()

    done = flowship(["schedule", "--interval", "10"], project.root, PREFECT_API_URL=url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "work pool:     flowship (process, created)" in out
    assert "monitoring/dev       every 10 s" in out
    assert "training/dev         no schedule" in out and "release/dev          no schedule" in out
    assert "retraining/dev       no schedule" in out
    assert "prefect worker start --pool flowship" in out

    monitoring = deployment(url, "monitoring/dev")
    assert monitoring["entrypoint"] == "flowship/flows/monitoring.py:monitoring"
    assert monitoring["work_pool_name"] == "flowship"
    assert monitoring["parameters"] == {"params_path": "params.yaml", "overrides": {}}
    # FLOWSHIP_ROOT was filled in at registration: runs start in this clone, wherever the worker runs.
    assert monitoring["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project.root)}}
    ]
    (schedule,) = [s["schedule"] for s in monitoring["schedules"]]
    assert schedule["interval"] == 10.0
    for name, entrypoint in (
        ("release/dev", "flowship/flows/release.py:release_flow"),
        ("retraining/dev", "flowship/flows/monitoring.py:retraining"),
    ):
        manual = deployment(url, name)
        assert (manual["entrypoint"], manual["schedules"], manual["work_pool_name"]) == (entrypoint, [], "flowship")

    # The worker runs somewhere else than the project: the deployment's pull step moves each run there.
    worker_log = tmp_path / "worker.log"
    worker = start(
        [PREFECT, "worker", "start", "--pool", "flowship"],
        tmp_path,
        worker_log,
        PREFECT_API_URL=url,
        PREFECT_HOME=str(tmp_path / "worker-home"),
        PREFECT_WORKER_QUERY_SECONDS="2",
    )
    try:

        def finished() -> dict[str, Any] | None:
            assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{tail(worker_log)}"
            return first_final_run(url, monitoring["id"])

        run = wait_until(finished, 180, "a scheduled run to finish", 1.0, lambda: tail(worker_log))
        pause_and_wait_idle(url, monitoring["id"])
    finally:
        stop(worker)

    assert run["auto_scheduled"] is True  # created by the server's scheduler, not by this test
    assert run["work_pool_name"] == "flowship"
    assert run["parameters"] == {"params_path": "params.yaml", "overrides": {}}
    state = run["state"]
    assert (state["type"], state["name"]) == ("COMPLETED", "Drift detected"), f"{state}\n{tail(worker_log)}"
    assert state["message"].startswith("drift: ")

    (new,) = set(reports.glob("*/summary.json")) - before
    summary = json.loads(new.read_text())
    assert summary["verdict"] == "drift" and summary["records"] == len(july)
    assert summary["report"] == str(new.parent)
    drift = new.parent / "v1" / "drift.html"
    assert drift.read_text().lstrip().lower().startswith("<!doctype html") and "temp" in drift.read_text()
    # Registering, the worker and the run left nothing that git would pick up (.prefect/, reports/monitoring/,
    # logs/ and .flowship/ are ignored); the copied code is untracked as before.
    assert git_status(project) == status_before
