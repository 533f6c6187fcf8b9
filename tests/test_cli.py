"""The `flowship` command line, run as a user runs it: a subprocess on a real project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO, Project, default_params, run

FLOWSHIP = str(BIN / "flowship")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["status", "--help"]])
def test_help(args: list[str], tmp_path: Path) -> None:
    done = run([FLOWSHIP, *args], tmp_path)
    assert "Usage: flowship" in done.stdout
    assert "--params" in done.stdout or "train" in done.stdout


def test_no_arguments_shows_the_commands(tmp_path: Path) -> None:
    done = run([FLOWSHIP], tmp_path, check=False)
    assert "train" in done.stdout + done.stderr and "status" in done.stdout + done.stderr


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
    done = run([FLOWSHIP, "train", "--params", str(params)], tmp_path, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "invalid configuration" in done.stderr
    for text in expected:
        assert text in done.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / ".prefect").exists()


def test_missing_params_file_and_a_key_dvc_tracks(tmp_path: Path) -> None:
    done = run([FLOWSHIP, "train", "--params", str(tmp_path / "nope.yaml")], tmp_path, check=False)
    assert done.returncode == 1 and "nope.yaml: cannot read" in done.stderr

    params = bare_project(tmp_path)
    raw = yaml.safe_load(params.read_text())
    del raw["data"]["time_column"]
    raw["split"] = {"method": "random"}
    params.write_text(yaml.safe_dump(raw))
    done = run([FLOWSHIP, "status", "--params", str(params)], tmp_path, check=False)
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
    done = run([FLOWSHIP, "score", *args, "--params", str(params)], tmp_path, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == expected.format(root=tmp_path) and done.stdout == ""
    assert not (tmp_path / ".prefect").exists() and not (tmp_path / "out.parquet").exists()


@pytest.mark.integration
def test_train_twice_then_status_as_a_user_would(flights_project: Project) -> None:
    root, params = flights_project.root, str(flights_project.params_path)
    first = run([FLOWSHIP, "train", "--params", params], root)
    assert "registered:    flights-delay v1 (new, alias challenger)" in first.stdout
    assert "stages:        ingest ran, validate ran, prepare ran, train ran, evaluate ran" in first.stdout
    assert (root / ".prefect").is_dir()  # Prefect's state stays in the project

    again = run([FLOWSHIP, "train", "--params", params], root)
    assert "nothing changed since the last run" in again.stdout
    assert "flights-delay v1 (already registered)" in again.stdout
    assert "Flow run" not in again.stdout + again.stderr  # answered without starting the flow

    status = run([FLOWSHIP, "status", "--params", params], root)
    assert "champion    none" in status.stdout
    assert "challenger  v1" in status.stdout
    assert "gate passed" in status.stdout

    # Other gate settings: the decision is taken again (by the flow) and now fails, registering nothing.
    raw = flights_project.params()
    raw["gate"]["thresholds"]["roc_auc"] = 0.995
    flights_project.write_params(raw)
    failed = run([FLOWSHIP, "train", "--params", params], root, check=False)
    assert failed.returncode == 1
    assert "quality gate failed: roc_auc" in failed.stderr and "below threshold 0.9950" in failed.stderr
    unchanged = run([FLOWSHIP, "train", "--params", params], root, check=False)
    assert unchanged.returncode == 1
    assert "unchanged since the last run" in unchanged.stderr
    status = run([FLOWSHIP, "status", "--params", params], root)
    assert "gate failed" in status.stdout and "challenger  v1" in status.stdout


@pytest.mark.integration
def test_deploy_as_a_local_process_then_history_status_and_stop(flights_project: Project) -> None:
    root, params = flights_project.root, str(flights_project.params_path)
    raw = flights_project.params()
    raw["release"] = {"production_port": 18410, "staging_port": 18411, "latency_requests": 20, "latency_p95_ms": 1000}
    flights_project.write_params(raw)
    env = {"FLOWSHIP_RUNTIME": "process"}
    run([FLOWSHIP, "train", "--params", params], root)
    try:
        deployed = run([FLOWSHIP, "deploy", "--params", params], root, env=env)
        assert "serving as a local process" in deployed.stdout
        assert "production:    v1 at http://127.0.0.1:18410 (was nothing served before)" in deployed.stdout
        assert "try:           curl -s http://127.0.0.1:18410/predict" in deployed.stdout
        import httpx

        assert httpx.get("http://127.0.0.1:18410/ready", timeout=10).status_code == 200
        again = run([FLOWSHIP, "deploy", "--params", params], root, env=env)
        assert "already serves at http://127.0.0.1:18410" in again.stdout
        # The released model is now the champion it was never compared with: still nothing to re-decide.
        retrain = run([FLOWSHIP, "train", "--params", params], root)
        assert "nothing changed since the last run" in retrain.stdout
        assert "Flow run" not in retrain.stdout + retrain.stderr

        history = run([FLOWSHIP, "history", "--params", params], root)
        assert "release  done   v- → v1" in history.stdout and "golden_set ok" in history.stdout
        status = run([FLOWSHIP, "status", "--params", params], root)
        assert "champion    v1" in status.stdout
        assert "production  v1  http://127.0.0.1:18410  running  (process, pid" in status.stdout

        bad = run([FLOWSHIP, "rollback", "--params", params], root, env=env, check=False)
        assert bad.returncode == 1 and "no previous champion recorded before v1" in bad.stderr
    finally:
        stopped = run([FLOWSHIP, "stop", "--params", params], root)
    assert "stopped production: v1 (process" in stopped.stdout
    with pytest.raises(Exception):  # noqa: B017, PT011 - any connection error: nothing listens any more
        httpx.get("http://127.0.0.1:18410/health", timeout=2)
    assert "nothing is serving" in run([FLOWSHIP, "stop", "--params", params], root).stdout
