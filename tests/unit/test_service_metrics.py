"""Service figures from the gateway's access log (cut and corrupt lines, rotated files, window bounds, versions,
percentiles), the service's alerts (each with its numbers, min-sample, cool-down, error budget), their config,
and the runbook section of every alert kind."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowship.config import ServiceAlertConfig, parse_params
from flowship.errors import ConfigError
from flowship.monitoring.alerts import RUNBOOK, RUNBOOK_SECTIONS, judge_service, plan_alerts, runbook_link
from flowship.monitoring.checks import judge_version
from flowship.monitoring.service import (
    access_files,
    day_counts,
    error_budget,
    merge_days,
    read_access_window,
    recent_days,
    service_window,
)
from flowship.monitoring.window import Window
from tests.unit.conftest import raw_params

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(hours=1), default=False)
ROOT = Path(__file__).resolve().parents[2]


def line(
    at: datetime, status: int = 200, seconds: float = 0.010, upstream: str | None = None, version: str = "1"
) -> str:
    """One access-log line as the gateway's `flowship` log_format writes it."""
    answered = status not in (401, 403, 413, 429)
    return json.dumps(
        {
            "time": at.isoformat(timespec="seconds").replace("+00:00", "+00:00"),
            "request_id": "r",
            "client": "127.0.0.1",
            "client_key": "",
            "method": "POST",
            "path": "/predict",
            "status": status,
            "request_bytes": 200,
            "response_bytes": 80,
            "request_time": seconds,
            "upstream": "127.0.0.1:9001" if answered else "",
            "upstream_status": str(status) if answered else "",
            "upstream_time": (upstream if upstream is not None else f"{seconds * 0.8:.3f}") if answered else "-",
            "pool": "stable",
            "version": version if answered else "",
        }
    )


def write(path: Path, lines: list[str], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + tail)
    return path


# --- the access-log reader ------------------------------------------------------------------------------------


def test_cut_and_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [line(T0 + timedelta(seconds=i)) for i in range(10)]
    lines = [*good[:4], "{not json", '{"time": "2026-11-20T12:00:05+00:00", "status": "teapot"}', *good[4:]]
    write(tmp_path / "access.jsonl", lines, tail='{"time":"2026-11-20T12:00:30+00:00","sta')
    read = read_access_window(tmp_path, WINDOW)
    assert len(read.lines) == 10
    assert read.skipped == 3  # corrupt JSON, a status that is no number, the cut last line
    assert read.files == 1


def test_a_chunk_boundary_inside_a_line_loses_nothing(tmp_path: Path) -> None:
    write(tmp_path / "access.jsonl", [line(T0 + timedelta(seconds=i)) for i in range(200)])
    read = read_access_window(tmp_path, WINDOW, chunk_bytes=1000)
    assert len(read.lines) == 200 and read.skipped == 0


def test_window_bounds_keep_the_start_and_leave_out_the_end(tmp_path: Path) -> None:
    times = [T0 - timedelta(seconds=1), T0, T0 + timedelta(minutes=59, seconds=59), T0 + timedelta(hours=1)]
    write(tmp_path / "access.jsonl", [line(t) for t in times])
    read = read_access_window(tmp_path, WINDOW)
    assert list(read.lines["time"]) == [times[1], times[2]]


def test_rotated_files_are_read_from_the_windows_start_to_the_first_rotated_after_its_end(tmp_path: Path) -> None:
    days = {d: T0 + timedelta(days=d - 20) for d in (18, 20, 21, 22)}
    for day in days:
        # a file rotated on day D holds the lines of the day before (logrotate's dateext names it by rotation day)
        write(tmp_path / f"access-202611{day}.jsonl", [line(days[day] - timedelta(hours=12))])
    write(tmp_path / "access.jsonl", [line(T0 + timedelta(days=3))])
    write(tmp_path / "shadow-20261121.jsonl", ["not the access log"])
    window = Window(T0 - timedelta(hours=1), T0 + timedelta(hours=1), default=False)
    assert [p.name for p in access_files(tmp_path, window)] == ["access-20261120.jsonl", "access-20261121.jsonl"]
    everything = Window(None, T0 + timedelta(days=5), default=False)
    read = read_access_window(tmp_path, everything)
    assert read.files == 5 and len(read.lines) == 5


def test_a_missing_log_folder_gives_an_empty_window(tmp_path: Path) -> None:
    read = read_access_window(tmp_path / "none", WINDOW)
    found = service_window(read.lines, WINDOW)
    assert (read.files, read.skipped, found.total.requests, found.versions) == (0, 0, 0, [])
    assert found.total.gateway_ms.p99 is None


def test_figures_per_version_and_in_all_with_percentiles_as_numpy_has_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    v1 = rng.exponential(0.05, 300).round(3)
    v2 = rng.exponential(0.2, 100).round(3)
    lines = [line(T0 + timedelta(seconds=i), seconds=float(s), version="1") for i, s in enumerate(v1)]
    lines += [line(T0 + timedelta(seconds=i), 500 if i < 10 else 200, float(s), version="2") for i, s in enumerate(v2)]
    lines += [line(T0, 429), line(T0, 413), line(T0, 401)]
    lines += [line(T0, 504, 30.0, upstream="15.000, 15.000", version="")]
    write(tmp_path / "access.jsonl", lines)
    found = service_window(read_access_window(tmp_path, WINDOW).lines, WINDOW)
    by_version = {f.version: f for f in found.versions}
    assert set(by_version) == {"1", "2"}  # the gateway's own answers belong to no version
    one, two, total = by_version["1"], by_version["2"], found.total
    assert one.requests == 300 and one.error_ratio == 0.0 and one.per_second == pytest.approx(300 / 3600)
    assert two.status_classes == {"2xx": 90, "5xx": 10} and two.error_ratio == pytest.approx(0.1)
    assert two.rejected == {"internal_error": 10}
    for fig, sample in ((one, v1), (two, v2)):
        expected = np.percentile(sample * 1000, [50, 95, 99])
        assert [fig.gateway_ms.p50, fig.gateway_ms.p95, fig.gateway_ms.p99] == pytest.approx(expected)
        upstream = np.array([float(f"{s * 0.8:.3f}") for s in sample]) * 1000
        assert fig.app_ms.p99 == pytest.approx(np.percentile(upstream, 99))
    assert total.requests == 404
    assert total.status_classes == {"2xx": 390, "4xx": 3, "5xx": 11}
    assert total.rejected == {"unauthenticated": 1, "too_large": 1, "rate_limited": 1, "internal_error": 10,
                              "timeout": 1}  # fmt: skip
    assert total.error_ratio == pytest.approx(11 / 404) and total.client_error_ratio == pytest.approx(3 / 404)
    # latency over the requests that reached a version: the 504's two upstream tries add up, refusals don't count
    assert total.app_ms.p99 == pytest.approx(np.percentile([*(v1 * 800), *(v2 * 800), 30_000], 99), rel=1e-2)


def test_day_counts_feed_an_error_budget_over_its_last_days() -> None:
    earlier = {"2026-11-10": [1000, 500], "2026-11-18": [1000, 2], "2026-11-19": [1000, 1]}
    window = {"2026-11-20": [2000, 2]}
    tally = merge_days(earlier, window, {"2026-11-20": [0, 1]})
    assert tally["2026-11-20"] == [2000, 3]
    assert list(recent_days(tally, 7, T0)) == ["2026-11-18", "2026-11-19", "2026-11-20"]
    budget = error_budget(tally, 0.995, 7, T0)
    assert (budget.requests, budget.errors) == (4000, 6)
    assert budget.allowed == pytest.approx(20.0)
    assert budget.left == pytest.approx(0.7)  # 6 of the 20 errors allowed spent
    assert budget.good_ratio == pytest.approx(0.9985)
    assert error_budget({}, 0.995, 7, T0).left is None


def test_day_counts_split_a_window_at_midnight(tmp_path: Path) -> None:
    midnight = datetime(2026, 11, 21, tzinfo=UTC)
    lines = [line(midnight - timedelta(seconds=1), 500), line(midnight), line(midnight + timedelta(seconds=1), 502)]
    write(tmp_path / "access.jsonl", lines)
    read = read_access_window(tmp_path, Window(midnight - timedelta(hours=1), midnight + timedelta(hours=1), False))
    assert day_counts(read.lines) == {"2026-11-20": [1, 1], "2026-11-21": [2, 1]}


# --- the service's alerts -------------------------------------------------------------------------------------

CFG = ServiceAlertConfig(max_error_ratio=0.01, p99_ms=500, min_requests=100)


def judged(tmp_path: Path, lines: list[str], serving: bool = True, tally: dict[str, list[int]] | None = None) -> Any:
    write(tmp_path / "access.jsonl", lines)
    read = read_access_window(tmp_path, WINDOW)
    days = day_counts(read.lines)
    budget = error_budget(merge_days(tally or {}, days), 0.995, 7, WINDOW.end)
    return judge_service(service_window(read.lines, WINDOW), budget, CFG, serving, read.skipped, read.files, days)


def test_the_error_ratio_alert_names_the_errors_and_the_budget(tmp_path: Path) -> None:
    lines = [line(T0 + timedelta(seconds=i), 503 if i < 5 else 200) for i in range(200)]
    check = judged(tmp_path, lines)
    assert check.verdict == "degraded"
    assert "service:error_ratio" in check.alert_kinds
    assert check.reasons[0] == (
        "the service: 5 of 200 requests failed with a server error (2.5% > monitoring.service.max_error_ratio 1.0%)"
    )


def test_every_request_refused_still_gives_figures_and_the_error_alert(tmp_path: Path) -> None:
    check = judged(tmp_path, [line(T0 + timedelta(seconds=i), 503, version="") for i in range(150)])
    assert check.total.requests == 150 and check.versions == []
    assert check.total.rejected == {"unavailable": 150}
    assert check.alert_kinds == ["service:error_ratio", "service:error_budget"]


def test_the_p99_alert_per_version_when_two_versions_answer(tmp_path: Path) -> None:
    lines = [line(T0 + timedelta(seconds=i), seconds=0.02, version="1") for i in range(200)]
    lines += [line(T0 + timedelta(seconds=i), seconds=0.9, version="2") for i in range(120)]
    check = judged(tmp_path, lines)
    assert check.alert_kinds == ["service:p99", "service:p99:v2"]
    assert "v2: p99 latency 900 ms at the gateway > monitoring.service.p99_ms (500)" in check.reasons


def test_too_few_requests_raise_no_error_or_latency_alert(tmp_path: Path) -> None:
    check = judged(tmp_path, [line(T0 + timedelta(seconds=i), 500, 2.0) for i in range(99)])
    assert check.alert_kinds == [] and check.verdict == "insufficient_data"
    assert check.reasons == ["99 requests: fewer than monitoring.service.min_requests (100), no verdict"]


def test_no_traffic_alerts_only_while_production_serves(tmp_path: Path) -> None:
    assert judged(tmp_path, [], serving=True).alert_kinds == ["service:no_traffic"]
    assert judged(tmp_path, [], serving=True).verdict == "no_traffic"
    assert judged(tmp_path, [], serving=False).alert_kinds == []


def test_without_an_access_log_the_service_gets_no_verdict(tmp_path: Path) -> None:
    read = read_access_window(tmp_path / "no-gateway", WINDOW)
    budget = error_budget({}, 0.995, 7, WINDOW.end)
    check = judge_service(service_window(read.lines, WINDOW), budget, CFG, True, read.skipped, read.files)
    assert check.verdict == "no_log" and check.alert_kinds == []
    assert check.reasons == ["no gateway access log to read: production has no gateway, or it has not written yet"]


def test_the_error_budget_alert_says_how_much_is_left(tmp_path: Path) -> None:
    # earlier days spent most of it; this window's errors are under the window's own ratio limit
    tally = {"2026-11-19": [10_000, 45]}
    lines = [line(T0 + timedelta(seconds=i), 500 if i < 10 else 200) for i in range(1000)]
    check = judged(tmp_path, lines, tally=tally)
    assert check.alert_kinds == ["service:error_budget"]
    assert check.budget.left == pytest.approx(1 - 55 / 55.0)
    lines = [line(T0 + timedelta(seconds=i), 500 if i < 11 else 200) for i in range(1000)]
    check = judged(tmp_path, lines, tally=tally)
    assert check.budget.left == pytest.approx(1 - 56 / 55.0)
    assert check.reasons[-1:] == [
        "error budget spent: 99.49% of 11000 requests good over 7 days (target 99.50%), 56 server errors of 55 "
        "allowed (-2% of the budget left)"
    ]


def test_service_alerts_share_the_cool_down(tmp_path: Path) -> None:
    check = judged(tmp_path, [line(T0 + timedelta(seconds=i), 500) for i in range(200)])
    first = plan_alerts("m", [check], WINDOW, tmp_path, {}, 24, T0)
    assert first[0].version == "" and first[0].new == ["service:error_ratio", "service:error_budget"]
    assert first[0].runbook == [f"{RUNBOOK}#error-ratio", f"{RUNBOOK}#error-budget"]
    sent = {"alerts": {f"m:v:{k}": T0.isoformat() for k in first[0].new}}
    assert plan_alerts("m", [check], WINDOW, tmp_path, sent, 24, T0 + timedelta(hours=23))[0].new == []
    assert plan_alerts("m", [check], WINDOW, tmp_path, sent, 24, T0 + timedelta(hours=24))[0].new == first[0].new


# --- config ---------------------------------------------------------------------------------------------------


def service_problem(**service: Any) -> str:
    raw = raw_params(monitoring={"service": service})
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_service_settings_parse_with_defaults() -> None:
    params = parse_params(raw_params(monitoring={"service": {"p99_ms": 250, "error_budget": {"days": 28}}}))
    assert params.monitoring.service.p99_ms == 250
    assert params.monitoring.service.error_budget.days == 28
    assert params.monitoring.service.error_budget.target == 0.995
    assert params.monitoring.service.max_error_ratio == 0.01


@pytest.mark.parametrize(
    ("service", "named"),
    [
        ({"max_error_ratio": 1.5}, "monitoring.service.max_error_ratio"),
        ({"p99_ms": 0}, "monitoring.service.p99_ms"),
        ({"min_requests": 0}, "monitoring.service.min_requests"),
        ({"error_budget": {"target": 1.0}}, "monitoring.service.error_budget.target"),
        ({"error_budget": {"days": 0}}, "monitoring.service.error_budget.days"),
        ({"p99": 300}, "monitoring.service.p99"),
    ],
)
def test_a_bad_service_setting_is_named(service: dict[str, Any], named: str) -> None:
    assert named in service_problem(**service)


# --- the runbook ----------------------------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the Markdown headings: lower case, spaces to dashes, punctuation dropped."""
    found = set()
    for heading in re.findall(r"^#+\s+(.+)$", markdown, flags=re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def every_kind(tmp_path: Path) -> list[str]:
    """One of each alert kind the checks raise."""
    from flowship.adapters.drift import ColumnDrift
    from flowship.config import MonitoringConfig
    from flowship.monitoring.checks import GuardrailRate, Quality

    cfg = MonitoringConfig.model_validate({"min_records": 1, "drift": {"key_features": ["a"]}})
    drifted = [ColumnDrift(c, "wasserstein", 0.5, 0.1, True) for c in ("a", "b", "prediction")]
    quality = Quality(500, {"roc_auc": 0.6}, "roc_auc", 0.8, 0.2)
    rate = GuardrailRate("out_of_range", "a", "flag", 50, 0.5)
    model = judge_version("1", 1000, drifted, ["c"], [], quality, cfg, drifted[0], [rate])
    errors = [line(T0 + timedelta(seconds=i), 500, 2.0, version=str(1 + i % 2)) for i in range(300)]
    service = judged(tmp_path, errors)
    silent = judged(tmp_path / "empty", [])
    return [*model.alert_kinds, *service.alert_kinds, *silent.alert_kinds, *costly(tmp_path).alert_kinds]


def costly(tmp_path: Path) -> Any:
    """A service whose 1,000 predictions cost more than the ceiling."""
    from dataclasses import replace

    from flowship.config import CostConfig
    from flowship.monitoring.service import ServiceCost

    write(tmp_path / "costly" / "access.jsonl", [line(T0 + timedelta(seconds=i)) for i in range(200)])
    found = service_window(read_access_window(tmp_path / "costly", WINDOW).lines, WINDOW)
    found = replace(found, total=replace(found.total, cost=ServiceCost(200, 1, 360, 3600.0, 1.0, 2.0, 10.0)))
    cfg = CFG.model_copy(update={"cost": CostConfig(vcpu_hour=1, gb_hour=1, max_per_1000=5)})
    return judge_service(found, error_budget({}, 0.995, 7, WINDOW.end), cfg, True, 0, 1, {})


def test_every_alert_kind_links_to_a_runbook_section_that_exists(tmp_path: Path) -> None:
    runbook = (ROOT / RUNBOOK).read_text()
    sections = anchors(runbook)
    kinds = every_kind(tmp_path)
    families = {k.split(":")[0] if not k.startswith("service:") else ":".join(k.split(":")[:2]) for k in kinds}
    assert families == set(RUNBOOK_SECTIONS), "an alert kind without a runbook section, or a section no kind raises"
    for kind in kinds:
        link = runbook_link(kind)
        assert link.split("#")[1] in sections, f"{kind}: {link} is not a heading of {RUNBOOK}"
    # each section says what to do: a flowship command
    for anchor in RUNBOOK_SECTIONS.values():
        body = runbook.split(f"### {anchor}\n", 1)[1].split("\n### ", 1)[0]
        assert "`flowship " in body, f"{anchor}: no command to answer it"
    assert "## Postmortem template" in runbook


# --- where the figures are shown ------------------------------------------------------------------------------


def test_a_window_of_refusals_only_has_a_report_the_service_table_and_metrics(tmp_path: Path) -> None:
    import pandas as pd

    from flowship.monitoring.report import (
        service_metrics,
        service_run_metrics,
        service_table,
        summarize,
        summary_markdown,
        version_figures,
    )
    from flowship.monitoring.window import WindowData

    lines = [line(T0 + timedelta(seconds=i), 503 if i % 2 else 200, 0.2, version="1") for i in range(200)]
    check = judged(tmp_path, [*lines, line(T0, 429)])
    no_records = WindowData(WINDOW, pd.DataFrame({"request_id": []}), 0, 0, pd.DataFrame(), 0)
    summary = summarize(no_records, [], tmp_path / "report", check)
    assert summary.verdict == "no_data" and summary.report == str(tmp_path / "report")
    assert "100 of 201 requests failed with a server error" in summary.message
    text = summary_markdown(summary)
    assert "## Service: degraded (201 requests)" in text
    assert "| v1 | 200 | 0.06 | 50.00% | 0.00% | 200 | 200 | 200 | 160 | 160 | 160 | unavailable 100 |" in text
    assert "| all | 201 |" in text and "rate_limited 1, unavailable 100" in text
    assert [(r["version"], r["requests"], r["p99_ms"]) for r in service_table(check)] == [
        ("1", 200, 200.0),
        ("*", 201, 200.0),
    ]
    fig = version_figures(check, "1")
    assert fig is not None and version_figures(check, "2") is None
    metrics = service_metrics(fig)
    assert metrics["service.requests"] == 200 and metrics["service.error_ratio"] == 0.5
    assert metrics["service.rejected.unavailable"] == 100 and metrics["service.app_p99_ms"] == pytest.approx(160)
    whole = service_run_metrics(check)
    assert whole["service.rejected.rate_limited"] == 1 and whole["service.budget.left"] < 0
    assert json.loads(json.dumps(summary.as_dict(), default=str))["service"]["budget"]["errors"] == 100


def test_flowship_monitor_prints_the_service_figures_and_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowship.cli.monitoring import print_service

    lines = [line(T0 + timedelta(seconds=i), 500 if i < 3 else 200, 0.05, version=str(1 + i % 2)) for i in range(300)]
    print_service(judged(tmp_path, [*lines, line(T0, 413)]))
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "service:       degraded"
    assert shown[1].startswith(
        "  v1     150 requests (0.04/s), server errors 1.33%, client errors 0.00%, p50/p95/p99 50/"
    )
    assert shown[3].startswith("  all    301 requests")
    assert shown[3].endswith("not answered: too_large 1, internal_error 3")
    assert "error budget spent" in shown[-2]
    assert shown[-1] == "  error budget: 99.003% good of 301 requests over 7 days (target 99.50%): -99% left"
