"""The gateway as a container: nginx from Debian on the serving image's base, as a non-root user, restarted by its
policy, published on the production port (loopback), reaching the model's replicas on the project's Docker network.

Its configuration lives on the host (`.flowship/gateway/`, mounted read-only): a restarted gateway reads what was
last applied. Checking and applying a change is `control.NginxGateway`'s; nginx's commands run inside the container.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from flowship.adapters.docker_engine import DockerEngine
from flowship.errors import ContainerError, GatewayError
from flowship.gateway.control import ACCESS_LOG, CONF_FILE, SHADOW_LOG, NginxGateway
from flowship.gateway.nginx import Site

IMAGE = "flowship/gateway:nginx-bookworm-1"
USER = "10001:10001"
INSIDE_PORT = 8080
CONF_INSIDE = "/etc/flowship-gateway"
LOG_INSIDE = "/var/log/flowship-gateway"
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


class DockerGateway(NginxGateway):
    """The gateway container `name` of one project, on `network`, its configuration in `conf_dir`, its access log
    in `log_dir`; restarted by its policy unless stopped."""

    kind = "docker"

    def __init__(
        self, engine: DockerEngine, name: str, network: str, conf_dir: Path, log_dir: Path, base: Callable[[], str]
    ) -> None:
        super().__init__(conf_dir, log_dir)
        self.engine = engine
        self.name = name
        self.network = network
        self.base = base  # the image the gateway's is built on, the first time

    def site(self, port: int) -> Site:
        return SITE  # the container's own port; Docker publishes it on `port`

    def status(self) -> str | None:
        info = self.engine.container(self.name)
        return None if info is None else info.status

    def host_port(self) -> int | None:
        info = self.engine.container(self.name)
        return None if info is None else info.host_port

    def ref(self) -> str:
        info = self.engine.container(self.name)
        return info.id[:12] if info is not None else "-"

    def start(self, port: int) -> None:
        if not (self.conf_dir / CONF_FILE).exists():
            raise GatewayError(f"no gateway configuration in {self.conf_dir}: apply one before starting the gateway")
        image = ensure_image(self.engine, self.base)
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

    def _nginx(self, args: list[str]) -> tuple[int, str]:
        """nginx signals its own master: a signal sent through the daemon (`docker kill -s HUP`) would count as a
        manual stop, and the restart policy would no longer bring a crashed gateway back. With no gateway running,
        a check runs in a throwaway container of the image."""
        command = ["nginx", *args]
        try:
            if self.status() == "running":
                return self.engine.execute(self.name, command)
            image = ensure_image(self.engine, self.base)
            return self.engine.run_once(image, command, read_only={self.conf_dir: CONF_INSIDE})
        except ContainerError as exc:
            raise GatewayError(f"the gateway could not run nginx {' '.join(args)}: {exc}") from exc

    def _inside(self, name: str) -> str:
        return f"{CONF_INSIDE}/{name}"

    def _processes(self) -> list[tuple[int, str]]:
        return self.engine.processes(self.name)

    def _protect(self, path: Path) -> None:
        """Readable by the gateway's user only (by anyone when flowship does not run as root and cannot give the
        file away)."""
        os.chmod(self.conf_dir, 0o755)  # noqa: S103 - the gateway's user reads it
        uid, _, gid = USER.partition(":")
        try:
            os.chown(path, int(uid), int(gid))
            os.chmod(path, 0o600)
        except PermissionError:
            os.chmod(path, 0o644)
