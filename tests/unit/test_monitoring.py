"""Monitoring's library: windows, reading the log, schema problems, verdicts, alerts and the retraining window."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flowship.adapters.drift import ColumnDrift, drifted
from flowship.config import MonitoringConfig, load_params, parse_params
from flowship.errors import ConfigError, MonitoringError
from flowship.monitoring import retraining as retrain
from flowship.monitoring.alerts import Alert, append_alert_log, mark_sent, plan_alerts
from flowship.monitoring.checks import (
    Quality,
    VersionCheck,
    current_frame,
    guardrail_rates,
    join_labels,
    join_ratings,
    judge_version,
    model_quality,
    overall,
)
from flowship.monitoring.reference import ModelSpec, Reference, spec_from_registry
from flowship.monitoring.report import run_metrics, summarize, summary_markdown
from flowship.monitoring.window import (
    SETTLE,
    Window,
    WindowData,
    features_of,
    read_log_window,
    read_state,
    resolve_window,
    window_data,
)
from flowship.serving.inference_log import SAFETY_PREFIX, InferenceEntry, InferenceLog, SafetyEntry
from flowship.serving.labels import Label, read_labels, write_labels
from tests.conftest import REPO

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(request_id: str, version: str = "1", n: int = 2, time: datetime = T0, **features: Any) -> InferenceEntry:
    rows = [{"distance": float(i), "carrier": "AA", **features} for i in range(n)]
    return InferenceEntry(
        time, request_id, "m", version, rows, [i % 2 for i in range(n)], [{"0": 0.6, "1": 0.4} for _ in range(n)]
    )


def window(start: datetime | None = None, end: datetime = T0 + timedelta(days=3)) -> Window:
    return Window(start, end, default=False)


SCHEMA = {"distance": "numeric", "carrier": "categorical"}


# ------------------------------------------------------------------------------------------- window


def test_default_window_starts_where_the_last_check_ended() -> None:
    now = T0 + timedelta(hours=5)
    first = resolve_window({}, None, None, now)
    assert first.start is None and first.end == now - SETTLE and first.default
    later = resolve_window({"last_end": first.end.isoformat()}, None, None, now + timedelta(hours=1))
    assert later.start == first.end


def test_given_window_is_used_as_is_and_not_marked_default() -> None:
    w = resolve_window({"last_end": "2030-01-01T00:00:00+00:00"}, "2026-03-01", "2026-03-02T06:00", T0)
    assert w.start == datetime(2026, 3, 1, tzinfo=UTC) and w.end == datetime(2026, 3, 2, 6, tzinfo=UTC)
    assert not w.default


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("yesterday", None, "start: 'yesterday' is not a date"),
        ("2026-03-02", "2026-03-01", "its end is not after its start"),
    ],
)
def test_bad_window_is_named(start: str, end: str | None, message: str) -> None:
    with pytest.raises(MonitoringError, match=message):
        resolve_window({}, start, end, T0)


def test_corrupt_state_file_names_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(MonitoringError, match="state.json: not valid JSON"):
        read_state(state)


# ------------------------------------------------------------------------------------------- reading


def test_reads_records_flat_with_features_and_probabilities(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=3))
        log.append(entry("b", version="2", time=T0 + timedelta(days=1)))
    read = read_log_window(tmp_path, window(), SCHEMA)
    assert read.skipped == 0 and read.files == 2
    records = read.records
    assert records["request_id"].tolist() == ["a", "a", "a", "b", "b"]
    assert records["row"].tolist() == [0, 1, 2, 0, 1]
    assert records["model_version"].tolist() == ["1", "1", "1", "2", "2"]
    assert records["features.distance"].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert records["probabilities.1"].tolist() == [0.4] * 5
    assert features_of(records).columns.tolist() == ["distance", "carrier"]


def test_window_bounds_are_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        for hour in range(4):
            log.append(entry(f"r{hour}", n=1, time=T0 + timedelta(hours=hour)))
    read = read_log_window(tmp_path, window(T0 + timedelta(hours=1), T0 + timedelta(hours=3)), SCHEMA)
    assert read.records["request_id"].tolist() == ["r1", "r2"]


def test_empty_log_folder_gives_an_empty_window(tmp_path: Path) -> None:
    read = read_log_window(tmp_path / "nothing-yet", window(), SCHEMA)
    assert read.records.empty and read.files == 0 and read.skipped == 0


def test_truncated_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=3))
    path = next(tmp_path.glob("inference-*.jsonl"))
    path.write_bytes(path.read_bytes()[:-25])  # a crash mid-line
    read = read_log_window(tmp_path, window(), SCHEMA)
    assert read.skipped == 1
    assert read.records["row"].tolist() == [0, 1]


def test_corrupt_line_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=3))
    path = next(tmp_path.glob("inference-*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"time": "2026-03-01T12:00:00+00:00", "request_id": \x00garbage\n'
    lines.insert(2, '{"time": "2026-03-01T12:00:00+00:00", "request_id": "x"}\n')  # no features, no prediction
    path.write_text("".join(lines))
    read = read_log_window(tmp_path, window(), SCHEMA)
    assert read.skipped == 2
    assert read.records["row"].tolist() == [0, 2]
    assert read.records["features.distance"].tolist() == [0.0, 2.0]


def test_int_then_float_values_of_one_feature_read_as_numbers(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=1, distance=3))
        log.append(entry("b", n=1, distance=3.5, wind=None))
    read = read_log_window(tmp_path, window(), SCHEMA)
    assert read.records["features.distance"].tolist() == [3.0, 3.5]


# ------------------------------------------------------------------------------------------- schema


SPEC = ModelSpec(
    name="m",
    version="1",
    task="classification",
    target="late",
    numeric=["distance", "temp"],
    categorical=["carrier"],
    train_md5="abc",
    holdout_metrics={"roc_auc": 0.74},
)


def test_features_missing_or_renamed_in_the_log_are_reported(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=2, temperature=50.0))  # `temp` renamed to `temperature`
    records = read_log_window(tmp_path, window(), SCHEMA).records
    frame, absent, unexpected = current_frame(records, SPEC)
    assert absent == ["temp"] and unexpected == ["temperature"]
    assert frame["temp"].isna().all() and frame["distance"].tolist() == [0.0, 1.0]
    assert frame["prediction"].tolist() == ["0", "1"]


def test_spec_without_lineage_is_refused() -> None:
    with pytest.raises(MonitoringError, match="no flowship.data.train_md5 lineage tag"):
        spec_from_registry("m", "3", {}, [{"name": "x", "type": "double"}], {}, {})


def test_spec_splits_numeric_and_categorical_inputs() -> None:
    inputs = [{"name": "a", "type": "double"}, {"name": "b", "type": "long"}, {"name": "c", "type": "string"}]
    spec = spec_from_registry(
        "m",
        "2",
        {"flowship.data.train_md5": "f" * 32},
        inputs,
        {"target": "y"},
        {"roc_auc": 0.7, "trial_roc_auc_0": 0.6},
    )
    assert (spec.numeric, spec.categorical, spec.target) == (["a", "b"], ["c"], "y")
    assert spec.holdout_metrics == {"roc_auc": 0.7}


# ------------------------------------------------------------------------------------------- labels


def test_labels_join_on_request_and_row_and_missing_labels_are_left_out() -> None:
    records = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, 0], "prediction": [1, 0, 1]})
    labels = pd.DataFrame({"request_id": ["a", "b", "b", "zz"], "row": [1, 0, 0, 0], "label": [0, 0, 1, 1]})
    joined = join_labels(records, labels)
    assert list(zip(joined["request_id"], joined["row"], joined["label"], strict=True)) == [("a", 1, 0), ("b", 0, 1)]


def test_feedback_labels_join_as_labels_and_ratings_count_apart(tmp_path: Path) -> None:
    records = pd.DataFrame({"request_id": ["a", "a", "b", "c"], "row": [0, 1, 0, 0], "prediction": [1, 0, 1, 1]})
    arrived = datetime(2026, 11, 20, 12, tzinfo=UTC)
    batch, served = tmp_path / "labels", tmp_path / "inference"
    write_labels(batch, [Label("a", 0, 1)], arrived)  # a labelling job
    write_labels(served, [Label("a", 1, 0, rating=1)], arrived, writer="stable-0")  # feedback: both
    write_labels(served, [Label("b", 0, rating=-1)], arrived, writer="stable-1")  # a rating alone: no label
    write_labels(served, [Label("b", 0, rating=1)], arrived + timedelta(minutes=1), writer="stable-0")  # changed mind
    write_labels(served, [Label("c", 0, rating=-1), Label("zz", 0, rating=1)], arrived, writer="stable-0")
    labels, _ = read_labels([batch, served])

    joined = join_labels(records, labels)
    assert list(zip(joined["request_id"], joined["row"], joined["label"], strict=True)) == [("a", 0, 1), ("a", 1, 0)]
    ratings = join_ratings(records, labels)
    assert ratings.count == 3 and ratings.share == pytest.approx(2 / 3)  # a/1 up, b/0 up (the last), c/0 down
    assert join_ratings(records.iloc[:1], labels).count == 0  # rated records of another window do not count
    assert join_ratings(records.iloc[:1], labels).share is None


def test_the_rating_trend_is_a_metric_of_the_run_and_a_line_of_the_summary() -> None:
    check = VersionCheck("1", 500, "ok", [], feedback_count=40, feedback_rating_share=0.75)
    metrics = run_metrics(check)
    assert metrics["feedback_count"] == 40 and metrics["feedback_rating_share"] == 0.75
    unrated = run_metrics(VersionCheck("1", 500, "ok", []))
    assert unrated["feedback_count"] == 0 and "feedback_rating_share" not in unrated
    data = WindowData(Window(None, T0, default=False), pd.DataFrame({"request_id": ["a"]}), 0, 0, pd.DataFrame(), 0)
    text = summary_markdown(summarize(data, [check], Path("r")))
    assert "- feedback: 40 answers rated, 75% thumbs up" in text
    rated = pd.DataFrame({"request_id": ["a", "b"], "row": [0, 0], "label": [1, None], "rating": [1, -1]})
    assert summarize(replace(data, labels=rated), [check], Path("r")).labels == 1  # a rating alone is no label


def test_quality_needs_the_minimum_of_labels() -> None:
    cfg = MonitoringConfig()
    ref = Reference(pd.DataFrame(), {}, {}, ["0", "1"], {})
    labelled = pd.DataFrame({"label": [1] * 10, "probabilities.0": [0.3] * 10, "probabilities.1": [0.7] * 10})
    quality = model_quality(labelled, SPEC, ref, cfg, "roc_auc")
    assert quality.labelled == 10 and quality.metrics == {} and quality.drop is None


def test_quality_drop_is_measured_against_the_holdout() -> None:
    cfg = MonitoringConfig.model_validate({"quality": {"min_labels": 4}})
    ref = Reference(pd.DataFrame(), {}, {}, ["0", "1"], {})
    # A model that ranks every positive below every negative: ROC AUC 0.
    labelled = pd.DataFrame(
        {"label": [1, 1, 0, 0], "probabilities.0": [0.9, 0.8, 0.2, 0.1], "probabilities.1": [0.1, 0.2, 0.8, 0.9]}
    )
    quality = model_quality(labelled, SPEC, ref, cfg, "roc_auc")
    assert quality.metrics["roc_auc"] == 0.0
    assert quality.drop == pytest.approx(0.74)


# ------------------------------------------------------------------------------------------- verdict


def col(name: str, score: float, method: str = "wasserstein", threshold: float = 0.1) -> ColumnDrift:
    return ColumnDrift(name, method, score, threshold, drifted(method, score, threshold))


def test_p_values_drift_below_and_distances_above_the_threshold() -> None:
    assert drifted("wasserstein", 0.2, 0.1) and not drifted("wasserstein", 0.05, 0.1)
    assert drifted("ks", 0.01, 0.05) and not drifted("ks", 0.5, 0.05)
    assert not drifted("psi", float("nan"), 0.1)


def test_verdict_ok_drift_and_too_few_records() -> None:
    cfg = MonitoringConfig.model_validate({"min_records": 100, "drift": {"share": 0.5, "key_features": ["temp"]}})
    calm = [col("distance", 0.01), col("temp", 0.02), col("carrier", 0.0, "jensenshannon"), col("prediction", 0.0)]
    assert judge_version("1", 500, calm, [], [], None, cfg).verdict == "ok"
    key = [col("distance", 0.01), col("temp", 2.0), col("carrier", 0.0), col("prediction", 0.0)]
    check = judge_version("1", 500, key, [], [], None, cfg)
    assert check.verdict == "drift" and check.alert_kinds == ["key_feature:temp"]
    assert check.drift_share == pytest.approx(1 / 3)
    few = judge_version("1", 99, key, [], [], None, cfg)
    assert few.verdict == "insufficient_data" and few.alert_kinds == []


def test_schema_problems_and_quality_drop_make_their_own_reasons() -> None:
    cfg = MonitoringConfig.model_validate({"min_records": 1, "quality": {"max_drop": 0.05}})
    quality = Quality(300, {"roc_auc": 0.6}, "roc_auc", 0.74, 0.14)
    check = judge_version("2", 500, [col("distance", 0.0)], ["temp"], ["temperature"], quality, cfg)
    assert check.verdict == "quality_drop"
    assert check.alert_kinds == ["schema", "quality"]
    assert any("no values logged for temp" in r for r in check.reasons)
    assert any("roc_auc 0.6000 on 300 labelled records vs 0.7400" in r for r in check.reasons)


def test_overall_verdict_is_the_worst_of_the_versions() -> None:
    def check(verdict: str) -> VersionCheck:
        return VersionCheck("1", 1, verdict, [])

    assert overall([]) == "no_data"
    assert overall([check("insufficient_data"), check("ok")]) == "ok"
    assert overall([check("ok"), check("drift"), check("insufficient_data")]) == "drift"


# ------------------------------------------------------------------------------------------- alerts


def test_one_incident_is_one_alert_within_the_cool_down(tmp_path: Path) -> None:
    drifting = VersionCheck("1", 900, "drift", ["x"], alert_kinds=["drift_share", "key_feature:temp"])
    state: dict[str, Any] = {}
    first = plan_alerts("m", [drifting], window(), tmp_path, state, 24, T0)
    assert [a.new for a in first] == [["drift_share", "key_feature:temp"]]
    mark_sent(state, first[0], T0)
    again = plan_alerts("m", [drifting], window(), tmp_path, state, 24, T0 + timedelta(hours=3))
    assert [a.new for a in again] == [[]]
    worse = VersionCheck("1", 900, "quality_drop", ["y"], alert_kinds=["drift_share", "quality"])
    assert plan_alerts("m", [worse], window(), tmp_path, state, 24, T0 + timedelta(hours=3))[0].new == ["quality"]
    later = plan_alerts("m", [drifting], window(), tmp_path, state, 24, T0 + timedelta(hours=25))
    assert later[0].new == ["drift_share", "key_feature:temp"]
    other_version = VersionCheck("2", 900, "drift", ["x"], alert_kinds=["drift_share"])
    assert plan_alerts("m", [other_version], window(), tmp_path, state, 24, T0)[0].new == ["drift_share"]


def test_alert_log_is_appended_one_json_line_per_alert(tmp_path: Path) -> None:
    alert = Alert("t", "m", "1", "drift", ["drift_share"], ["r"], "w", "report", ["drift_share"])
    append_alert_log(tmp_path / "alerts.jsonl", alert, "logged")
    append_alert_log(tmp_path / "alerts.jsonl", alert, "cool-down")
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [line["delivery"] for line in lines] == ["logged", "cool-down"]
    assert lines[0]["kinds"] == ["drift_share"]


# ------------------------------------------------------------------------------------------- config


def test_monitoring_config_errors_name_the_key() -> None:
    raw: dict[str, Any] = json.loads(json.dumps(load_raw()))
    raw["monitoring"]["drift"]["num_method"] = "wassertein"
    with pytest.raises(ConfigError, match="monitoring.drift.num_method.*unknown drift method 'wassertein'"):
        parse_params(raw, check_estimator=False)
    raw = load_raw()
    raw["monitoring"]["drift"]["key_features"] = ["temperature"]
    with pytest.raises(ConfigError, match=r"key_features names columns that are not features: \['temperature'\]"):
        parse_params(raw, check_estimator=False)
    raw = load_raw()
    raw["monitoring"]["alerts"]["webhook"] = "hooks.example.com/x"
    with pytest.raises(ConfigError, match="monitoring.alerts.webhook"):
        parse_params(raw, check_estimator=False)
    raw = load_raw()
    raw["monitoring"]["quality"]["metric"] = "rmse"
    with pytest.raises(ConfigError, match="monitoring.quality.metric: metric 'rmse' is not computed"):
        parse_params(raw, check_estimator=False)


def load_raw() -> dict[str, Any]:
    import yaml

    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    return raw


# ------------------------------------------------------------------------------------------- retraining


def test_newer_split_moves_the_window_up_to_the_newest_label() -> None:
    params = parse_params(load_raw(), check_estimator=False)
    labels = pd.DataFrame({"event_time": pd.to_datetime(["2013-07-03T00:00", "2013-07-31T22:00"], utc=True)})
    values = retrain.newer_split(params, labels)
    assert values == {
        "train_start": "2013-02-01",
        "train_end": "2013-08-01",
        "production_start": "2013-08-01",
        "production_end": "2014-01-01",
    }
    old = pd.DataFrame({"event_time": pd.to_datetime(["2013-05-03"], utc=True)})
    assert retrain.newer_split(params, old) is None
    assert retrain.newer_split(params, pd.DataFrame({"event_time": [pd.NaT]})) is None


def test_rewrite_split_keeps_comments_and_is_undone_when_invalid(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    retrain.rewrite_split(
        path, {"train_start": "2013-02-01", "train_end": "2013-08-01", "production_start": "2013-08-01"}
    )
    text = path.read_text()
    assert 'train_end: "2013-08-01"' in text and "# training window" in text
    params = load_params(path, check_estimator=False)
    assert str(params.split.train_start) == "2013-02-01"  # type: ignore[union-attr]
    before = path.read_text()
    with pytest.raises(ConfigError, match="production window must not overlap"):
        retrain.rewrite_split(path, {"train_end": "2013-09-01"})
    assert path.read_text() == before


def test_retraining_needs_a_time_split() -> None:
    raw = load_raw()
    raw["split"] = {"method": "random", "holdout_fraction": 0.2}
    params = parse_params(raw, check_estimator=False)
    with pytest.raises(ConfigError, match="needs a time split"):
        retrain.newer_split(params, pd.DataFrame({"event_time": [T0]}))


# ------------------------------------------------------------------------------------------- guardrails


def safety(*events: tuple[str, int, str, str, str | None]) -> pd.DataFrame:
    """(request_id, row, guardrail, action, feature) as the safety-event log reads."""
    rows = [
        {
            "time": T0,
            "request_id": r,
            "row": i,
            "model_name": "m",
            "model_version": "1",
            "guardrail": g,
            "action": a,
            "feature": f,
        }
        for r, i, g, a, f in events
    ]
    return pd.DataFrame(rows)


def test_guardrail_rates_count_records_once_and_include_the_refused_ones() -> None:
    events = safety(
        ("a", 0, "out_of_range", "flag", "temp"),
        ("a", 1, "out_of_range", "flag", "temp"),
        ("a", 1, "unseen_category", "flag", "carrier"),
        ("b", 0, "out_of_range", "refuse", "temp"),  # refused: never in the inference log
        ("c", 0, "missing", "flag", None),
    )
    rates = guardrail_rates(events, answered=19)
    assert [(r.guardrail, r.feature, r.action, r.records) for r in rates] == [
        ("out_of_range", "temp", "flag", 2),
        ("missing", None, "flag", 1),
        ("out_of_range", "temp", "refuse", 1),
        ("unseen_category", "carrier", "flag", 1),
    ]
    assert rates[0].share == pytest.approx(2 / 20)
    assert rates[0].sentence() == "10.0% of the records are outside the training range of temp (2 records; flag)"
    assert rates[1].sentence().startswith("5.0% of the records miss more of their features than allowed")
    assert guardrail_rates(safety(), answered=10) == []


def test_a_guardrail_firing_on_many_records_is_a_drift_alert_of_its_own() -> None:
    cfg = MonitoringConfig.model_validate({"min_records": 10, "guardrails": {"max_share": 0.05}})
    rates = guardrail_rates(safety(*[(f"r{i}", 0, "out_of_range", "flag", "temp") for i in range(12)]), 100)
    check = judge_version("1", 100, [col("distance", 0.0)], [], [], None, cfg, guardrails=rates)
    assert check.verdict == "drift"
    assert check.alert_kinds == ["guardrail:out_of_range:temp"]
    assert check.reasons == [
        "guardrails: 12.0% of the records are outside the training range of temp (12 records; flag), "
        "above monitoring.guardrails.max_share (5%)"
    ]
    below = guardrail_rates(safety(("r", 0, "out_of_range", "flag", "temp")), 99)
    assert judge_version("1", 99, [col("distance", 0.0)], [], [], None, cfg, guardrails=below).verdict == "ok"
    few = judge_version("1", 5, [], [], [], None, cfg, guardrails=rates)
    assert few.verdict == "insufficient_data" and few.guardrails == rates  # the rates are shown, no alert


def test_the_window_reads_the_safety_events_inside_its_bounds(tmp_path: Path) -> None:
    early, inside = T0 - timedelta(days=1), T0 + timedelta(hours=1)
    with InferenceLog(tmp_path, prefix=SAFETY_PREFIX) as log:
        for stamp, request in ((early, "early"), (inside, "inside")):
            log.append(
                SafetyEntry(
                    stamp, request, "m", "2", [(0, {"guardrail": "missing", "action": "flag", "feature": None})]
                )
            )
    data = window_data(tmp_path, tmp_path / "labels", window(T0), ["distance"], ["carrier"])
    assert data.safety[["request_id", "model_version", "guardrail"]].values.tolist() == [["inside", "2", "missing"]]


def test_log_lines_with_guardrail_fields_read_as_before(tmp_path: Path) -> None:
    flagged = InferenceEntry(
        T0,
        "g",
        "m",
        "1",
        [{"distance": 1.0, "carrier": "ZZ"}] * 2,
        [1, 0],
        [{"0": 0.4, "1": 0.6}] * 2,
        guardrails=[[{"guardrail": "unseen_category", "action": "fallback", "feature": "carrier"}], []],
        answers={0: None},
    )
    with InferenceLog(tmp_path) as log:
        log.append(entry("plain"))
        log.append(flagged)
    read = read_log_window(tmp_path, window(), SCHEMA)
    assert read.skipped == 0
    assert read.records["request_id"].tolist() == ["plain", "plain", "g", "g"]
    assert read.records["prediction"].tolist() == [0, 1, 1, 0]  # the model's own outputs, not the answers given


def test_the_last_report_is_the_newest_check_folder_that_wrote_a_summary(tmp_path: Path) -> None:
    from flowship.monitoring.report import report_folder
    from flowship.paths import Layout

    layout = Layout(tmp_path)
    assert layout.last_monitoring_report() is None  # no check yet (no folder at all)
    now = datetime(2026, 12, 3, 15, 36, 24, tzinfo=UTC)
    first = report_folder(layout.monitoring_reports, now)
    first.mkdir(parents=True)
    assert layout.last_monitoring_report() is None  # a check that ended before its summary
    (first / "summary.json").write_text("{}")
    second = report_folder(layout.monitoring_reports, now)  # the same second: a folder of its own
    second.mkdir()
    (second / "summary.json").write_text("{}")
    (report_folder(layout.monitoring_reports, now + timedelta(seconds=1))).mkdir()  # no summary
    assert second.name == "20261203T153624Z-2" and layout.last_monitoring_report() == second
