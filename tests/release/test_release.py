"""Release, staged checks, promotion, rollback and the inference log, against a real Docker daemon and real HTTP."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun

from flowship import audit
from flowship.errors import ReleaseAborted, ReleaseCheckFailed
from flowship.release import history
from flowship.release.docker_runtime import DockerRuntime, container_name
from flowship.release.promotion import ReleaseResult
from tests.conftest import Project
from tests.helpers import wait_until
from tests.release.conftest import NAME, paused_runs, train_v2

pytestmark = pytest.mark.integration

PRODUCTION = "http://127.0.0.1:18400"


def release(project: Project, version: str | None = None) -> ReleaseResult:
    from flowship.flows.release import release_flow

    return release_flow(params_path=str(project.params_path), version=version)


def rollback(project: Project, to: str | None = None) -> ReleaseResult:
    from flowship.flows.release import rollback_flow

    return rollback_flow(params_path=str(project.params_path), to_version=to)


def production_name(project: Project) -> str:
    """The one production replica (the module's params ask for one) behind the gateway."""
    state = DockerRuntime(project.root, NAME).gateway_state()
    assert state is not None and len(state.stable.backends) == 1
    return state.stable.backends[0].name


def staging_name(project: Project) -> str:
    return container_name(project.root, NAME, "staging")


def serving_version() -> str:
    return str(httpx.get(f"{PRODUCTION}/metadata", timeout=10).json()["version"])


def golden_record(project: Project, version: str) -> dict[str, object]:
    golden = json.loads((project.root / f"build/{NAME}-v{version}/model/golden.json").read_text())
    return dict(golden[0]["features"])


def set_release(project: Project, **values: object) -> None:
    params = project.params()
    params["release"].update(values)
    project.write_params(params)


def test_release_fail_promote_and_roll_back(trained_project: Project, docker_engine) -> None:  # noqa: ANN001
    project = trained_project
    tracker = project.tracker()

    first = release(project)
    assert first.released and first.runtime == "docker" and first.from_version is None
    assert {c.name for c in first.checks if c.passed} == {"health", "golden_set", "bad_input", "guardrails", "latency"}
    assert first.production.version == "1" and first.production.url == PRODUCTION
    assert serving_version() == "1"
    assert tracker.aliases(NAME)["champion"] == "1"
    production = docker_engine.container(production_name(project))
    assert production.status == "running" and production.restart_policy == "unless-stopped"
    labels = docker_engine.labels(production.image)
    assert labels["io.flowship.model.version"] == "1"
    assert labels["io.flowship.git.commit"] == project.git("rev-parse", "HEAD").strip()
    assert labels["io.flowship.data.hash"] == tracker.version(NAME, "1").tags["flowship.data.raw_md5"]
    assert docker_engine.container(staging_name(project)) is None
    answer = httpx.post(f"{PRODUCTION}/predict", json=golden_record(project, "1"), timeout=10)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
    # the version's training profile went MLflow -> bundle -> image; the default policy flags a far temperature
    far = {**golden_record(project, "1"), "temp": 1e6}
    flagged = httpx.post(f"{PRODUCTION}/predict", json=far, timeout=10).json()
    assert [(w["guardrail"], w["feature"], w["action"]) for w in flagged["warnings"][0]] == [
        ("out_of_range", "temp", "flag")
    ]

    # A second model that cannot meet a latency budget of zero: staging stops it, production is untouched.
    train_v2(project)
    set_release(project, latency_p95_ms=0)
    with pytest.raises(ReleaseCheckFailed, match=r"latency: p95 .* over budget"):
        release(project)
    assert serving_version() == "1"
    assert tracker.aliases(NAME) == {"champion": "1", "challenger": "2"}
    assert tracker.version(NAME, "2").tags["flowship.release.verdict"] == "failed"
    assert docker_engine.container(staging_name(project)) is None
    assert [e["outcome"] for e in history.read(project.root)] == ["done", "failed"]

    set_release(project, latency_p95_ms=500)
    params = project.params()
    params["guardrails"] = {"out_of_range": {"action": "refuse"}}  # the release hands production its policy
    project.write_params(params)
    second = release(project)
    assert second.released and second.from_version == "1" and serving_version() == "2"
    (checked,) = [c for c in second.checks if c.name == "guardrails"]
    assert checked.passed and "out_of_range: refuse" in checked.detail
    refused = httpx.post(f"{PRODUCTION}/predict", json={**golden_record(project, "2"), "temp": 1e6}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"] == "refused_by_guardrails"
    assert tracker.aliases(NAME) == {"champion": "2", "challenger": "2"}
    assert tracker.version(NAME, "2").tags["flowship.release.previous_champion"] == "1"

    # Rollback moves the alias back once v1 answers; its image is rebuilt from the registry when gone. It hands
    # production params.yaml's policy as it is then: the default again.
    del params["guardrails"]
    project.write_params(params)
    v1_image = tracker.version(NAME, "1").tags["flowship.release.image"]
    docker_engine.remove_image(v1_image)
    back = rollback(project)
    assert docker_engine.image_exists(v1_image)
    assert docker_engine.container(production_name(project)).image == v1_image
    assert back.version == "1" and back.from_version == "2" and serving_version() == "1"
    assert tracker.aliases(NAME)["champion"] == "1"
    events = history.read(project.root)
    assert [(e["action"], e["outcome"], e["from_version"], e["to_version"]) for e in events] == [
        ("release", "done", None, "1"),
        ("release", "failed", "1", "2"),
        ("release", "done", "1", "2"),
        ("rollback", "done", "2", "1"),
    ]
    # The audit log beside them: the policy v2 brought, and the default back with v1
    trail = audit.read(project.root)
    assert all("flow_run" in e["actor"] for e in trail)  # each written by its release's flow run
    changes = [(e["version"], e["from"], e["to"]) for e in trail if e["change"] == "guardrails"]
    assert changes == [
        ("2", {"out_of_range.action": "flag"}, {"out_of_range.action": "refuse"}),
        ("1", {"out_of_range.action": "refuse"}, {"out_of_range.action": "flag"}),
    ]
    far = httpx.post(f"{PRODUCTION}/predict", json={**golden_record(project, "1"), "temp": 1e6}, timeout=10)
    assert far.status_code == 200 and far.json()["warnings"][0][0]["action"] == "flag"


@pytest.mark.parametrize("failing_step", ["move_champion", "record_release"])
def test_a_promotion_that_fails_half_way_is_undone(
    trained_project: Project,
    docker_engine,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    failing_step: str,
) -> None:
    """A step fails after v2 started in production (and, for the history write, after `champion` moved and v2 was
    tagged): v1 serves again from its own container image; aliases, tags and history are as before."""
    from flowship.errors import RegistryError
    from flowship.release import promotion

    project = trained_project
    tracker = project.tracker()
    aliases, tags, events = tracker.aliases(NAME), tracker.version(NAME, "2").tags, history.read(project.root)
    image = docker_engine.container(production_name(project)).image
    assert serving_version() == "1" and aliases["champion"] == "1"

    def registry_down(*args: object) -> None:
        assert serving_version() == "2"  # the new container started and answered
        raise RegistryError("the registry refused the alias")

    def disk_full(*args: object) -> None:
        assert serving_version() == "2" and tracker.aliases(NAME)["champion"] == "2"
        assert tracker.version(NAME, "2").tags["flowship.release.verdict"] == "passed"
        raise OSError(28, "No space left on device")

    if failing_step == "move_champion":
        monkeypatch.setattr(promotion, "move_champion", registry_down)
        expected: tuple[type[Exception], str] = (RegistryError, "refused the alias")
    else:
        monkeypatch.setattr(audit, "append", disk_full)
        expected = (OSError, "No space left on device")
    with pytest.raises(expected[0], match=expected[1]):
        release(project, version="2")
    monkeypatch.undo()

    assert serving_version() == "1"
    production = docker_engine.container(production_name(project))
    assert production.image == image and production.status == "running"
    assert production.restart_policy == "unless-stopped"
    assert tracker.aliases(NAME) == aliases
    assert tracker.version(NAME, "2").tags == tags
    assert history.read(project.root) == events


def test_a_golden_set_mismatch_stops_the_release(trained_project: Project, docker_engine) -> None:  # noqa: ANN001
    project = trained_project
    before = project.tracker().aliases(NAME)
    serving_before = serving_version()
    golden_file = project.root / f"build/{NAME}-v2/model/golden.json"
    golden = json.loads(golden_file.read_text())
    golden[3]["probabilities"] = {k: 1 - v for k, v in golden[3]["probabilities"].items()}
    golden_file.write_text(json.dumps(golden))
    try:
        with pytest.raises(ReleaseCheckFailed, match=r"golden_set: 1 of 20 records differ: record 3"):
            release(project, version="2")
    finally:
        golden_file.unlink()
        (project.root / f"build/{NAME}-v2/model/metadata.json").unlink()  # re-exported next time
    assert project.tracker().aliases(NAME) == before
    assert serving_version() == serving_before


class InBackground:
    """The release flow in a thread of this test, so that the test can act as the approver meanwhile."""

    def __init__(self, project: Project, version: str) -> None:
        self.result: ReleaseResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(project, version))
        self.thread.start()

    def _run(self, project: Project, version: str) -> None:
        try:
            self.result = release(project, version)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def end(self) -> None:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the release did not end"


def paused_release(known: set[str]) -> FlowRun:
    """The release run (not among `known`) once it waits for a decision with its form: Prefect pauses the run
    first, then writes the form (its description and the schema a decision is checked against) beside it."""
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    def paused() -> FlowRun | None:
        run = next((r for r in paused_runs() if str(r.id) not in known), None)
        if run is None or run.state is None:
            return None
        keys = keyset_from_paused_state(run.state)
        written = all(read_flow_run_input(keys[part], run.id) is not None for part in ("description", "schema"))
        return run if written else None

    return wait_until(paused, 240, "the release run paused for a decision, with its form", interval=0.5)


def final_state(run: FlowRun) -> tuple[str, str]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None
    return state.name, state.message or ""


def all_paused() -> set[str]:
    return {str(r.id) for r in paused_runs()}


def test_a_release_waits_for_a_persons_decision_in_the_prefect_ui(trained_project: Project, docker_engine) -> None:  # noqa: ANN001
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    project = trained_project
    tracker = project.tracker()
    serving_before, aliases = serving_version(), tracker.aliases(NAME)
    other = "2" if serving_before == "1" else "1"
    set_release(project, approval={"before": "promotion", "timeout_s": 600})
    try:
        # refused: nothing changes in production; the decision and who made it are kept
        known = all_paused()
        background = InBackground(project, other)
        run = paused_release(known)
        assert run.state is not None
        form = read_flow_run_input(keyset_from_paused_state(run.state)["description"], run.id)
        assert f"v{other}: approve before promotion?" in form and "| golden_set | pass |" in form
        assert serving_version() == serving_before  # staging passed; production waits
        resume_flow_run(run.id, run_input={"approve": False, "by": "bob", "comment": "not before the holidays"})
        background.end()
        assert isinstance(background.error, ReleaseAborted), background.error
        assert "aborted at approval before promotion: approval: rejected by bob (not before the holidays)" in str(
            background.error
        )
        assert final_state(run) == ("Aborted", str(background.error))
        assert serving_version() == serving_before and tracker.aliases(NAME) == aliases
        event = history.read(project.root)[-1]
        assert (event["action"], event["outcome"], event["before"]) == ("approval", "rejected", "promotion")
        assert event["reason"] == "rejected by bob (not before the holidays)"
        assert tracker.version(NAME, other).tags["flowship.release.verdict"] == "failed"

        # approved: promoted, the approval among the release's checks
        known = all_paused()
        background = InBackground(project, other)
        run = paused_release(known)
        resume_flow_run(run.id, run_input={"approve": True, "by": "alice"})
        background.end()
        assert background.error is None and background.result is not None and background.result.released
        assert serving_version() == other and tracker.aliases(NAME)["champion"] == other
        assert final_state(run) == ("Promoted", f"v{other} serves in production")
        event = history.read(project.root)[-1]
        assert (event["action"], event["outcome"]) == ("release", "done")
        assert {"name": "approval", "passed": True, "detail": "approved by alice", "measured": {}} in event["checks"]

        # no decision in time: rejected
        set_release(project, approval={"before": "promotion", "timeout_s": 10})
        with pytest.raises(ReleaseAborted, match=r"approval: no decision within 10 s"):
            release(project, serving_before)
        assert serving_version() == other
    finally:
        set_release(project, approval={"before": "none"})


def log_rows(folder: Path) -> list[dict[str, object]]:
    rows = []
    for path in sorted(folder.glob("inference-*.jsonl")):  # not the safety-event log beside it
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_inference_records_survive_a_container_restart(trained_project: Project, docker_engine) -> None:  # noqa: ANN001
    project = trained_project
    folder = project.root / "logs" / "inference"
    before = len(log_rows(folder))
    version = serving_version()
    record = golden_record(project, version)
    with httpx.Client(base_url=PRODUCTION, timeout=10) as client:
        ids = [client.post("/predict", json=record).json()["request_id"] for _ in range(30)]
        batch = client.post("/predict", json=[record] * 7)
        assert batch.status_code == 200
        ids.append(batch.json()["request_id"])
    docker_engine.client.containers.get(production_name(project)).restart(timeout=10)
    docker_engine.wait_healthy(production_name(project), timeout=120)
    with httpx.Client(base_url=PRODUCTION, timeout=10) as client:
        ids += [client.post("/predict", json=record).json()["request_id"] for _ in range(5)]
    docker_engine.stop(production_name(project))
    rows = log_rows(folder)
    assert len(rows) == before + 30 + 7 + 5
    logged = {r["request_id"] for r in rows}
    assert set(ids) <= logged
    assert all(r["model_version"] == version for r in rows[before:])


def test_a_crashed_production_container_comes_back_by_itself(trained_project: Project, docker_engine) -> None:  # noqa: ANN001
    import os
    import signal
    import time

    project = trained_project
    name = production_name(project)
    container = docker_engine.client.containers.get(name)  # stopped by the test before
    if container.status != "running":
        container.start()
        docker_engine.wait_healthy(name, timeout=120)
        container.reload()
    pid = container.attrs["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # the serving process dies: no clean shutdown
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["RestartCount"] >= 1 and container.status == "running":
            break
        time.sleep(0.5)
    assert container.attrs["RestartCount"] >= 1
    docker_engine.wait_healthy(name, timeout=120)
    assert httpx.get(f"{PRODUCTION}/ready", timeout=10).status_code == 200
