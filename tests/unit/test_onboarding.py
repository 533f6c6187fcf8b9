"""`flowship init`'s library: the profile of a table and the params drafted from it, bad data refused with nothing
written (the end-to-end runs on drafted params are in tests/onboarding/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flowship.config import ServiceAlertConfig, load_params
from flowship.errors import DataLoadError, OnboardingError
from flowship.onboarding.draft import init_project
from flowship.onboarding.profile import MIN_ROWS, profile
from flowship.release.runtime import port_taken
from flowship.serving.guardrails import GuardrailPolicy
from tests.conftest import REPO


def table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A learnable binary target, an id, a constant, a category, a numeric feature with gaps, dates a day apart."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "id": np.arange(n) + 1000,
            "x": x,
            "gappy": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(5, 15, n)),
            "color": rng.choice(["red", "green", "blue"], n),
            "always": "same",
            "day": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y/%m/%d"),
        }
    )
    frame["label"] = np.where(x + (frame["color"] == "red") + rng.normal(scale=0.3, size=n) > 0.5, "yes", "no")
    return frame


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    return root


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def written(root: Path) -> list[str]:
    """What the project holds besides its dvc.yaml: files and folders."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "dvc.yaml")


def test_a_table_is_profiled_column_by_column() -> None:
    prof = profile(table(), "label")
    assert (prof.rows, prof.task, prof.target_missing) == (300, "classification", 0)
    assert prof.task_reason == "inferred: 'label' holds 2 distinct non-numeric values"
    assert prof.names("numeric") == ["x", "gappy"] and prof.names("categorical") == ["color"]
    assert prof.feature("color").categories == ("blue", "green", "red")
    assert 0.05 < prof.feature("gappy").null_share < 0.15
    reasons = {gone.name: gone.reason for gone in prof.left_out}
    assert reasons["id"] == "identifier: every value is a distinct whole number"
    assert reasons["always"] == "constant: always 'same'"
    assert reasons["day"].startswith("date or time: give it as --time-column")


def test_the_task_is_inferred_from_the_target_and_can_be_chosen() -> None:
    frame = table().assign(score=lambda f: f["x"] * 10.0, grade=lambda f: (f["x"] > 0).astype(int) + 1)
    assert profile(frame.drop(columns="label"), "score").task == "regression"
    grade = profile(frame.drop(columns=["label", "score"]), "grade")
    assert (grade.task, grade.task_reason) == ("classification", "inferred: 'grade' holds 2 distinct whole numbers")
    chosen = profile(frame.drop(columns=["label", "score"]), "grade", task="regression")
    assert (chosen.task, chosen.task_reason) == ("regression", "as asked (--task)")
    with pytest.raises(OnboardingError, match="--task regression needs a numeric target; 'label' holds text"):
        profile(frame, "label", task="regression")


def test_init_writes_params_that_load_and_copies_the_data_under_data_raw(project: Path, tmp_path: Path) -> None:
    frame = table()
    frame.loc[frame.index[::10], "label"] = None
    draft = init_project(write(frame, tmp_path / "My Data.csv"), "label", project)
    assert written(project) == ["data", "data/raw", "data/raw/My Data.csv", "params.yaml"]
    assert draft.copied_from == (tmp_path / "My Data.csv").resolve() and draft.profile.target_missing == 30
    params = load_params(project / "params.yaml")  # as `flowship train` reads it, dvc.yaml's keys included
    assert params.project.name == "My-Data" and str(params.data.source) == "data/raw/My Data.csv"
    assert params.guardrails == GuardrailPolicy()  # spelled out, at the documented defaults
    assert params.monitoring.service == ServiceAlertConfig()
    assert "  service:" in (project / "params.yaml").read_text()
    assert params.data.features.numeric == ["x", "gappy"] and params.data.features.categorical == ["color"]
    rules = params.validate_.columns
    low, high = frame["gappy"].min(), frame["gappy"].max()
    assert rules["gappy"].min is not None and rules["gappy"].max is not None
    assert low - (high - low) * 0.2 < rules["gappy"].min < low and high < rules["gappy"].max < high + (high - low) * 0.2
    assert (
        rules["gappy"].max_null_fraction is not None
        and rules["gappy"].max_null_fraction > draft.profile.feature("gappy").null_share
    )
    assert rules["color"].categories == ["blue", "green", "red"]
    assert params.split.method == "random" and params.split.production_fraction == 0.2
    # the gate a little below a quick baseline of the same model, on the same split the pipeline makes
    assert params.gate.primary_metric == "roc_auc"
    assert params.gate.thresholds["roc_auc"] == pytest.approx(draft.baseline["roc_auc"] - 0.05, abs=0.006)
    assert set(params.monitoring.drift.key_features) <= {"x", "gappy", "color"}
    assert "x" in params.monitoring.drift.key_features  # the feature the label is made of
    assert not port_taken(params.release.production_port) and not port_taken(params.release.staging_port)
    text = (project / "params.yaml").read_text()
    assert "# left out: id: identifier: every value is a distinct whole number" in text
    assert "# most associated with the target (mutual information): x (" in text


def test_a_time_column_gives_a_time_split_from_the_datas_own_dates(project: Path, tmp_path: Path) -> None:
    draft = init_project(write(table(), tmp_path / "daily.parquet"), "label", project, time_column="day")
    split = yaml.safe_load((project / "params.yaml").read_text())["split"]
    assert split["method"] == "time" and split["train_start"] == "2021-01-01"
    assert split["train_end"] == split["production_start"] == "2021-08-29"  # 80% of the rows before it
    assert split["production_end"] == "2021-10-28"  # the day after the last
    assert draft.profile.time_column == "day" and "day" not in draft.raw["data"]["features"]["numeric"]
    load_params(project / "params.yaml")


def test_an_existing_params_file_is_kept_unless_forced(project: Path, tmp_path: Path) -> None:
    (project / "params.yaml").write_text("mine: true\n")
    data = write(table(), tmp_path / "t.csv")
    with pytest.raises(OnboardingError, match=r"params.yaml exists: keep it, or run again with --force"):
        init_project(data, "label", project)
    assert (project / "params.yaml").read_text() == "mine: true\n" and written(project) == ["params.yaml"]
    init_project(data, "label", project, force=True)
    assert "mine" not in (project / "params.yaml").read_text()


def test_data_of_the_same_name_already_under_data_raw_is_not_overwritten(project: Path, tmp_path: Path) -> None:
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "t.csv").write_text("other,data\n1,2\n")
    with pytest.raises(OnboardingError, match=r"data/raw/t.csv exists and differs from"):
        init_project(write(table(), tmp_path / "t.csv"), "label", project)
    assert (project / "data" / "raw" / "t.csv").read_text() == "other,data\n1,2\n"
    # data already in place is used where it is
    inside = write(table(), project / "data" / "raw" / "in.csv")
    draft = init_project(inside, "label", project)
    assert draft.copied_from is None and str(draft.source) == "data/raw/in.csv"


def single_row_class(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "label"] = "maybe"
    return frame


BAD = {
    "no such target": (lambda f: f, {"target": "outcome"}, OnboardingError, "no target column 'outcome' in the data; "),
    "one class": (lambda f: f.assign(label="yes"), {}, OnboardingError, "'label' has one class only ('yes')"),
    "a class of one row": (single_row_class, {}, OnboardingError, "'maybe' (1 row); a model cannot learn them"),
    "too few rows": (lambda f: f.head(MIN_ROWS - 1), {}, OnboardingError, f"{MIN_ROWS - 1} rows with a target value"),
    "target all missing": (lambda f: f.assign(label=None), {}, OnboardingError, "'label' has no value in any row"),
    "two date layouts": (
        lambda f: f.assign(day=f["day"].where(f.index % 2 == 0, "05-01-2021")),
        {"time_column": "day"},
        OnboardingError,
        "time column 'day' has 150 value(s) that are not timestamps, e.g. ['05-01-2021', '05-01-2021', '05-01-2021']"
        "; accepted: ISO 8601",
    ),
    "one day only": (
        lambda f: f.assign(day="2021/01/01"),
        {"time_column": "day"},
        OnboardingError,
        "every time in 'day' falls on 2021-01-01: a time split needs several days",
    ),
    "nothing to learn from": (
        lambda f: f[["id", "always", "label"]],
        {},
        OnboardingError,
        "no column is left to learn from: id (identifier",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_named_and_nothing_is_written(project: Path, tmp_path: Path, case: str) -> None:
    change, options, error, message = BAD[case]
    data = write(change(table()), tmp_path / "data.csv")
    with pytest.raises(error) as caught:
        init_project(data, options.pop("target", "label"), project, **options)
    assert message in str(caught.value)
    assert written(project) == []  # no params.yaml, no copy of the data


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable csv file"), (b"a,b\n", "holds no rows"), (b"\x89PNG\r\n\x1a\n\x00\x00", "not a readable")],
)
def test_a_file_that_is_no_table_is_named(project: Path, tmp_path: Path, content: bytes, message: str) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    with pytest.raises(DataLoadError, match=message):
        init_project(data, "label", project)
    assert written(project) == []


def test_an_empty_column_is_left_out_with_its_reason() -> None:
    prof = profile(table().assign(empty=np.nan), "label")
    assert ("empty", "every value is missing") in {(g.name, g.reason) for g in prof.left_out}


def test_a_failure_after_the_data_was_copied_takes_the_copy_back(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowship.onboarding import draft

    def fails(*args: object) -> None:
        raise OnboardingError("the drafted split does not work on this data")

    monkeypatch.setattr(draft, "_fit_baseline", fails)
    with pytest.raises(OnboardingError, match="drafted split"):
        init_project(write(table(), tmp_path / "t.csv"), "label", project)
    assert written(project) == []  # neither the copy nor data/raw/ made for it


def test_day_first_dates_are_read_with_the_layout_given_and_it_goes_into_the_params(
    project: Path, tmp_path: Path
) -> None:
    frame = table().assign(day=lambda f: pd.to_datetime(f["day"]).dt.strftime("%d/%m/%Y"))
    data = write(frame, tmp_path / "dayfirst.csv")
    with pytest.raises(OnboardingError, match=r"not timestamps.*; init takes it as --time-format"):
        init_project(data, "label", project, time_column="day")  # 13/01/2021 is no month-first date
    assert written(project) == []
    with pytest.raises(OnboardingError, match=r"--time-format 'dd/mm/yyyy': the strftime layout"):
        init_project(data, "label", project, time_column="day", time_format="dd/mm/yyyy")
    with pytest.raises(OnboardingError, match=r"--time-format '%d/%m/%Y': the strftime layout of --time-column"):
        init_project(data, "label", project, time_format="%d/%m/%Y")  # no time column to read with it
    init_project(data, "label", project, time_column="day", time_format="%d/%m/%Y")
    params = load_params(project / "params.yaml")
    assert params.data.time_format == "%d/%m/%Y" and params.split.method == "time"
    assert str(params.split.train_start) == "2021-01-01"  # read day-first: the data's first day
