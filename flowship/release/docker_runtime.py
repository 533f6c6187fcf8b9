"""The Docker side of a release: one image per model version, staging and production containers."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from flowship.adapters import docker_engine
from flowship.adapters.tracking import VersionRef
from flowship.release.runtime import Deployed, Release

DEFAULT_BASE = "python:3.11-slim-bookworm"


def image_tag(name: str, version: str, commit: str) -> str:
    short = commit[:7] if commit and commit != "unknown" else "nocommit"
    return f"flowship/{name}:v{version}-{short}"


def wheelhouse_dir() -> Path:
    return Path(os.environ.get("FLOWSHIP_WHEELHOUSE", Path.home() / ".cache" / "flowship" / "wheelhouse"))


def build_release_image(ref: VersionRef, bundle: Path, on_log: Callable[[str], None]) -> str:
    """Build (or reuse) the image of this model version, labelled with its lineage."""
    engine = docker_engine.DockerEngine()
    tags = ref.tags
    commit = tags.get("flowship.git.commit", "unknown")
    tag = image_tag(ref.name, ref.version, commit)
    if engine.image_exists(tag):
        on_log(f"image {tag} exists: reused")
        return tag
    requirements = docker_engine.serving_requirements()
    wheelhouse = docker_engine.prepare_wheelhouse(wheelhouse_dir(), requirements)
    base = engine.ensure_base_image(DEFAULT_BASE)
    labels = {
        "io.flowship.model.name": ref.name,
        "io.flowship.model.version": ref.version,
        "io.flowship.git.commit": commit,
        "io.flowship.data.hash": tags.get("flowship.data.raw_md5", "unknown"),
    }
    with tempfile.TemporaryDirectory(prefix="flowship-build-") as tmp:
        context = docker_engine.build_context(Path(tmp), bundle, wheelhouse, requirements)
        engine.build(
            context,
            tag,
            labels=labels,
            buildargs={
                "BASE_IMAGE": base,
                "MODEL_NAME": ref.name,
                "MODEL_VERSION": ref.version,
                "GIT_COMMIT": commit,
                "DATA_HASH": labels["io.flowship.data.hash"],
            },
            on_log=on_log,
        )
    return tag


def container_name(root: Path, project: str, role: str) -> str:
    """flowship-<project>-<role>-<6 hex of the project folder>: two clones on one host never share a container."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]
    return f"flowship-{project}-{role}-{digest}"


class DockerRuntime:
    """Containers named by `container_name`, published on 127.0.0.1 only."""

    kind = "docker"

    def __init__(self, root: Path, project: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.project = project
        self.env = env or {}
        self.engine = docker_engine.DockerEngine()

    def _name(self, role: str) -> str:
        return container_name(self.root, self.project, role)

    def start(self, role: str, release: Release, port: int, log_dir: Path, restart: bool) -> Deployed:
        if release.image is None:
            raise ValueError("a Docker deployment needs an image")
        self.stop(role)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.engine.run(
            release.image,
            self._name(role),
            host_port=port,
            log_dir=log_dir,
            env=self.env,
            restart_policy="unless-stopped" if restart else "no",
        )
        deployed = self.deployed(role)
        assert deployed is not None
        return deployed

    def stop(self, role: str) -> None:
        name = self._name(role)
        if self.engine.container(name) is not None:
            self.engine.stop(name)
            self.engine.remove(name)

    def deployed(self, role: str) -> Deployed | None:
        info = self.engine.container(self._name(role))
        if info is None:
            return None
        return Deployed(
            role=role,
            kind=self.kind,
            name=info.labels.get("io.flowship.model.name", self.project),
            version=info.labels.get("io.flowship.model.version", "?"),
            image=info.image,
            url=f"http://127.0.0.1:{info.host_port}",
            status=info.status,
            ref=info.id[:12],
        )
