"""`flowship up` / `flowship down` for real: a Prefect server, an MLflow server, the Evidently UI and a process
worker in the background; deployments registered per environment; a manual training run and a scheduled monitoring
run on the worker; a worker killed mid-run, a rerun, a restart of everything; and what a user can get wrong."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowship.pids import running
from tests.helpers import flowship, free_port, wait_until
from tests.services.conftest import CRASH_AFTER_S, INTERVAL_S, QUICK_WORKER, Up

# The first test also waits for the package fixture (a trained project, then `flowship up`).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ENVIRONMENTS = ("dev", "staging", "production")
FLOWS = {
    "training": "flowship/flows/training.py:training",
    "release": "flowship/flows/release.py:release_flow",
    "monitoring": "flowship/flows/monitoring.py:monitoring",
    "retraining": "flowship/flows/monitoring.py:retraining",
    "retention": "flowship/flows/retention.py:retention",
}


def recorded(up: Up) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((up.root / ".flowship" / "services.json").read_text())
    return state


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_up_starts_both_uis_a_worker_and_the_environments_deployments(up: Up) -> None:
    out = up.up_output
    assert f"Prefect UI:    {up.prefect}" in out and f"MLflow UI:     {up.mlflow}" in out
    workspace = up.root / "reports" / "evidently"
    assert f"Evidently UI:  {up.evidently} (the monitoring dashboard; workspace {workspace})" in out
    assert f"logs:          {up.root / 'logs' / 'services'}/" in out
    # Both UIs answer on loopback: the pages a browser gets, not only the APIs.
    prefect_ui = httpx.get(up.prefect, timeout=15.0)
    assert prefect_ui.status_code == 200 and "<title>Prefect" in prefect_ui.text
    mlflow_ui = httpx.get(up.mlflow, timeout=15.0)
    assert mlflow_ui.status_code == 200 and "MLflow" in mlflow_ui.text
    assert httpx.get(f"{up.mlflow}/health", timeout=5.0).text.strip() == "OK"
    # The Evidently UI serves the project's dashboard workspace (never on the serving port): the model's project,
    # with the checks written there before it started.
    projects = httpx.get(f"{up.evidently}/api/projects", timeout=15.0).json()
    assert [p["name"] for p in projects] == [up.model]
    assert httpx.get(f"{up.evidently}/", timeout=15.0).status_code == 200

    state = recorded(up)
    assert set(state["processes"]) == {"prefect-server", "mlflow-server", "evidently-ui", "worker"}
    assert state["env"] == "dev" and state["prefect_url"] == up.prefect and state["mlflow_url"] == up.mlflow
    assert state["evidently_url"] == up.evidently
    assert state["processes"]["evidently-ui"]["argv"][-6:] == [
        "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(up.evidently_port)
    ]  # fmt: skip
    for name, process in state["processes"].items():
        assert running(process["pid"]), name
        log = Path(process["log"])
        assert log.parent == up.root / "logs" / "services" and log.stat().st_size > 0, name

    # Only the dev environment's deployments, each with its flow, pool, parameters and schedule.
    for flow, entrypoint in FLOWS.items():
        d = up.deployment(f"{flow}/dev")
        assert d["entrypoint"] == entrypoint and d["work_pool_name"] == "flowship"
        assert d["parameters"] == {"params_path": "params.yaml", "overrides": {}}
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(up.root)}}]
    for env in ("staging", "production"):
        assert httpx.get(f"{up.api}/deployments/name/training/{env}", timeout=10.0).status_code == 404
    monitoring = up.deployment("monitoring/dev")
    (schedule,) = monitoring["schedules"]
    assert schedule["active"] and schedule["schedule"]["interval"] == float(INTERVAL_S)
    assert monitoring["global_concurrency_limit"]["limit"] == 1  # one check at a time
    training = up.deployment("training/dev")
    (weekly,) = training["schedules"]
    assert weekly["schedule"]["cron"] == "0 5 * * 1" and weekly["active"] is False  # declared, off in dev
    assert up.deployment("release/dev")["schedules"] == []
    (nightly,) = up.deployment("retention/dev")["schedules"]
    assert nightly["schedule"]["cron"] == "0 3 * * *" and nightly["active"] is True

    pool = up.get("/work_pools/flowship")
    assert pool["type"] == "process" and pool["status"] == "READY"  # a worker is polling it
    automations = up.post("/automations/filter", {})
    (zombie,) = [a for a in automations if a["name"].startswith("flowship: crash flow runs")]
    assert zombie["enabled"] and zombie["actions"][0]["state"] == "CRASHED"
    assert zombie["trigger"]["within"] == CRASH_AFTER_S  # as `--crash-after` asked
    assert f"automation:    runs without a heartbeat for {CRASH_AFTER_S} s are marked Crashed (created)" in out


def test_a_manual_training_run_completes_on_the_worker(up: Up) -> None:
    run = up.training_run()
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{up.logs()}"
    assert run["work_pool_name"] == "flowship" and not run["auto_scheduled"]
    tasks = {t["name"].rsplit("-", 1)[0]: t["state"] for t in up.task_runs(run["id"])}
    # Named tasks; the stages whose inputs did not change since the project was trained are skipped.
    for stage in ("ingest", "validate", "prepare", "train", "evaluate"):
        assert tasks[stage]["name"] == "Skipped", (stage, tasks[stage])
    for name in ("version_data", "log_candidate", "gate", "register"):
        assert tasks[name]["type"] == "COMPLETED", (name, tasks[name])
    artifacts = up.artifacts(run["id"])
    assert {"training-summary", "training-gate"} <= set(artifacts)
    # The summary links the MLflow run in the MLflow UI that `flowship up` started.
    assert f"{up.mlflow}/#/experiments/" in artifacts["training-summary"]["data"]
    # Nothing new was registered: the same model as v1, which already is the champion.
    model = up.registered_model()
    assert {a["alias"]: a["version"] for a in model["aliases"]}["champion"] == "1"
    assert [v["version"] for v in up.versions()] == ["1"]


def test_the_scheduler_runs_the_monitoring_check_on_its_own(up: Up) -> None:
    run = up.scheduled_monitoring_run()
    assert run["auto_scheduled"] is True  # created by the server's scheduler, not by this test
    state = run["state"]
    assert (state["type"], state["name"]) == ("COMPLETED", "Drift detected"), f"{state}\n{up.logs()}"
    artifacts = up.artifacts(run["id"])
    assert {"monitoring-drift", "monitoring-summary"} <= set(artifacts)
    # The check's MLflow run went to the monitoring experiment, through the MLflow server.
    response = httpx.get(
        f"{up.mlflow}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": f"{up.model}-monitoring"},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text


def test_a_bad_environment_or_a_taken_port_is_refused_and_nothing_is_left_running(
    up: Up, tmp_path_factory: pytest.TempPathFactory, flights_sample: Path
) -> None:
    # On the running project: a name that is no environment of deployments/prefect.yaml.
    done = flowship(["up", "--env", "prod"], up.root)
    assert done.returncode == 1
    assert "no deployment named 'prod'" in done.stderr and "['dev', 'production', 'staging']" in done.stderr
    assert up.deployment("training/dev")  # the running setup is untouched
    # Another project, whose Prefect port another program holds: refused before anything starts.
    other = tmp_path_factory.mktemp("other") / "project"
    (other / "deployments").mkdir(parents=True)
    (other / "params.yaml").write_text(up.project.params_path.read_text())
    (other / "deployments" / "prefect.yaml").write_text((up.root / "deployments" / "prefect.yaml").read_text())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = flowship(["up", "--prefect-port", str(port), "--mlflow-port", str(free_port())], other, **QUICK_WORKER)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use by another program" in done.stderr and "--prefect-port" in done.stderr
    assert not (other / ".flowship" / "services.json").exists()
    assert flowship(["down"], other).stdout.strip() == "nothing to stop: `flowship up` started nothing here"
    # A port out of range is a CLI error.
    done = flowship(["up", "--mlflow-port", "80"], other)
    assert done.returncode == 2 and "--mlflow-port" in done.stderr


def test_a_killed_worker_leaves_the_run_crashed_and_a_rerun_resumes_without_a_duplicate_version(up: Up) -> None:
    up.training_run()  # the manual run first: the project is trained and v1 registered
    params = up.project.params()
    params["train"]["params"]["learning_rate"] = 0.05  # a new model: the run below trains and would register v2
    up.project.write_params(params)
    up.project.commit("learning rate 0.05")

    run = up.start_run("training/dev")

    def training() -> bool:
        tasks = {t["name"].rsplit("-", 1)[0]: (t["state"] or {}).get("type") for t in up.task_runs(run["id"])}
        if tasks.get("train") == "RUNNING" or "evaluate" in tasks:
            return True
        state = up.flow_run(run["id"])["state"]
        assert state["type"] not in ("COMPLETED", "FAILED", "CRASHED"), state
        return False

    wait_until(training, 240, "the run to reach its train stage", 0.2, up.logs)
    # The worker and the run's process die at once, as when their machine goes down: nobody reports.
    worker = recorded(up)["processes"]["worker"]["pid"]
    for pid in [*children(worker), worker]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert up.flow_run(run["id"])["state"]["type"] == "RUNNING"
    # The server marks it Crashed once its heartbeats stop (the automation `flowship up` created).
    crashed = up.wait_final(run["id"], timeout=240)
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    assert "heartbeat" in crashed["state"]["message"]
    assert [v["version"] for v in up.versions()] == ["1"]

    # `flowship up` again starts just the missing worker; the rerun resumes: unchanged stages are skipped.
    again = up.up()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "servers:       running since" in again.stdout and "worker:        started" in again.stdout
    # without --crash-after, the automation keeps the wait it has
    assert f"heartbeat for {CRASH_AFTER_S} s are marked Crashed (exists)" in again.stdout
    rerun = up.wait_final(up.start_run("training/dev")["id"])
    assert rerun["state"]["type"] == "COMPLETED", f"{rerun['state']}\n{up.logs()}"
    tasks = {t["name"].rsplit("-", 1)[0]: (t["state"] or {}).get("name") for t in up.task_runs(rerun["id"])}
    assert tasks["ingest"] == tasks["validate"] == tasks["prepare"] == "Skipped"
    assert [v["version"] for v in up.versions()] == ["1", "2"]  # one new version, not two
    aliases = {a["alias"]: a["version"] for a in up.registered_model()["aliases"]}
    assert aliases == {"champion": "1", "challenger": "2"}
    # Once more: nothing changed, nothing registered.
    third = up.wait_final(up.start_run("training/dev")["id"])
    assert third["state"]["type"] == "COMPLETED" and [v["version"] for v in up.versions()] == ["1", "2"]


def test_down_stops_exactly_what_up_started_and_up_finds_every_state_again(up: Up) -> None:
    run = up.training_run()
    deployments = {f"{flow}/dev": up.deployment(f"{flow}/dev")["id"] for flow in FLOWS}
    artifacts = up.artifacts(run["id"])
    versions = up.versions()
    aliases = up.registered_model()["aliases"]
    started = recorded(up)["processes"]
    bystander = os.getpid()  # a process flowship did not start: this test's own

    done = up.down()
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("worker", "evidently-ui", "mlflow-server", "prefect-server"):
        assert f"{name}:" in done.stdout
        assert not running(started[name]["pid"]), name
        assert not any(running(pid) for pid in children(started[name]["pid"])), name
    assert running(bystander)
    assert not (up.root / ".flowship" / "services.json").exists()
    for url in (up.prefect, up.mlflow, up.evidently):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2.0)
    assert up.down().stdout.strip() == "nothing to stop: `flowship up` started nothing here"

    again = up.up()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "monitoring/dev       cron '0 6 * * *' (UTC)" in again.stdout  # without --interval: daily again
    # Same deployments (same ids), the run with its state and artifacts, the model with its versions and aliases.
    assert {name: up.deployment(name)["id"] for name in deployments} == deployments
    assert up.flow_run(run["id"])["state"]["type"] == "COMPLETED"
    assert set(up.artifacts(run["id"])) == set(artifacts)
    assert up.versions() == versions
    assert sorted(up.registered_model()["aliases"], key=str) == sorted(aliases, key=str)
    # and the dashboard's project with its runs
    (project,) = httpx.get(f"{up.evidently}/api/projects", timeout=15.0).json()
    assert httpx.get(f"{up.evidently}/api/projects/{project['id']}/snapshots", timeout=15.0).json()


def test_environments_differ_by_their_overrides_and_a_bad_override_fails_the_run_naming_it(up: Up) -> None:
    # The production deployments, registered on the same server: their parameters carry production's overrides.
    done = flowship(["schedule", "--env", "production"], up.root, PREFECT_API_URL=up.api)
    assert done.returncode == 0, done.stdout + done.stderr
    production = up.deployment("retraining/production")
    assert production["parameters"]["overrides"] == {
        "monitoring": {"alerts": {"cooldown_hours": 12}, "retrain": {"enabled": True, "deploy": True}}
    }
    (weekly,) = up.deployment("training/production")["schedules"]
    assert weekly["active"] is True  # production retrains every Monday
    # A run started from the UI with a custom parameter that DVC tracks: refused at start, nothing trained.
    versions = up.versions()
    bad = up.start_run(
        "training/dev", {"params_path": "params.yaml", "overrides": {"train": {"params": {"max_iter": 5}}}}
    )
    failed = up.wait_final(bad["id"])
    assert failed["state"]["type"] == "FAILED"
    assert "overrides.train.params.max_iter" in failed["state"]["message"], failed["state"]
    assert "tracked by dvc.yaml" in failed["state"]["message"]
    assert up.versions() == versions
    typo = up.start_run("release/dev", {"params_path": "params.yaml", "overrides": {"release": {"latency_p95": 5}}})
    failed = up.wait_final(typo["id"])
    assert failed["state"]["type"] == "FAILED"
    assert "release.latency_p95: unknown key" in failed["state"]["message"], failed["state"]
