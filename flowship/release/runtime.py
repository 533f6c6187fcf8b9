"""Where a model version serves: Docker containers when a daemon answers, else local processes.

Both run the same serving app (`python -m flowship.serving`) for a model bundle, one instance per role
(`staging`, `production`), on a loopback port, writing the inference log to a folder on the host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from flowship.files import atomic_write

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


class ProcessRuntime:
    """The serving app as a background process of this machine (no Docker daemon)."""

    kind = "process"

    def __init__(self, root: Path, project: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.project = project
        self.env = env or {}
        self.state_dir = root / ".flowship" / "processes"

    def _state_file(self, role: str) -> Path:
        return self.state_dir / f"{role}.json"

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        self.stop(role)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env,
            "FLOWSHIP_MODEL_DIR": str(release.bundle_dir),
            "FLOWSHIP_LOG_DIR": str(log_dir),
            "FLOWSHIP_HOST": "127.0.0.1",
            "FLOWSHIP_PORT": str(port),
        }
        server_log = (self.root / "logs" / f"serving-{role}.log").resolve()
        server_log.parent.mkdir(parents=True, exist_ok=True)
        with server_log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "flowship.serving"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the flow that started it
                cwd=self.root,
            )
        state = {
            "pid": process.pid,
            "name": release.name,
            "version": release.version,
            "port": port,
            "bundle": str(release.bundle_dir),
            "log": str(server_log),
        }
        atomic_write(self._state_file(role), json.dumps(state))
        deployed = self.deployed(role)
        assert deployed is not None
        return deployed

    def stop(self, role: str, timeout: float = 15.0) -> None:
        state_file = self._state_file(role)
        if not state_file.exists():
            return
        pid = int(json.loads(state_file.read_text())["pid"])
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)  # the app flushes its inference log on SIGTERM
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        state_file.unlink(missing_ok=True)

    def retire(self, role: str, version: str) -> None:
        """Nothing to do: a process replaces the one before it, nothing is kept warm."""

    def deployed(self, role: str) -> Deployed | None:
        state_file = self._state_file(role)
        if not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        return Deployed(
            role=role,
            kind=self.kind,
            name=state["name"],
            version=str(state["version"]),
            image=None,
            url=f"http://127.0.0.1:{state['port']}",
            status="running" if _alive(int(state["pid"])) else "exited",
            ref=str(state["pid"]),
        )


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own exited child, if it is one
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on `host:port` (a connection is accepted)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
