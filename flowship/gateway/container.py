"""The gateway as a container: nginx from Debian on the serving image's base, as a non-root user, restarted by its
policy, published on the production port (loopback), reaching the model's replicas on the project's Docker network.

Its configuration lives on the host (`.flowship/gateway/`, mounted read-only): a restarted gateway reads what was
last applied. A change is validated by nginx itself (`nginx -t`) before it replaces the file, then applied by a
graceful reload (`nginx -s reload`): new connections go to the new configuration, requests in flight finish on the
old one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from flowship.adapters.docker_engine import DockerEngine
from flowship.errors import ContainerError, GatewayError
from flowship.files import atomic_write
from flowship.gateway.nginx import Site

IMAGE = "flowship/gateway:nginx-bookworm-1"
# "2026/12/02 06:03:56 [emerg] 1#1: " before each of nginx's messages
_NGINX_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] \d+#\d+: ")
USER = "10001:10001"
INSIDE_PORT = 8080
CONF_INSIDE = "/etc/flowship-gateway"
LOG_INSIDE = "/var/log/flowship-gateway"
CONF_FILE = "nginx.conf"
NEXT_FILE = "nginx.next.conf"
ACCESS_LOG = "access.jsonl"
SHADOW_LOG = "shadow.jsonl"
SITE = Site(
    listen=str(INSIDE_PORT),
    access_log=Path(LOG_INSIDE) / ACCESS_LOG,
    shadow_log=Path(LOG_INSIDE) / SHADOW_LOG,
    error_log="stderr",
    pid=Path("/tmp/nginx.pid"),  # noqa: S108 - inside the container, which only this user writes
    temp=Path("/tmp"),  # noqa: S108
    workers=2,
)
DOCKERFILE = f"""# flowship's gateway: nginx from Debian (nginx-light has split_clients, mirror and limit_req), run as a
# non-root user; its configuration is mounted at {CONF_INSIDE} and its JSON access log at {LOG_INSIDE}.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${{BASE_IMAGE}}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/log/nginx/* \\
 && ln -sf /dev/stderr /var/log/nginx/error.log \\
 && mkdir -p {LOG_INSIDE} && chown {USER} {LOG_INSIDE}
USER {USER}
EXPOSE {INSIDE_PORT}
STOPSIGNAL SIGQUIT
CMD ["nginx", "-c", "{CONF_INSIDE}/{CONF_FILE}", "-g", "daemon off;"]
"""


def ensure_image(engine: DockerEngine, base: Callable[[], str], on_log: Callable[[str], None] | None = None) -> str:
    """The gateway image, built the first time on the image `base()` gives (the serving image's base: no Docker Hub
    needed)."""
    if engine.image_exists(IMAGE):
        return IMAGE
    with tempfile.TemporaryDirectory(prefix="flowship-gateway-build-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(DOCKERFILE)
        engine.build(Path(tmp), IMAGE, labels={"io.flowship.gateway": "nginx"}, buildargs={"BASE_IMAGE": base()},
                     on_log=on_log)  # fmt: skip
    return IMAGE


class DockerGateway:
    """The gateway container `name` of one project, its configuration in `conf_dir`, its access log in `log_dir`."""

    def __init__(self, engine: DockerEngine, name: str, network: str, conf_dir: Path, log_dir: Path) -> None:
        self.engine = engine
        self.name = name
        self.network = network
        self.conf_dir = conf_dir
        self.log_dir = log_dir
        self._draining: set[int] = set()  # workers of configurations replaced by `apply`, until they exit

    @property
    def access_log(self) -> Path:
        return self.log_dir / ACCESS_LOG

    @property
    def shadow_log(self) -> Path:
        return self.log_dir / SHADOW_LOG

    def status(self) -> str | None:
        """The container's status (running, restarting, exited, ...), None when there is none."""
        info = self.engine.container(self.name)
        return None if info is None else info.status

    def host_port(self) -> int | None:
        info = self.engine.container(self.name)
        return None if info is None else info.host_port

    def validate(self, text: str) -> None:
        """nginx's own verdict on `text`; GatewayError naming nginx's complaint when it refuses."""
        self._prepare_conf_dir()
        candidate = self.conf_dir / NEXT_FILE
        atomic_write(candidate, text)
        _readable_by_gateway(candidate)
        command = ["nginx", "-t", "-q", "-c", f"{CONF_INSIDE}/{NEXT_FILE}"]
        try:
            if self.status() == "running":
                code, output = self.engine.execute(self.name, command)
            else:
                code, output = self.engine.run_once(IMAGE, command, read_only={self.conf_dir: CONF_INSIDE})
        except ContainerError as exc:
            candidate.unlink(missing_ok=True)
            raise GatewayError(f"the gateway configuration could not be checked: {exc}") from exc
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
        # nginx signals its own master; a signal sent through the daemon (`docker kill -s HUP`) would count as
        # a manual stop, and the restart policy would no longer bring a crashed gateway back
        code, output = self.engine.execute(self.name, ["nginx", "-c", f"{CONF_INSIDE}/{CONF_FILE}", "-s", "reload"])
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

    def start(self, image: str, port: int) -> None:
        """Run the gateway (its configuration applied before) on 127.0.0.1:`port`, restarted unless stopped."""
        if not (self.conf_dir / CONF_FILE).exists():
            raise GatewayError(f"no gateway configuration in {self.conf_dir}: apply one before starting the gateway")
        self.engine.remove(self.name)  # a stopped one left behind
        self.engine.run(
            image,
            self.name,
            host_port=port,
            log_dir=self.log_dir,
            restart_policy="unless-stopped",
            network=self.network,
            container_port=INSIDE_PORT,
            log_mount=LOG_INSIDE,
            read_only={self.conf_dir: CONF_INSIDE},
            labels={"io.flowship.gateway": self.name},
        )

    def remove(self) -> None:
        self.engine.remove(self.name)

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
            alive = {pid for pid, _ in self.engine.processes(self.name)}
            self._draining &= alive
            if not self._draining:
                return True
            time.sleep(0.1)
        return False

    def _workers(self) -> set[int]:
        """The workers that take new connections (not those shutting down after a reload)."""
        return {
            pid
            for pid, args in self.engine.processes(self.name)
            if args.startswith("nginx: worker process") and "shutting down" not in args
        }

    def _prepare_conf_dir(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.conf_dir, 0o755)  # noqa: S103 - the gateway's user reads it; it holds no secret but API keys


def _readable_by_gateway(path: Path) -> None:
    """The configuration may hold API keys: readable by the gateway's user only (by anyone when flowship does not
    run as root and cannot give the file away)."""
    uid, _, gid = USER.partition(":")
    try:
        os.chown(path, int(uid), int(gid))
        os.chmod(path, 0o600)
    except PermissionError:
        os.chmod(path, 0o644)


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
