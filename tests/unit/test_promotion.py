"""The release's hand-offs and promotion steps without a server: runtime choice, undo of each step, records."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowship.adapters.tracking import VersionRef
from flowship.config import GatewayConfig
from flowship.errors import ReleaseError
from flowship.paths import Layout
from flowship.release import discovery, promotion
from flowship.release.checks import Check
from flowship.release.gateway_runtime import ProductionSpec
from flowship.release.process_runtime import ProcessRuntime
from flowship.release.promotion import PRODUCTION, Promotion, ReleaseResult, ReleaseTarget
from flowship.release.runtime import Deployed, Release

REF = VersionRef("flights-delay", "2", "run-2", "models:/m-2", {"flowship.task": "classification"})
TARGET = ReleaseTarget(REF, champion="1")
CHECKS = (Check("health", True, "ready after 0.3 s"), Check("latency", False, "p95 80.00 ms: over budget"))
# Nothing listens on port 1 of the loopback: a readiness probe there fails at once, every time.
CLOSED_PORT = 1


def deployed(version: str, port: int = CLOSED_PORT, image: str | None = None) -> Deployed:
    return Deployed(PRODUCTION, "process", "flights-delay", version, image, f"http://127.0.0.1:{port}", "running", "7")


class FakeRuntime:
    """Records what was started and stopped; whatever it starts never answers."""

    kind = "process"

    def __init__(self, serving: Release | None = None) -> None:
        self.serving = serving
        self.events: list[str] = []

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        self.serving = release
        self.events.append(f"start v{release.version}")
        return deployed(release.version, port, release.image)

    def stop(self, role: str) -> None:
        self.serving = None
        self.events.append("stop")

    def retire(self, role: str, version: str) -> None:
        self.events.append(f"retire v{version}")

    def deployed(self, role: str) -> Deployed | None:
        return deployed(self.serving.version) if self.serving else None


class FakeTracker:
    def __init__(self, aliases: dict[str, str], tags: dict[str, str]) -> None:
        self.alias_map = aliases
        self.tags = tags

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.alias_map[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        del self.alias_map[alias]

    def version(self, name: str, version: str) -> VersionRef:
        return VersionRef(name, version, None, "", dict(self.tags))

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def delete_version_tags(self, name: str, version: str, keys: list[str]) -> None:
        for key in keys:
            del self.tags[key]


def test_the_runtime_is_docker_when_a_daemon_answers_else_a_process_said_plainly() -> None:
    assert discovery.choose_runtime("auto", False, lambda: True) == discovery.RuntimeChoice("docker")
    fallback = discovery.choose_runtime("auto", False, lambda: False)
    assert fallback.kind == "process" and fallback.fallback and "no Docker daemon answers" in str(fallback.note)
    forced = discovery.choose_runtime("process", True, lambda: True)
    assert forced.kind == "process" and not forced.fallback and "FLOWSHIP_RUNTIME=process" in str(forced.note)


@pytest.mark.parametrize("nginx", ["/usr/sbin/nginx", None])
def test_without_docker_the_note_says_whether_the_hosts_nginx_fronts_production(
    nginx: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "find_nginx", lambda: nginx)
    note = str(discovery.choose_runtime("auto", False, lambda: False).note)
    runtime = discovery.runtime_for("process", tmp_path, "flights-delay", production=spec())
    assert isinstance(runtime, ProcessRuntime)
    if nginx is not None:
        assert "production behind the host's nginx (/usr/sbin/nginx)" in note and runtime.behind_gateway
    else:
        assert "production on its port without a gateway (no nginx installed: `apt install nginx-light`" in note
        assert not runtime.behind_gateway
        with pytest.raises(ReleaseError, match=r"no gateway to run \(no Docker daemon, and no nginx installed\)"):
            runtime.pause("maintenance")


def spec() -> ProductionSpec:
    return ProductionSpec(GatewayConfig(), replicas=2, warm_s=0)


@pytest.mark.parametrize(("wanted", "require"), [("docker", False), ("auto", True)])
def test_docker_wanted_without_a_daemon_fails(wanted: str, require: bool) -> None:
    with pytest.raises(ReleaseError, match="no Docker daemon answers"):
        discovery.choose_runtime(wanted, require, lambda: False)


def test_an_unknown_runtime_is_refused_with_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match=r"FLOWSHIP_RUNTIME='podman': allowed values are auto, docker, process"):
        discovery.choose_runtime("podman", False, lambda: True)
    with pytest.raises(ReleaseError, match="runtime 'podman'"):
        discovery.runtime_for("podman", tmp_path, "flights-delay")


def test_process_only_discovery_finds_the_process_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSHIP_RUNTIME", "process")
    found = discovery.runtimes(tmp_path, "flights-delay")
    assert [type(r) for r in found] == [ProcessRuntime]
    assert isinstance(discovery.runtime_for("process", tmp_path, "flights-delay"), ProcessRuntime)


def test_the_bundle_path_is_named_by_project_and_version(tmp_path: Path) -> None:
    assert Layout(tmp_path).bundle_dir("flights-delay", "3") == tmp_path / "build" / "flights-delay-v3" / "model"
    previous = promotion.previous_release(Layout(tmp_path), deployed("1", image="flowship/flights-delay:v1-abc"))
    assert previous == Release(
        "flights-delay", "1", tmp_path / "build" / "flights-delay-v1" / "model", "flowship/flights-delay:v1-abc"
    )
    assert promotion.previous_release(Layout(tmp_path), None) is None


def test_a_production_that_does_not_come_up_gives_way_to_the_previous_one(tmp_path: Path) -> None:
    previous = Release("flights-delay", "1", tmp_path / "v1")
    runtime = FakeRuntime(previous)
    with pytest.raises(ReleaseError, match=r"production did not come up with v2 .*; v1 serves again"):
        promotion.start_production(
            runtime, Release("flights-delay", "2", tmp_path / "v2"), previous, CLOSED_PORT, tmp_path, 0.3
        )
    # v1 back in production (behind a gateway: switched back to, as it was kept warm), then v2 let go
    assert runtime.events == ["start v2", "start v1", "retire v2"]
    assert runtime.serving == previous


def test_restoring_production_with_nothing_before_leaves_nothing_serving(tmp_path: Path) -> None:
    failed = Release("flights-delay", "2", tmp_path / "v2")
    runtime = FakeRuntime(failed)
    promotion.restore_production(runtime, None, failed, CLOSED_PORT, tmp_path, 0.3)
    assert runtime.serving is None and runtime.events == ["stop"]


@pytest.mark.parametrize(("champion", "after_undo"), [("1", {"champion": "1"}), (None, {})])
def test_moving_champion_is_undone_to_what_it_named(champion: str | None, after_undo: dict[str, str]) -> None:
    tracker = FakeTracker({"champion": champion} if champion else {}, {})
    target = ReleaseTarget(REF, champion)
    promotion.move_champion(tracker, target)
    assert tracker.alias_map == {"champion": "2"}
    promotion.restore_champion(tracker, target)
    assert tracker.alias_map == after_undo


def test_release_tags_are_undone_to_their_values_before() -> None:
    before = {"flowship.release.verdict": "failed", "flowship.release.checks": "[]", "flowship.task": "classification"}
    tracker = FakeTracker({}, dict(before))
    tags = promotion.release_tags(TARGET, None, CHECKS)
    assert tags["flowship.release.image"] == "none (local process)"
    assert tags["flowship.release.previous_champion"] == "1"
    saved = promotion.set_tags(tracker, REF, tags)
    assert tracker.tags["flowship.release.verdict"] == "passed"
    assert saved["flowship.release.verdict"] == "failed" and saved["flowship.release.image"] is None
    promotion.restore_tags(tracker, REF, saved)
    assert tracker.tags == before


def test_a_failed_release_is_recorded_with_its_reasons() -> None:
    tags = promotion.failure_tags(CHECKS)
    assert tags["flowship.release.verdict"] == "failed"
    assert tags["flowship.release.failed_checks"] == "latency: p95 80.00 ms: over budget"
    event = promotion.failure_event("release", TARGET, None, "docker", CHECKS)
    assert event["from_version"] == "1" and event["to_version"] == "2" and event["outcome"] == "failed"
    assert event["checks"][1] == {"name": "latency", "passed": False, "detail": CHECKS[1].detail, "measured": {}}
    assert promotion.failure_event("release", TARGET, deployed("3"), "docker", CHECKS)["from_version"] == "3"


def test_the_release_result_keeps_its_plain_form() -> None:
    production = deployed("2", 18400)
    done = ReleaseResult.promoted("2", "process", Promotion(production, "1", "2026-01-01T00:00:00+00:00"), CHECKS)
    assert done.released and done.from_version == "1"
    assert done.as_dict() == {
        "version": "2",
        "released": True,
        "production": {**production.as_dict(), "from_version": "1", "time": "2026-01-01T00:00:00+00:00"},
        "runtime": "process",
        "checks": [c.as_dict() for c in CHECKS],
    }
    idle = ReleaseResult.already_serving("2", "docker", production)
    assert not idle.released and idle.checks == ()
    assert idle.as_dict() == {
        "version": "2",
        "released": False,
        "production": production.as_dict(),
        "runtime": "docker",
    }
