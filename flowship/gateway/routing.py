"""What the gateway routes to, kept on disk (`.flowship/gateway/routing.json`): the configuration is made from it.

`stable` serves (and `canary`, a challenger, gets `canary_weight` percent of the traffic); `warm` are versions it
replaced, still running out of traffic until their time is up, so going back to one is a switch of the gateway;
`paused` holds the reason while `flowship pause` is in force.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowship.files import atomic_write
from flowship.gateway.nginx import Backend, Pool, Routing

STATE_FILE = "routing.json"


@dataclass(frozen=True)
class Warm:
    """A version out of traffic, kept running until `until`."""

    pool: Pool
    until: datetime


@dataclass(frozen=True)
class GatewayState:
    port: int
    stable: Pool
    warm: tuple[Warm, ...] = field(default_factory=tuple)
    paused: str | None = None
    canary: Pool | None = None
    canary_weight: float = 0.0
    shadow: Pool | None = None
    runtime: str = "docker"  # what runs the gateway and the replicas: docker, or process (the host's nginx)

    @property
    def routing(self) -> Routing:
        return Routing(self.stable, self.paused, self.canary, self.canary_weight, self.shadow)

    def with_shadow(self, pool: Pool | None) -> GatewayState:
        """A copy of every request to `pool` (None: to no one)."""
        return replace(self, shadow=pool)

    def with_canary(self, pool: Pool | None, weight: float) -> GatewayState:
        """`weight` percent of the traffic to `pool` (None, 0: no canary)."""
        return replace(self, canary=pool, canary_weight=weight if pool is not None else 0.0)

    def canary_share(self, version: str) -> float:
        """The percent of live traffic `version` gets as the canary (0: it is not the canary)."""
        return self.canary_weight if self.canary is not None and self.canary.version == version else 0.0

    def warm_pool(self, version: str) -> Pool | None:
        return next((w.pool for w in self.warm if w.pool.version == version), None)

    def running_pool(self, version: str) -> Pool | None:
        """The replicas of `version` that run now, serving, as the canary, or warm (not a shadow's: they log
        elsewhere, so they never become production's)."""
        if self.stable.version == version:
            return self.stable
        if self.canary is not None and self.canary.version == version:
            return self.canary
        return self.warm_pool(version)

    def switched(self, pool: Pool, keep_until: datetime | None) -> GatewayState:
        """`pool` serves; the one it replaces stays warm until `keep_until` (None: it is let go)."""
        warm = [w for w in self.warm if w.pool.version not in (pool.version, self.stable.version)]
        if keep_until is not None and self.stable.version != pool.version:
            warm.append(Warm(self.stable, keep_until))
        return replace(self, stable=pool, warm=tuple(warm), canary=None, canary_weight=0.0, shadow=None)

    def without_warm(self, versions: set[str]) -> GatewayState:
        return replace(self, warm=tuple(w for w in self.warm if w.pool.version not in versions))

    def expired(self, now: datetime) -> list[Pool]:
        return [w.pool for w in self.warm if w.until <= now]

    def pools(self) -> list[Pool]:
        trials = [p for p in (self.canary, self.shadow) if p is not None]
        return [self.stable, *trials, *(w.pool for w in self.warm)]


def _pool(data: dict[str, Any]) -> Pool:
    backends = tuple(Backend(str(b["name"]), str(b["address"])) for b in data["backends"])
    return Pool(str(data["version"]), backends, data.get("image"))


def _pool_dict(pool: Pool) -> dict[str, Any]:
    return {
        "version": pool.version,
        "image": pool.image,
        "backends": [{"name": b.name, "address": b.address} for b in pool.backends],
    }


def load(folder: Path) -> GatewayState | None:
    path = folder / STATE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    warm = tuple(Warm(_pool(w["pool"]), datetime.fromisoformat(w["until"])) for w in data.get("warm", []))
    canary = _pool(data["canary"]) if data.get("canary") else None
    weight = float(data.get("canary_weight", 0.0))
    shadow = _pool(data["shadow"]) if data.get("shadow") else None
    return GatewayState(
        int(data["port"]),
        _pool(data["stable"]),
        warm,
        data.get("paused"),
        canary,
        weight,
        shadow,
        data.get("runtime", "docker"),  # written before hosts had a gateway of their own: Docker's
    )


def save(folder: Path, state: GatewayState) -> None:
    data = {
        "port": state.port,
        "stable": _pool_dict(state.stable),
        "warm": [{"pool": _pool_dict(w.pool), "until": w.until.astimezone(UTC).isoformat()} for w in state.warm],
        "paused": state.paused,
        "canary": _pool_dict(state.canary) if state.canary is not None else None,
        "canary_weight": state.canary_weight,
        "shadow": _pool_dict(state.shadow) if state.shadow is not None else None,
        "runtime": state.runtime,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE_FILE, json.dumps(data, indent=2) + "\n")


def forget(folder: Path) -> None:
    (folder / STATE_FILE).unlink(missing_ok=True)
