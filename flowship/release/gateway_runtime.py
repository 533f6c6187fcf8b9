"""Production behind the gateway, whatever runs the replicas: containers (`DockerRuntime`) or processes of this
machine (`ProcessRuntime`, with the host's nginx).

What serves is `routing.json` (`GatewayState`): the stable pool of replicas, a canary with its share, a shadow,
pools kept warm, a pause. Every change starts what it needs first, then has the gateway reloaded gracefully to the
new state (validated by nginx before it replaces the configuration), waits for the old workers' requests, and only
then stops what no longer serves: no request is dropped by a switch.
"""

from __future__ import annotations

import contextlib
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flowship.config import GatewayConfig, Params
from flowship.errors import ConfigError, ContainerError, GatewayError, ReplicaError
from flowship.gateway import routing
from flowship.gateway.control import NginxGateway
from flowship.gateway.nginx import Pool, read_api_keys, render
from flowship.gateway.routing import GatewayState
from flowship.release.runtime import PRODUCTION, Deployed, Release, port_taken


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


# what a switch may meet: the gateway refusing or not answering, replicas (containers, processes) not starting;
# anything it started is stopped again and what served before serves on
SWITCH_ERRORS = (GatewayError, ContainerError, ReplicaError)


def generation(version: str) -> str:
    """A name of its own for each start of a version's replicas: a version started again (a new image) never
    takes the names of one that serves."""
    return f"v{version}-{secrets.token_hex(2)}"


class GatewayRuntime(ABC):
    """A runtime whose production can sit behind `gateway` (None: this machine has no gateway to offer)."""

    kind: str
    root: Path
    project: str
    production: ProductionSpec | None
    gateway: NginxGateway | None

    def _init_gateway(self, gateway: NginxGateway | None) -> None:
        self.gateway = gateway
        self.gateway_dir = self.root / ".flowship" / "gateway"

    @property
    def behind_gateway(self) -> bool:
        """Production is served behind the gateway (enabled in params.yaml, and there is one to run)."""
        return self.production is not None and self.production.gateway.enabled and self.gateway is not None

    # --- what runs the replicas ---

    @abstractmethod
    def _start_pool(self, release: Release, replicas: int, log_dir: Path, timeout: float) -> Pool:
        """`replicas` of `release`, each healthy within `timeout`, writing its own inference log in `log_dir`; none
        left running when one fails (`SWITCH_ERRORS`)."""

    @abstractmethod
    def _healthy(self, pool: Pool) -> bool:
        """Every replica of `pool` runs (and is not known to be unhealthy)."""

    @abstractmethod
    def _remove_replica(self, name: str) -> None:
        """Stop the replica `name` (its requests in flight answered) and leave nothing of it."""

    @abstractmethod
    def _replica_names(self) -> list[str]:
        """Every production replica of this project that runs or is known, by name."""

    @abstractmethod
    def replica_status(self, pool: Pool) -> list[str]:
        """Each replica's status, in the pool's order."""

    @abstractmethod
    def _direct_port(self) -> int | None:
        """The port of production served without the gateway (before it was turned on), if there is one."""

    @abstractmethod
    def _stop_direct(self) -> None:
        """Stop production served without the gateway: the port changes hands."""

    def _prepare(self) -> None:  # noqa: B027 - nothing to prepare unless a runtime says so
        """What replicas need before the first starts (a network)."""

    # --- the gateway ---

    def require_gateway(self) -> NginxGateway:
        if self.gateway is None:
            raise GatewayError("this machine has no gateway to run (no Docker daemon, and no nginx installed)")
        return self.gateway

    def gateway_state(self) -> GatewayState | None:
        """What the gateway routes to, when this runtime serves production behind it (a Docker gateway's state is
        not the host's, and the other way round)."""
        state = routing.load(self.gateway_dir)
        return state if state is not None and state.runtime == self.kind else None

    def _production_deployed(self, state: GatewayState) -> Deployed:
        gateway = self.require_gateway()
        return Deployed(
            role=PRODUCTION,
            kind=self.kind,
            name=self.project,
            version=state.stable.version,
            image=state.stable.image,
            url=f"http://127.0.0.1:{state.port}",
            status=gateway.status() or "missing",
            ref=gateway.ref(),
        )

    def _stop_behind_gateway(self) -> None:
        """The gateway and every replica stopped; what it routed to forgotten (unless another runtime's)."""
        if self.gateway is not None:
            self.gateway.remove()
        for name in self._replica_names():
            self._remove_replica(name)
        if self.gateway_state() is not None:
            routing.forget(self.gateway_dir)

    def _switch_production(self, spec: ProductionSpec, release: Release, port: int, log_dir: Path) -> Deployed:
        """`release` serving behind the gateway: its replicas started (or the warm ones), the gateway reloaded to
        them, the replaced version kept warm; refused before anything changes when the port is another program's."""
        gateway = self.require_gateway()
        state = self.gateway_state()
        direct = self._direct_port()  # production served without a gateway, before
        gateway_up = gateway.status() == "running" and gateway.host_port() == port
        if not gateway_up and port_taken(port) and direct != port:
            raise GatewayError(f"port {port} (release.production_port) is taken by another program: the gateway "
                               "cannot listen there; nothing was changed")  # fmt: skip
        self._prepare()
        timeout = spec.wait_s
        pool = state.running_pool(release.version) if state is not None else None
        started = pool is None or pool.image != release.image or not self._healthy(pool)
        if started:
            pool = self._start_pool(release, spec.replicas, log_dir, timeout)
        assert pool is not None
        keep = datetime.now(UTC) + timedelta(seconds=spec.warm_s) if spec.warm_s > 0 else None
        new_state = (
            replace(state.switched(pool, keep), port=port)
            if state is not None
            else GatewayState(port, pool, runtime=self.kind)
        )
        try:
            gateway.apply(self._render(spec, new_state))
            if not gateway_up:  # none yet, stopped, or on another port (release.production_port changed): (re)started
                if direct is not None:
                    self._stop_direct()  # the port changes hands: the gateway serves from now on
                gateway.start(port)
            gateway.wait_serving(port, None if new_state.paused else pool.version, timeout)
        except SWITCH_ERRORS:
            if state is not None:  # traffic back where it was before the new pool goes
                with contextlib.suppress(*SWITCH_ERRORS):
                    gateway.apply(self._render(spec, state))
            if started:
                self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        gateway.wait_drained(timeout)
        if state is not None and keep is None and state.stable.version != pool.version:
            self._remove_pool(state.stable)
        self.reap()
        return self._production_deployed(new_state)

    def retire(self, role: str, version: str) -> None:
        """Stop `version`'s replicas unless they serve (a failed promotion's, once the previous one is back)."""
        state = self.gateway_state()
        if role != PRODUCTION or state is None or state.stable.version == version:
            return
        pool = state.warm_pool(version)
        if pool is not None:
            routing.save(self.gateway_dir, state.without_warm({version}))
            self._remove_pool(pool)

    def pause(self, reason: str | None) -> GatewayState:
        """The gateway answers every request with 503 (`reason` given) or serves again (None); replicas, aliases
        and the versions behind it are untouched."""
        gateway = self.require_gateway()
        spec = self.production
        state = self.gateway_state()
        if spec is None or state is None or gateway.status() is None:
            raise GatewayError("no gateway serves this project (deploy first): there is nothing to pause or resume")
        new_state = replace(state, paused=reason)
        gateway.apply(self._render(spec, new_state))
        routing.save(self.gateway_dir, new_state)
        gateway.wait_serving(state.port, None if reason is not None else state.stable.version, timeout=30)
        return new_state

    def set_canary(self, release: Release, weight: float, log_dir: Path) -> GatewayState:
        """`weight` percent of live traffic to `release`'s replicas, started beside stable the first time; the
        stable replicas and the aliases are untouched."""
        spec, state, gateway = self._serving()
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
            gateway.apply(self._render(spec, new_state))
        except SWITCH_ERRORS:
            if started:
                self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        gateway.wait_drained(timeout)  # every worker now splits by the new weight
        return new_state

    def clear_canary(self) -> GatewayState:
        """No traffic to the canary any more (answers in flight finish), then its replicas go."""
        spec, state, _ = self._serving()
        return state if state.canary is None else self._let_go(spec, state.with_canary(None, 0.0), state.canary)

    def set_shadow(self, release: Release, log_dir: Path) -> GatewayState:
        """A copy of every request to `release`'s replicas (started beside stable, logging into `log_dir`); their
        answers are dropped by the gateway."""
        spec, state, gateway = self._serving()
        if release.version == state.stable.version:
            raise GatewayError(f"v{release.version} already serves: it cannot be its own shadow")
        pool = self._start_pool(release, spec.replicas, log_dir, spec.wait_s)
        new_state = state.with_shadow(pool)
        try:
            gateway.apply(self._render(spec, new_state))
        except SWITCH_ERRORS:
            self._remove_pool(pool)
            raise
        routing.save(self.gateway_dir, new_state)
        return new_state

    def clear_shadow(self) -> GatewayState:
        """No more copies to the shadow (those in flight finish), then its replicas go."""
        spec, state, _ = self._serving()
        return state if state.shadow is None else self._let_go(spec, state.with_shadow(None), state.shadow)

    def _let_go(self, spec: ProductionSpec, new_state: GatewayState, pool: Pool) -> GatewayState:
        """`new_state` in force (`pool` no longer in it), the requests in flight to `pool` answered, then it goes."""
        gateway = self.require_gateway()
        gateway.apply(self._render(spec, new_state))
        routing.save(self.gateway_dir, new_state)
        gateway.wait_drained(spec.wait_s)
        self._remove_pool(pool)
        return new_state

    def reconfigure(self) -> bool:
        """The running gateway made to follow params.yaml's `gateway:` as it is now; whether anything changed."""
        spec, state, gateway = self._serving()
        text = self._render(spec, state)
        if gateway.configuration() == text:
            return False
        gateway.apply(text)
        gateway.wait_drained(spec.wait_s)
        return True

    def canary_alive(self) -> bool:
        state = self.gateway_state()
        return state is not None and state.canary is not None and self._healthy(state.canary)

    def shadow_alive(self) -> bool:
        state = self.gateway_state()
        return state is not None and state.shadow is not None and self._healthy(state.shadow)

    def reap(self, now: datetime | None = None) -> list[str]:
        """Stop warm versions past their time, and replicas the routing no longer names; the versions stopped."""
        state = self.gateway_state()
        if state is None:
            return []
        expired = state.expired(now or datetime.now(UTC))
        if expired:
            state = state.without_warm({p.version for p in expired})
            routing.save(self.gateway_dir, state)
        kept = {b.name for pool in state.pools() for b in pool.backends}
        for name in self._replica_names():
            if name not in kept:
                self._remove_replica(name)
        for pool in expired:
            self._remove_pool(pool)
        return [p.version for p in expired]

    def _serving(self) -> tuple[ProductionSpec, GatewayState, NginxGateway]:
        state = self.gateway_state()
        if self.production is None or state is None or self.gateway is None or self.gateway.status() != "running":
            raise GatewayError("no gateway serves this project: a canary needs production behind the gateway")
        return self.production, state, self.gateway

    def _render(self, spec: ProductionSpec, state: GatewayState) -> str:
        return render(self.require_gateway().site(state.port), state.routing, spec.gateway, spec.api_keys)

    def _remove_pool(self, pool: Pool) -> None:
        for backend in pool.backends:
            self._remove_replica(backend.name)
