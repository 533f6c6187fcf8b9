"""The `flowship` command line: the executable as a user runs it (its help, then training and deploying a real project,
each command a subprocess); its refusals through the same Typer app in this process, which prints and exits as the
executable does without a new interpreter's seconds of imports per case."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, Project, default_params, trained_flights_project
from tests.helpers import flowship

pytestmark = pytest.mark.integration

COMMANDS = ["init", "run", "train", "status", "report", "replay", "stage", "deploy", "rollback", "pause", "resume"]
COMMANDS += ["history", "audit"]
COMMANDS += ["stop", "monitor", "retention"]
COMMANDS += ["score"]
COMMANDS += ["schedule", "up", "down"]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`flowship *args` run in `cwd` by the app the executable runs, in this process: its exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from flowship.cli.main import app

    with contextlib.chdir(cwd):
        done = CliRunner().invoke(app, args, prog_name="flowship")
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def commands_listed(help_text: str) -> list[str]:
    """The command names of the help's Commands panel, in its order."""
    panel = help_text[help_text.index("Commands") :]
    return re.findall(r"^│ ([a-z]+) ", panel, re.MULTILINE)


def test_help_lists_every_command_and_no_arguments_shows_it_too(tmp_path: Path) -> None:
    done = flowship(["--help"], tmp_path, check=True)
    assert "Usage: flowship [OPTIONS] COMMAND [ARGS]..." in done.stdout
    assert commands_listed(done.stdout) == COMMANDS

    bare = flowship([], tmp_path)
    assert bare.returncode == 2  # a usage error: no command given
    assert commands_listed(bare.stdout + bare.stderr) == COMMANDS


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("train", ["--params", "--full", "[default: params.yaml]"]),
        ("status", ["--params", "--runs", "[default: 5]"]),
        ("stage", ["--params", "--version", "--push", "REGISTRY"]),
        ("deploy", ["--params", "--version", "--full", "--canary", "--shadow", "--direct"]),
        ("pause", ["--params", "--reason", "[default: paused by an operator]"]),
        ("audit", ["--params", "--since", "WHEN", "--json"]),
    ],
)
def test_a_commands_help_shows_its_usage_and_options(command: str, options: list[str], tmp_path: Path) -> None:
    done = cli([command, "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Usage: flowship {command} [OPTIONS]" in done.stdout
    for option in options:
        assert option in done.stdout
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / ".prefect").exists()  # help does no work


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nothing.csv", "--target", "y"], "flowship: DATA nothing.csv: no such file\n"),
        (["data.csv", "--target", "y", "--task", "clustering"], "flowship: --task 'clustering': expected "),
        (["data.csv", "--target", "nope"], "flowship: no target column 'nope' in the data; its columns: x, y\n"),
    ],
)
def test_init_refuses_what_cannot_work_and_writes_nothing(tmp_path: Path, args: list[str], expected: str) -> None:
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(200)))
    done = cli(["init", *args], tmp_path)
    assert done.returncode == 1 and done.stderr.startswith(expected) and done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "dvc.yaml"]


def bare_project(tmp_path: Path, change: dict[str, dict[str, object]] | None = None) -> Path:
    params = default_params()
    for section, values in (change or {}).items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path / "params.yaml"


BAD_PARAMS = {
    "unknown key": ({"train": {"estimatr": "random_forest"}}, ["train.estimatr: unknown key", "'random_forest'"]),
    "bad value": (
        {"split": {"holdout_fraction": 1.5}},
        ["split.holdout_fraction", "less than 1", "1.5"],
    ),
    "bad choice": ({"data": {"task": "ranking"}}, ["data.task", "'classification' or 'regression'", "'ranking'"]),
    "unknown estimator": (
        {"train": {"estimator": "xgboost"}},
        ["train.estimator", "'xgboost'", "hist_gradient_boosting, random_forest, logistic_regression"],
    ),
    "unknown hyperparameter": (
        {"train": {"params": {"max_iter": 10, "n_trees": 5}}},
        ["train.params", "n_trees", "max_leaf_nodes"],
    ),
    "metric of the other task": ({"gate": {"primary_metric": "rmse"}}, ["gate.primary_metric", "'rmse'", "roc_auc"]),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_params_fail_before_any_work(tmp_path: Path, case: str) -> None:
    change, expected = BAD_PARAMS[case]
    params = bare_project(tmp_path, change)
    done = cli(["train", "--params", str(params)], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "invalid configuration" in done.stderr
    for text in expected:
        assert text in done.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / ".prefect").exists()


def test_missing_params_file_and_a_key_dvc_tracks(tmp_path: Path) -> None:
    done = cli(["train", "--params", str(tmp_path / "nope.yaml")], tmp_path)
    assert done.returncode == 1 and "nope.yaml: cannot read" in done.stderr

    params = bare_project(tmp_path)
    raw = yaml.safe_load(params.read_text())
    del raw["data"]["time_column"]
    raw["split"] = {"method": "random"}
    params.write_text(yaml.safe_dump(raw))
    done = cli(["status", "--params", str(params)], tmp_path)
    assert done.returncode == 1
    assert "data.time_column: required key is missing (dvc.yaml tracks it for stage 'prepare'" in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nothing.csv", "out.parquet"], "flowship: INPUT {root}/nothing.csv: no such file\n"),
        (
            ["records.csv", "records.csv"],
            "flowship: OUTPUT {root}/records.csv is the INPUT file: write the scored records elsewhere\n",
        ),
        (
            ["records.csv", "out.parquet", "--version", "v1"],
            "flowship: --version 'v1': expected a registered version number such as 3\n",
        ),
    ],
)
def test_score_refuses_arguments_that_cannot_work_before_prefect_starts(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    params = bare_project(tmp_path)
    (tmp_path / "records.csv").write_text("x1,x2\n1,2\n")
    done = cli(["score", *args, "--params", str(params)], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == expected.format(root=tmp_path) and done.stdout == ""
    assert not (tmp_path / ".prefect").exists() and not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "--canary", "--shadow"], "flowship: --canary and --shadow: choose one strategy\n"),
        (["deploy", "--shadow", "--direct"], "flowship: --shadow and --direct: choose one strategy\n"),
        (["pause"], "flowship: no gateway serves this project (deploy first): there is nothing to pause or resume\n"),
        (["resume"], "flowship: no gateway serves this project (deploy first): there is nothing to pause or resume\n"),
    ],
)
def test_release_commands_refuse_what_cannot_work_before_any_work(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    params = bare_project(tmp_path)
    done = cli([*args, "--params", str(params)], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == expected and done.stdout == ""
    assert not (tmp_path / ".prefect").exists() and not (tmp_path / ".flowship").exists()


def test_up_refuses_a_crash_wait_a_heartbeat_could_miss_before_starting_anything(tmp_path: Path) -> None:
    params = bare_project(tmp_path)
    done = cli(["up", "--crash-after", "30", "--params", str(params)], tmp_path)
    assert done.returncode == 2 and "--crash-after" in done.stderr and "45" in done.stderr
    assert not (tmp_path / ".flowship").exists() and not (tmp_path / "logs").exists()


# A `flowship` run without a Prefect server starts a temporary API of its own (about 20 s of CPU, minutes on two busy
# cores): the first run of the test does so, as a user's first run would; the others use the session's test API.
@pytest.mark.timeout(1500)
def test_train_twice_then_status_as_a_user_would(flights_project: Project, prefect_api_url: str) -> None:
    root, params = flights_project.root, str(flights_project.params_path)
    first = flowship(["train", "--params", params], root, check=True)
    assert "registered:    flights-delay v1 (new, alias challenger)" in first.stdout
    assert "stages:        ingest ran, validate ran, prepare ran, train ran, evaluate ran" in first.stdout
    rows = r"^rows:          [\d,]+ rows \([\d,]+ more without a target value, left out\)$"  # cancelled flights
    assert re.search(rows, first.stdout, re.MULTILINE)
    assert (root / ".prefect").is_dir()  # Prefect's state stays in the project
    # its temporary API: started by flowship on a port the OS gave (not production's 8000-8999), stopped at the end
    started = re.findall(r"starting: .* --port (\d+)", (root / "logs/services/prefect-temporary.log").read_text())
    assert len(started) == 1 and not 8000 <= int(started[0]) < 9000
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(started[0]))) != 0
    server = {"PREFECT_API_URL": prefect_api_url}

    again = flowship(["train", "--params", params], root, check=True)
    assert "nothing changed since the last run" in again.stdout
    assert "flights-delay v1 (already registered)" in again.stdout
    assert "Flow run" not in again.stdout + again.stderr  # answered without starting the flow

    status = flowship(["status", "--params", params], root, check=True)
    assert "champion    none" in status.stdout
    assert "challenger  v1" in status.stdout
    assert "gate passed" in status.stdout

    # Other gate settings: the decision is taken again (by the flow) and now fails, registering nothing.
    raw = flights_project.params()
    raw["gate"]["thresholds"]["roc_auc"] = 0.995
    flights_project.write_params(raw)
    failed = flowship(["train", "--params", params], root, **server)
    assert failed.returncode == 1
    assert "quality gate failed: roc_auc" in failed.stderr and "below threshold 0.9950" in failed.stderr
    unchanged = flowship(["train", "--params", params], root)
    assert unchanged.returncode == 1
    assert "unchanged since the last run" in unchanged.stderr
    # `flowship run` (what `make run` runs) stops at the failed gate: nothing is released or replayed.
    stopped = flowship(["run", "--params", params], root)
    assert stopped.returncode == 1 and "unchanged since the last run" in stopped.stderr
    assert "gate:          failed" in stopped.stdout and "production:" not in stopped.stdout
    assert "replay" not in stopped.stdout and not (root / ".flowship" / "replayed.json").exists()
    status = flowship(["status", "--params", params], root, check=True)
    assert "gate failed" in status.stdout and "challenger  v1" in status.stdout


@pytest.fixture
def trained_project(tmp_path: Path, flights_sample: Path, prefect_harness: None) -> Project:
    """A flights project whose first training (the one `test_train_twice_then_status_as_a_user_would` runs through
    this command) registered v1: a copy of this worker's trained project."""
    return trained_flights_project(tmp_path, flights_sample, default_params())


@pytest.mark.timeout(1500)
def test_deploy_as_a_local_process_then_history_status_and_stop(trained_project: Project, prefect_api_url: str) -> None:
    flights_project = trained_project
    root, params = flights_project.root, str(flights_project.params_path)
    raw = flights_project.params()
    raw["release"] = {"production_port": 18410, "staging_port": 18411, "latency_requests": 20, "latency_p95_ms": 1000}
    flights_project.write_params(raw)
    env = {"FLOWSHIP_RUNTIME": "process", "PREFECT_API_URL": prefect_api_url}  # the session's test API (see above)
    # a key file committed to git is refused before any work, with the way out
    (root / "keys.txt").write_text("k-1\n")
    flights_project.commit("keys")
    flights_project.write_params({**raw, "gateway": {"api_keys_file": "keys.txt"}})
    refused = flowship(["deploy", "--params", params], root, **env)
    assert refused.returncode == 1
    assert "flowship: not released: secrets: gateway.api_keys_file keys.txt is committed to git" in refused.stderr
    assert "git rm --cached keys.txt" in refused.stderr
    assert "safety:        NO   secrets" in refused.stdout
    flights_project.write_params(raw)
    try:
        deployed = flowship(["deploy", "--params", params], root, **env, check=True)
        assert (
            "safety:        ok   guardrails out_of_range: flag, unseen_category: flag, missing: flag" in deployed.stdout
        )
        assert (
            "safety:        WARN access     no API key or token: anyone who reaches 127.0.0.1:18410" in deployed.stdout
        )
        assert "check:         guardrails  passed" in deployed.stdout
        assert "serving as local processes behind this host's nginx: no image" in deployed.stdout
        assert "production:    v1 at http://127.0.0.1:18410 (was nothing served before)" in deployed.stdout
        assert "try:           curl -s http://127.0.0.1:18410/predict" in deployed.stdout
        assert httpx.get("http://127.0.0.1:18410/ready", timeout=10).status_code == 200
        again = flowship(["deploy", "--params", params], root, **env, check=True)
        assert "already serves at http://127.0.0.1:18410" in again.stdout
        # The released model is now the champion it was never compared with: still nothing to re-decide.
        retrain = flowship(["train", "--params", params], root, check=True)
        assert "nothing changed since the last run" in retrain.stdout
        assert "Flow run" not in retrain.stdout + retrain.stderr

        history = flowship(["history", "--params", params], root, check=True)
        assert "release  done   v- → v1" in history.stdout and "golden_set ok" in history.stdout
        status = flowship(["status", "--params", params], root, check=True)
        assert "champion    v1" in status.stdout
        assert "production  v1  http://127.0.0.1:18410  running  (process, pid" in status.stdout

        bad = flowship(["rollback", "--params", params], root, **env)
        assert bad.returncode == 1 and "no previous champion recorded before v1" in bad.stderr
    finally:
        stopped = flowship(["stop", "--params", params], root, check=True)
    assert "stopped production: v1 (process" in stopped.stdout
    with pytest.raises(httpx.ConnectError):  # `stop` waits for the process to exit: nothing listens any more
        httpx.get("http://127.0.0.1:18410/health", timeout=2)
    assert "nothing is serving" in flowship(["stop", "--params", params], root, check=True).stdout
