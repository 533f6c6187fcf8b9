"""Which runtime serves a project: the one a release uses, and every one that may hold its deployments."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowship.adapters.docker_engine import DockerEngine
from flowship.errors import ReleaseError
from flowship.gateway.host import find_nginx
from flowship.release.docker_runtime import DockerRuntime
from flowship.release.gateway_runtime import GatewayRuntime, ProductionSpec
from flowship.release.process_runtime import ProcessRuntime
from flowship.release.runtime import Runtime

WANTED = ("auto", "docker", "process")


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a release uses; `note` says why when it is not Docker, `fallback` when Docker was wanted."""

    kind: str
    note: str | None = None
    fallback: bool = False


def choose_runtime(
    wanted: str | None = None, require_docker: bool | None = None, docker_answers: Callable[[], bool] | None = None
) -> RuntimeChoice:
    """Docker when a daemon answers; otherwise local processes (behind the host's nginx when one is installed),
    said plainly.

    FLOWSHIP_RUNTIME=docker|process forces one (docker then fails when no daemon answers);
    FLOWSHIP_REQUIRE_DOCKER=1 refuses the fallback.
    """
    wanted = os.environ.get("FLOWSHIP_RUNTIME", "auto") if wanted is None else wanted
    if require_docker is None:
        require_docker = os.environ.get("FLOWSHIP_REQUIRE_DOCKER") == "1"
    if wanted not in WANTED:
        raise ReleaseError(f"FLOWSHIP_RUNTIME={wanted!r}: allowed values are {', '.join(WANTED)}")
    if wanted == "process":
        return RuntimeChoice("process", f"FLOWSHIP_RUNTIME=process: serving as local processes {_front()}")
    if (docker_answers or DockerEngine().available)():
        return RuntimeChoice("docker")
    if wanted == "docker" or require_docker:
        raise ReleaseError("no Docker daemon answers (FLOWSHIP_RUNTIME=docker or FLOWSHIP_REQUIRE_DOCKER=1 wants one)")
    note = f"no Docker daemon answers: serving the same app as local processes instead (no image), {_front()}"
    return RuntimeChoice("process", note, fallback=True)


def _front() -> str:
    nginx = find_nginx()
    if nginx is not None:
        return f"production behind the host's nginx ({nginx})"
    return "production on its port without a gateway (no nginx installed: `apt install nginx-light` gives it one)"


def runtime_for(
    kind: str, root: Path, project: str, env: dict[str, str] | None = None, production: ProductionSpec | None = None
) -> Runtime:
    """The runtime of this kind for the project; `env` goes to the serving app it starts, `production` says how
    production is served (with Docker: behind the gateway)."""
    if kind == "docker":
        return DockerRuntime(root, project, env, production)
    if kind == "process":
        return ProcessRuntime(root, project, env, production, find_nginx())
    raise ReleaseError(f"runtime {kind!r}: allowed values are docker, process")


def runtimes(root: Path, project: str) -> list[Runtime]:
    """Every runtime that may hold a deployment of this project: Docker (when a daemon answers) and processes.

    FLOWSHIP_RUNTIME narrows it to one, as it does for a release.
    """
    wanted = os.environ.get("FLOWSHIP_RUNTIME", "auto")
    found: list[Runtime] = [] if wanted == "docker" else [ProcessRuntime(root, project, nginx=find_nginx())]
    if wanted != "process" and DockerEngine().available():
        found.insert(0, DockerRuntime(root, project))
    return found


def gateway_runtime(root: Path, project: str, production: ProductionSpec | None = None) -> GatewayRuntime:
    """The runtime a release would use now, whose gateway (a container, or the host's nginx) fronts production."""
    runtime = runtime_for(choose_runtime().kind, root, project, production=production)
    assert isinstance(runtime, GatewayRuntime)
    return runtime
