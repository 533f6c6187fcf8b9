"""The evaluate stage's settings and cost: permutation importance as params.yaml bounds it (or off), and the
seconds of each part in reports/evaluation-timings.json (beside the stage's DVC outputs) and the candidate's run
metrics."""

from __future__ import annotations

import json
import pickle

import pytest

from flowship.config import parse_params
from flowship.errors import ConfigError
from flowship.paths import Layout
from flowship.pipeline import evaluation, stages
from flowship.pipeline.training import fit
from flowship.tasks.tracking import evaluation_timings
from tests.unit.conftest import make_frame, raw_params

PARTS = ["load", "metrics", "golden_set", "importance", "plots"]


def params_with(**evaluate):
    return parse_params(raw_params(evaluate={"golden_size": 5, **evaluate}))


def problem_of(**evaluate) -> str:
    with pytest.raises(ConfigError) as caught:
        params_with(**evaluate)
    (problem,) = caught.value.problems
    return problem


# --- settings ---------------------------------------------------------------------------------------------


def test_importance_settings_default_to_a_bounded_sample():
    settings = params_with().evaluate
    assert settings.importance is True
    assert settings.importance_rows == 2000
    assert settings.importance_repeats == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("importance_rows", 0),
        ("importance_rows", "many"),
        ("importance_repeats", 0),
        ("importance_repeats", 1.5),
        ("importance", "sometimes"),
    ],
)
def test_a_bad_importance_setting_is_refused_naming_its_key(key, value):
    problem = problem_of(**{key: value})
    assert problem.startswith(f"evaluate.{key}")
    assert repr(value) in problem or str(value) in problem


def test_an_unknown_evaluate_key_is_refused_naming_it():
    assert "evaluate.importance_row" in problem_of(importance_row=100)


# --- the stage --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_holdout():
    params = params_with()
    data = make_frame("classification", n=400).drop(columns=["ts"])
    train, holdout = data.iloc[:250].reset_index(drop=True), data.iloc[250:].reset_index(drop=True)
    return fit(train, params, params.train.params), holdout


def project(tmp_path, model_and_holdout) -> Layout:
    """A project folder holding a candidate model and a holdout split, as the train and prepare stages leave it."""
    model, holdout = model_and_holdout
    layout = Layout(tmp_path)
    layout.model_file.parent.mkdir(parents=True)
    layout.model_file.write_bytes(pickle.dumps(model))
    layout.holdout_split.parent.mkdir(parents=True)
    holdout.to_parquet(layout.holdout_split)
    return layout


def spy_permutation_importance(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = evaluation.permutation_importance

    def spy(estimator, x, y, **kwargs):
        calls.append({"rows": len(x), "n_repeats": kwargs["n_repeats"]})
        return real(estimator, x, y, **kwargs)

    monkeypatch.setattr(evaluation, "permutation_importance", spy)
    return calls


def test_evaluate_writes_the_seconds_of_each_part(tmp_path, model_and_holdout):
    layout = project(tmp_path, model_and_holdout)
    params = params_with(importance_rows=60, importance_repeats=1)
    metrics = stages.run_evaluate(params, layout)

    timings = json.loads(layout.evaluation_timings.read_text())
    assert set(timings["seconds"]) == set(PARTS)
    assert all(s >= 0 for s in timings["seconds"].values())
    assert timings["total_seconds"] == pytest.approx(sum(timings["seconds"].values()), abs=1e-3)
    assert timings["holdout_rows"] == 150
    assert timings["importance"] == {"rows": 60, "repeats": 1, "features": 3}
    # The gate's metrics stay what they were: no timing among them.
    assert json.loads(layout.metrics_file.read_text()) == metrics
    assert not any("seconds" in k for k in metrics)
    assert (layout.evaluation_dir / "feature_importance.png").exists()


def test_evaluate_samples_importance_as_params_say(tmp_path, model_and_holdout, monkeypatch):
    calls = spy_permutation_importance(monkeypatch)
    stages.run_evaluate(params_with(importance_rows=40, importance_repeats=3), project(tmp_path, model_and_holdout))
    assert calls == [{"rows": 40, "n_repeats": 3}]


def test_importance_rows_beyond_the_holdout_take_the_whole_holdout(tmp_path, model_and_holdout, monkeypatch):
    calls = spy_permutation_importance(monkeypatch)
    layout = project(tmp_path, model_and_holdout)
    stages.run_evaluate(params_with(importance_rows=100_000, importance_repeats=1), layout)
    assert calls == [{"rows": 150, "n_repeats": 1}]
    assert json.loads(layout.evaluation_timings.read_text())["importance"]["rows"] == 150


def test_evaluate_without_importance_skips_it_and_its_plot(tmp_path, model_and_holdout, monkeypatch):
    calls = spy_permutation_importance(monkeypatch)
    layout = project(tmp_path, model_and_holdout)
    stages.run_evaluate(params_with(importance=False), layout)
    assert calls == []
    timings = json.loads(layout.evaluation_timings.read_text())
    assert set(timings["seconds"]) == set(PARTS) - {"importance"}
    assert timings["importance"] is None
    assert not (layout.evaluation_dir / "feature_importance.png").exists()
    assert (layout.evaluation_dir / "confusion_matrix.png").exists()


def test_the_timings_become_run_metrics_named_by_part(tmp_path, model_and_holdout):
    layout = project(tmp_path, model_and_holdout)
    assert evaluation_timings(layout) == {}  # before the stage ran: nothing to log
    stages.run_evaluate(params_with(importance_rows=30, importance_repeats=1), layout)
    seconds = json.loads(layout.evaluation_timings.read_text())["seconds"]
    logged = evaluation_timings(layout)
    assert logged == {
        **{f"evaluate_seconds_{part}": seconds[part] for part in PARTS},
        "evaluate_seconds_total": pytest.approx(sum(seconds.values()), abs=1e-3),
    }


def test_the_stage_outputs_are_the_same_bytes_at_every_run_and_the_seconds_stay_beside_them(
    tmp_path, model_and_holdout
):
    """What DVC hashes for dvc.lock does not change when the same inputs are evaluated again."""
    layout = project(tmp_path, model_and_holdout)
    params = params_with(importance_rows=30, importance_repeats=1)

    def outputs() -> dict[str, bytes]:
        files = sorted(layout.evaluation_dir.iterdir())
        return {f.name: f.read_bytes() for f in files} | {"holdout.json": layout.metrics_file.read_bytes()}

    stages.run_evaluate(params, layout)
    first = outputs()
    layout.evaluation_timings.unlink()
    stages.run_evaluate(params, layout)
    assert outputs() == first
    assert "golden.json" in first and "roc_curve.png" in first
    assert layout.evaluation_timings.exists()  # written again by the second run, outside the outputs
    assert not layout.evaluation_timings.is_relative_to(layout.evaluation_dir)


def test_timings_of_another_evaluation_are_not_logged(tmp_path, model_and_holdout):
    layout = project(tmp_path, model_and_holdout)
    stages.run_evaluate(params_with(importance_rows=30, importance_repeats=1), layout)
    assert evaluation_timings(layout)
    # `dvc checkout` (or DVC's run cache) brings back another evaluation's outputs and leaves the timings as they were
    golden = json.loads(layout.golden_file.read_text())
    layout.golden_file.write_text(json.dumps(golden[1:]))
    assert evaluation_timings(layout) == {}
    layout.golden_file.unlink()
    assert evaluation_timings(layout) == {}
