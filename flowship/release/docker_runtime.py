"""The Docker side of a release: one image per model version, staging and production containers."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from flowship.adapters import docker_engine
from flowship.adapters.tracking import VersionRef
from flowship.errors import ContainerError, ReleaseError
from flowship.gateway.container import DockerGateway
from flowship.gateway.nginx import Backend, Pool
from flowship.release.gateway_runtime import GatewayRuntime, ProductionSpec, generation
from flowship.release.runtime import PRODUCTION, Deployed, Release

DEFAULT_BASE = "python:3.11-slim-bookworm"


def image_tag(name: str, version: str, commit: str) -> str:
    short = commit[:7] if commit and commit != "unknown" else "nocommit"
    return f"flowship/{name}:v{version}-{short}"


# A registry and path a pushed image's name starts with: `host[:port][/path…]`, lower case (Docker's reference
# grammar): ghcr.io/acme, registry.example.com:5000/ml, localhost:5000; a bare name (acme) is a Docker Hub account.
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def check_registry(registry: str) -> None:
    """ReleaseError for a registry that is not a name such as ghcr.io/acme (before any work is done for it)."""
    if not _REGISTRY.match(registry):
        raise ReleaseError(
            f"registry {registry!r}: expected a registry host and optional path, lower case, such as ghcr.io/acme, "
            "registry.example.com:5000/ml or localhost:5000"
        )


def registry_name(image: str, registry: str) -> tuple[str, str]:
    """The repository and tag that `image` (as `image_tag` names it) gets in `registry`: ghcr.io/acme and
    flowship/flights-delay:v3-abc1234 give (ghcr.io/acme/flights-delay, v3-abc1234)."""
    check_registry(registry)
    repository, _, tag = image.rpartition(":")
    return f"{registry}/{repository.rsplit('/', 1)[-1]}", tag


def wheelhouse_dir() -> Path:
    return Path(os.environ.get("FLOWSHIP_WHEELHOUSE", Path.home() / ".cache" / "flowship" / "wheelhouse"))


def build_release_image(ref: VersionRef, bundle: Path, on_log: Callable[[str], None]) -> str:
    """Build (or reuse) the image of this model version, labelled with its lineage."""
    engine = docker_engine.DockerEngine()
    tags = ref.tags
    commit = tags.get("flowship.git.commit", "unknown")
    tag = image_tag(ref.name, ref.version, commit)
    if engine.image_exists(tag):
        on_log(f"image {tag} exists: reused")
        return tag
    requirements = docker_engine.serving_requirements()
    wheelhouse = docker_engine.prepare_wheelhouse(wheelhouse_dir(), requirements)
    base = engine.ensure_base_image(DEFAULT_BASE)
    labels = {
        "io.flowship.model.name": ref.name,
        "io.flowship.model.version": ref.version,
        "io.flowship.git.commit": commit,
        "io.flowship.data.hash": tags.get("flowship.data.raw_md5", "unknown"),
    }
    with tempfile.TemporaryDirectory(prefix="flowship-build-") as tmp:
        context = docker_engine.build_context(Path(tmp), bundle, wheelhouse, requirements)
        docker_engine.build_serving(
            engine,
            context,
            tag,
            labels=labels,
            buildargs={
                "BASE_IMAGE": base,
                "MODEL_NAME": ref.name,
                "MODEL_VERSION": ref.version,
                "GIT_COMMIT": commit,
                "DATA_HASH": labels["io.flowship.data.hash"],
            },
            on_log=on_log,
        )
    return tag


def container_name(root: Path, project: str, role: str) -> str:
    """flowship-<project>-<role>-<6 hex of the project folder>: two clones on one host never share a container."""
    return f"flowship-{project}-{role}-{_digest(root)}"


def network_name(root: Path, project: str) -> str:
    return f"flowship-{project}-{_digest(root)}"


def _digest(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]


class DockerRuntime(GatewayRuntime):
    """Containers named by `container_name`, published on 127.0.0.1 only.

    With a `production` spec whose gateway is enabled, production is `replicas` containers per version on the
    project's network behind the gateway container, which alone is published (on the production port); see
    `GatewayRuntime` for how a version takes over.
    """

    kind = "docker"
    gateway: DockerGateway

    def __init__(
        self, root: Path, project: str, env: dict[str, str] | None = None, production: ProductionSpec | None = None
    ) -> None:
        self.root = root
        self.project = project
        self.env = env or {}
        self.production = production
        self.engine = docker_engine.DockerEngine()
        self.network = network_name(root, project)
        self._init_gateway(
            DockerGateway(
                self.engine,
                container_name(root, project, "gateway"),
                self.network,
                root / ".flowship" / "gateway",
                (root / "logs" / "gateway").resolve(),
                lambda: self.engine.ensure_base_image(DEFAULT_BASE),
            )
        )

    def _name(self, role: str) -> str:
        return container_name(self.root, self.project, role)

    @property
    def _pool_label(self) -> dict[str, str]:
        return {"io.flowship.pool": self.network}

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        if release.image is None:
            raise ValueError("a Docker deployment needs an image")
        if role == PRODUCTION and self.production is not None and self.behind_gateway:
            return self._switch_production(self.production, release, port, log_dir)
        self.stop(role)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.engine.run(
            release.image,
            self._name(role),
            host_port=port,
            log_dir=log_dir,
            env=self.env,
            restart_policy="unless-stopped" if restart else "no",
        )
        deployed = self.deployed(role)
        assert deployed is not None
        return deployed

    def stop(self, role: str) -> None:
        if role == PRODUCTION:
            self._stop_behind_gateway()
            self.engine.remove_network(self.network)
        self.engine.remove(self._name(role))

    def deployed(self, role: str) -> Deployed | None:
        state = self.gateway_state() if role == PRODUCTION else None
        if state is not None:
            return self._production_deployed(state)
        info = self.engine.container(self._name(role))
        if info is None:
            return None
        return Deployed(
            role=role,
            kind=self.kind,
            name=info.labels.get("io.flowship.model.name", self.project),
            version=info.labels.get("io.flowship.model.version", "?"),
            image=info.image,
            url=f"http://127.0.0.1:{info.host_port}",
            status=info.status,
            ref=info.id[:12],
        )

    # --- the replicas behind the gateway: containers on the project's network ---

    def replica_status(self, pool: Pool) -> list[str]:
        """Each replica's container status (with its health when it has one), in the pool's order."""
        shown = []
        for backend in pool.backends:
            info = self.engine.container(backend.name)
            if info is None:
                shown.append("missing")
            else:
                shown.append(info.status if info.health in (None, "healthy") else f"{info.status} ({info.health})")
        return shown

    def _prepare(self) -> None:
        self.engine.ensure_network(self.network)

    def _direct_port(self) -> int | None:
        info = self.engine.container(self._name(PRODUCTION))
        return None if info is None else info.host_port

    def _stop_direct(self) -> None:
        self.engine.remove(self._name(PRODUCTION))

    def _replica_names(self) -> list[str]:
        return self.engine.names(self._pool_label)

    def _remove_replica(self, name: str) -> None:
        self.engine.remove(name)

    def _start_pool(self, release: Release, replicas: int, log_dir: Path, timeout: float) -> Pool:
        assert release.image is not None
        named = generation(release.version)
        names = [self._name(f"production-{named}-{i}") for i in range(1, replicas + 1)]
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, name in enumerate(names, start=1):
                self.engine.run(
                    release.image,
                    name,
                    host_port=None,
                    log_dir=log_dir,
                    env={**self.env, "FLOWSHIP_LOG_WRITER": f"{named}-{i}"},
                    restart_policy="unless-stopped",
                    network=self.network,
                    labels=self._pool_label,
                    address=self.engine.static_address(self.network),  # kept when its policy restarts it
                )
            for name in names:
                self.engine.wait_healthy(name, timeout=timeout)
            backends = tuple(
                Backend(name, f"{self.engine.address(name, self.network)}:{docker_engine.CONTAINER_PORT}")
                for name in names
            )
        except ContainerError:
            for name in names:
                self.engine.remove(name)
            raise
        return Pool(release.version, backends, release.image)

    def _healthy(self, pool: Pool) -> bool:
        infos = [self.engine.container(b.name) for b in pool.backends]
        return all(i is not None and i.status == "running" and i.health != "unhealthy" for i in infos)
