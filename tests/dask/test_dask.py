"""Scale-out on Dask as a team runs it: a real `prefect server start`, a real Dask scheduler with two worker
processes (and a local cluster started by the run), the `flowship` command in its own process.

The trials and the chunks must run on the Dask workers (the scheduler's task stream and each chunk's worker say
so) and give exactly what the thread engine gives; without a Prefect server, Dask is refused before any work."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flowship.errors import ConfigError
from tests.conftest import BIN, Project, build_project, default_params, flights_data
from tests.helpers import flowship, free_port, start, stop
from tests.monitoring.test_schedule import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASK = str(BIN / "dask")
SPACE = {"max_leaf_nodes": [7, 15], "learning_rate": [0.05, 0.1]}  # a grid of 4 trials


def search_params(engine: str, address: str | None = None) -> dict[str, Any]:
    params = default_params()
    params["train"]["search"].update(enabled=True, n_trials=4, space=SPACE)
    params["compute"] = {"engine": engine, "dask": {"address": address, "workers": 2, "threads_per_worker": 1}}
    return params


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-5000:]}"
    return done.stdout


class Cluster:
    """`dask scheduler` and `dask worker --nworkers 2`: a cluster that outlives any one run, as a team's does."""

    def __init__(self, home: Path) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.log = home / "scheduler.log"
        self.scheduler = start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], home, self.log
        )
        self.workers = start(
            [DASK, "worker", self.address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
            home,
            home / "workers.log",
        )

    def client(self, timeout: float = 60.0) -> Any:
        from distributed import Client

        client = Client(self.address, timeout=timeout)
        client.wait_for_workers(2, timeout=timeout)
        return client


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Cluster]]:
    server = Server(tmp_path_factory.mktemp("prefect-server"))
    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield server, cluster
    finally:
        stop(cluster.workers)
        stop(cluster.scheduler)
        stop(server.process)


def project(base: Path, sample: Path, params: dict[str, Any]) -> Project:
    return build_project(base / "project", flights_data(sample), params, base / "remote")


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory: pytest.TempPathFactory, flights_sample: Path) -> Project:
    return project(tmp_path_factory.mktemp("dask-project"), flights_sample, search_params("dask"))


def search_of(p: Project) -> dict[str, Any]:
    import json

    summary: dict[str, Any] = json.loads((p.root / "models" / "candidate" / "search.json").read_text())
    return summary


def test_trials_run_on_the_dask_workers_and_choose_what_threads_choose(
    servers: tuple[Server, Cluster], dask_project: Project, tmp_path: Path, prefect_harness: None
) -> None:
    server, cluster = servers
    url = server.healthy()
    env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    params = dask_project.params()
    params["compute"]["dask"]["address"] = cluster.address
    dask_project.write_params(params)

    with cluster.client() as client:
        client.get_task_stream()  # starts the scheduler's record of the tasks it runs
        started = time.time()
        out = ok(flowship(["train", "--params", str(dask_project.params_path)], dask_project.root, **env))
        stream = client.get_task_stream(start=started)
        workers = set(client.scheduler_info()["workers"])
    assert "registered:    flights-delay v1" in out

    trials = [t for t in stream if "score_trial" in str(t["key"])]
    assert len(trials) == 4, f"the scheduler ran {[t['key'] for t in stream]}"
    assert {t["worker"] for t in trials} == workers, "both worker processes should have run trials"

    # The thread engine on the same training split (the flow's own search subflow, in this process).
    from flowship.config import ComputeConfig
    from flowship.estimators import search_trials
    from flowship.flows.training import context, run_search
    from flowship.pipeline.search import best_trial
    from flowship.tasks.common import Context

    ctx = context(dask_project.params_path)
    on_threads = Context(ctx.params.model_copy(update={"compute": ComputeConfig()}), ctx.root)
    results = sorted(run_search(on_threads, search_trials(ctx.params)), key=lambda r: r.index)
    on_dask = search_of(dask_project)
    assert [(t["index"], t["params"], t["score"]) for t in on_dask["search"]["trials"]] == [
        (r.index, r.params, r.score) for r in results
    ]
    best = best_trial(results)
    assert on_dask["search"]["best_index"] == best.index and on_dask["hyperparams"] == best.params


def artifact(url: str, key: str) -> str:
    response = httpx.post(f"{url}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10.0)
    response.raise_for_status()
    found = sorted(response.json(), key=lambda a: a["created"])
    assert found, f"no artifact {key!r}"
    return str(found[-1]["data"])


def test_batch_scoring_on_a_local_dask_cluster_writes_what_threads_write(
    servers: tuple[Server, Cluster], dask_project: Project, tmp_path: Path
) -> None:
    server, _ = servers
    url = server.healthy()
    env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    if not (dask_project.root / "models" / "candidate").exists():
        pytest.skip("needs the project trained by the test before")
    records = dask_project.root / "data" / "prepared" / "production.parquet"
    rows = len(pd.read_parquet(records))
    outputs = {}
    for engine in ("dask", "threads"):
        params = dask_project.params()
        params["compute"] = {"engine": engine, "dask": {"address": None, "workers": 2, "threads_per_worker": 1}}
        dask_project.write_params(params)
        outputs[engine] = tmp_path / f"scored-{engine}.parquet"
        args = ["score", str(records), str(outputs[engine]), "--version", "1", "--chunk-rows", "2000"]
        out = ok(flowship([*args, "--params", str(dask_project.params_path)], tmp_path, **env))
        assert f"scored:        {rows} records in {-(-rows // 2000)} chunk(s)" in out
        if engine == "dask":
            assert "dask, a local cluster of 2 worker(s)" in out
            assert "ran on:        dask worker tcp://" in out
            report = artifact(url, "batch-scoring")
            assert report.count("| dask worker tcp://") == -(-rows // 2000)
            assert str(outputs[engine]) in report and "flights-delay v1" in report

    on_dask, on_threads = pd.read_parquet(outputs["dask"]), pd.read_parquet(outputs["threads"])
    assert len(on_dask) == rows
    assert list(on_dask.columns) == [*pd.read_parquet(records).columns, "prediction", "probability"]
    pd.testing.assert_frame_equal(on_dask, on_threads, check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no chunk or temp files


def test_dask_without_a_prefect_server_is_refused_before_any_work(flights_sample: Path, tmp_path: Path) -> None:
    p = project(tmp_path, flights_sample, search_params("dask"))
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home")}  # and no PREFECT_API_URL: the temporary API

    for args in (["train"], ["score", str(flights_sample / "flights.csv"), str(tmp_path / "out.parquet")]):
        # refused before Prefect starts, let alone any work (the deadline only guards against a hang)
        done = flowship([*args, "--params", str(p.params_path)], p.root, timeout=120, **env)
        assert done.returncode == 1, done.stdout
        assert "compute.engine: 'dask' needs a Prefect server" in done.stderr
        assert "PREFECT_API_URL is not set" in done.stderr and "prefect server start" in done.stderr
        assert "Starting temporary server" not in done.stderr, "Prefect started before the refusal"
    assert not (p.root / "data" / "raw.dvc").exists(), "the data was versioned: work started"
    assert not (p.root / "models" / "candidate").exists() and not (p.root / "mlruns").exists()
    assert not (tmp_path / "out.parquet").exists()


def test_a_flow_started_elsewhere_refuses_dask_without_a_server_too() -> None:
    """Deployment runs and direct calls go through the flow's own check (no CLI in front of them)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flowship.config import ComputeConfig, DaskConfig
    from flowship.flows.compute import require_server, task_runner

    on_dask = ComputeConfig(engine="dask", dask=DaskConfig(address="tcp://127.0.0.1:8786"))
    with temporary_settings(updates={PREFECT_API_URL: None}):
        require_server(ComputeConfig())  # threads need nothing
        for call in (lambda: require_server(on_dask), lambda: task_runner(on_dask)):
            with pytest.raises(ConfigError, match="compute.engine: 'dask' needs a Prefect server.*PREFECT_API_URL"):
                call()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert task_runner(on_dask).address == "tcp://127.0.0.1:8786"  # type: ignore[attr-defined]
