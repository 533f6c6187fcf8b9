"""The scheduled monitoring check as a user sets it up: a real `prefect server start`, `flowship schedule`
registering deployments/prefect.yaml, a process worker started elsewhere, and a run that the server's scheduler
creates (the ephemeral API and prefect_test_harness cannot schedule)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import BIN, REPO, Project, default_params
from tests.monitoring.conftest import log_predictions, production_month

FLOWSHIP = str(BIN / "flowship")
PREFECT = str(BIN / "prefect")
FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def environment(**values: str) -> dict[str, str]:
    """This process's environment for a subprocess, without any Prefect server or home set by the developer's
    shell (the session's test harness sets its own only inside this process): each subprocess is told its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_") and k != "PREFECT_HOME"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return {**env, **values}


def flowship(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWSHIP, *args], cwd=cwd, env=environment(**env), capture_output=True, text=True, timeout=300
    )


def start(cmd: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A long-running process in its own process group (so that what it starts can be stopped with it)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=environment(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes], interrupts: int = 2, grace: float = 15.0) -> None:
    """SIGINT, once more if needed (`prefect worker start` forwards the first to the worker it runs), then kill
    whatever is left of the process group."""
    for _ in range(interrupts):
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(grace)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def bare_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    shutil.copytree(REPO / "deployments", root / "deployments")
    return root


def test_schedule_without_a_server_named_says_how_to_start_one(tmp_path: Path) -> None:
    done = flowship(["schedule"], bare_project(tmp_path / "project"))
    assert done.returncode == 1
    assert "PREFECT_API_URL is not set" in done.stderr and "prefect server start" in done.stderr


def test_schedule_with_no_server_answering_fails_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    started = time.monotonic()
    done = flowship(["schedule", "--interval", "10"], bare_project(tmp_path / "project"), PREFECT_API_URL=url)
    took = time.monotonic() - started
    assert done.returncode == 1
    assert f"no Prefect server answers at PREFECT_API_URL={url}" in done.stderr
    assert "prefect server start" in done.stderr
    assert took < 15, f"took {took:.1f} s"


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prefect server exited ({self.process.returncode}):\n{tail(self.log)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        pytest.fail(f"prefect server not healthy after {timeout:.0f} s:\n{tail(self.log)}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Started first and waited for only when needed: it starts while the project trains."""
    server = Server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        stop(server.process)


def deployment(url: str, name: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/deployments/name/{name}", timeout=10.0)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def first_final_run(url: str, deployment_id: str) -> dict[str, Any] | None:
    """The earliest run of the deployment that has finished, if any."""
    body = {
        "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": FINAL}}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 1,
    }
    response = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10.0)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs[0] if runs else None


def pause_and_wait_idle(url: str, deployment_id: str, timeout: float = 90.0) -> None:
    """No more runs: pausing drops the runs the scheduler planned; a run already started finishes first (the
    worker runs each in its own process group, which stopping the worker would leave behind)."""
    httpx.patch(f"{url}/deployments/{deployment_id}", json={"paused": True}, timeout=10.0).raise_for_status()
    body = {
        "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["PENDING", "RUNNING"]}}}
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10.0)
        response.raise_for_status()
        if not response.json():
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
    # A clone holds the flows, the tasks and the deployment definitions as well as the library.
    for code in ("flows", "tasks", "deployments"):
        shutil.copytree(REPO / code, project.root / code, ignore=shutil.ignore_patterns("__pycache__"))
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
        deadline = time.monotonic() + 180
        run = None
        while run is None and time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{tail(worker_log)}"
            run = first_final_run(url, monitoring["id"])
            time.sleep(1.0)
        assert run is not None, f"no scheduled run finished within 180 s; worker log:\n{tail(worker_log)}"
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
