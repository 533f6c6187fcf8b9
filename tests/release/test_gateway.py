"""Production behind the gateway: a real nginx container in front of replica containers on a real Docker daemon,
driven by the release flow and by real HTTP clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from flowship import audit
from flowship.adapters.docker_engine import DockerEngine
from flowship.errors import GatewayError
from flowship.gateway.routing import GatewayState
from flowship.paths import Layout
from flowship.release import history
from flowship.release.docker_runtime import DockerRuntime
from flowship.release.gateway_runtime import ProductionSpec
from flowship.release.promotion import ReleaseResult
from flowship.release.runtime import PRODUCTION, Release
from flowship.serving.inference_log import read_inference_log
from flowship.serving.labels import read_labels
from tests.conftest import Project, trained_flights_project
from tests.helpers import SteadyLoad, flowship, wait_until
from tests.release.conftest import paused_runs, release_params, train_v2

pytestmark = pytest.mark.integration

NAME = "flights-delay"
PORT = 18420
GATEWAY = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None) -> Iterator[Project]:
    params = release_params(production_port=PORT, staging_port=PORT + 1, replicas=2, warm_s=600)
    project = trained_flights_project(tmp_path_factory.mktemp("gateway"), flights_sample, params)
    yield project
    runtime(project).stop(PRODUCTION)
    DockerRuntime(project.root, NAME).stop("staging")


def runtime(project: Project, env: dict[str, str] | None = None, **gateway: object) -> DockerRuntime:
    """The project's Docker runtime with its params, `gateway` settings changed."""
    from flowship.config import load_params

    params = load_params(project.params_path)
    spec = ProductionSpec.from_params(params, project.root)
    return DockerRuntime(project.root, NAME, env, replace(spec, gateway=spec.gateway.model_copy(update=gateway)))


def state(project: Project) -> GatewayState:
    found = DockerRuntime(project.root, NAME).gateway_state()
    assert found is not None
    return found


def release(project: Project, version: str | None = None, strategy: str | None = None) -> ReleaseResult:
    from flowship.flows.release import release_flow

    return release_flow(params_path=str(project.params_path), version=version, strategy=strategy)


def golden_record(project: Project, version: str) -> dict[str, object]:
    golden = json.loads((project.root / f"build/{NAME}-v{version}/model/golden.json").read_text())
    return dict(golden[0]["features"])


def access_log(project: Project) -> list[dict[str, object]]:
    path = project.root / "logs" / "gateway" / "access.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def container_ids(engine: DockerEngine, pool_state: GatewayState, version: str) -> list[str]:
    pool = pool_state.running_pool(version)
    assert pool is not None, f"v{version} does not run"
    return [engine.container(b.name).id for b in pool.backends]  # type: ignore[union-attr]


def test_promotion_and_rollback_under_load_fail_no_request(project: Project, docker_engine: DockerEngine) -> None:
    first = release(project)
    assert first.released and first.production.url == GATEWAY and first.production.version == "1"
    served = state(project)
    assert served.stable.version == "1" and len(served.stable.backends) == 2
    for backend in served.stable.backends:
        info = docker_engine.container(backend.name)
        assert info is not None and info.status == "running" and info.restart_policy == "unless-stopped"
        assert info.host_port is None  # reached through the gateway only
    gateway = docker_engine.container(DockerRuntime(project.root, NAME).gateway.name)
    assert gateway is not None and gateway.host_port == PORT and gateway.restart_policy == "unless-stopped"
    users = {
        docker_engine.client.containers.get(n).attrs["Config"]["User"]
        for n in [gateway.name, *(b.name for b in served.stable.backends)]
    }
    assert users == {"10001:10001"}  # the gateway and the model containers: no root
    v1_containers = container_ids(docker_engine, served, "1")

    train_v2(project)
    log_before = len(access_log(project))

    from flowship.flows.release import rollback_flow

    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, "1"), clients=16) as load:
        promoted = release(project)
        wait_until(lambda: load.versions["2"] >= 16, 60, "answers from v2")
        back = rollback_flow(params_path=str(project.params_path))
        answered_by_v2 = load.versions["2"]
        wait_until(lambda: load.versions["1"] > answered_by_v2, 60, "answers from v1 again")
    assert promoted.released and promoted.version == "2" and promoted.from_version == "1"
    assert back.version == "1" and back.from_version == "2"
    assert load.failed == 0, f"{load.failed} failed requests: {load.statuses}"
    assert load.versions["1"] > 0 and load.versions["2"] > 0

    # The rollback was a switch: v1's own containers serve again, never restarted; v2 stays warm.
    after = state(project)
    assert after.stable.version == "1" and container_ids(docker_engine, after, "1") == v1_containers
    assert [w.pool.version for w in after.warm] == ["2"]

    # The gateway's access log counts the same: every request answered 200, by the versions that served (nginx
    # writes a request's line once its answer went out: the last ones may follow the client's count by a moment).
    def logged() -> list[dict[str, object]] | None:
        lines = [line for line in access_log(project)[log_before:] if line["path"] == "/predict"]
        return lines if len(lines) >= load.answered else None

    lines = wait_until(logged, 30, "every answer's line in the access log")
    assert {line["status"] for line in lines} == {200}
    assert {line["version"] for line in lines} == {"1", "2"}


def test_the_gateway_refuses_with_the_json_status_it_promises(
    project: Project, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    current = state(project)
    record = golden_record(project, current.stable.version)
    bundle = project.root / f"build/{NAME}-v{current.stable.version}/model"
    serving = Release(NAME, current.stable.version, bundle, current.stable.image)
    log_dir = project.root / "logs" / "inference"

    keys = tmp_path / "keys"
    keys.write_text("# who may call\nk-0123456789abcdef\n")
    project_params = project.params()
    project_params["gateway"] = {"api_keys_file": str(keys), "rate_limit": {"per_second": 1, "burst": 0}}
    project.write_params(project_params)
    limited = runtime(project, max_body_mb=0.01)
    limited.start(PRODUCTION, serving, PORT, log_dir, restart=True)
    assert state(project).stable.backends == current.stable.backends  # the same replicas: only the gateway changed

    with httpx.Client(base_url=GATEWAY, timeout=10) as client:
        missing = client.post("/predict", json=record, headers={"X-Request-ID": "r-missing"})
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        assert missing.json()["request_id"] == missing.headers["X-Request-ID"] == "r-missing"
        wrong = client.post(
            "/predict", json=record, headers={"X-API-Key": "k-not-a-known-key!", "X-Request-ID": "r-wrong"}
        )
        assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
        assert client.get("/health", headers={"X-Request-ID": "r-health"}).status_code == 200  # probes need no key

        key = {"X-API-Key": "k-0123456789abcdef", "X-Client-Key": "tests"}
        ok = client.post("/predict", json=record, headers={**key, "X-Request-ID": "r-ok"})
        assert ok.status_code == 200 and ok.headers["X-Request-ID"] == ok.json()["request_id"] == "r-ok"
        limited_answer = client.post("/predict", json=record, headers={**key, "X-Request-ID": "r-limited"})
        assert limited_answer.status_code == 429 and limited_answer.json()["error"] == "rate_limited"
        assert limited_answer.headers["Retry-After"] == "1" and limited_answer.json()["request_id"] == "r-limited"
        other_client = client.post("/predict", json=record, headers={**key, "X-Client-Key": "someone-else"})
        assert other_client.status_code == 200  # the limit is per client
        unnamed = client.post("/predict", json=record, headers={**key, "X-Request-ID": "not plain!"})
        assert unnamed.status_code == 429 and len(unnamed.headers["X-Request-ID"]) == 32  # a request id of its own

        too_big = client.post(
            "/predict", json=[record] * 200, headers={**key, "X-Client-Key": "big", "X-Request-ID": "r-big"}
        )
        assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
        assert too_big.headers["content-type"].startswith("application/json")
    expected = {"r-missing": 401, "r-wrong": 403, "r-health": 200, "r-ok": 200, "r-limited": 429, "r-big": 413}

    def logged() -> dict[str, object]:
        return {
            str(line["request_id"]): line["status"] for line in access_log(project) if line["request_id"] in expected
        }

    assert wait_until(lambda: len(logged()) == len(expected) and logged(), 30, "the access log's lines") == expected
    # A model slower than the gateway's timeout: 504 JSON, while production's replicas are untouched.
    project.write_params({k: v for k, v in project_params.items() if k != "gateway"})
    slow = runtime(project, env={"FLOWSHIP_FAULT_DELAY_MS": "3000"}, timeout_s=0.5)
    slow.stop(PRODUCTION)
    slow.start(PRODUCTION, serving, PORT, log_dir, restart=True)
    timed_out = httpx.post(f"{GATEWAY}/predict", json=record, timeout=10)
    assert timed_out.status_code == 504 and timed_out.json()["error"] == "timeout"

    # The kill switch, as an operator uses it: 503 JSON with Retry-After on every path, said by `status` and kept in
    # the history; then serving again. Nothing restarts.
    normal = runtime(project)
    normal.stop(PRODUCTION)
    normal.start(PRODUCTION, serving, PORT, log_dir, restart=True)
    ids = container_ids(docker_engine, state(project), serving.version)
    before = httpx.post(f"{GATEWAY}/predict", json=record, headers={"X-Request-ID": "r-before-pause"}, timeout=10)
    assert before.status_code == 200
    paused = flowship(["pause", "--reason", "bad answers under investigation"], project.root, check=True)
    assert "paused (bad answers under investigation)" in paused.stdout
    answer = httpx.post(f"{GATEWAY}/predict", json=record, timeout=10)
    assert answer.status_code == 503 and answer.json()["error"] == "paused"
    assert "bad answers under investigation" in answer.json()["message"] and answer.headers["Retry-After"] == "30"
    assert httpx.get(f"{GATEWAY}/health", timeout=10).status_code == 503
    # What users say about the answers under investigation still reaches production's replicas and the label log.
    said = httpx.post(f"{GATEWAY}/feedback", json={"request_id": "r-before-pause", "rating": -1}, timeout=10)
    assert said.status_code == 202, said.text
    assert said.json()["feedback_for"] == {"request_id": "r-before-pause", "row": 0}
    labels, _ = read_labels(Layout(project.root).label_dirs)
    assert labels[["request_id", "rating"]].astype(object).values.tolist()[-1:] == [["r-before-pause", -1]]
    shown = flowship(["status"], project.root, check=True).stdout
    assert "PAUSED (bad answers under investigation)" in shown and f"v{serving.version}: 2 (release.replicas)" in shown
    flowship(["resume"], project.root, check=True)
    assert httpx.post(f"{GATEWAY}/predict", json=record, timeout=10).status_code == 200
    assert container_ids(docker_engine, state(project), serving.version) == ids
    events = [(e["action"], e.get("reason")) for e in history.read(project.root)[-2:]]
    assert events == [("pause", "bad answers under investigation"), ("resume", None)]
    lines = flowship(["history"], project.root, check=True).stdout.splitlines()
    assert "pause" in lines[-2] and "bad answers under investigation" in lines[-2] and "resume" in lines[-1]


def test_a_configuration_nginx_refuses_is_never_applied(project: Project, docker_engine: DockerEngine) -> None:
    gateway = runtime(project).gateway
    conf = gateway.conf_dir / "nginx.conf"
    before = conf.read_bytes()
    with pytest.raises(GatewayError, match=r'nginx refused .*unknown directive "proxy_passs"'):
        gateway.apply(before.decode().replace("proxy_pass ", "proxy_passs ", 1))
    assert conf.read_bytes() == before and not (gateway.conf_dir / "nginx.next.conf").exists()
    assert httpx.get(f"{GATEWAY}/health", timeout=10).status_code == 200


def test_a_taken_port_is_refused_before_anything_changes(
    project: Project, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    other = DockerRuntime(tmp_path / "other-project", NAME, None, runtime(project).production)
    current = state(project)
    serving = Release(NAME, current.stable.version, project.root / f"build/{NAME}-v1/model", current.stable.image)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(GatewayError, match=rf"port {port} .* is taken by another program.*nothing was changed"):
            other.start(PRODUCTION, serving, port, tmp_path / "logs", restart=True)
    assert docker_engine.names({"io.flowship.pool": other.network}) == [] and other.gateway.status() is None

    # Nothing to pause where no gateway serves: said, and nothing recorded.
    (tmp_path / "other-project").mkdir()
    (tmp_path / "other-project" / "params.yaml").write_text(project.params_path.read_text())
    refused = flowship(["pause"], tmp_path / "other-project")
    assert refused.returncode == 1 and "no gateway serves this project (deploy first)" in refused.stderr
    assert not (tmp_path / "other-project" / ".flowship" / "history.jsonl").exists()


def test_a_crashed_gateway_or_replica_comes_back_and_production_answers(
    project: Project, docker_engine: DockerEngine
) -> None:
    gateway = docker_engine.client.containers.get(runtime(project).gateway.name)
    record = golden_record(project, state(project).stable.version)
    os.kill(gateway.attrs["State"]["Pid"], signal.SIGKILL)  # a crash, not `docker kill` (a manual stop)

    def restarted() -> bool:
        gateway.reload()
        return gateway.attrs["RestartCount"] >= 1 and gateway.status == "running"

    wait_until(restarted, 60, "the gateway's restart by its policy")
    wait_until(lambda: _answers(record), 60, "production's answers after the gateway's restart")

    # One of two replicas dies under load: the other answers; only what it was answering at that instant may fail.
    victim = docker_engine.client.containers.get(state(project).stable.backends[0].name)
    with SteadyLoad(f"{GATEWAY}/predict", record, clients=8) as load:
        os.kill(victim.attrs["State"]["Pid"], signal.SIGKILL)
        answered = load.answered
        wait_until(lambda: load.answered > answered + 200, 60, "answers after the replica died")
        victim.reload()
    assert load.failed <= 8, f"{load.failed} failed requests: {load.statuses}"
    wait_until(lambda: (victim.reload(), victim.status == "running")[1], 60, "the replica's restart by its policy")
    docker_engine.wait_healthy(victim.name, timeout=120)


def _answers(record: dict[str, object]) -> bool:
    try:
        return httpx.post(f"{GATEWAY}/predict", json=record, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# --- canary ---


def canary_params(project: Project, **canary: object) -> None:
    params = project.params()
    params.pop("gateway", None)
    params["gateway"] = {"rate_limit": None}  # the test's anonymous load comes from one address
    params["release"]["canary"] = {"step_weights": [20, 50], "interval_s": 2, "min_requests": 30, "max_wait_s": 90,
                                   **canary}  # fmt: skip
    project.write_params(params)
    # as `flowship deploy` does when nothing is to release: the gateway follows the changed settings
    gateway = runtime(project)
    gateway.reconfigure()
    assert "limit_req" not in (gateway.gateway.configuration() or "")
    assert not gateway.reconfigure()  # nothing changed since


def test_a_slow_canary_is_aborted_at_its_first_step_and_stable_keeps_serving(
    project: Project, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary_params(project, max_p99_ms=150)  # absolute: whatever else the machine is doing, 200 ms is over it
    before = state(project)
    stable = before.stable.version
    challenger = "2" if stable == "1" else "1"
    tracker = project.tracker()
    aliases = tracker.aliases(NAME)
    monkeypatch.setenv("FLOWSHIP_FAULT_DELAY_MS", "200")  # the versions released now answer 200 ms late
    from flowship.errors import ReleaseAborted

    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, stable), clients=8, keyed=False) as load:
        with pytest.raises(ReleaseAborted, match=r"aborted at canary 20%: request_duration: p99 "):
            release(project, version=challenger, strategy="canary")
        after_abort = load.versions[stable]
        wait_until(lambda: load.versions[stable] > after_abort + 50, 60, "stable's answers after the abort")
    assert load.failed == 0, load.statuses  # slow, not failed: every client got its answer
    assert load.versions[challenger] > 0  # the canary did get its share before the abort
    after = state(project)
    assert after.canary is None and after.stable == before.stable
    assert docker_engine.names({"io.flowship.pool": DockerRuntime(project.root, NAME).network}) == sorted(
        b.name for pool in after.pools() for b in pool.backends
    )  # the canary's replicas are gone
    assert tracker.aliases(NAME) == aliases
    tags = tracker.version(NAME, challenger).tags
    assert (
        tags["flowship.release.verdict"] == "failed"
        and "canary 20% request_duration" in tags["flowship.release.failed_checks"]
    )
    event = history.read(project.root)[-1]
    assert (event["action"], event["outcome"], event["to_version"]) == ("canary", "aborted", challenger)
    assert [s["step"] for s in event["steps"]] == ["canary 20%"] and event["steps"][0]["canary"]["p99_ms"] >= 200
    # the step, then its undoing (the entries that move the share: the abort's own entry says why, not from → to)
    moved = [e for e in audit.read(project.root) if e["change"] == "canary" and "from" in e][-2:]
    assert [(e["version"], e["from"], e["to"]) for e in moved] == [(challenger, 0.0, 20.0), (challenger, 20.0, 0.0)]
    assert moved[1]["reason"].startswith("canary 20%: request_duration: p99 ")


def test_a_canary_that_holds_up_after_its_shadow_is_approved_and_promoted_step_by_step_without_a_failed_request(
    project: Project, docker_engine: DockerEngine
) -> None:
    canary_params(project, max_p99_ratio=10, shadow_first=True)  # a busy two-core machine: latency loosely
    params = project.params()
    params["release"]["shadow"] = {"min_requests": 40, "max_wait_s": 90, "max_p99_ratio": 10}
    params["release"]["approval"] = {"before": "each_step", "timeout_s": 300}
    project.write_params(params)
    stable = state(project).stable.version
    challenger = "2" if stable == "1" else "1"
    approver = Approver("carol")
    try:
        with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, stable), clients=8, keyed=False) as load:
            result = release(project, version=challenger, strategy="canary")
            wait_until(lambda: load.versions[challenger] > 100, 60, "the promoted version's answers")
    finally:
        approver.stop()
        params["release"].pop("approval")
        project.write_params(params)
    assert load.failed == 0, load.statuses
    assert result.released and result.version == challenger and state(project).stable.version == challenger
    names = [c.name for c in result.checks]
    # the shadow first, then each step and the promotion approved by a person
    assert [n for n in names if n == "approval" or n.endswith(("agreement", "success_rate"))] == [
        "shadow agreement",
        "approval",
        "canary 20% success_rate",
        "approval",
        "canary 50% success_rate",
        "approval",
    ]
    assert approver.approved == 3 and "canary 50% prediction_distance" in names
    assert all(c.passed for c in result.checks)
    assert project.tracker().aliases(NAME)["champion"] == challenger
    trail = audit.read(project.root)
    moves = [(e["change"], e["from"], e["to"]) for e in trail if e["change"] in ("shadow", "canary") and "from" in e]
    moves = moves[-4:]
    assert moves == [("shadow", "off", "on"), ("shadow", "on", "off"), ("canary", 0.0, 20.0), ("canary", 20.0, 50.0)]
    assert trail[-1]["change"] == "release" and trail[-1]["to_version"] == challenger


class Approver:
    """A person watching the Prefect UI: approves each pause of the release as it comes."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.approved = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from prefect.exceptions import NotPausedError
        from prefect.flow_runs import resume_flow_run

        while not self._done.wait(0.5):
            for run in paused_runs():
                try:
                    resume_flow_run(run.id, run_input={"approve": True, "by": self.who})
                except NotPausedError:
                    continue  # resumed since it was read
                self.approved += 1

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)


def test_a_canary_whose_replicas_die_mid_step_is_aborted_and_stable_serves(
    project: Project, docker_engine: DockerEngine
) -> None:
    canary_params(project, step_weights=[50], interval_s=120, max_wait_s=300)
    stable = state(project).stable.version
    challenger = "2" if stable == "1" else "1"
    from flowship.errors import ReleaseAborted

    killed: list[str] = []
    kill_window: list[float] = []

    def kill_the_canary() -> None:
        found = wait_until(lambda: state(project).canary, 180, "the canary's replicas")
        shown = flowship(["status"], project.root, check=True).stdout
        assert f"canary      v{challenger}: 50% of the traffic" in shown and f"v{stable} 50%" in shown
        kill_window.append(time.time())
        for backend in found.backends:
            docker_engine.client.containers.get(backend.name).kill()  # a manual stop: no restart by the policy
            killed.append(backend.address)
        kill_window.append(time.time())

    logged = len(access_log(project))
    killer = threading.Thread(target=kill_the_canary)
    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, stable), clients=8, keyed=False) as load:
        killer.start()
        with pytest.raises(ReleaseAborted, match=r"aborted at canary 50%: canary_replicas: a canary replica stopped"):
            release(project, version=challenger, strategy="canary")
        killer.join()
        answered = load.versions[stable]
        wait_until(lambda: load.versions[stable] > answered + 50, 60, "stable's answers after the abort")
        failed_before = load.failed
        wait_until(lambda: load.answered > answered + 200, 60, "answers after the abort")
    assert load.failed == failed_before  # after the abort, nothing fails
    # A request a killed replica had not answered gets a 502; one it was answering when killed (its status line
    # already passed on) can only be cut: the client sees the connection close (RemoteProtocolError).
    assert set(load.statuses) <= {"200", "502", "RemoteProtocolError"} and load.failed <= 4 * 8, load.statuses
    assert load.statuses["RemoteProtocolError"] <= len(killed), load.statuses
    # the kills cut only what the killed replicas were answering then (a request once sent is not repeated); every
    # other request of the canary's share went on to a live replica, stable's standing in for a canary that is gone
    failures = [entry for entry in access_log(project)[logged:] if entry["status"] == 502]
    assert len(failures) == load.statuses["502"]
    for entry in failures:
        assert str(entry["upstream"]).split(", ")[-1] in killed, entry
        ended = datetime.fromisoformat(str(entry["time"])).timestamp()
        assert int(kill_window[0]) <= ended <= kill_window[1] + 3, (entry, kill_window)
    assert state(project).canary is None and state(project).stable.version == stable


# --- shadow ---


def test_a_shadow_gets_copies_its_answers_are_compared_and_clients_only_see_stables(
    project: Project, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary_params(project)
    params = project.params()
    params["release"]["shadow"] = {"min_requests": 60, "max_wait_s": 90, "max_p99_ms": 150}
    project.write_params(params)
    from flowship.errors import ReleaseAborted

    stable = state(project).stable.version
    challenger = "2" if stable == "1" else "1"
    shadow_log = project.root / "logs" / "gateway" / "shadow.jsonl"
    copied_before = len(shadow_log.read_text().splitlines()) if shadow_log.exists() else 0  # an earlier shadow's
    monkeypatch.setenv("FLOWSHIP_FAULT_DELAY_MS", "200")  # a slow shadow: judged, never felt by the clients
    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, stable), clients=8, keyed=False) as load:
        with pytest.raises(ReleaseAborted, match=r"aborted at shadow: request_duration: the model's p99 "):
            release(project, version=challenger, strategy="shadow")
    assert load.failed == 0 and set(load.versions) == {stable}, load.statuses  # only stable's answers
    copies = [json.loads(line) for line in shadow_log.read_text().splitlines()[copied_before:]]
    assert {c["version"] for c in copies} == {challenger} and len(copies) >= 60
    event = history.read(project.root)[-1]
    assert (event["action"], event["outcome"]) == ("shadow", "aborted")
    measured = event["steps"][0]
    assert measured["compared"] >= 60 and measured["agreement"] >= 0.95  # the same answers, only slower
    assert state(project).shadow is None and state(project).stable.version == stable

    monkeypatch.delenv("FLOWSHIP_FAULT_DELAY_MS")
    params["release"]["shadow"] = {"min_requests": 60, "max_wait_s": 90, "max_p99_ratio": 10}
    project.write_params(params)
    with SteadyLoad(f"{GATEWAY}/predict", golden_record(project, stable), clients=8, keyed=False) as load:
        result = release(project, version=challenger, strategy="shadow")
        wait_until(lambda: load.versions[challenger] > 50, 60, "the promoted version's answers")
    assert load.failed == 0, load.statuses
    assert result.released and state(project).stable.version == challenger and state(project).shadow is None
    assert {c.name for c in result.checks} >= {"shadow agreement", "shadow request_duration", "shadow shadow_requests"}
    # production's own inference log never holds a shadow's answers
    records, _ = read_inference_log(project.root / "logs" / "inference")
    shadow_ids = {c["request_id"] for c in copies}
    mixed = records[records["request_id"].isin(shadow_ids)]
    assert set(mixed["model_version"].astype(str)) == {stable}


def test_a_new_production_port_moves_the_gateway_and_the_replicas_stay(project: Project) -> None:
    current = state(project)
    serving = Release(NAME, current.stable.version, project.root / f"build/{NAME}-v{current.stable.version}/model",
                      current.stable.image)  # fmt: skip
    moved = PORT + 5
    runtime(project).start(PRODUCTION, serving, moved, project.root / "logs" / "inference", restart=True)
    assert state(project).port == moved and state(project).stable.backends == current.stable.backends
    record = golden_record(project, current.stable.version)
    assert httpx.post(f"http://127.0.0.1:{moved}/predict", json=record, timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{GATEWAY}/predict", json=record, timeout=10)
