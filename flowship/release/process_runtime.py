"""Serving as processes of this machine, when no Docker daemon answers: staging as one process on its port;
production behind the host's nginx (replicas on free loopback ports) when nginx is installed, else one process on
the production port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flowship import pids
from flowship.errors import ReplicaError
from flowship.files import atomic_write
from flowship.gateway.host import HostGateway
from flowship.gateway.nginx import Backend, Pool
from flowship.release.gateway_runtime import GatewayRuntime, ProductionSpec, generation
from flowship.release.runtime import PRODUCTION, Deployed, Release


class ProcessRuntime(GatewayRuntime):
    """The serving app as background processes of this machine (no Docker daemon).

    With `nginx` (the host's, found by `discovery`) and a `production` spec whose gateway is enabled, production is
    `replicas` processes per version on free loopback ports behind the host's nginx on the production port, switched
    as `GatewayRuntime` says; otherwise one process serves production on its port directly.
    """

    kind = "process"

    def __init__(
        self,
        root: Path,
        project: str,
        env: dict[str, str] | None = None,
        production: ProductionSpec | None = None,
        nginx: str | None = None,
    ) -> None:
        self.root = root
        self.project = project
        self.env = env or {}
        self.production = production
        self.state_dir = root / ".flowship" / "processes"
        self.replica_dir = self.state_dir / "replicas"
        gateway = HostGateway(nginx, root / ".flowship" / "gateway", root / "logs" / "gateway") if nginx else None
        self._init_gateway(gateway)

    def _state_file(self, role: str) -> Path:
        return self.state_dir / f"{role}.json"

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        if role == PRODUCTION and self.production is not None and self.behind_gateway:
            return self._switch_production(self.production, release, port, log_dir)
        self.stop(role)
        server_log = self.root / "logs" / f"serving-{role}.log"
        _spawn(self._state_file(role), release, port, log_dir, server_log, self.env, self.root)
        deployed = self.deployed(role)
        assert deployed is not None
        return deployed

    def stop(self, role: str, timeout: float = 15.0) -> None:
        if role == PRODUCTION:
            self._stop_behind_gateway()
        _terminate(self._state_file(role), timeout)

    def deployed(self, role: str) -> Deployed | None:
        state = self.gateway_state() if role == PRODUCTION and self.gateway is not None else None
        return self._production_deployed(state) if state is not None else self._process(role)

    def _process(self, role: str) -> Deployed | None:
        """The one process serving `role` on its port (production without the gateway), if there is one."""
        state_file = self._state_file(role)
        if not state_file.exists():
            return None
        process = json.loads(state_file.read_text())
        return Deployed(
            role=role,
            kind=self.kind,
            name=process["name"],
            version=str(process["version"]),
            image=None,
            url=f"http://127.0.0.1:{process['port']}",
            status="running" if _alive(int(process["pid"])) else "exited",
            ref=str(process["pid"]),
        )

    # --- the replicas behind the host's nginx: processes on free loopback ports ---

    def replica_status(self, pool: Pool) -> list[str]:
        shown = []
        for backend in pool.backends:
            path = self.replica_dir / f"{backend.name}.json"
            if not path.exists():
                shown.append("missing")
            else:
                shown.append("running" if _alive(int(json.loads(path.read_text())["pid"])) else "exited")
        return shown

    def _direct_port(self) -> int | None:
        direct = self._process(PRODUCTION)
        return int(direct.url.rsplit(":", 1)[1]) if direct is not None and direct.status == "running" else None

    def _stop_direct(self) -> None:
        _terminate(self._state_file(PRODUCTION), 15.0)

    def _replica_names(self) -> list[str]:
        return sorted(path.stem for path in self.replica_dir.glob("*.json"))

    def _remove_replica(self, name: str) -> None:
        _terminate(self.replica_dir / f"{name}.json", 15.0)

    def _start_pool(self, release: Release, replicas: int, log_dir: Path, timeout: float) -> Pool:
        named = generation(release.version)
        names = [f"production-{named}-{i}" for i in range(1, replicas + 1)]
        backends = []
        try:
            for i, name in enumerate(names, start=1):
                port = free_port()
                env = {**self.env, "FLOWSHIP_LOG_WRITER": f"{named}-{i}"}
                server_log = self.root / "logs" / f"serving-{name}.log"
                _spawn(self.replica_dir / f"{name}.json", release, port, log_dir, server_log, env, self.root)
                backends.append(Backend(name, f"127.0.0.1:{port}"))
            for backend in backends:
                _wait_ready(backend, self.replica_dir / f"{backend.name}.json", timeout)
        except ReplicaError:
            for name in names:
                self._remove_replica(name)
            raise
        return Pool(release.version, tuple(backends), release.image)

    def _healthy(self, pool: Pool) -> bool:
        for backend in pool.backends:
            path = self.replica_dir / f"{backend.name}.json"
            if not path.exists() or not _alive(int(json.loads(path.read_text())["pid"])):
                return False
        return True


def _spawn(
    state_file: Path, release: Release, port: int, log_dir: Path, server_log: Path, env: dict[str, str], cwd: Path
) -> int:
    """The serving app for `release` on 127.0.0.1:`port`, in the background (it outlives the flow that started it);
    what it is, in `state_file`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    server_log = server_log.resolve()
    server_log.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        **env,
        "FLOWSHIP_MODEL_DIR": str(release.bundle_dir),
        "FLOWSHIP_LOG_DIR": str(log_dir),
        "FLOWSHIP_HOST": "127.0.0.1",
        "FLOWSHIP_PORT": str(port),
    }
    with server_log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "flowship.serving"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
    state = {
        "pid": process.pid,
        "name": release.name,
        "version": release.version,
        "port": port,
        "bundle": str(release.bundle_dir),
        "log": str(server_log),
    }
    atomic_write(state_file, json.dumps(state))
    return process.pid


def _terminate(state_file: Path, timeout: float) -> None:
    """Stop the process `state_file` names (SIGTERM: the app answers what it holds and flushes its inference log),
    killed after `timeout`; then forget it."""
    if not state_file.exists():
        return
    pid = int(json.loads(state_file.read_text())["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)


def _wait_ready(backend: Backend, state_file: Path, timeout: float) -> None:
    """Until the replica answers /ready; ReplicaError when it exits first or does not answer within `timeout`."""
    pid = int(json.loads(state_file.read_text())["pid"])
    log = json.loads(state_file.read_text())["log"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ReplicaError(f"replica {backend.name} exited before it was ready (its log: {log})")
        try:
            with urllib.request.urlopen(f"http://{backend.address}/ready", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ReplicaError(f"replica {backend.name} was not ready within {timeout:.0f} s (its log: {log})")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """The replica `pid` has not exited (reaped here when it is this command's own child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pids.running(pid)
