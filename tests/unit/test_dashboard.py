"""The monitoring dashboard's workspace, written in this process as a check writes it (Evidently's own files, no UI):
a run per check at its window's end with a column per version, the panels drawn once per version, and a workspace
folder that is missing or unreadable named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowship.adapters.drift import ColumnDrift, ColumnQuality, project_id
from flowship.errors import DashboardError
from flowship.monitoring.checks import Quality, VersionCheck
from flowship.monitoring.dashboard import (
    COST_PER_1000,
    DashboardRecord,
    column,
    panel_specs,
    panels,
    record_check,
    versions_of,
)
from flowship.monitoring.service import ErrorBudget, Percentiles, ServiceCheck, ServiceFigures

MODEL = "flights-delay"
KEY_FEATURES = ["temp", "visib"]
METRIC = "roc_auc"
END = datetime(2026, 11, 30, 6, tzinfo=UTC)


def version_check(version: str, drift_share: float, roc_auc: float, rating: float) -> VersionCheck:
    """A version's check with every figure the dashboard draws: 1,000 records, two of them drifting."""
    return VersionCheck(
        version,
        1000,
        "drift",
        [],
        drift=[
            ColumnDrift("temp", "wasserstein", 3 * drift_share, 0.1, True),
            ColumnDrift("visib", "wasserstein", 0.05, 0.1, False),
        ],
        drift_share=drift_share,
        prediction_drift=ColumnDrift("prediction", "jensenshannon", 0.02, 0.1, False),
        data_quality=[ColumnQuality("temp", 10, 0.01, 40, 0), ColumnQuality("carrier", 0, 0.0, 0, 20)],
        quality=Quality(800, {"roc_auc": roc_auc, "accuracy": 0.8}, "roc_auc", 0.74, 0.74 - roc_auc),
        feedback_count=40,
        feedback_rating_share=rating,
    )


def figures(version: str, p99: float, errors: int) -> ServiceFigures:
    return ServiceFigures(
        version,
        1200,
        0.5,
        {"2xx": 1200 - errors, "5xx": errors},
        errors / 1200,
        0.0,
        {"internal_error": errors} if errors else {},
        Percentiles(p99 / 4, p99 / 2, p99),
        Percentiles(p99 / 8, p99 / 4, p99 / 2),
    )


def service(*versions: ServiceFigures) -> ServiceCheck:
    requests = sum(f.requests for f in versions)
    return ServiceCheck("ok", [], figures("*", 100, 0), list(versions), ErrorBudget(0.995, 7, requests, 0), 0, 1)


def record_two_checks(workspace: Path, end: datetime = END) -> tuple[DashboardRecord, DashboardRecord]:
    """A day with v1 alone, then a day with v1 and the canary v2: two checks, two versions."""
    first = record_check(
        workspace,
        MODEL,
        end,
        [version_check("1", 0.5, 0.70, 0.6)],
        service(figures("1", 90, 0)),
        KEY_FEATURES,
        METRIC,
    )
    second = record_check(
        workspace,
        MODEL,
        end + timedelta(days=1),
        [version_check("1", 0.4, 0.69, 0.55), version_check("2", 0.2, 0.72, 0.8)],
        service(figures("1", 95, 3), figures("2", 150, 12)),
        KEY_FEATURES,
        METRIC,
    )
    assert first is not None and second is not None
    return first, second


def run_file(record: DashboardRecord) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(Path(record.run_file).read_text())
    return found


def run_values(record: DashboardRecord) -> dict[str, float]:
    """Each column of the run with the value Evidently stored for it."""
    results = run_file(record)["metric_results"].values()
    return {r["metric_value_location"]["metric"]["params"]["column"]: r["value"] for r in results}


def dashboard(workspace: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((workspace / project_id(MODEL) / "dashboard.json").read_text())
    return found


def test_each_check_is_a_run_at_its_windows_end_with_a_column_per_version(tmp_path: Path) -> None:
    workspace = tmp_path / "evidently"
    first, second = record_two_checks(workspace)
    assert first.project == second.project == project_id(MODEL)
    metadata = json.loads((workspace / first.project / "metadata.json").read_text())
    assert metadata["name"] == MODEL  # one project per model, found again by its id
    runs = sorted((workspace / first.project / "snapshots").glob("*.json"))
    assert [p.name for p in runs] == sorted([f"{first.run_id}.json", f"{second.run_id}.json"])
    assert datetime.fromisoformat(run_file(first)["timestamp"]) == END
    assert datetime.fromisoformat(run_file(second)["timestamp"]) == END + timedelta(days=1)
    assert run_file(first)["tags"] == ["v1"] and run_file(second)["tags"] == ["v1", "v2"]

    values = run_values(second)
    assert values[column("drift_share", "1")] == 0.4 and values[column("drift_share", "2")] == 0.2
    assert values[column("drift.temp", "2")] == pytest.approx(0.6)
    assert values[column("drift.prediction", "1")] == 0.02
    assert values[column("records", "2")] == 1000 and values[column("service.requests", "2")] == 1200
    assert values[column("service.error_ratio", "2")] == 12 / 1200
    assert (
        values[column("service.gateway_p99_ms", "2")] == 150 and values[column("service.gateway_p50_ms", "1")] == 95 / 4
    )
    # of the 2,000 values (1,000 records, 2 columns): 10 missing, 40 out of range, 20 unseen
    assert values[column("data_quality.missing_pct", "1")] == 0.5
    assert values[column("data_quality.out_of_range_pct", "1")] == 2.0
    assert values[column("data_quality.unseen_pct", "1")] == 1.0
    assert values[column("quality.roc_auc", "2")] == 0.72 and values[column("holdout.roc_auc", "2")] == 0.74
    assert values[column("feedback_rating_share", "2")] == 0.8
    assert column("quality.accuracy", "1") not in values  # only what a panel draws is stored
    assert versions_of(list(values)) == ["1", "2"] and versions_of(list(run_values(first))) == ["1"]


def test_every_panel_draws_what_the_checks_store_split_by_version(tmp_path: Path) -> None:
    workspace = tmp_path / "evidently"
    _, second = record_two_checks(workspace)
    stored = set(run_values(second))
    drawn = dashboard(workspace)
    assert [p["title"] for p in drawn["panels"]] == [s.title for s in panel_specs(KEY_FEATURES, METRIC)]
    for panel in drawn["panels"]:
        lines = {v["metric_labels"]["column"]: v["legend"] for v in panel["values"]}
        assert {c.rsplit("@v", 1)[1] for c in lines} == {"1", "2"}, panel["title"]  # a line per version
        assert all(legend.startswith(f"v{c.rsplit('@v', 1)[1]}") for c, legend in lines.items())
        assert all(v["metric"] == "evidently:metric_v2:CheckFigure" for v in panel["values"])
        if panel["title"] == "Cost per 1,000 predictions":
            # drawn from the service's cost figure once the monitoring check has it
            assert set(lines) == {column(COST_PER_1000, "1"), column(COST_PER_1000, "2")}
        else:
            assert set(lines) <= stored, panel["title"]
    (tab,) = drawn["tabs"]
    assert tab["title"] == "Monitoring" and tab["panels"] == [p["id"] for p in drawn["panels"]]


def test_the_dashboard_is_drawn_once_and_a_new_version_adds_lines_not_panels(tmp_path: Path) -> None:
    workspace = tmp_path / "evidently"
    first = record_check(workspace, MODEL, END, [version_check("1", 0.5, 0.7, 0.6)], None, KEY_FEATURES, METRIC)
    assert first is not None and first.panels_changed and first.versions == ["1"]
    ids = [p["id"] for p in dashboard(workspace)["panels"]]
    again = record_check(workspace, MODEL, END + timedelta(days=1), [version_check("1", 0.4, 0.7, 0.6)], None,
                         KEY_FEATURES, METRIC)  # fmt: skip
    assert again is not None and not again.panels_changed
    before = (workspace / first.project / "dashboard.json").read_bytes()
    # a later check of v2 alone still draws v1, whose earlier runs are there
    canary = record_check(workspace, MODEL, END + timedelta(days=2), [version_check("2", 0.2, 0.7, 0.6)], None,
                          KEY_FEATURES, METRIC)  # fmt: skip
    assert canary is not None and canary.panels_changed and canary.versions == ["1", "2"]
    assert [p["id"] for p in dashboard(workspace)["panels"]] == ids
    assert (workspace / first.project / "dashboard.json").read_bytes() != before
    assert len(list((workspace / first.project / "snapshots").glob("*.json"))) == 3
    # the panels as code, drawn again for the same versions: the same file
    drawn = (workspace / first.project / "dashboard.json").read_bytes()
    last = record_check(workspace, MODEL, END + timedelta(days=3), [version_check("1", 0.4, 0.7, 0.6)], None,
                        KEY_FEATURES, METRIC)  # fmt: skip
    assert last is not None and not last.panels_changed
    assert (workspace / first.project / "dashboard.json").read_bytes() == drawn


def test_a_check_without_records_or_requests_adds_nothing(tmp_path: Path) -> None:
    assert record_check(tmp_path / "evidently", MODEL, END, [], service(), KEY_FEATURES, METRIC) is None
    assert not (tmp_path / "evidently").exists()


def test_versions_sort_as_numbers() -> None:
    assert versions_of([column("x", "10"), column("x", "2"), column("y", "2"), "no-version", column("x", "1")]) == [
        "1",
        "2",
        "10",
    ]
    assert [line.column for line in panels(["1"], [], "rmse")[-2].lines] == ["quality.rmse@v1", "holdout.rmse@v1"]


def test_a_workspace_folder_whose_parent_is_missing_is_named(tmp_path: Path) -> None:
    workspace = tmp_path / "shared" / "evidently"  # e.g. a shared folder that is not mounted
    with pytest.raises(DashboardError) as error:
        record_check(workspace, MODEL, END, [version_check("1", 0.5, 0.7, 0.6)], None, KEY_FEATURES, METRIC)
    assert str(error.value) == (
        f"the dashboard workspace {workspace} is missing, and so is the folder it belongs in ({workspace.parent})"
    )
    assert not workspace.parent.exists()


def test_a_workspace_that_is_no_folder_or_holds_an_unreadable_project_is_named(tmp_path: Path) -> None:
    workspace = tmp_path / "evidently"
    workspace.write_text("not a folder")
    check = [version_check("1", 0.5, 0.7, 0.6)]
    with pytest.raises(DashboardError, match=rf"^the dashboard workspace {workspace} is not a folder$"):
        record_check(workspace, MODEL, END, check, None, KEY_FEATURES, METRIC)
    workspace.unlink()
    record_check(workspace, MODEL, END, check, None, KEY_FEATURES, METRIC)
    (workspace / project_id(MODEL) / "metadata.json").write_text("{cut")
    with pytest.raises(DashboardError) as error:
        record_check(workspace, MODEL, END + timedelta(days=1), check, None, KEY_FEATURES, METRIC)
    assert str(error.value) == (
        f"the dashboard workspace {workspace} holds an unreadable project file {project_id(MODEL)}/metadata.json "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    )
