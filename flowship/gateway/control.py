"""Driving one nginx, wherever it runs (a container, or the host): its configuration checked by nginx itself
(`nginx -t`) before it replaces the one in force, applied by a graceful reload (new connections follow the new
configuration, requests in flight finish on the old one), and the old workers followed until they exit.

`NginxGateway` holds what does not depend on where nginx runs; `container.DockerGateway` and `host.HostGateway`
say how to run nginx's commands and see its processes there.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

from flowship.errors import GatewayError
from flowship.files import atomic_write
from flowship.gateway.nginx import Site

CONF_FILE = "nginx.conf"
NEXT_FILE = "nginx.next.conf"
ACCESS_LOG = "access.jsonl"
SHADOW_LOG = "shadow.jsonl"
# "2026/12/02 06:03:56 [emerg] 1#1: " before each of nginx's messages
_NGINX_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] \d+#\d+: ")


class NginxGateway(ABC):
    """One project's gateway: its configuration in `conf_dir` (on the host), its logs in `log_dir`."""

    kind: str  # docker | host

    def __init__(self, conf_dir: Path, log_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.log_dir = log_dir
        self._draining: set[int] = set()  # workers of configurations replaced by `apply`, until they exit

    @property
    def access_log(self) -> Path:
        return self.log_dir / ACCESS_LOG

    @property
    def shadow_log(self) -> Path:
        return self.log_dir / SHADOW_LOG

    # --- where nginx runs ---

    @abstractmethod
    def site(self, port: int) -> Site:
        """Where nginx listens and writes, as nginx sees it, for production on `port`."""

    @abstractmethod
    def status(self) -> str | None:
        """running, or what stopped it (exited, restarting, ...); None when there is none."""

    @abstractmethod
    def host_port(self) -> int | None:
        """The loopback port it serves on, when it runs."""

    @abstractmethod
    def ref(self) -> str:
        """What it is to the operator: a container id, a process id ("-" when there is none)."""

    @abstractmethod
    def start(self, port: int) -> None:
        """Run it (its configuration applied before) on 127.0.0.1:`port`."""

    @abstractmethod
    def remove(self) -> None:
        """Stop it (requests in flight finish first where nginx can) and leave nothing running."""

    @abstractmethod
    def _nginx(self, args: list[str]) -> tuple[int, str]:
        """Run `nginx args` where it runs (the running gateway's own, for a reload): exit code and output."""

    @abstractmethod
    def _inside(self, name: str) -> str:
        """The path nginx sees for the file `name` of `conf_dir`."""

    @abstractmethod
    def _processes(self) -> list[tuple[int, str]]:
        """nginx's processes (pid, command line): master and workers; empty when it does not run."""

    def _protect(self, path: Path) -> None:
        """The configuration may hold API keys: readable by whoever runs nginx only."""
        path.chmod(0o600)

    # --- the same everywhere ---

    def validate(self, text: str) -> None:
        """nginx's own verdict on `text`; GatewayError naming nginx's complaint when it refuses."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.conf_dir / NEXT_FILE
        atomic_write(candidate, text)
        self._protect(candidate)
        try:
            code, output = self._nginx(["-t", "-q", "-c", self._inside(NEXT_FILE)])
        except GatewayError:
            candidate.unlink(missing_ok=True)
            raise
        if code != 0:
            candidate.unlink(missing_ok=True)
            detail = " ".join(_NGINX_PREFIX.sub("", line).strip() for line in output.splitlines() if line.strip())
            raise GatewayError(f"nginx refused the gateway configuration, nothing was changed: {detail}")

    def apply(self, text: str, timeout: float = 30.0) -> None:
        """Validate `text` and make it the configuration; when the gateway runs, reload it gracefully and return once
        new workers took over from every old one (new connections follow `text`; `wait_drained` then waits for
        the old workers' last requests)."""
        self.validate(text)
        (self.conf_dir / NEXT_FILE).replace(self.conf_dir / CONF_FILE)
        if self.status() != "running":
            return
        before = self._workers()
        code, output = self._nginx(["-c", self._inside(CONF_FILE), "-s", "reload"])
        if code != 0:
            raise GatewayError(f"the gateway did not reload: {output.strip()}")
        self._draining |= before
        deadline = time.monotonic() + timeout
        while True:
            serving = self._workers()
            if serving and not serving & before:
                return
            if time.monotonic() > deadline:
                raise GatewayError(f"the gateway did not start new workers within {timeout:.0f} s of its reload")
            time.sleep(0.05)

    def configuration(self) -> str | None:
        """The configuration in force (None: none yet)."""
        path = self.conf_dir / CONF_FILE
        return path.read_text() if path.exists() else None

    def wait_serving(self, port: int, version: str | None, timeout: float) -> None:
        """Wait until the gateway answers on `port` for `version` (None: answers paused) several times in a row:
        then every worker runs the configuration that routes there."""
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + timeout
        streak, last = 0, "no answer"
        while time.monotonic() < deadline:
            seen = _served_by(url)
            last = seen or "no answer"
            streak = streak + 1 if seen == (f"v{version}" if version is not None else "paused") else 0
            if streak >= 5:
                return
            time.sleep(0.05)
        raise GatewayError(f"the gateway on port {port} did not answer for {'v' + version if version else 'the pause'} "
                           f"within {timeout:.0f} s (last: {last})")  # fmt: skip

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the workers of earlier configurations have finished their requests and exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = {pid for pid, _ in self._processes()}
            self._draining &= alive
            if not self._draining:
                return True
            time.sleep(0.1)
        return False

    def _workers(self) -> set[int]:
        """The workers that take new connections (not those shutting down after a reload)."""
        return {
            pid
            for pid, args in self._processes()
            if args.startswith("nginx: worker process") and "shutting down" not in args
        }


def _served_by(url: str) -> str | None:
    """`v<version>` of the replica that answered `url` through the gateway, `paused`, or None."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http on loopback
            version = response.headers.get("X-Model-Version")
            return f"v{version}" if version else None
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            try:
                if json.loads(exc.read()).get("error") == "paused":
                    return "paused"
            except ValueError:
                return None
        return None
    except (urllib.error.URLError, OSError):
        return None
