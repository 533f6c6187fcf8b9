"""The parts of `flowship up` / `down` that need no server: overrides per environment, the state file, the
processes it starts and stops, the deployments declared per environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml

from flowship.config import ConfigError, apply_overrides, load_params, tracked_params
from flowship.release.runtime import port_taken
from flowship.services import prefect_api as deploy
from flowship.services import processes as svc
from tests.conftest import REPO, default_params
from tests.helpers import free_port, wait_until

TRACKED = {"data": "ingest", "train": "train", "gate.primary_metric": "train", "project.seed": "prepare"}


def test_overrides_merge_key_by_key() -> None:
    raw = {"monitoring": {"retrain": {"enabled": False, "deploy": False}, "min_records": 500}, "train": {"x": 1}}
    merged = apply_overrides(raw, {"monitoring": {"retrain": {"enabled": True}}}, TRACKED)
    assert merged["monitoring"] == {"retrain": {"enabled": True, "deploy": False}, "min_records": 500}
    assert merged["train"] == {"x": 1}
    assert raw["monitoring"]["retrain"]["enabled"] is False  # the file's values are not changed in place


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"train": {"params": {"max_iter": 5}}}, "overrides.train.params.max_iter: train is tracked"),
        ({"gate": {"primary_metric": "accuracy"}}, "overrides.gate.primary_metric: gate.primary_metric is tracked"),
        ({"gate": "strict"}, "overrides.gate: gate.primary_metric is tracked"),  # would replace a tracked key
        ({"project": {"seed": 1}}, "overrides.project.seed: project.seed is tracked"),
    ],
)
def test_overrides_of_what_dvc_tracks_are_refused(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        apply_overrides({}, overrides, TRACKED)
    assert named in str(error.value) and "edit params.yaml" in str(error.value)


def test_overrides_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(ConfigError, match="overrides: expected a mapping of params.yaml sections, got list"):
        apply_overrides({}, ["monitoring"], TRACKED)  # type: ignore[arg-type]


def test_load_params_with_overrides_checks_them_like_the_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    path = tmp_path / "params.yaml"
    params = load_params(path, False, {"monitoring": {"retrain": {"enabled": True}}, "gate": {"thresholds": {}}})
    assert params.monitoring.retrain.enabled is True and params.gate.thresholds == {}
    assert load_params(path, False).monitoring.retrain.enabled is False
    with pytest.raises(ConfigError, match=r"release.latency_p95: unknown key \(value 5\) \(params.yaml with the over"):
        load_params(path, False, {"release": {"latency_p95": 5}})
    with pytest.raises(ConfigError, match="staging_port must differ from production_port"):
        load_params(path, False, {"release": {"staging_port": 8000}})
    assert "train" in tracked_params(tmp_path / "dvc.yaml")


def test_the_state_file_round_trips_and_a_corrupt_one_is_named(tmp_path: Path) -> None:
    assert svc.read_services(tmp_path) is None
    process = svc.Process("worker", 12345, ["python", "-m", "prefect"], str(tmp_path / "w.log"), None)
    services = svc.Services(str(tmp_path), "dev", "http://127.0.0.1:4200", "http://127.0.0.1:5000", {"worker": process})
    svc.write_services(tmp_path, services)
    again = svc.read_services(tmp_path)
    assert again is not None and again.processes["worker"] == process and again.api_url == "http://127.0.0.1:4200/api"
    # a state file written before the Evidently UI was one of the services still reads
    raw = json.loads(svc.state_file(tmp_path).read_text())
    del raw["evidently_url"]
    svc.state_file(tmp_path).write_text(json.dumps(raw))
    earlier = svc.read_services(tmp_path)
    assert earlier is not None and earlier.evidently_url == "" and earlier.processes["worker"] == process
    svc.state_file(tmp_path).write_text("{not json")
    with pytest.raises(svc.ServiceError, match=r"services.json cannot be read"):
        svc.read_services(tmp_path)
    assert svc.live_services(tmp_path) is None


@pytest.mark.integration  # real processes
def test_a_started_process_is_found_alive_then_stopped_with_its_group(tmp_path: Path) -> None:
    # print's two words are not as such in the command line, which the log's first line repeats
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); print('child', 'started', flush=True)"
    code += "; time.sleep(300)"
    process = svc.spawn("sleeper", [sys.executable, "-c", code], tmp_path, svc.child_environment(tmp_path))
    wait_until(lambda: "child started" in Path(process.log).read_text(), 30, "the sleeper to start its child")
    assert process.alive()
    assert Path(process.log) == tmp_path / "logs" / "services" / "sleeper.log"
    assert "starting:" in Path(process.log).read_text()
    # The same pid running another command line is not the process flowship started.
    assert not svc.Process("x", process.pid, ["something", "else"], process.log).alive()
    # Nor is a kernel thread, though its command line reads empty like that of a process being started or exiting.
    assert Path("/proc/2/comm").read_text().strip() == "kthreadd"
    assert not svc.Process("x", 2, [sys.executable], process.log).alive()
    assert svc.stop_process(process, grace=10) == "stopped"
    assert not process.alive()
    assert svc.stop_process(process) == "was not running"


@pytest.mark.integration  # real processes
def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_time(tmp_path: Path) -> None:
    # print's two words are not as such in the command line, which the log's first line repeats
    code = f"import signal, time; signal.signal({int(signal.SIGTERM)}, signal.SIG_IGN); print('SIGTERM', 'ignored')"
    process = svc.spawn(
        "stubborn", [sys.executable, "-u", "-c", code + "; time.sleep(300)"], tmp_path, svc.child_environment(tmp_path)
    )
    wait_until(lambda: "SIGTERM ignored" in Path(process.log).read_text(), 30, "the process to ignore SIGTERM")
    assert svc.stop_process(process, grace=1.0).startswith("killed (no exit within 1 s of SIGTERM)")
    assert not process.alive()


@pytest.mark.integration  # real processes
def test_waiting_for_a_process_that_dies_shows_the_end_of_its_log(tmp_path: Path) -> None:
    code = "import sys; print('cannot bind the port'); sys.exit(3)"
    process = svc.spawn("dying", [sys.executable, "-c", code], tmp_path, svc.child_environment(tmp_path))
    with pytest.raises(svc.ServiceError) as error:
        svc.wait_until("the dying server", lambda: False, process, timeout=30)
    assert "the dying server exited while starting" in str(error.value) and "cannot bind the port" in str(error.value)


@pytest.mark.integration  # real processes
def test_the_error_of_a_failed_start_leads_with_its_first_error_and_leaves_out_earlier_starts(tmp_path: Path) -> None:
    # a server that cannot bind logs why first, then a long traceback of its shutdown: the reason stays in the error
    earlier = "print('ERROR | an earlier start')"
    cannot_bind = "print('ERROR | [Errno 98] address already in use'); [print(f'  frame {i}') for i in range(80)]"
    errors = []
    for code in (earlier, cannot_bind):
        process = svc.spawn("dying", [sys.executable, "-c", code], tmp_path, svc.child_environment(tmp_path))
        with pytest.raises(svc.ServiceError) as error:
            svc.wait_until("the dying server", lambda: False, process, timeout=30)
        errors.append(str(error.value))
    message = errors[1].splitlines()
    assert message[1:3] == ["ERROR | [Errno 98] address already in use", "..."], errors[1]
    assert message[-1] == "  frame 79" and "  frame 10" not in message  # then the end of the log
    assert "an earlier start" not in errors[1] and "an earlier start" in errors[0]
    assert "an earlier start" in (tmp_path / "logs" / "services" / "dying.log").read_text()  # the log keeps both


def test_a_port_in_use_is_seen() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_taken(s.getsockname()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert not port_taken(free)


def test_the_mlflow_server_uses_the_local_store_unless_one_is_named(tmp_path: Path) -> None:
    argv = svc.mlflow_server_argv(tmp_path, 5000, {})
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert argv[argv.index("--default-artifact-root") + 1] == (tmp_path / "mlruns" / "artifacts").as_uri()
    team = svc.mlflow_server_argv(tmp_path, 5000, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:p@db/mlflow"})
    assert "--backend-store-uri" not in team and "--default-artifact-root" not in team  # mlflow reads the variable
    assert team[team.index("--artifacts-destination") + 1] == str(tmp_path / "mlruns" / "served-artifacts")


def test_each_environment_declares_the_five_flows() -> None:
    for env in ("dev", "staging", "production"):
        chosen = deploy.declared(REPO, env)
        assert sorted(d["entrypoint"] for d in chosen) == [
            "flowship/flows/monitoring.py:monitoring",
            "flowship/flows/monitoring.py:retraining",
            "flowship/flows/release.py:release_flow",
            "flowship/flows/retention.py:retention",
            "flowship/flows/training.py:training",
        ]
        assert all(d["parameters"]["params_path"] == "params.yaml" for d in chosen)
        (retention,) = [d for d in chosen if d["entrypoint"].endswith(":retention")]
        assert retention["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC", "active": True}]
        assert retention["concurrency_limit"] == 1
    # The overrides of every environment load with the repository's params.yaml.
    for env in ("dev", "staging", "production"):
        for d in deploy.declared(REPO, env):
            load_params(REPO / "params.yaml", False, d["parameters"]["overrides"])


def test_an_unknown_environment_or_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(deploy.DeployError, match=r"no deployment named 'prod' .* \['dev', 'production', 'staging'\]"):
        deploy.declared(REPO, "prod")
    with pytest.raises(deploy.DeployError, match="no deployments/prefect.yaml in"):
        deploy.declared(tmp_path, "dev")
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "prefect.yaml").write_text("deployments: [name: dev\n")
    with pytest.raises(deploy.DeployError, match="not valid YAML"):
        deploy.declared(tmp_path, "dev")


def test_the_environment_file_holds_only_that_environment(tmp_path: Path) -> None:
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "prefect.yaml").write_text((REPO / "deployments" / "prefect.yaml").read_text())
    written = yaml.safe_load(deploy.environment_file(tmp_path, "production").read_text())
    assert "definitions" not in written and {d["name"] for d in written["deployments"]} == {"production"}
    assert written["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $FLOWSHIP_ROOT }}"}}
    ]


def sleeper(tmp_path: Path, name: str) -> svc.Process:
    return svc.spawn(name, [sys.executable, "-c", f"import time; time.sleep(300)  # {name}"], tmp_path, {})


def test_a_failed_start_stops_what_it_started_and_keeps_what_was_running(tmp_path: Path) -> None:
    from flowship.services import lifecycle

    assert lifecycle.undo_start(tmp_path, None, set()) == "nothing was started"
    earlier, worker = sleeper(tmp_path, "prefect-server"), sleeper(tmp_path, "worker")
    running = svc.Services(
        str(tmp_path), "dev", "http://h:1", "http://h:2", {"prefect-server": earlier, "worker": worker}
    )
    svc.write_services(tmp_path, running)
    try:
        assert lifecycle.undo_start(tmp_path, running, {"worker"}) == (
            "what this command started was stopped again (worker: stopped)"
        )
        assert not worker.alive() and earlier.alive()
        recorded = svc.read_services(tmp_path)
        assert recorded is not None and set(recorded.processes) == {"prefect-server"}
    finally:
        svc.stop_process(earlier, grace=5)


@pytest.mark.parametrize(
    ("taken_at", "owner", "option"),
    [(0, "a Prefect server", "--prefect-port"), (2, "an Evidently UI", "--evidently-port")],
)
def test_a_port_another_program_holds_is_refused_before_anything_starts(
    tmp_path: Path, taken_at: int, owner: str, option: str
) -> None:
    from flowship.services import lifecycle

    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "prefect.yaml").write_text((REPO / "deployments" / "prefect.yaml").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = [free_port(), free_port(), free_port()]
        ports[taken_at] = port
        with pytest.raises(lifecycle.StartFailed) as failed:
            lifecycle.start(tmp_path, "dev", None, (ports[0], ports[1], ports[2]), 5, tmp_path / "workspace")
    assert str(failed.value) == (
        f"port {port} on 127.0.0.1 is in use by another program, not by {owner} flowship started here; "
        f"stop it, or choose another port with {option}\nnothing was started"
    )
    assert not svc.state_file(tmp_path).exists() and not svc.log_dir(tmp_path).exists()
    assert not (tmp_path / "workspace").exists()


def test_the_evidently_ui_is_started_on_the_workspace_and_the_port_never_on_its_default() -> None:
    argv = svc.evidently_ui_argv(Path("/p/reports/evidently"), 8123)
    assert argv[1:] == ["-m", "evidently.cli", "ui", "--workspace", "/p/reports/evidently", "--host", "127.0.0.1",
                        "--port", "8123"]  # fmt: skip
    assert svc.EVIDENTLY_PORT != 8000  # Evidently's own default is the serving port


def test_stopping_reports_each_process_in_order_and_forgets_them(tmp_path: Path) -> None:
    from flowship.services import lifecycle

    said: list[str] = []
    assert lifecycle.stop(tmp_path, said.append) is None and said == []
    processes = {name: sleeper(tmp_path, name) for name in ("prefect-server", "evidently-ui", "mlflow-server")}
    svc.write_services(tmp_path, svc.Services(str(tmp_path), "dev", "http://h:1", "http://h:2", processes))
    stopped = lifecycle.stop(tmp_path, said.append)
    assert stopped is not None and [(s.name, s.outcome) for s in stopped] == [
        ("evidently-ui", "stopped"),
        ("mlflow-server", "stopped"),
        ("prefect-server", "stopped"),
    ]
    assert [line.split(" in ")[0] for line in said] == [
        "evidently-ui:   stopped",
        "mlflow-server:  stopped",
        "prefect-server: stopped",
    ]
    assert said[1].endswith(f"(pid {processes['mlflow-server'].pid}; log {processes['mlflow-server'].log})")
    assert not any(p.alive() for p in processes.values()) and not svc.state_file(tmp_path).exists()


def test_monitor_links_the_dashboard_only_where_up_runs_the_evidently_ui(tmp_path: Path) -> None:
    from flowship.cli.monitoring import dashboard_link

    hint = "project p-1 (`flowship up` starts the Evidently UI that shows it)"
    assert dashboard_link(tmp_path, "p-1") == hint  # nothing started here

    me = [c.decode() for c in Path("/proc/self/cmdline").read_bytes().split(b"\0") if c]

    def running(name: str) -> svc.Process:  # this test's own process: alive, with its command line
        return svc.Process(name, os.getpid(), me, str(tmp_path / f"{name}.log"))

    processes = {"prefect-server": running("prefect-server"), "mlflow-server": running("mlflow-server")}
    ui = "http://127.0.0.1:8051"
    state = svc.Services(str(tmp_path), "dev", "http://h:1", "http://h:2", processes, ui)
    svc.write_services(tmp_path, state)
    assert dashboard_link(tmp_path, "p-1") == hint  # the servers run, the UI was never started
    processes[svc.DASHBOARD] = svc.Process(svc.DASHBOARD, os.getpid(), ["evidently", "ui"], "log")
    svc.write_services(tmp_path, state)
    assert dashboard_link(tmp_path, "p-1") == hint  # the UI's pid is another program now
    processes[svc.DASHBOARD] = running(svc.DASHBOARD)
    svc.write_services(tmp_path, state)
    assert dashboard_link(tmp_path, "p-1") == f"{ui}/projects/p-1"
