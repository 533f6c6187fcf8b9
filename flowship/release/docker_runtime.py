"""The Docker side of a release: one image per model version, staging and production containers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flowship.adapters import docker_engine
from flowship.adapters.tracking import VersionRef
from flowship.config import GatewayConfig, Params
from flowship.errors import ConfigError, ContainerError, GatewayError
from flowship.gateway import routing
from flowship.gateway.container import SITE, DockerGateway
from flowship.gateway.container import ensure_image as ensure_gateway_image
from flowship.gateway.nginx import Backend, Pool, read_api_keys, render
from flowship.gateway.routing import GatewayState
from flowship.release.runtime import PRODUCTION, Deployed, Release, port_taken

DEFAULT_BASE = "python:3.11-slim-bookworm"


def image_tag(name: str, version: str, commit: str) -> str:
    short = commit[:7] if commit and commit != "unknown" else "nocommit"
    return f"flowship/{name}:v{version}-{short}"


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
        engine.build(
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


@dataclass(frozen=True)
class ProductionSpec:
    """How production is served behind the gateway: its settings, the replicas per version, the warm time, and the
    API keys it asks for (read from `gateway.api_keys_file`; None: none)."""

    gateway: GatewayConfig
    replicas: int
    warm_s: float
    api_keys: list[str] | None = None

    @property
    def wait_s(self) -> float:
        """How long a replica may take to become healthy, and the requests in flight to finish after a switch."""
        return max(30.0, self.gateway.timeout_s + 5)

    @classmethod
    def from_params(cls, params: Params, root: Path) -> ProductionSpec:
        """From `params.yaml`; the API keys file (relative to the project) is read here: a bad one is a ConfigError."""
        gateway = params.gateway
        keys = None
        if gateway.api_keys_file is not None:
            path = gateway.api_keys_file if gateway.api_keys_file.is_absolute() else root / gateway.api_keys_file
            try:
                keys = read_api_keys(path)
            except OSError as exc:
                raise ConfigError([f"gateway.api_keys_file: cannot read {path} ({exc.strerror})"]) from None
            except ValueError as exc:
                raise ConfigError([f"gateway.api_keys_file: {exc}"]) from None
        return cls(gateway, params.release.replica_count, params.release.warm_s, keys)


class DockerRuntime:
    """Containers named by `container_name`, published on 127.0.0.1 only.

    With a `production` spec whose gateway is enabled, production is `replicas` containers per version on the
    project's network behind the gateway container, which alone is published (on the production port); a new
    version starts beside the one serving and takes over by a graceful reload of the gateway.
    """

    kind = "docker"

    def __init__(
        self, root: Path, project: str, env: dict[str, str] | None = None, production: ProductionSpec | None = None
    ) -> None:
        self.root = root
        self.project = project
        self.env = env or {}
        self.production = production
        self.engine = docker_engine.DockerEngine()
        self.network = network_name(root, project)
        self.gateway_dir = root / ".flowship" / "gateway"
        self.gateway = DockerGateway(
            self.engine,
            container_name(root, project, "gateway"),
            self.network,
            self.gateway_dir,
            (root / "logs" / "gateway").resolve(),
        )

    def _name(self, role: str) -> str:
        return container_name(self.root, self.project, role)

    @property
    def _pool_label(self) -> dict[str, str]:
        return {"io.flowship.pool": self.network}

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        if release.image is None:
            raise ValueError("a Docker deployment needs an image")
        spec = self.production
        if role == PRODUCTION and spec is not None and spec.gateway.enabled:
            return self._switch_production(spec, release, port, log_dir)
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
            self.gateway.remove()
            for name in self.engine.names(self._pool_label):
                self.engine.remove(name)
            routing.forget(self.gateway_dir)
            self.engine.remove_network(self.network)
        self.engine.remove(self._name(role))

    def retire(self, role: str, version: str) -> None:
        """Stop `version`'s replicas unless they serve (a failed promotion's, once the previous one is back)."""
        state = routing.load(self.gateway_dir)
        if role != PRODUCTION or state is None or state.stable.version == version:
            return
        pool = state.warm_pool(version)
        if pool is not None:
            routing.save(self.gateway_dir, state.without_warm({version}))
            self._remove_pool(pool)

    def deployed(self, role: str) -> Deployed | None:
        state = routing.load(self.gateway_dir) if role == PRODUCTION else None
        if state is not None:
            info = self.engine.container(self.gateway.name)
            return Deployed(
                role=role,
                kind=self.kind,
                name=self.project,
                version=state.stable.version,
                image=state.stable.image,
                url=f"http://127.0.0.1:{state.port}",
                status=info.status if info is not None else "missing",
                ref=info.id[:12] if info is not None else "-",
            )
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

    # --- production behind the gateway ---

    def _switch_production(self, spec: ProductionSpec, release: Release, port: int, log_dir: Path) -> Deployed:
        """`release` serving behind the gateway: its replicas started (or the warm ones), the gateway reloaded to
        them, the replaced version kept warm; refused before anything changes when the port is another program's."""
        assert release.image is not None
        state = routing.load(self.gateway_dir)
        direct = self.engine.container(self._name(PRODUCTION))  # production served without a gateway, before
        gateway_up = self.gateway.status() == "running" and self.gateway.host_port() == port
        if not gateway_up and port_taken(port) and not (direct is not None and direct.host_port == port):
            raise GatewayError(f"port {port} (release.production_port) is taken by another program: the gateway "
                               "cannot listen there; nothing was changed")  # fmt: skip
        image = ensure_gateway_image(self.engine, lambda: self.engine.ensure_base_image(DEFAULT_BASE))
        self.engine.ensure_network(self.network)
        timeout = spec.wait_s
        pool = state.running_pool(release.version) if state is not None else None
        started = pool is None or pool.image != release.image or not self._healthy(pool)
        if started:
            pool = self._start_pool(release, spec.replicas, log_dir, timeout)
        assert pool is not None
        keep = datetime.now(UTC) + timedelta(seconds=spec.warm_s) if spec.warm_s > 0 else None
        new_state = replace(state.switched(pool, keep), port=port) if state is not None else GatewayState(port, pool)
        try:
            self.gateway.apply(self._render(spec, new_state))
            if not gateway_up:  # none yet, stopped, or on another port (release.production_port changed): (re)started
                if direct is not None:
                    self.engine.remove(direct.name)  # the port changes hands: the gateway serves from now on
                self.gateway.start(image, port)
            self.gateway.wait_serving(port, None if new_state.paused else pool.version, timeout)
        except (GatewayError, ContainerError):
            if state is not None:  # traffic back where it was before the new pool goes
                with contextlib.suppress(GatewayError, ContainerError):
                    self.gateway.apply(self._render(spec, state))
            if started:
                self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        self.gateway.wait_drained(timeout)
        if state is not None and keep is None and state.stable.version != pool.version:
            self._remove_pool(state.stable)
        self.reap()
        deployed = self.deployed(PRODUCTION)
        assert deployed is not None
        return deployed

    def pause(self, reason: str | None) -> GatewayState:
        """The gateway answers every request with 503 (`reason` given) or serves again (None); containers, aliases
        and the versions behind it are untouched."""
        spec = self.production
        state = routing.load(self.gateway_dir)
        if spec is None or state is None or self.gateway.status() is None:
            raise GatewayError("no gateway serves this project (deploy first): there is nothing to pause or resume")
        new_state = replace(state, paused=reason)
        self.gateway.apply(self._render(spec, new_state))
        routing.save(self.gateway_dir, new_state)
        self.gateway.wait_serving(state.port, None if reason is not None else state.stable.version, timeout=30)
        return new_state

    def set_canary(self, release: Release, weight: float, log_dir: Path) -> GatewayState:
        """`weight` percent of live traffic to `release`'s replicas, started beside stable the first time; the
        stable replicas and the aliases are untouched."""
        spec, state = self._serving()
        timeout = spec.wait_s
        if release.version == state.stable.version:
            raise GatewayError(f"v{release.version} already serves: it cannot be its own canary")
        pool = state.canary if state.canary is not None and state.canary.version == release.version else None
        started = pool is None or pool.image != release.image or not self._healthy(pool)
        if started:
            pool = self._start_pool(release, spec.replicas, log_dir, timeout)
        assert pool is not None
        new_state = state.with_canary(pool, weight)
        try:
            self.gateway.apply(self._render(spec, new_state))
        except (GatewayError, ContainerError):
            if started:
                self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        self.gateway.wait_drained(timeout)  # every worker now splits by the new weight
        return new_state

    def clear_canary(self) -> GatewayState:
        """No traffic to the canary any more (answers in flight finish), then its replicas go."""
        spec, state = self._serving()
        return state if state.canary is None else self._let_go(spec, state.with_canary(None, 0.0), state.canary)

    def _let_go(self, spec: ProductionSpec, new_state: GatewayState, pool: Pool) -> GatewayState:
        """`new_state` in force (`pool` no longer in it), the requests in flight to `pool` answered, then it goes."""
        self.gateway.apply(self._render(spec, new_state))
        routing.save(self.gateway_dir, new_state)
        self.gateway.wait_drained(spec.wait_s)
        self._remove_pool(pool)
        return new_state

    def reconfigure(self) -> bool:
        """The running gateway made to follow params.yaml's `gateway:` as it is now; whether anything changed."""
        spec, state = self._serving()
        text = self._render(spec, state)
        if self.gateway.configuration() == text:
            return False
        self.gateway.apply(text)
        self.gateway.wait_drained(spec.wait_s)
        return True

    def set_shadow(self, release: Release, log_dir: Path) -> GatewayState:
        """A copy of every request to `release`'s replicas (started beside stable, logging into `log_dir`); their
        answers are dropped by the gateway."""
        spec, state = self._serving()
        if release.version == state.stable.version:
            raise GatewayError(f"v{release.version} already serves: it cannot be its own shadow")
        pool = self._start_pool(release, spec.replicas, log_dir, spec.wait_s)
        new_state = state.with_shadow(pool)
        try:
            self.gateway.apply(self._render(spec, new_state))
        except (GatewayError, ContainerError):
            self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        return new_state

    def clear_shadow(self) -> GatewayState:
        """No more copies to the shadow (those in flight finish), then its replicas go."""
        spec, state = self._serving()
        return state if state.shadow is None else self._let_go(spec, state.with_shadow(None), state.shadow)

    def canary_alive(self) -> bool:
        state = routing.load(self.gateway_dir)
        return state is not None and state.canary is not None and self._healthy(state.canary)

    def shadow_alive(self) -> bool:
        state = routing.load(self.gateway_dir)
        return state is not None and state.shadow is not None and self._healthy(state.shadow)

    def _serving(self) -> tuple[ProductionSpec, GatewayState]:
        state = routing.load(self.gateway_dir)
        if self.production is None or state is None or self.gateway.status() != "running":
            raise GatewayError("no gateway serves this project: a canary needs production behind the gateway")
        return self.production, state

    def gateway_state(self) -> GatewayState | None:
        return routing.load(self.gateway_dir)

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

    def _render(self, spec: ProductionSpec, state: GatewayState) -> str:
        return render(SITE, state.routing, spec.gateway, spec.api_keys)

    def reap(self, now: datetime | None = None) -> list[str]:
        """Stop warm versions past their time, and replicas the routing no longer names; the versions stopped."""
        state = routing.load(self.gateway_dir)
        if state is None:
            return []
        expired = state.expired(now or datetime.now(UTC))
        if expired:
            state = state.without_warm({p.version for p in expired})
            routing.save(self.gateway_dir, state)
        kept = {b.name for pool in state.pools() for b in pool.backends}
        for name in self.engine.names(self._pool_label):
            if name not in kept:
                self.engine.remove(name)
        for pool in expired:
            self._remove_pool(pool)
        return [p.version for p in expired]

    def _start_pool(self, release: Release, replicas: int, log_dir: Path, timeout: float) -> Pool:
        assert release.image is not None
        # a generation of its own: a version started again (a new image) never takes the names of one that serves
        generation = f"v{release.version}-{secrets.token_hex(2)}"
        names = [self._name(f"production-{generation}-{i}") for i in range(1, replicas + 1)]
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, name in enumerate(names, start=1):
                self.engine.run(
                    release.image,
                    name,
                    host_port=None,
                    log_dir=log_dir,
                    env={**self.env, "FLOWSHIP_LOG_WRITER": f"{generation}-{i}"},
                    restart_policy="unless-stopped",
                    network=self.network,
                    labels=self._pool_label,
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

    def _remove_pool(self, pool: Pool) -> None:
        for backend in pool.backends:
            self.engine.remove(backend.name)
