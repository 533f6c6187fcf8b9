"""`flowship init` then what `make run` runs (train, deploy, replay with its monitoring check), as a user runs them,
on three datasets the rest of the suite does not use, with no hand-edited params: a binary target with dates in
YYYY/MM/DD, a multiclass one with missing values and no time column, a regression one with missing targets."""

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
    train = flowship(["train"], root, check=True, **env)
    assert "registered:    " in train.stdout and "(new, alias challenger)" in train.stdout
    if frame.iloc[:, -1].isna().any():  # the regression target has gaps: counted, said
        missing = int(frame["target"].isna().sum())
        assert re.search(rf"^rows:          [\d,]+ rows \({missing} more without a target value", train.stdout, re.M)
    try:
        deploy = flowship(["deploy"], root, check=True, **env)
        assert "production:    v1 at http://127.0.0.1:" in deploy.stdout
        replay = flowship(["replay", "--once", "--batch-size", "20"], root, check=True, **env)
        assert not re.search(r"ERROR|Traceback|Failed|flowship: ", replay.stderr)  # nothing reads like an error
        part, _, sent, _, records, _, rejected = replay.stdout.splitlines()[1].split()[:7]
        assert sent == records and int(sent) > 0 and rejected == "0"  # every record of the part answered
        report = Path(re.search(r"^report:\s+(\S+)$", replay.stdout, re.M).group(1))  # type: ignore[union-attr]
        assert (report / "summary.json").exists() and list(report.glob("v1/*.html"))
    finally:
        flowship(["stop"], root, check=True)
