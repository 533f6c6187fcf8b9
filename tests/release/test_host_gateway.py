"""Production behind the host's nginx, without Docker: replicas as processes of this machine, driven by the release
flow and by real HTTP clients (FLOWSHIP_RUNTIME=process stands for a machine without a Docker daemon)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flowship.errors import GatewayError
from flowship.gateway.host import find_nginx
from flowship.gateway.routing import GatewayState
from flowship.paths import Layout
from flowship.pids import running
from flowship.release.gateway_runtime import ProductionSpec
from flowship.release.process_runtime import ProcessRuntime
from flowship.release.promotion import ReleaseResult
from flowship.release.runtime import PRODUCTION, Release
from flowship.serving.labels import read_labels
from tests.conftest import Project, trained_flights_project
from tests.helpers import SteadyLoad, flowship, wait_until
from tests.release.conftest import release_params, train_v2

pytestmark = pytest.mark.integration

NAME = "flights-delay"
PORT = 18430
GATEWAY = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def nginx() -> str:
    found = find_nginx()
    if found is None:
        if os.environ.get("FLOWSHIP_REQUIRE_DOCKER") == "1":  # CI installs nginx-light with the daemon
            pytest.fail("nginx is not installed: the host gateway cannot be tested")
        pytest.skip("nginx is not installed")
    return found


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None, nginx: str
) -> Iterator[Project]:
    params = release_params(production_port=PORT, staging_port=PORT + 1, replicas=2, warm_s=600)
    project = trained_flights_project(tmp_path_factory.mktemp("host-gateway"), flights_sample, params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWSHIP_RUNTIME", "process")  # as on a machine without a Docker daemon
        patch.setenv("FLOWSHIP_USAGE_SECONDS", "0.5")  # the replicas' usage samples: several in a short window
        yield project
        ProcessRuntime(project.root, NAME, nginx=nginx).stop(PRODUCTION)


def production_runtime(project: Project, nginx: str) -> ProcessRuntime:
    """The project's process runtime with production behind the host's nginx, as its params.yaml says."""
    from flowship.config import load_params

    spec = ProductionSpec.from_params(load_params(project.params_path), project.root)
    return ProcessRuntime(project.root, NAME, production=spec, nginx=nginx)


def state(project: Project) -> GatewayState:
    found = ProcessRuntime(project.root, NAME, nginx=find_nginx()).gateway_state()
    assert found is not None
    return found


def release(project: Project, version: str | None = None) -> ReleaseResult:
    from flowship.flows.release import release_flow

    return release_flow(params_path=str(project.params_path), version=version)


def golden_record(project: Project, version: str) -> dict[str, object]:
    golden = json.loads((project.root / f"build/{NAME}-v{version}/model/golden.json").read_text())
    return dict(golden[0]["features"])


def pid_of(project: Project, replica: str) -> int:
    return int(json.loads((project.root / ".flowship/processes/replicas" / f"{replica}.json").read_text())["pid"])


def nginx_master(project: Project) -> int:
    return int((project.root / ".flowship/gateway/nginx.pid").read_text())


def test_without_docker_production_is_served_behind_the_hosts_nginx(project: Project, nginx: str) -> None:
    first = release(project)
    assert first.released and first.runtime == "process" and first.production.url == GATEWAY
    served = state(project)
    assert served.stable.version == "1" and len(served.stable.backends) == 2
    assert all(
        b.address.startswith("127.0.0.1:") and not b.address.endswith(f":{PORT}") for b in served.stable.backends
    )
    answer = httpx.post(f"{GATEWAY}/predict", json=golden_record(project, "1"), headers={"X-Request-ID": "r-host"})
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    # a client written for `mlflow models serve` gets the same answer through the gateway
    mlflow_client = httpx.post(f"{GATEWAY}/invocations", json={"dataframe_records": [golden_record(project, "1")]})
    assert mlflow_client.status_code == 200
    assert mlflow_client.json()["predictions"] == answer.json()["predictions"]
    # the user's word on that answer: to production's replicas, in the label log monitoring reads when the 202 comes
    said = {"request_id": "r-host", "label": answer.json()["predictions"][0], "rating": 1, "comment": "right"}
    feedback = httpx.post(f"{GATEWAY}/feedback", json=said, headers={"X-Request-ID": "fb-host"})
    assert feedback.status_code == 202, feedback.text
    assert feedback.json()["feedback_for"] == {"request_id": "r-host", "row": 0}
    assert feedback.json()["kept"] == ["label", "rating", "comment"] and feedback.json()["request_id"] == "fb-host"
    labels, _ = read_labels(Layout(project.root).label_dirs)
    assert labels[["request_id", "row", "label", "rating"]].astype(object).values.tolist() == [
        ["r-host", 0, said["label"], 1]
    ]
    assert httpx.post(f"{GATEWAY}/feedback", json={"request_id": "r-host"}).status_code == 422  # the app's answer
    logged = wait_until(
        lambda: [
            json.loads(line)
            for line in (project.root / "logs/gateway/access.jsonl").read_text().splitlines()
            if '"r-host"' in line
        ],  # fmt: skip
        30,
        "the access log's line",
    )
    assert logged[0]["status"] == 200 and logged[0]["version"] == "1"
    master = nginx_master(project)
    assert Path(f"/proc/{master}/cmdline").read_bytes().startswith(b"nginx: master process")

    shown = flowship(["status"], project.root, check=True, FLOWSHIP_RUNTIME="process").stdout
    assert f"production  v1  {GATEWAY}  running  (process, pid {master})" in shown, shown
    assert f"gateway     nginx (this host) on 127.0.0.1:{PORT}  running, serving" in shown
    assert "replicas    v1: 2 (release.replicas): running, running" in shown


def test_a_monitoring_check_reads_the_service_from_the_gateways_access_log(project: Project) -> None:
    from prefect.artifacts import Artifact

    from flowship.flows.monitoring import run_monitoring

    # the window starts on the next whole second: the access log's times are whole seconds
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    wait_until(lambda: datetime.now(UTC) >= start, 5, "the next second")
    record = golden_record(project, "1")
    answers = [httpx.post(f"{GATEWAY}/predict", json=record).status_code for _ in range(20)]
    refused = [httpx.post(f"{GATEWAY}/feedback", json={"request_id": f"m-{i}"}).status_code for i in range(3)]
    assert answers == [200] * 20 and refused == [422] * 3
    access = project.root / "logs/gateway/access.jsonl"
    wait_until(lambda: access.read_text().count('"status":422') >= 4, 30, "the access log's lines")  # 1 earlier
    end = datetime.now(UTC) + timedelta(seconds=1)

    summary = run_monitoring(str(project.params_path), start.isoformat(), end.isoformat())
    service = summary.service
    assert service is not None and service.files >= 1 and service.skipped == 0
    assert [f.version for f in service.versions] == ["1"]
    total = service.total
    assert total.requests == 23 and total.status_classes == {"2xx": 20, "4xx": 3}
    assert total.rejected == {"invalid_input": 3} and total.error_ratio == 0.0
    assert total.client_error_ratio == pytest.approx(3 / 23)
    gateway, app = total.gateway_ms, total.app_ms
    assert gateway.p50 is not None and gateway.p99 is not None and app.p99 is not None
    assert 0 <= gateway.p50 <= gateway.p99 and app.p99 <= gateway.p99 + 1  # nginx's times are whole milliseconds
    # too few requests for a verdict (monitoring.service.min_requests): no service alert
    assert service.verdict == "insufficient_data" and service.alert_kinds == []
    assert [c.version for c in summary.versions] == ["1"] and summary.versions[0].records == 20

    assert summary.report is not None
    saved = json.loads((Path(summary.report) / "summary.json").read_text())
    assert saved["service"]["total"]["requests"] == 23 and saved["service"]["budget"]["requests"] == 23
    table = Artifact.get("monitoring-service")
    assert table is not None
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["version"], r["requests"]) for r in rows] == [("1", 23), ("*", 23)]
    assert summary.service_run is not None
    tracker = project.tracker()
    run_id = summary.service_run.split()[-1].split("/")[-1]  # a URL, or where the local store keeps it
    metrics = tracker.client.get_run(run_id).data.metrics
    assert metrics["service.requests"] == 23 and metrics["service.rejected.invalid_input"] == 3
    assert metrics["service.gateway_p99_ms"] == pytest.approx(gateway.p99)

    # the cost: both replicas' usage samples, priced at the repository's params.yaml, per 20 predictions
    cost = total.cost
    assert cost is not None and cost.processes == 2 and cost.predictions == 20
    assert cost.cpu_seconds > 0 and cost.memory_gb_hours > 0 and cost.cost is not None and cost.cost > 0
    assert cost.cost_per_1000 == pytest.approx(cost.cost / 20 * 1000)
    assert service.usage is not None and service.usage.skipped == 0
    assert metrics["service.cost.per_1000"] == pytest.approx(cost.cost_per_1000)
    assert metrics["service.cost.cpu_seconds"] == pytest.approx(cost.cpu_seconds)
    assert rows[0]["cost_per_1000"] is not None and saved["service"]["total"]["cost"]["processes"] == 2


def access_log_upstreams(project: Project, prefix: str) -> dict[str, str]:
    """The replica (host:port) that answered each request whose id starts with `prefix`, from the access log."""
    lines = (project.root / "logs/gateway/access.jsonl").read_text().splitlines()
    return {e["request_id"]: e["upstream"] for e in map(json.loads, lines) if e["request_id"].startswith(prefix)}


def test_a_lone_client_stays_on_the_first_replica_and_a_busy_replica_is_passed_over(project: Project) -> None:
    served = state(project)
    first, second = (b.address for b in served.stable.backends)
    record = golden_record(project, served.stable.version)
    with httpx.Client(timeout=30) as client:
        for i in range(30):
            assert client.post(f"{GATEWAY}/predict", json=record, headers={"X-Request-ID": f"lone-{i}"}).is_success
    lone = wait_until(lambda: len(found := access_log_upstreams(project, "lone-")) == 30 and found, 30, "lone-*")
    # the first replica above all (100 to 1): one request in 30 at most goes elsewhere
    assert Counter(lone.values())[first] >= 29, lone

    # the first replica stopped (not dead: it takes connections and answers nothing) holds the one request sent to
    # it; every later one goes to the second, one at a time, instead of waiting in turn behind it
    statuses: dict[str, int] = {}

    def send(request_id: str) -> None:
        answer = httpx.post(f"{GATEWAY}/predict", json=record, headers={"X-Request-ID": request_id}, timeout=30)
        statuses[request_id] = answer.status_code

    replica = pid_of(project, served.stable.backends[0].name)
    os.kill(replica, signal.SIGSTOP)
    threads = [threading.Thread(target=send, args=(f"held-{i}",)) for i in range(5)]
    try:
        for sent, thread in enumerate(threads):
            thread.start()
            wait_until(lambda sent=sent: len(statuses) >= sent, 30, f"{sent} answers while one waits")
        wait_until(lambda: len(statuses) == 4, 30, "4 answers while one waits")
    finally:
        os.kill(replica, signal.SIGCONT)
    for thread in threads:
        thread.join(30)
    assert list(statuses.values()) == [200] * 5, statuses
    waited = list(statuses)[4]  # answered once its replica went on
    held = wait_until(lambda: len(found := access_log_upstreams(project, "held-")) == 5 and found, 30, "held-*")
    assert held.pop(waited) == first and set(held.values()) == {second}, (waited, held)


def test_promotion_and_rollback_under_load_fail_no_request(project: Project) -> None:
    v1_backends = state(project).stable.backends
    train_v2(project)
    master = nginx_master(project)

    from flowship.flows.release import rollback_flow

    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, "1"), clients=16) as load:
        promoted = release(project)
        wait_until(lambda: load.versions["2"] >= 16, 60, "answers from v2")
        back = rollback_flow(params_path=str(project.params_path))
        answered_by_v2 = load.versions["2"]
        wait_until(lambda: load.versions["1"] > answered_by_v2, 60, "answers from v1 again")
    assert promoted.released and promoted.version == "2" and back.version == "1"
    assert load.failed == 0, f"{load.failed} failed requests: {load.statuses}"
    after = state(project)
    # a switch each time: the same nginx reloaded, v1's own processes serve again, v2 kept warm
    assert nginx_master(project) == master and after.stable.backends == v1_backends
    assert [w.pool.version for w in after.warm] == ["2"]


def test_a_killed_replica_costs_only_its_requests_in_flight(project: Project) -> None:
    served = state(project)
    victim = served.stable.backends[0]
    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, served.stable.version), clients=8) as load:
        wait_until(lambda: load.answered > 100, 60, "answers before the kill")
        os.kill(pid_of(project, victim.name), signal.SIGKILL)
        answered = load.answered
        wait_until(lambda: load.answered > answered + 300, 60, "answers after the kill")
        failed = load.failed
        wait_until(lambda: load.answered > answered + 600, 60, "more answers after the kill")
    assert load.failed == failed and failed <= 8, load.statuses  # what it was answering; nothing after
    shown = flowship(["status"], project.root, check=True, FLOWSHIP_RUNTIME="process").stdout
    assert f"v{served.stable.version}: 2 (release.replicas): exited, running" in shown


def test_a_configuration_nginx_refuses_is_never_applied(project: Project, nginx: str) -> None:
    runtime = ProcessRuntime(project.root, NAME, nginx=nginx)
    gateway = runtime.require_gateway()
    before = gateway.configuration()
    with pytest.raises(GatewayError, match=r"nginx refused the gateway configuration, nothing was changed: .*unknown"):
        gateway.apply("events {}\nhttp { server { listen 127.0.0.1:1; no_such_directive on; } }\n")
    assert gateway.configuration() == before and gateway.status() == "running"
    assert httpx.get(f"{GATEWAY}/health", timeout=10).status_code == 200


def test_the_port_taken_by_another_program_is_refused_before_anything_changes(project: Project, nginx: str) -> None:
    flowship(["stop"], project.root, check=True, FLOWSHIP_RUNTIME="process")
    runtime = production_runtime(project, nginx)
    serving = Release(NAME, "1", project.root / f"build/{NAME}-v1/model")
    log_dir = project.root / "logs" / "inference"
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the gateway's closed connections linger
        squatter.bind(("127.0.0.1", PORT))
        squatter.listen()
        with pytest.raises(GatewayError, match=rf"port {PORT} \(release.production_port\) is taken by another"):
            runtime.start(PRODUCTION, serving, PORT, log_dir, restart=True)
        assert list((project.root / ".flowship/processes/replicas").glob("*.json")) == []
        assert runtime.require_gateway().status() is None and runtime.gateway_state() is None
    runtime.start(PRODUCTION, serving, PORT, log_dir, restart=True)  # the port free again: served
    assert httpx.get(f"{GATEWAY}/health", timeout=10).headers["X-Model-Version"] == "1"


def test_stop_leaves_nothing_running(project: Project) -> None:
    master = nginx_master(project)
    replicas = [pid_of(project, b.name) for b in state(project).stable.backends]
    stopped = flowship(["stop"], project.root, check=True, FLOWSHIP_RUNTIME="process").stdout
    assert "stopped production: v1 (process" in stopped
    assert not any(running(pid) for pid in [master, *replicas])  # gone, or a zombie: none still exiting
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{GATEWAY}/health", timeout=2)
