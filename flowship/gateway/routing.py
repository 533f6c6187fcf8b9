"""What the gateway routes to, kept on disk (`.flowship/gateway/routing.json`): the configuration is made from it.

`stable` serves; `warm` are versions it replaced, still running out of traffic until their time is up, so going
back to one is a switch of the gateway; `paused` holds the reason while `flowship pause` is in force.
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

    @property
    def routing(self) -> Routing:
        return Routing(self.stable, self.paused)

    def warm_pool(self, version: str) -> Pool | None:
        return next((w.pool for w in self.warm if w.pool.version == version), None)

    def running_pool(self, version: str) -> Pool | None:
        """The replicas of `version` that run now, serving or warm."""
        return self.stable if self.stable.version == version else self.warm_pool(version)

    def switched(self, pool: Pool, keep_until: datetime | None) -> GatewayState:
        """`pool` serves; the one it replaces stays warm until `keep_until` (None: it is let go)."""
        warm = [w for w in self.warm if w.pool.version not in (pool.version, self.stable.version)]
        if keep_until is not None and self.stable.version != pool.version:
            warm.append(Warm(self.stable, keep_until))
        return replace(self, stable=pool, warm=tuple(warm))

    def without_warm(self, versions: set[str]) -> GatewayState:
        return replace(self, warm=tuple(w for w in self.warm if w.pool.version not in versions))

    def expired(self, now: datetime) -> list[Pool]:
        return [w.pool for w in self.warm if w.until <= now]

    def pools(self) -> list[Pool]:
        return [self.stable, *(w.pool for w in self.warm)]


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
    return GatewayState(int(data["port"]), _pool(data["stable"]), warm, data.get("paused"))


def save(folder: Path, state: GatewayState) -> None:
    data = {
        "port": state.port,
        "stable": _pool_dict(state.stable),
        "warm": [{"pool": _pool_dict(w.pool), "until": w.until.astimezone(UTC).isoformat()} for w in state.warm],
        "paused": state.paused,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE_FILE, json.dumps(data, indent=2) + "\n")


def forget(folder: Path) -> None:
    (folder / STATE_FILE).unlink(missing_ok=True)
