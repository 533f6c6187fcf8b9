"""`flowship init` then what `make run` runs (train, deploy, replay with its monitoring check), as a user runs them,
on three datasets the rest of the suite does not use, with no hand-edited params: a binary target with dates in
YYYY/MM/DD, a multiclass one with missing values and no time column, a regression one with missing targets. The
first runs `flowship run` (the three in one process, as `make run` does), twice; the others run them one by one."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from tests.conftest import build_project
from tests.helpers import flowship

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def breast_cancer() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame.insert(0, "seen", pd.date_range("2022-01-01", periods=len(frame), freq="12h").strftime("%Y/%m/%d"))
    return frame


def iris() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    frame["species"] = frame.pop("target").map({0: "setosa", 1: "versicolor", 2: "virginica"})
    rng = np.random.default_rng(3)
    for column in frame.columns[:4]:
        frame.loc[rng.random(len(frame)) < 0.08, column] = np.nan
    frame = pd.concat([frame] * 2, ignore_index=True)  # 300 rows: enough for a train part, holdout and replay
    frame.insert(0, "sample_id", [f"s{i:04d}" for i in range(len(frame))])
    return frame


def diabetes() -> pd.DataFrame:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.loc[frame.index[::12], "target"] = np.nan
    return frame


DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, list[str], str]] = {
    "binary with dates": (breast_cancer, "cancer.csv", ["--target", "target", "--time-column", "seen"], "roc_auc"),
    "multiclass with gaps": (iris, "iris.parquet", ["--target", "species"], "roc_auc"),
    "regression, missing targets": (diabetes, "diabetes.csv", ["--target", "target"], "r2"),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(DATASETS))
def test_init_then_make_run_ends_with_a_served_model_and_a_monitoring_report(
    tmp_path: Path, prefect_api_url: str, name: str
) -> None:
    make, filename, args, metric = DATASETS[name]
    project = build_project(tmp_path / "project", {}, {}, tmp_path / "remote")
    root = project.root
    (root / "params.yaml").unlink()
    data = tmp_path / filename
    frame = make()
    frame.to_parquet(data) if filename.endswith(".parquet") else frame.to_csv(data, index=False)

    init = flowship(["init", str(data), *args], root, check=True)
    assert f"data:          data/raw/{filename} (" in init.stdout and (root / "data" / "raw" / filename).exists()
    assert f"gate:          {metric} " in init.stdout and "wrote:" in init.stdout
    assert init.stderr == ""

    # `make run`: train, deploy, replay --once --batch-size 20 (here against the session's Prefect API)
    env = {"PREFECT_API_URL": prefect_api_url, "FLOWSHIP_RUNTIME": "process"}
    together = name == next(iter(DATASETS))
    try:
        if together:
            train = deploy = replay = flowship(["run"], root, check=True, **env)
        else:
            train = flowship(["train"], root, check=True, **env)
        assert "registered:    " in train.stdout and "(new, alias challenger)" in train.stdout
        if frame.iloc[:, -1].isna().any():  # the regression target has gaps: counted, said
            missing = int(frame["target"].isna().sum())
            rows = rf"^rows:          [\d,]+ rows \({missing} more without a target value"
            assert re.search(rows, train.stdout, re.M)
        if not together:
            deploy = flowship(["deploy"], root, check=True, **env)
        assert "production:    v1 at http://127.0.0.1:" in deploy.stdout
        if not together:
            replay = flowship(["replay", "--once", "--batch-size", "20"], root, check=True, **env)
        # nothing reads like an error (with `flowship run`, the training's log is there too: MLflow notes, as it
        # logs the model, that this virtualenv has no pip)
        said = [line for line in replay.stderr.splitlines() if "Failed to resolve installed pip version" not in line]
        assert not re.search(r"ERROR|Traceback|Failed|flowship: ", "\n".join(said))
        sent, records, rejected = re.findall(r"^\S+\s+sent\s+(\d+) of (\d+)\s+rejected (\d+)", replay.stdout, re.M)[0]
        assert sent == records and int(sent) > 0 and rejected == "0"  # every record of the part answered
        report = Path(re.search(r"^report:\s+(\S+)$", replay.stdout, re.M).group(1))  # type: ignore[union-attr]
        assert (report / "summary.json").exists() and list(report.glob("v1/*.html"))
        if together:  # again, with nothing changed: each step says so, and no flow starts
            again = flowship(["run"], root, check=True, **env)
            assert "nothing changed since the last run" in again.stdout and "nothing to release" in again.stdout
            assert re.search(r"^\S+\s+already replayed \(.*\): skipped$", again.stdout, re.M)
            assert f"last report:   {report}" in again.stdout and "Flow run" not in again.stdout + again.stderr
    finally:
        flowship(["stop"], root, check=True)
