"""The gateway as a process of this machine, when no Docker daemon answers: the host's own nginx (Debian's
`nginx-light`), started by flowship in the background with the project's configuration, listening on
127.0.0.1:<production port>, its pid file, temp files and configuration in `.flowship/gateway/`, its logs in
`logs/gateway/`.

Nothing restarts it if its master process dies (nginx restarts its own workers); `flowship status` says when it
is not running and the next `flowship deploy` starts it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from flowship import pids
from flowship.errors import GatewayError
from flowship.files import atomic_write
from flowship.gateway.control import ACCESS_LOG, CONF_FILE, SHADOW_LOG, NginxGateway
from flowship.gateway.nginx import Site

STATE_FILE = "host.json"  # the port the running nginx was started on
PID_FILE = "nginx.pid"


def find_nginx() -> str | None:
    """The host's nginx: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


class HostGateway(NginxGateway):
    """The host's `nginx` (a path) for one project, its configuration in `conf_dir`, its logs in `log_dir`."""

    kind = "host"

    def __init__(self, nginx: str, conf_dir: Path, log_dir: Path) -> None:
        super().__init__(conf_dir, log_dir)
        self.nginx = nginx

    def site(self, port: int) -> Site:
        return Site(
            listen=f"127.0.0.1:{port}",
            access_log=self.log_dir.resolve() / ACCESS_LOG,
            shadow_log=self.log_dir.resolve() / SHADOW_LOG,
            error_log=str(self.log_dir.resolve() / "error.log"),
            pid=self.conf_dir.resolve() / PID_FILE,
            temp=self.conf_dir.resolve() / "temp",
            workers=2,
            # run by root, nginx would hand its workers to `nobody`, who cannot reach the project's folders
            user="root" if os.geteuid() == 0 else None,
        )

    def status(self) -> str | None:
        if self._master() is not None:
            return "running"
        return "exited" if (self.conf_dir / STATE_FILE).exists() else None

    def host_port(self) -> int | None:
        state = self.conf_dir / STATE_FILE
        if self._master() is None or not state.exists():
            return None
        return int(json.loads(state.read_text())["port"])

    def ref(self) -> str:
        master = self._master()
        return str(master) if master is not None else "-"

    def start(self, port: int) -> None:
        if not (self.conf_dir / CONF_FILE).exists():
            raise GatewayError(f"no gateway configuration in {self.conf_dir}: apply one before starting the gateway")
        self.remove()  # one on another port, or a dead one's pid file
        code, output = self._nginx(["-c", self._inside(CONF_FILE)])  # nginx goes to the background by itself
        if code != 0:
            raise GatewayError(f"the host's nginx did not start on port {port}: {output.strip()}")
        deadline = time.monotonic() + 10
        while self._master() is None:
            if time.monotonic() > deadline:
                raise GatewayError(f"the host's nginx started but wrote no pid file in {self.conf_dir}")
            time.sleep(0.05)
        atomic_write(self.conf_dir / STATE_FILE, json.dumps({"port": port}))

    def remove(self, timeout: float = 30.0) -> None:
        """A graceful quit (requests in flight finish), forced after `timeout`."""
        master = self._master()
        if master is not None:
            workers = [pid for pid, _ in _children(master)]  # once the master is gone, they are init's
            os.kill(master, signal.SIGQUIT)
            deadline = time.monotonic() + timeout
            while any(pids.running(pid) for pid in [master, *workers]) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in [master, *workers]:
                if pids.running(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        (self.conf_dir / PID_FILE).unlink(missing_ok=True)
        (self.conf_dir / STATE_FILE).unlink(missing_ok=True)

    def _nginx(self, args: list[str]) -> tuple[int, str]:
        # nginx makes the folders inside these (and opens its logs, even to check a configuration), not these
        (self.conf_dir / "temp").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # -e: its own error log from the first line (not /var/log/nginx, which a user cannot write)
        command = [self.nginx, "-e", "stderr", "-p", str(self.conf_dir.resolve()), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GatewayError(f"the host's nginx ({self.nginx}) could not be run: {exc}") from exc
        return done.returncode, done.stdout + done.stderr

    def _inside(self, name: str) -> str:
        return str((self.conf_dir / name).resolve())

    def _processes(self) -> list[tuple[int, str]]:
        master = self._master()
        return [] if master is None else [(master, "nginx: master process"), *_children(master)]

    def _master(self) -> int | None:
        """The pid of this project's nginx master, when it runs."""
        try:
            pid = int((self.conf_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _command(pid).startswith("nginx: master") else None


def _command(pid: int) -> str:
    return " ".join(pids.command_line(pid) or [])


def _children(parent: int) -> list[tuple[int, str]]:
    """The processes whose parent is `parent` (pid, command line), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: the command may hold spaces and parentheses, the last ")" ends it
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            command = _command(int(entry.name))
            if command:
                found.append((int(entry.name), command))
    return found
