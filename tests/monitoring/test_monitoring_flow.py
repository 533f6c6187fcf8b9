"""The monitoring flow on a real project: real DVC repo and remote, real MLflow store, the real log writer,
Evidently, a Prefect API; a real HTTP server receives the webhook alerts."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from flowship.adapters.tracking import TAG
from flowship.errors import RegistryError, StageError
from flowship.monitoring.report import MonitoringSummary
from tests.conftest import Project, run
from tests.helpers import flowship, free_port
from tests.monitoring.conftest import log_predictions, production_month

# A trained project: real DVC and a real MLflow store under the session's Prefect test API.
pytestmark = pytest.mark.integration


def monitor(project: Project, start: str | None = None, end: str | None = None) -> MonitoringSummary:
    from flowship.flows.monitoring import run_monitoring

    return run_monitoring(str(project.params_path), start, end)


# summary.json's keys, in their order: its format stays as it is
SUMMARY_KEYS = [
    "verdict",
    "window",
    "window_start",
    "window_end",
    "records",
    "skipped_lines",
    "labels",
    "labels_skipped_lines",
    "report",
    "versions",
    "mlflow_runs",
    "alerts",
    "retraining",
    "note",
    "service",
    "service_run",
    "dashboard_project",
    "dashboard_run",
]


def fresh(project: Project, **monitoring: Any) -> None:
    """No log, labels, reports or state yet; monitoring settings as given (others from the fixture)."""
    for folder in ("logs", "reports/monitoring", "reports/evidently", ".flowship/monitoring"):
        shutil.rmtree(project.root / folder, ignore_errors=True)
    params = project.params()
    params["monitoring"]["alerts"] = {"webhook": None, "cooldown_hours": 24}
    params["monitoring"]["retrain"] = {"enabled": False, "deploy": False}
    params["monitoring"].pop("dashboard", None)
    for key, value in monitoring.items():
        params["monitoring"][key] = value
    project.write_params(params)


def alert_lines(project: Project) -> list[dict[str, Any]]:
    path = project.root / "logs" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_drifting_month_gives_reports_a_run_artifacts_and_one_alert(trained_project: Project) -> None:
    from prefect.artifacts import Artifact

    project = trained_project
    fresh(project)
    july = production_month(project, 7)
    log_predictions(project, july, "1")

    summary = monitor(project)
    assert summary.verdict == "drift"
    assert summary.records == len(july) and summary.skipped_lines == 0
    (check,) = summary.versions
    assert check.version == "1" and check.records == len(july)
    drifted = {d.column for d in check.drift if d.drifted}
    assert {"temp", "dewp"} <= drifted  # summer against a January–June reference
    assert "carrier" not in drifted
    months = next(q for q in check.data_quality if q.column == "month")
    assert months.out_of_range == len(july)  # month 7 never occurred in training
    quality = check.quality
    assert quality is not None
    assert quality.labelled == len(july) and 0.5 < quality.metrics["roc_auc"] < 1.0
    target = check.target_drift  # the delay rate: about 32% in July against 24% in training
    assert target is not None
    assert target.column == "target" and target.method == "jensenshannon" and target.score > 0.0
    assert quality.holdout == pytest.approx(project.tracker().run_data(check_run_id(project))[1]["roc_auc"])

    assert summary.report is not None
    report = Path(summary.report)
    assert {p.name for p in (report / "v1").iterdir()} == {"drift.html", "data-quality.html", "model-quality.html"}
    saved = json.loads((report / "summary.json").read_text())
    assert list(saved) == SUMMARY_KEYS and saved["verdict"] == "drift" and saved["report"] == str(report)
    assert saved["mlflow_runs"] == dict(summary.mlflow_runs) and list(saved["mlflow_runs"]) == ["1"]
    assert saved["alerts"] == [
        {"version": "1", "kinds": check.alert_kinds, "new": check.alert_kinds, "delivery": ANY, "runbook": ANY}
    ]
    assert "docs/runbook.md#drift-share" in saved["alerts"][0]["runbook"]
    # no gateway in front of this production: the service has no figures to judge, and raises nothing
    assert saved["service"]["verdict"] == "no_log" and saved["service"]["total"]["requests"] == 0
    assert [v["version"] for v in saved["versions"]] == ["1"] and saved["retraining"] is None
    # the check's run in the dashboard, named in the summary
    assert saved["dashboard_project"] == summary.dashboard_project == dashboard_project()
    assert saved["dashboard_run"] == summary.dashboard_run is not None
    assert "temp" in (report / "v1" / "drift.html").read_text()

    tracker = project.tracker()
    experiment = tracker.client.get_experiment_by_name("flights-delay-monitoring")
    runs = tracker.client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG}model_version` = '1'")
    assert len(runs) == 1 and runs[0].data.tags[f"{TAG}monitoring.verdict"] == "drift"
    assert runs[0].data.metrics["records"] == len(july)
    artifacts = {a.path for a in tracker.client.list_artifacts(runs[0].info.run_id, "reports")}
    assert {
        "reports/drift.html",
        "reports/data-quality.html",
        "reports/model-quality.html",
        "reports/summary.json",
    } <= artifacts

    table = Artifact.get("monitoring-drift")
    assert table is not None
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    temp = next(r for r in rows if r["feature"] == "temp")
    assert temp["method"] == "wasserstein" and temp["threshold"] == 0.1 and temp["drifted"] is True
    assert {r["feature"] for r in rows} >= {"prediction", "target"}
    markdown = Artifact.get("monitoring-summary")
    assert markdown is not None and "DRIFT" in str(markdown.data) and str(report) in str(markdown.data)
    assert f"- dashboard: run `{summary.dashboard_run}` of project `{dashboard_project()}`" in str(markdown.data)

    (alert,) = alert_lines(project)
    assert alert["version"] == "1" and "drift_share" in alert["kinds"] and alert["delivery"].startswith("logged")

    # Nothing new since: an empty window is "no data", not an error; its state says so.
    from flowship.flows.monitoring import monitoring

    state = monitoring(params_path=str(project.params_path), return_state=True)
    assert state.is_completed() and state.name == "No data"
    assert state.result().verdict == "no_data"

    # The same drift again within the cool-down: recorded, not alerted a second time.
    last_end = json.loads((project.root / ".flowship" / "monitoring" / "state.json").read_text())["last_end"]
    log_predictions(
        project, production_month(project, 8), "1", when=datetime.fromisoformat(last_end) + timedelta(seconds=1)
    )
    again = monitor(project)
    assert again.verdict == "drift"
    assert again.alerts[0].new == [] and "cool-down" in again.alerts[0].delivery
    assert len(alert_lines(project)) == 2

    # Each check with records added its run to the model's project of the dashboard, at its window's end (the
    # empty window added none).
    runs = [json.loads(p.read_text()) for p in dashboard_runs(project)]
    assert sorted(datetime.fromisoformat(r["timestamp"]) for r in runs) == [
        datetime.fromisoformat(summary.window_end),
        datetime.fromisoformat(again.window_end),
    ]
    assert all(r["tags"] == ["v1"] for r in runs)
    assert {p.stem for p in dashboard_runs(project)} == {summary.dashboard_run, again.dashboard_run}
    assert json.loads(Path(str(again.report), "summary.json").read_text())["dashboard_run"] == again.dashboard_run


def dashboard_project() -> str:
    from flowship.adapters.drift import project_id

    return project_id("flights-delay")


def dashboard_runs(project: Project) -> list[Path]:
    return list((project.root / "reports" / "evidently" / dashboard_project() / "snapshots").glob("*.json"))


def test_a_dashboard_workspace_that_is_missing_fails_the_check_once_its_reports_are_written(
    trained_project: Project,
) -> None:
    from flowship.flows.monitoring import monitoring

    project = trained_project
    fresh(project, dashboard={"workspace": "shared/evidently"})  # e.g. a shared folder that is not mounted
    log_predictions(project, production_month(project, 7), "1")
    state = monitoring(params_path=str(project.params_path), return_state=True)
    workspace = project.root / "shared" / "evidently"
    assert state.is_failed(), state
    assert f"the dashboard workspace {workspace} is missing" in str(state.message)
    # the check itself is kept: its reports, summary, MLflow run and alert; the next check starts after it
    (report,) = (project.root / "reports" / "monitoring").iterdir()
    assert {p.name for p in (report / "v1").iterdir()} == {"drift.html", "data-quality.html", "model-quality.html"}
    saved = json.loads((report / "summary.json").read_text())
    assert saved["verdict"] == "drift" and list(saved["mlflow_runs"]) == ["1"]
    assert [a["version"] for a in alert_lines(project)] == ["1"]
    assert json.loads((project.root / ".flowship" / "monitoring" / "state.json").read_text())["last_end"]
    assert not workspace.parent.exists() and not dashboard_runs(project)


def check_run_id(project: Project) -> str:
    run_id = project.tracker().version("flights-delay", "1").run_id
    assert run_id is not None
    return str(run_id)


def test_labels_that_never_arrive_leave_model_quality_out_until_feedback_brings_them(trained_project: Project) -> None:
    from flowship.serving.feedback import FeedbackLog, feedback_model

    project = trained_project
    fresh(project)
    september = production_month(project, 9)
    keys = log_predictions(project, september, "1", labels=False)
    summary = monitor(project)
    (check,) = summary.versions
    assert check.quality is not None and check.quality.labelled == 0 and check.quality.metrics == {}
    assert "model_quality" not in check.reports
    assert not any("labelled records vs" in r for r in check.reasons)
    assert check.feedback_count == 0 and check.feedback_rating_share is None

    # Users answer through POST /feedback, on two replicas: the app's own validation and writer, into the
    # inference log's folder. A label for some records, a rating for some, a rating for a request never made.
    body = feedback_model("classification", [0, 1], 1000)
    target = [int(t) for t in september["late"]]
    labelled = 150
    for i, (request_id, row) in enumerate(keys[:labelled]):
        said = {
            "request_id": request_id,
            "row": row,
            "label": target[i],
            **({"rating": 1 - 2 * (i % 2)} if i < 40 else {}),
        }
        FeedbackLog(project.root / "logs" / "inference", f"stable-{i % 2}").keep(body.model_validate(said), f"fb-{i}")
    FeedbackLog(project.root / "logs" / "inference", "stable-0").keep(
        body.model_validate({"request_id": "never-made", "rating": -1}), "fb-x"
    )

    # The next check of the same records joins them: model quality from the feedback labels, the rating trend
    again = monitor(project, end=summary.window_end)
    (check,) = again.versions
    assert check.quality is not None and check.quality.labelled == labelled
    assert 0.5 < check.quality.metrics["roc_auc"] <= 1.0 and "model_quality" in check.reports
    assert check.feedback_count == 40 and check.feedback_rating_share == 0.5
    runs = project.tracker().client.search_runs(
        [project.tracker().client.get_experiment_by_name("flights-delay-monitoring").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].data.metrics["feedback_count"] == 40 and runs[0].data.metrics["feedback_rating_share"] == 0.5
    assert runs[0].data.metrics["labelled"] == labelled


def test_records_of_several_versions_are_checked_against_their_own_reference(trained_project: Project) -> None:
    project = trained_project
    fresh(project)
    tracker = project.tracker()
    v1 = tracker.version("flights-delay", "1")
    assert v1.run_id is not None
    # A second version of the same model (its lineage tags included), as a re-registration would make.
    v2 = tracker.register("flights-delay", v1.source, v1.run_id, v1.tags, alias="challenger")
    try:
        july = production_month(project, 7)
        log_predictions(project, july.iloc[:600], v1.version)
        # v2's records come from a client that renamed a feature: a schema change the check must name.
        log_predictions(project, july.iloc[600:], v2.version, rename={"temp": "temperature"})
        summary = monitor(project)
        by_version = {c.version: c for c in summary.versions}
        assert set(by_version) == {"1", v2.version}
        assert by_version["1"].records == 600 and by_version[v2.version].records == len(july) - 600
        assert by_version["1"].absent == [] and by_version["1"].unexpected == []
        assert by_version[v2.version].absent == ["temp"] and by_version[v2.version].unexpected == ["temperature"]
        assert any(r.startswith("schema: no values logged for temp") for r in by_version[v2.version].reasons)
        assert summary.report is not None
        assert {p.name for p in Path(summary.report).iterdir()} == {"v1", f"v{v2.version}", "summary.json"}
    finally:
        tracker.client.delete_model_version("flights-delay", v2.version)
        tracker.set_alias("flights-delay", "challenger", "1")


def test_a_version_missing_from_the_registry_is_named(trained_project: Project) -> None:
    project = trained_project
    fresh(project)
    log_predictions(project, production_month(project, 7).iloc[:300], "1")
    path = next((project.root / "logs" / "inference").glob("*.jsonl"))
    path.write_text(path.read_text().replace('"model_version":"1"', '"model_version":"42"'))
    with pytest.raises(RegistryError, match="flights-delay v42 is not in the model registry"):
        monitor(project)
    assert not (project.root / ".flowship" / "monitoring" / "state.json").exists()  # the window is checked again


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()


def test_alerts_go_to_the_webhook_and_a_dead_webhook_fails_the_run(trained_project: Project, webhook: str) -> None:
    project = trained_project
    fresh(project, alerts={"webhook": webhook, "cooldown_hours": 24})
    log_predictions(project, production_month(project, 7), "1")
    summary = monitor(project)
    (received,) = Hook.received
    assert received["model"] == "flights-delay" and received["version"] == "1" and "drift_share" in received["kinds"]
    assert received["report"] == summary.report
    assert alert_lines(project)[0]["delivery"] == f"sent to {webhook}"
    assert [a.delivery for a in summary.alerts] == [f"sent to {webhook}"]

    dead = f"http://127.0.0.1:{free_port()}/alerts"
    fresh(project, alerts={"webhook": dead, "cooldown_hours": 24})
    log_predictions(project, production_month(project, 7), "1")
    from flowship.flows.monitoring import monitoring

    state = monitoring(params_path=str(project.params_path), return_state=True)
    assert state.is_failed() and dead in str(state.message)
    (logged,) = alert_lines(project)
    assert logged["delivery"].startswith(f"webhook {dead} failed")
    assert list((project.root / "reports" / "monitoring").glob("*/v1/drift.html"))  # the check itself is kept
    state_file = json.loads((project.root / ".flowship" / "monitoring" / "state.json").read_text())
    assert state_file["last_end"] and state_file.get("alerts", {}) == {}  # the next check alerts again


def test_reference_is_pulled_from_the_remote_and_a_lost_version_is_a_clear_error(trained_project: Project) -> None:
    project = trained_project
    fresh(project)
    log_predictions(project, production_month(project, 7).iloc[:400], "1")
    shutil.rmtree(project.root / ".dvc" / "cache")
    assert monitor(project).verdict == "drift"  # training data fetched from the DVC remote by its md5

    fresh(project)
    log_predictions(project, production_month(project, 7).iloc[:400], "1")
    shutil.rmtree(project.root / ".dvc" / "cache")
    remote = Path(run(["dvc", "remote", "list"], project.root).stdout.split()[1])
    moved = remote.with_name(remote.name + "-gone")
    remote.rename(moved)
    try:
        with pytest.raises(
            StageError, match=r"the training data of v1 \(md5 [0-9a-f]{32}\) is neither in the DVC cache nor on"
        ):
            monitor(project)
    finally:
        moved.rename(remote)


def test_retraining_on_drift_goes_through_the_gate_never_straight_to_production(trained_project: Project) -> None:
    project = trained_project
    fresh(project, retrain={"enabled": True, "deploy": False})
    before = project.params_path.read_text()
    log_predictions(project, production_month(project, 7), "1")
    try:
        summary = monitor(project)
        retraining = summary.retraining
        assert retraining is not None and retraining.window is not None
        assert retraining.window["train_end"] == "2013-08-01"  # the newest label is from July 31st
        assert 'train_end: "2013-08-01"' in project.params_path.read_text()
        tracker = project.tracker()
        assert tracker.aliases("flights-delay")["champion"] == "1"  # never straight to production
        if retraining.status == "registered":
            assert tracker.aliases("flights-delay")["challenger"] == retraining.version != "1"
        else:
            assert retraining.status == "gate_failed"
    finally:
        project.params_path.write_text(before)
        for version in project.tracker().versions("flights-delay"):
            if version.version != "1":
                project.tracker().client.delete_model_version("flights-delay", version.version)
        project.tracker().set_alias("flights-delay", "challenger", "1")


def test_monitor_command_names_a_bad_window(trained_project: Project) -> None:
    done = flowship(["monitor", "--from", "last tuesday"], trained_project.root)
    assert done.returncode == 1
    assert "start: 'last tuesday' is not a date or ISO time" in done.stderr
