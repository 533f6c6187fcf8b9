"""Release fixtures: a trained project (v1 registered as challenger) and a real Docker daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Project, default_params, trained_flights_project
from tests.docker.conftest import docker_engine  # noqa: F401 - a fixture, shared with the engine tests

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

NAME = "flights-delay"


def release_params(**release: object) -> dict[str, object]:
    params = default_params()
    params["release"] = {
        "production_port": 18400,
        "staging_port": 18401,
        "latency_requests": 40,
        "latency_p95_ms": 500,
        "health_timeout_s": 120,
        # one replica and nothing kept warm: each version's container is the one production container
        # (tests/release/test_gateway.py runs several and keeps the replaced one warm)
        "replicas": 1,
        "warm_s": 0,
        **release,
    }
    return params


@pytest.fixture(scope="module")
def trained_project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, prefect_harness: None
) -> Iterator[Project]:
    yield from release_project(tmp_path_factory, flights_sample, release_params())


def release_project(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, params: dict[str, object]
) -> Iterator[Project]:
    """A trained project with these params; whatever it serves is stopped after the module."""
    project = trained_flights_project(tmp_path_factory.mktemp("release"), flights_sample, params)
    yield project
    from flowship.flows.training import context
    from flowship.tasks.release import runtime_for

    ctx = context(project.params_path)
    for kind in ("process", "docker"):
        try:
            runtime = runtime_for(ctx, kind)
            for role in ("staging", "production"):
                runtime.stop(role)
        except Exception:  # noqa: BLE001 - teardown: leave nothing running, whatever state a test left
            pass


def train_v2(project: Project) -> None:
    """A second version that clears the gate: v2 registered as challenger."""
    params = project.params()
    params["train"]["params"]["max_iter"] = 41
    params["gate"]["max_regression"] = {"roc_auc": 0.05}
    project.write_params(params)
    assert project.train().registered.version == "2"


def paused_runs() -> list[FlowRun]:
    """The flow runs of the session's Prefect API paused for a decision, asked by state: a session holds hundreds of
    runs, and a page of them in the API's order (by id) need not hold the one just paused."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(flow_run_filter=paused))
