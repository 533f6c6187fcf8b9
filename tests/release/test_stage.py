"""`flowship stage [--push REGISTRY]` (what CI runs on a merge): the challenger's image staged and checked, pushed
to a real registry (Debian's docker-registry on loopback) only when every check passed, production untouched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowship.release.docker_runtime import container_name
from tests.conftest import Project
from tests.helpers import flowship, free_port, start, stop, tail, wait_until
from tests.release.conftest import NAME, release_params, release_project

pytestmark = pytest.mark.integration

MANIFESTS = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


@pytest.fixture(scope="module")
def trained_project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None
) -> Iterator[Project]:
    """v1 registered as challenger, with ports of its own: the other modules that serve may run beside this one
    (test_release 18400, test_cli 18410, test_gateway 18420, test_host_gateway 18430, each with staging on +1)."""
    yield from release_project(
        tmp_path_factory, flights_sample, release_params(production_port=18440, staging_port=18441)
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker registry (distribution 2.8, Debian's docker-registry) on loopback, storing in a temporary folder:
    the Docker daemon pushes to 127.0.0.0/8 over plain HTTP."""
    exe = shutil.which("docker-registry")
    if exe is None:
        message = "Debian's docker-registry is not installed (.ci/run installs it)"
        if os.environ.get("FLOWSHIP_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{message}; FLOWSHIP_REQUIRE_DOCKER=1 makes that an error")
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = folder / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: {address}\nlog:\n  level: warn\n"
    )
    log = folder / "registry.log"
    process = start([exe, "serve", str(config)], folder, log)

    def answers() -> bool:
        try:
            return httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, "the registry's /v2/", 0.2, lambda: tail(log))
    yield address
    stop(process)


def tags(registry: str, repository: str) -> list[str]:
    answer = httpx.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10)
    return list(answer.json().get("tags") or []) if answer.status_code == 200 else []


def stage(project: Project, api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return flowship(["stage", *args], project.root, PREFECT_API_URL=api)


def staging_exists(project: Project, docker_engine) -> bool:  # noqa: ANN001
    return docker_engine.container(container_name(project.root, NAME, "staging")) is not None


def test_a_registry_name_that_cannot_work_is_refused_before_any_work(trained_project: Project) -> None:
    done = flowship(["stage", "--push", "GHCR.io/Acme"], trained_project.root)
    assert done.returncode == 1
    assert "--push: registry 'GHCR.io/Acme': expected a registry host and optional path, lower case" in done.stderr
    assert not (trained_project.root / "build" / f"{NAME}-v1").exists()  # nothing exported, nothing built


def test_stage_checks_then_pushes_the_image_and_leaves_production_alone(
    trained_project: Project,
    docker_engine,  # noqa: ANN001
    registry: str,
    prefect_api_url: str,
) -> None:
    project = trained_project
    aliases = project.tracker().aliases(NAME)
    done = stage(project, prefect_api_url, "--push", f"{registry}/team")
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    for check in ("health", "golden_set", "latency"):
        assert re.search(rf"^check: +{check} +passed", done.stdout, re.M), done.stdout
    assert "staging:       v1 passed every check (docker); staging stopped" in done.stdout
    image = re.search(r"^image: +(flowship/flights-delay:v1-\w+)$", done.stdout, re.M)
    pushed = re.search(
        rf"^pushed: +({re.escape(registry)}/team/flights-delay:(v1-\w+))@(sha256:[0-9a-f]{{64}})$", done.stdout, re.M
    )
    assert image and pushed, done.stdout
    # the registry holds the tag, under the digest the command printed
    assert tags(registry, "team/flights-delay") == [pushed.group(2)]
    manifest = httpx.head(
        f"http://{registry}/v2/team/flights-delay/manifests/{pushed.group(2)}", headers={"Accept": MANIFESTS}
    )
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == pushed.group(3)
    # the version says where its image went; staging is gone; production and the aliases are as they were
    version_tags = project.tracker().version(NAME, "1").tags
    assert version_tags["flowship.staging.verdict"] == "passed"
    assert version_tags["flowship.image.pushed"] == f"{pushed.group(1)}@{pushed.group(3)}"
    assert not staging_exists(project, docker_engine)
    assert not docker_engine.image_exists(pushed.group(1))  # the registry's name is not left on this daemon
    assert project.tracker().aliases(NAME) == aliases and "champion" not in aliases
    assert docker_engine.container(container_name(project.root, NAME, "production")) is None


def test_candidate_stages_the_version_this_commits_lock_records_whatever_the_alias_says(
    trained_project: Project,
    docker_engine,  # noqa: ANN001
    prefect_api_url: str,
) -> None:
    project = trained_project
    tracker = project.tracker()
    tracker.delete_alias(NAME, "challenger")  # e.g. moved since by another pull request's run
    try:
        without = stage(project, prefect_api_url)
        assert without.returncode == 1 and "has no 'challenger' version yet" in without.stderr
        done = stage(project, prefect_api_url, "--candidate")
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        assert "staging:       v1 passed every check (docker); staging stopped" in done.stdout
        assert "pushed:        nothing (no --push REGISTRY)" in done.stdout
        both = stage(project, prefect_api_url, "--candidate", "--version", "1")
        assert both.returncode == 1 and "--version and --candidate: choose one" in both.stderr
    finally:
        tracker.set_alias(NAME, "challenger", "1")


def test_candidate_without_a_registered_model_says_why(trained_project: Project, tmp_path: Path) -> None:
    shutil.copyfile(trained_project.params_path, tmp_path / "params.yaml")
    done = flowship(["stage", "--candidate"], tmp_path)
    assert done.returncode == 1
    assert f"--candidate: no {tmp_path / 'dvc.lock'}: run `flowship train` first" in done.stderr
    shutil.copyfile(trained_project.root / "dvc.lock", tmp_path / "dvc.lock")  # a lock whose run this store lacks
    done = flowship(["stage", "--candidate"], tmp_path)
    assert done.returncode == 1
    assert "--candidate: no MLflow run of flights-delay trained the model that dvc.lock records" in done.stderr


def test_an_unreachable_registry_fails_naming_it_after_staging_passed(
    trained_project: Project,
    docker_engine,  # noqa: ANN001
    prefect_api_url: str,
) -> None:
    project = trained_project
    closed = f"127.0.0.1:{free_port()}"
    done = stage(project, prefect_api_url, "--push", f"{closed}/team")
    assert done.returncode == 1
    assert re.search(rf"push {re.escape(closed)}/team/flights-delay:v1-\w+: .*(refused|connect)", done.stderr, re.I), (
        done.stderr
    )
    assert not staging_exists(project, docker_engine)
    assert "champion" not in project.tracker().aliases(NAME)


def test_a_failed_staging_check_pushes_nothing_and_is_recorded(
    trained_project: Project,
    docker_engine,  # noqa: ANN001
    registry: str,
    prefect_api_url: str,
) -> None:
    project = trained_project
    params = project.params()
    saved = dict(params["release"])
    params["release"]["latency_p95_ms"] = 0.001  # no server answers in a microsecond
    project.write_params(params)
    try:
        done = stage(project, prefect_api_url, "--push", f"{registry}/failed")
    finally:
        params["release"] = saved
        project.write_params(params)
    assert done.returncode == 1
    assert "latency" in done.stderr and "staging" in done.stderr, done.stderr
    assert tags(registry, "failed/flights-delay") == []
    assert not staging_exists(project, docker_engine)
    assert project.tracker().version(NAME, "1").tags["flowship.release.verdict"] == "failed"
    history = flowship(["history"], project.root, check=True).stdout
    assert re.search(r"stage +failed +v- → v1 .*latency FAILED", history), history
