"""Fixtures for tests against a real Docker daemon: the engine, the base image and a warm wheelhouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowship.adapters.docker_engine import DockerEngine, prepare_wheelhouse, serving_requirements

# Kept between sessions: CI downloads the serving wheels once per machine.
WHEELHOUSE = Path(os.environ.get("FLOWSHIP_WHEELHOUSE", Path.home() / ".cache" / "flowship" / "wheelhouse"))


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """The local daemon; skips the test when none answers, fails it instead under FLOWSHIP_REQUIRE_DOCKER=1 (CI)."""
    engine = DockerEngine()
    if not engine.available():
        message = "no Docker daemon answers (start dockerd, see .ci/run)"
        if os.environ.get("FLOWSHIP_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{message}; FLOWSHIP_REQUIRE_DOCKER=1 makes that an error")
        pytest.skip(message)
    return engine


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    """python:3.11-slim-bookworm where it can be had, else the local Debian base (made if missing)."""
    return docker_engine.ensure_base_image()


@pytest.fixture(scope="session")
def requirements() -> list[str]:
    return serving_requirements()


@pytest.fixture(scope="session")
def wheelhouse(requirements: list[str]) -> Path:
    return prepare_wheelhouse(WHEELHOUSE, requirements)
