"""Where a model version serves: Docker containers when a daemon answers (`docker_runtime`), else local processes
(`process_runtime`).

Both run the same serving app (`python -m flowship.serving`) for a model bundle: staging as one instance on its
loopback port, production behind the gateway (or as one instance on its port, without one), writing the inference
log to a folder on the host.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

STAGING, PRODUCTION = "staging", "production"
ROLES = (STAGING, PRODUCTION)


@dataclass(frozen=True)
class Deployed:
    """What serves in one role."""

    role: str
    kind: str  # docker | process
    name: str
    version: str
    image: str | None
    url: str
    status: str
    ref: str  # container id or process id

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Release:
    """A model version ready to serve: its bundle on disk and, with Docker, its image."""

    name: str
    version: str
    bundle_dir: Path
    image: str | None = None


class Runtime(Protocol):
    kind: str

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed: ...

    def stop(self, role: str) -> None: ...

    def retire(self, role: str, version: str) -> None:
        """Stop `version` in `role` if it runs without serving (kept warm)."""

    def deployed(self, role: str) -> Deployed | None: ...


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on `host:port` (a connection is accepted)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
