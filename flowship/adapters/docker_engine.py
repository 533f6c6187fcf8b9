"""Docker: the serving image's wheelhouse, build context and base image; images and containers.

The only module that imports docker. Nothing connects at import: a `DockerEngine` talks to the daemon on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import IO, Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from flowship.errors import ContainerError, DockerUnavailable, ImageBuildError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
LOCAL_BASE_IMAGE = "local/python:3.11-bookworm"
CONTAINER_PORT = 8000
CONTAINER_LOG_DIR = "/var/log/flowship"

# What `python -m flowship.serving` imports; their dependencies are pinned too (see serving_requirements).
# Not pyarrow: pandas takes it when installed (training has it, for pandas' string storage), but a model loads
# and answers its golden records bit for bit without it, and it is about a quarter of the image. The image's
# warm-up still replays the golden records and stays not-ready on any difference.
SERVING_PACKAGES = (
    "fastapi",
    "uvicorn",
    # uvicorn's fast HTTP parser and event loop, as `uvicorn[standard]` has them (else h11 on asyncio's own loop)
    "uvloop",
    "httptools",
    "pydantic",
    "prometheus-client",
    "orjson",
    "msgspec",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "cloudpickle",
    "pyyaml",
)
# The serving code the image carries: nothing else of flowship is imported by the app.
# (.dockerignore lets in the same paths; pyproject.toml's serving contract keeps the app within them.)
SERVING_CODE = (
    "flowship/__init__.py",
    "flowship/errors.py",
    "flowship/files.py",
    "flowship/values.py",
    "flowship/features.py",
    "flowship/serving",
)

# The image's Python and libc: CPython 3.11 on glibc 2.36 (Debian bookworm, for python:3.11-slim-bookworm
# and the local base alike). pip matches platform tags exactly, so every manylinux level that runs on glibc
# 2.36 is listed, newest first (the legacy aliases too: some wheels carry only those).
PYTHON_VERSION = (3, 11)
WHEEL_PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)) + (
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)

DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- wheelhouse and build context (no daemon needed) ---


def serving_requirements(packages: Sequence[str] = SERVING_PACKAGES) -> list[str]:
    """`name==version` for the serving packages and all they depend on, as installed in this interpreter.

    The image gets exactly the versions the model was trained with, so the pickle loads the same there.
    """
    environment: dict[str, str] = {key: str(value) for key, value in default_environment().items()}
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in packages]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in pins:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError as exc:
            raise ImageBuildError("requirements", f"{name} is needed to serve the model but is not installed") from exc
        pins[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = extras or frozenset({""})
            if req.marker is None or any(req.marker.evaluate({**environment, "extra": extra}) for extra in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


def _target_tags() -> set[Tag]:
    return set(cpython_tags(PYTHON_VERSION, platforms=WHEEL_PLATFORMS)) | set(
        compatible_tags(PYTHON_VERSION, "cp311", WHEEL_PLATFORMS)
    )


def _pin(requirement: str) -> tuple[str, Version]:
    req = Requirement(requirement)
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==":
        raise ImageBuildError("requirements", f"{requirement!r} is not pinned as name==version")
    return canonicalize_name(req.name), Version(specs[0].version)


def _wheels_for(folder: Path, requirements: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The wheels in `folder` that fit the image for each requirement, and the requirements without one."""
    target = _target_tags()
    available: dict[tuple[str, Version], Path] = {}
    for wheel in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        try:
            name, version, _, tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if tags & target:
            available[(name, version)] = wheel
    found: list[Path] = []
    missing: list[str] = []
    for requirement in requirements:
        match = available.get(_pin(requirement))
        if match is None:
            missing.append(requirement)
        else:
            found.append(match)
    return found, missing


def _python_with_pip() -> str:
    """An interpreter that has pip: this one, or the first python3 on PATH (uv-made venvs have no pip).

    Which one doesn't matter: the target Python and platform are given to pip explicitly.
    """
    if importlib.util.find_spec("pip") is not None:
        return sys.executable
    for candidate in ("python3", "python"):
        path = shutil.which(candidate)
        if path and subprocess.run([path, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return path
    raise ImageBuildError("wheelhouse", "no Python with pip found (this interpreter has none, nor python3 on PATH)")


def prepare_wheelhouse(folder: Path, requirements: Sequence[str]) -> Path:
    """Download a wheel for every requirement for the image's platform into `folder`, unless all are there.

    Runs on the host, with the host's pip settings (index, certificates): builds can't reach PyPI.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # One download at a time per folder (two releases at once share it): the second finds the wheels there.
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _download_wheels(folder, requirements)
    return folder


def _download_wheels(folder: Path, requirements: Sequence[str]) -> None:
    _, missing = _wheels_for(folder, requirements)
    if not missing:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="requirements-") as req_file:
        req_file.write("\n".join(requirements) + "\n")
        req_file.flush()
        cmd = [_python_with_pip(), "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
        cmd += ["--python-version", ".".join(map(str, PYTHON_VERSION)), "--implementation", "cp"]
        for platform in WHEEL_PLATFORMS:
            cmd += ["--platform", platform]
        cmd += ["--dest", str(folder), "--requirement", req_file.name]
        log.info("downloading %d wheel(s) into %s", len(missing), folder)
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise ImageBuildError("wheelhouse", f"pip download failed (exit {done.returncode})", tail)
    _, missing = _wheels_for(folder, requirements)
    if missing:
        raise ImageBuildError("wheelhouse", f"pip left no wheel for the image's platform for: {', '.join(missing)}")


def _link_or_copy(src: Path, dst: Path) -> None:
    # The wheelhouse is large (about 120 MB): a hard link costs nothing when both are on one file system.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _copy_readable(src: Path, dst: Path) -> None:
    """Copy a file or tree with modes the image's non-root user can read, whatever the source's were."""
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    for path in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_context(
    dest: Path,
    bundle_dir: Path,
    wheelhouse: Path,
    requirements: Sequence[str],
    *,
    source_root: Path = PROJECT_ROOT,
) -> Path:
    """Assemble a build context in `dest`: Dockerfile, requirements.txt, wheelhouse/, flowship/ serving code, model/.

    `source_root` holds the Dockerfile and the flowship package (the repository, or a test's stand-in).
    """
    if dest.exists() and any(dest.iterdir()):
        raise ImageBuildError("build context", f"{dest} is not empty")
    for name in ("model.pkl", "metadata.json"):
        if not (bundle_dir / name).is_file():
            raise ImageBuildError("build context", f"the model bundle {bundle_dir} has no {name}")
    wheels, missing = _wheels_for(wheelhouse, requirements)
    if missing:
        raise ImageBuildError("build context", f"{wheelhouse} has no wheel for: {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Dockerfile", ".dockerignore"):
        _copy_readable(source_root / name, dest / name)
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (dest / "wheelhouse").mkdir()
    for wheel in wheels:
        _link_or_copy(wheel, dest / "wheelhouse" / wheel.name)
    for relative in SERVING_CODE:
        if not (source_root / relative).exists():
            raise ImageBuildError("build context", f"{source_root / relative} is missing (the serving app)")
        _copy_readable(source_root / relative, dest / relative)
    _copy_readable(bundle_dir, dest / "model")
    return dest


# --- the daemon ---


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    status: str  # created, running, restarting, exited, ...
    image: str  # the tag it was started from
    host_port: int | None
    health: str | None  # starting, healthy, unhealthy; None without a HEALTHCHECK
    restart_policy: str
    labels: dict[str, str]  # the image's, as the container carries them


def _docker() -> Any:
    import docker

    return docker


@contextlib.contextmanager
def _daemon_errors(action: str) -> Iterator[None]:
    """Daemon-side failures become DockerUnavailable (retry), the rest ContainerError (don't)."""
    import requests

    docker = _docker()
    try:
        yield
    except docker.errors.NotFound as exc:
        raise ContainerError(f"{action}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        explanation = str(exc.explanation or exc)
        # The daemon answers 500 for a taken port too: retrying won't free it.
        port_taken = "already allocated" in explanation or "address already in use" in explanation
        if exc.is_server_error() and not port_taken:
            raise DockerUnavailable(f"{action}: the Docker daemon failed ({explanation})") from exc
        raise ContainerError(f"{action}: {explanation}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DockerUnavailable(f"{action}: the Docker daemon did not answer ({exc})") from exc
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(f"{action}: {exc}") from exc


class DockerEngine:
    """The Docker daemon named by DOCKER_HOST (or the local socket). Connects on first use."""

    def __init__(self, base_url: str | None = None, timeout: int = 600) -> None:
        # Long reads: a build step may print nothing for minutes.
        self.base_url = base_url
        self.timeout = timeout
        self._client: Any = None

    def _make_client(self, timeout: int) -> Any:
        docker = _docker()
        if self.base_url:
            return docker.DockerClient(base_url=self.base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)

    @property
    def client(self) -> Any:
        if self._client is None:
            with _daemon_errors("connect"):
                self._client = self._make_client(self.timeout)
        return self._client

    def available(self, timeout: int = 3) -> bool:
        """Whether the daemon answers a ping within `timeout` seconds."""
        docker = _docker()
        try:
            client = self._make_client(timeout)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (docker.errors.DockerException, OSError):
            return False

    # --- images ---

    def image_exists(self, tag: str) -> bool:
        docker = _docker()
        with _daemon_errors(f"look up image {tag}"):
            try:
                self.client.images.get(tag)
            except docker.errors.ImageNotFound:
                return False
        return True

    def ensure_base_image(self, name: str = DEFAULT_BASE_IMAGE, local: str = LOCAL_BASE_IMAGE) -> str:
        """The base image to build on: `name` if present or pullable, else `local` (made if missing)."""
        if self.image_exists(name):
            return name
        docker = _docker()
        try:
            self.client.images.pull(name)
            return name
        except docker.errors.APIError as exc:
            log.info("cannot pull %s (%s); using the local base image %s", name, exc.explanation or exc, local)
        if not self.image_exists(local):
            make_local_base(local, engine=self)
        return local

    def build(
        self,
        context: Path,
        tag: str,
        labels: dict[str, str] | None = None,
        buildargs: dict[str, str] | None = None,
        on_log: Callable[[str], None] | None = None,
        *,
        nocache: bool = False,
        network_mode: str | None = None,
    ) -> str:
        """Build `context` (legacy builder) as `tag`, each log line to `on_log`; returns the image id.

        `nocache` rebuilds every layer (to take a base image's or a wheel's fixes deliberately); `network_mode`
        is the RUN steps' network (e.g. "none": a build that reaches nothing outside).
        """
        step = "the start of the build"
        tail: list[str] = []
        image_id: str | None = None
        with _daemon_errors(f"build {tag}"):
            stream = self.client.api.build(
                path=str(context),
                tag=tag,
                labels=labels or {},
                buildargs=buildargs or {},
                rm=True,
                forcerm=True,
                pull=False,
                nocache=nocache,
                network_mode=network_mode,
                decode=True,
            )
            for chunk in stream:
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.startswith("Step "):
                        step = line
                    tail = [*tail[-19:], line]
                    if on_log is not None:
                        on_log(line)
                if "error" in chunk:
                    detail = chunk.get("errorDetail") or {}
                    raise ImageBuildError(step, str(detail.get("message") or chunk["error"]).strip(), tail)
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
            if image_id is None:
                image_id = str(self.client.images.get(tag).id)
        return image_id

    def _image(self, tag: str) -> Any:
        with _daemon_errors(f"inspect image {tag}"):
            return self.client.images.get(tag)

    def labels(self, tag: str) -> dict[str, str]:
        return dict(self._image(tag).labels or {})

    def image_size(self, tag: str) -> int:
        """Bytes, as `docker images` counts them (all layers)."""
        return int(self._image(tag).attrs["Size"])

    def push(self, tag: str, repository: str, version_tag: str) -> str:
        """Tag the local image `tag` as `repository:version_tag` and push it (with the credentials `docker login`
        stored); returns `repository:version_tag@digest`. A registry that refuses or cannot be reached is a
        ContainerError naming it."""
        target = f"{repository}:{version_tag}"
        digest = None
        with _daemon_errors(f"push {target}"):
            self._image(tag).tag(repository, version_tag)
            try:
                for chunk in self.client.api.push(repository, tag=version_tag, stream=True, decode=True):
                    if "error" in chunk:
                        detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                        raise ContainerError(f"push {target}: {str(detail).strip()}")
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = str(aux["Digest"])
            finally:
                self.client.images.remove(target)  # the registry's name only: the image keeps its own tag
        if digest is None:
            raise ContainerError(f"push {target}: the registry gave no digest")
        return f"{target}@{digest}"

    def remove_image(self, tag: str) -> None:
        """Untag `tag` (its layers go when no other image uses them); nothing to do if it doesn't exist."""
        if self.image_exists(tag):
            with _daemon_errors(f"remove image {tag}"):
                self.client.images.remove(tag)

    def import_rootfs(self, stream: IO[bytes], tag: str, changes: Sequence[str] = ()) -> str:
        """`docker import` a root file system tarball from `stream`; returns the image id."""
        repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        with _daemon_errors(f"import {tag}"):
            self.client.api.import_image_from_stream(stream, repository=repository, tag=version, changes=list(changes))
            return str(self.client.images.get(tag).id)

    # --- containers ---

    def _container(self, name: str) -> Any | None:
        docker = _docker()
        with _daemon_errors(f"inspect container {name}"):
            try:
                return self.client.containers.get(name)
            except docker.errors.NotFound:
                return None

    def run(
        self,
        image: str,
        name: str,
        host_port: int | None,
        log_dir: Path,
        env: dict[str, str] | None = None,
        restart_policy: str = "unless-stopped",
        *,
        network: str | None = None,
        container_port: int = CONTAINER_PORT,
        log_mount: str = CONTAINER_LOG_DIR,
        read_only: dict[Path, str] | None = None,
        labels: dict[str, str] | None = None,
        address: str | None = None,
    ) -> str:
        """Start `image` detached as `name`, logging into `log_dir`; returns its id.

        Published on 127.0.0.1:`host_port` only (None: not published, reached on `network` alone, at `address`
        when given: see `static_address`); `read_only` mounts host folders at container paths, read-only.
        """
        user = str(self._image(image).attrs["Config"].get("User") or "")
        log_dir.mkdir(parents=True, exist_ok=True)
        _writable_by(log_dir, user)
        policy: dict[str, Any] = {"Name": restart_policy}
        if restart_policy == "on-failure":
            policy["MaximumRetryCount"] = 5
        volumes = {str(log_dir.resolve()): {"bind": log_mount, "mode": "rw"}}
        volumes |= {str(host.resolve()): {"bind": inside, "mode": "ro"} for host, inside in (read_only or {}).items()}
        with _daemon_errors(f"run {image} as {name}"):
            container = self.client.containers.run(
                image,
                name=name,
                detach=True,
                # Loopback only: a reverse proxy (or the operator) decides what is exposed further.
                ports={} if host_port is None else {f"{container_port}/tcp": ("127.0.0.1", host_port)},
                volumes=volumes,
                environment=env or {},
                restart_policy=policy,
                network=network,
                networking_config=None
                if network is None or address is None
                else {network: self.client.api.create_endpoint_config(ipv4_address=address)},
                labels=labels or {},
            )
            return str(container.id)

    def run_once(self, image: str, command: Sequence[str], read_only: dict[Path, str] | None = None) -> tuple[int, str]:
        """Run `command` in a throwaway container of `image` (no network): its exit code and output."""
        volumes = {str(host.resolve()): {"bind": inside, "mode": "ro"} for host, inside in (read_only or {}).items()}
        with _daemon_errors(f"run {command[0]} in {image}"):
            container = self.client.containers.run(
                image, list(command), detach=True, volumes=volumes, network_mode="none"
            )
            try:
                code = int(container.wait(timeout=120).get("StatusCode", 1))
                output = bytes(container.logs(stdout=True, stderr=True)).decode(errors="replace")
            finally:
                container.remove(force=True)
        return code, output

    def ensure_network(self, name: str) -> None:
        """A bridge network `name` (made if missing), on which containers reach each other by address.

        Its subnet is one Docker found free, made its own: Docker hands out the addresses of its lower half, and
        `static_address` those of its upper half. A container given one keeps it across restarts; one given none
        takes the lowest free address when its restart policy starts it again, which may not be its old one.
        """
        docker = _docker()
        with _daemon_errors(f"create network {name}"):
            try:
                self.client.networks.get(name)
                return
            except docker.errors.NotFound:
                pass
            for left in self.client.networks.list(names=[f"{name}-probe"]):  # one an interrupted run left
                if left.name == f"{name}-probe":  # (the daemon's filter matches parts of names too)
                    left.remove()
            probe = self.client.networks.create(f"{name}-probe", driver="bridge")
            try:
                probe.reload()
                subnet = ipaddress.ip_network(probe.attrs["IPAM"]["Config"][0]["Subnet"])
            finally:
                probe.remove()
            lower, _ = subnet.subnets(prefixlen_diff=1)
            pool = docker.types.IPAMPool(subnet=str(subnet), iprange=str(lower))
            ipam = docker.types.IPAMConfig(pool_configs=[pool])
            self.client.networks.create(name, driver="bridge", ipam=ipam, labels={"io.flowship.network": name})

    def static_address(self, network: str) -> str | None:
        """An address of `network`'s upper half that no container on it holds or was given (None: the network
        has no subnet of its own, made before flowship gave one; Docker hands out its addresses)."""
        with _daemon_errors(f"inspect network {network}"):
            configs = self.client.networks.get(network).attrs["IPAM"].get("Config") or []
            if not configs or not configs[0].get("IPRange"):
                return None
            taken = set()
            for container in self.client.containers.list(all=True, filters={"network": network}):
                endpoint = (container.attrs["NetworkSettings"].get("Networks") or {}).get(network) or {}
                taken |= {endpoint.get("IPAddress"), (endpoint.get("IPAMConfig") or {}).get("IPv4Address")}
        _, upper = ipaddress.ip_network(configs[0]["Subnet"]).subnets(prefixlen_diff=1)
        for host in upper.hosts():
            if str(host) not in taken:
                return str(host)
        raise ContainerError(f"network {network} has no address left for another container")

    def remove_network(self, name: str) -> None:
        docker = _docker()
        with _daemon_errors(f"remove network {name}"):
            try:
                self.client.networks.get(name).remove()
            except docker.errors.NotFound:
                pass

    def address(self, name: str, network: str) -> str:
        """The container's IP address on `network` (across restarts, the one `static_address` gave it)."""
        container = self._container(name)
        if container is None:
            raise ContainerError(f"no container named {name}")
        networks = container.attrs["NetworkSettings"].get("Networks") or {}
        address = (networks.get(network) or {}).get("IPAddress")
        if not address:
            raise ContainerError(f"{name} has no address on network {network}")
        return str(address)

    def execute(self, name: str, command: Sequence[str]) -> tuple[int, str]:
        """Run `command` inside the running container `name`: its exit code and output."""
        container = self._container(name)
        if container is None:
            raise ContainerError(f"no container named {name}")
        with _daemon_errors(f"run {command[0]} in {name}"):
            code, output = container.exec_run(list(command))
        return int(code), bytes(output or b"").decode(errors="replace")

    def processes(self, name: str) -> list[tuple[int, str]]:
        """The processes running in `name` (host pid, command line); empty when it is not running."""
        container = self._container(name)
        if container is None or container.status != "running":
            return []
        with _daemon_errors(f"list the processes of {name}"):
            top = container.top(ps_args="-eo pid,args")  # the daemon wants the PID column
        return [(int(row[0]), str(row[-1])) for row in top.get("Processes") or []]

    def names(self, labels: dict[str, str]) -> list[str]:
        """The containers (running or not) carrying all of `labels`, by name."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with _daemon_errors("list containers"):
            return sorted(str(c.name) for c in self.client.containers.list(all=True, filters=filters))

    def stop(self, name: str, timeout: int = 10) -> None:
        """Stop `name` (SIGTERM, then SIGKILL after `timeout` s); nothing to do if it doesn't exist."""
        container = self._container(name)
        if container is not None:
            with _daemon_errors(f"stop {name}"):
                container.stop(timeout=timeout)

    def remove(self, name: str) -> None:
        """Stop and remove `name`; nothing to do if it doesn't exist."""
        container = self._container(name)
        if container is not None:
            with _daemon_errors(f"remove {name}"):
                if container.status in ("running", "restarting"):
                    container.stop(timeout=10)
                container.remove()

    def container(self, name: str) -> ContainerInfo | None:
        container = self._container(name)
        if container is None:
            return None
        attrs = container.attrs
        # the first published port (a stopped container keeps only its configured bindings)
        ports = attrs["NetworkSettings"].get("Ports") or {}
        published = [*ports.values(), *(attrs["HostConfig"].get("PortBindings") or {}).values()]
        host_ports = [int(b["HostPort"]) for bindings in published for b in bindings or () if b.get("HostPort")]
        host_port = host_ports[0] if host_ports else None
        return ContainerInfo(
            name=name,
            id=str(container.id),
            status=str(attrs["State"]["Status"]),
            image=str(attrs["Config"]["Image"]),
            host_port=host_port,
            health=(attrs["State"].get("Health") or {}).get("Status"),
            restart_policy=str(attrs["HostConfig"]["RestartPolicy"]["Name"]),
            labels=dict(attrs["Config"].get("Labels") or {}),
        )

    def logs(self, name: str, tail: int = 50) -> str:
        container = self._container(name)
        if container is None:
            raise ContainerError(f"no container named {name}")
        with _daemon_errors(f"read the logs of {name}"):
            return bytes(container.logs(tail=tail)).decode(errors="replace")

    def wait_healthy(self, target: str, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Wait until container `target` is healthy (or, for an http(s) URL, answers 200); ContainerError if not."""
        if target.startswith(("http://", "https://")):
            _wait_http_ok(target, timeout, interval)
            return
        deadline = time.monotonic() + timeout
        info = self.container(target)
        while True:
            if info is None:
                raise ContainerError(f"no container named {target}")
            if info.status in ("exited", "dead"):
                logs = self.logs(target, 20)
                raise ContainerError(f"{target} stopped ({info.status}) before it was healthy:\n{logs}")
            if info.health == "healthy" or (info.health is None and info.status == "running"):
                return
            if info.health == "unhealthy":
                raise ContainerError(f"{target} is unhealthy: {self._last_probe(target)}")
            if time.monotonic() > deadline:
                raise ContainerError(
                    f"{target} was not healthy after {timeout:.0f} s (status {info.status}, health {info.health})"
                )
            time.sleep(interval)
            info = self.container(target)

    def _last_probe(self, name: str) -> str:
        container = self._container(name)
        probes = ((container.attrs["State"].get("Health") or {}).get("Log") or []) if container else []
        return str(probes[-1].get("Output", "")).strip() if probes else "no probe output"


# The line the Dockerfile's first step prints when binutils cannot be installed (no Debian mirror answers); the
# step's own "Step N/M : RUN ..." line holds the same words, but not at its start.
NO_STRIP = "flowship: binutils could not be installed"


def build_serving(
    engine: DockerEngine,
    context: Path,
    tag: str,
    *,
    labels: dict[str, str],
    buildargs: dict[str, str],
    on_log: Callable[[str], None],
    network_mode: str | None = None,
) -> str:
    """Build the serving image of `context` (`build_context`); returns the image id.

    Where binutils cannot be installed (no Debian mirror answers the build), it builds again with STRIP_SYMBOLS=0:
    the libraries are slimmed but their compiled modules keep their symbol tables (about 27 MB more), and
    `on_log` says so. The failed step left nothing in the cache, so a later build with a mirror strips again."""

    def build(args: dict[str, str]) -> str:
        return engine.build(context, tag, labels, args, on_log, network_mode=network_mode)

    try:
        return build(buildargs)
    except ImageBuildError as exc:
        if not any(line.startswith(NO_STRIP) for line in exc.log_tail):
            raise
    on_log(f"{NO_STRIP} (no Debian mirror answered): building again with STRIP_SYMBOLS=0, symbol tables kept")
    return build({**buildargs, "STRIP_SYMBOLS": "0"})


def _wait_http_ok(url: str, timeout: float, interval: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, timeout)) as response:  # noqa: S310 (http only)
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(interval)
    raise ContainerError(f"{url} did not answer 200 within {timeout:.0f} s (last: {last})")


def _writable_by(folder: Path, user: str) -> None:
    """Let the image's user (numeric `uid[:gid]`) write into a bind-mounted host folder."""
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        try:
            os.chown(folder, int(uid), int(gid or uid))
            return
        except PermissionError:
            pass  # not root: fall through to a mode anyone can write
    # A named (or unknown) user: its uid isn't known outside the image.
    folder.chmod(0o777)  # noqa: S103 (a log folder shared with a container user)


# --- the local base image ---


def make_local_base(tag: str = LOCAL_BASE_IMAGE, *, engine: DockerEngine | None = None) -> str:
    """Make a Debian bookworm image with python3, python3-venv and CA certificates; returns its id.

    For machines that can't pull python:3.11-slim-bookworm. Needs root and mmdebstrap; about 40 s.
    """
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError("local base image", "mmdebstrap is not installed (apt-get install mmdebstrap)")
    engine = engine or DockerEngine()
    with tempfile.TemporaryDirectory(prefix="flowship-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [mmdebstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
        # Without the merged-usr hook the image is about 50 MB larger.
        cmd += ["--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", "bookworm", str(rootfs), *DEBIAN_SOURCES]
        log.info("making the root file system: %s", " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageBuildError("local base image", "mmdebstrap failed", done.stderr.strip().splitlines()[-15:])
        _trim_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            image_id = engine.import_rootfs(tar.stdout, tag, changes=[f"ENV PATH={IMAGE_PATH}"])
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise ImageBuildError("local base image", f"tar of {rootfs} failed (exit {tar.returncode})")
    return image_id


def _trim_rootfs(rootfs: Path) -> None:
    """Blank the host's network identity; drop what a server never reads (docs but their licences, translations)."""
    for name in ("etc/resolv.conf", "etc/hostname"):
        target = rootfs / name
        if target.is_symlink():
            target.unlink()
        target.write_text("")
    doomed = [*(rootfs / "usr/share/doc").glob("*/*"), *(rootfs / "usr/share/locale").glob("*")]
    # A package's doc folder may be a symlink to another's: only real paths, each once.
    doomed = [p for p in doomed if p.name not in ("copyright", "locale.alias") and not p.parent.is_symlink()]
    for folder in ("usr/share/man", "usr/share/info", "var/lib/apt/lists", "var/cache/apt"):
        doomed += (rootfs / folder).glob("*")
    for path in doomed:
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flowship.adapters.docker_engine base-image [--tag T] [--force]`."""
    parser = argparse.ArgumentParser(prog="python -m flowship.adapters.docker_engine")
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("base-image", help="make the local Debian base image (skipped when it exists)")
    base.add_argument("--tag", default=LOCAL_BASE_IMAGE)
    base.add_argument("--force", action="store_true", help="make it even if the tag exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = DockerEngine()
    if not engine.available():
        log.error("the Docker daemon does not answer (start dockerd first)")
        return 1
    if engine.image_exists(args.tag) and not args.force:
        log.info("%s exists; nothing to do (--force to make it again)", args.tag)
        return 0
    started = time.monotonic()
    image_id = make_local_base(args.tag, engine=engine)
    log.info(
        "%s made in %.0f s: %s, %.0f MB",
        args.tag,
        time.monotonic() - started,
        image_id,
        engine.image_size(args.tag) / 1e6,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
