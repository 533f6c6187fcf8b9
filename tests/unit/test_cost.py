"""The serving processes' cost in a window, from their usage log: CPU-seconds and memory GiB-hours per version and in
all (counters across the window's start, restarts, consecutive windows), priced per 1,000 predictions; the cost
alert with its min-sample rule and cool-down; and the faults: unreadable lines, no prices, bad prices, traffic without
a usage sample."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flowship.config import CostConfig, ServiceAlertConfig, parse_params
from flowship.errors import ConfigError
from flowship.files import daily_path
from flowship.monitoring.alerts import RUNBOOK, judge_service, plan_alerts
from flowship.monitoring.cost import NO_PRICES, read_usage_window, with_cost
from flowship.monitoring.service import (
    ServiceCheck,
    ServiceWindow,
    day_counts,
    error_budget,
    read_access_window,
    service_window,
)
from flowship.monitoring.window import Window, WindowData
from flowship.serving.usage import USAGE_PREFIX, UsageEntry
from tests.unit.conftest import raw_params
from tests.unit.test_service_metrics import T0, WINDOW, line, write

GIB = 2**30
PRICES = CostConfig(vcpu_hour=3.6, gb_hour=0.1, max_per_1000=0.5)  # a CPU-second costs 0.001, a GiB-hour 0.1
CFG = ServiceAlertConfig(max_error_ratio=0.01, p99_ms=500, min_requests=100, cost=PRICES)
Point = tuple[timedelta, float, float | None] | tuple[timedelta, float, float | None, str]


def usage(
    folder: Path, process: str, version: str, points: list[Point], writer: str = "stable-1", pid: int = 7
) -> None:
    """A process's samples (time after T0, CPU-seconds so far, resident GiB, event) as the serving app writes them."""
    for point in points:
        at, cpu, gib = point[0], point[1], point[2]
        event = point[3] if len(point) > 3 else "sample"  # type: ignore[misc]
        rss = None if gib is None else int(gib * GIB)
        entry = UsageEntry(T0 + at, event, "m", version, writer, process, pid, cpu, rss)
        day, blob = entry.encode()
        path = daily_path(folder, USAGE_PREFIX, day, writer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(blob)


def m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


def three_processes(folder: Path) -> None:
    """v1: `a` (sampled before the window, and after it) and `b` (started inside it); v2: `c` (its earlier samples
    unread)."""
    usage(folder, "a", "1", [(m(-1 / 6), 10, 1), (m(1 / 6), 12, 1), (m(30), 20, 3), (m(60.1), 30, 3)])
    usage(folder, "b", "1", [(m(10), 3, 1, "start"), (m(40), 5, 1)], writer="stable-2")
    usage(folder, "c", "2", [(m(20), 100, 2), (m(50), 106, 2)], writer="canary-1")


def traffic(tmp_path: Path, v1: int = 200, v2: int = 120) -> pd.DataFrame:
    lines = [line(T0 + timedelta(seconds=i), version="1") for i in range(v1)]
    lines += [line(T0 + timedelta(seconds=i), version="2") for i in range(v2)]
    write(tmp_path / "gateway" / "access.jsonl", lines)
    return read_access_window(tmp_path / "gateway", WINDOW).lines


def priced(
    tmp_path: Path,
    predictions: dict[str, int],
    prices: CostConfig | None = PRICES,
    window: Window = WINDOW,
    lines: pd.DataFrame | None = None,
) -> ServiceWindow:
    lines = traffic(tmp_path) if lines is None else lines
    samples, read = read_usage_window(tmp_path / "inference", window)
    return with_cost(service_window(lines, window), samples, read, window, predictions, prices)


def judged(found: ServiceWindow, cfg: ServiceAlertConfig = CFG) -> ServiceCheck:
    days = day_counts(pd.DataFrame({"time": pd.Series(dtype="datetime64[s, UTC]"), "status": []}))
    return judge_service(found, error_budget(days, 0.995, 7, WINDOW.end), cfg, True, 0, 1, days)


# --- the computation ------------------------------------------------------------------------------------------


def test_cpu_seconds_and_memory_per_version_and_in_all_priced_per_1000_predictions(tmp_path: Path) -> None:
    three_processes(tmp_path / "inference")
    found = priced(tmp_path, {"1": 1500, "2": 200})
    v1, v2 = (f.cost for f in found.versions)
    assert v1 is not None and v2 is not None and found.total.cost is not None
    # a: 2 + 8 CPU-seconds since its sample before the window; 1 GiB for 20 s, then 2 GiB on average for 1790 s
    # b: 3 at its start inside the window, then 2; 1 GiB for 30 min.  c: its first sample starts it; 2 GiB for 30 min
    assert (v1.processes, v1.samples, v1.cpu_seconds) == (2, 4, 15)
    assert v1.memory_gb_hours == pytest.approx(1.0 + 0.5)
    assert (v2.processes, v2.samples, v2.cpu_seconds, v2.memory_gb_hours) == (1, 2, 6, pytest.approx(1.0))
    assert v1.cost == pytest.approx(0.015 + 0.15) and v1.cost_per_1000 == pytest.approx(0.165 / 1.5)
    assert v2.cost == pytest.approx(0.006 + 0.1) and v2.cost_per_1000 == pytest.approx(0.106 / 0.2)
    total = found.total.cost
    assert (total.predictions, total.processes, total.cpu_seconds) == (1700, 3, 21)
    assert total.cost == pytest.approx(0.271) and total.cost_per_1000 == pytest.approx(0.271 / 1.7)
    assert found.usage is not None and found.usage.notes == [] and found.usage.skipped == 0


def test_a_restarted_process_counts_from_its_new_start_never_negative(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    # the same replica (writer, pid) twice: killed at 12:10 without a last sample, started again at 12:11
    usage(folder, "first", "1", [(m(0), 2, 1, "start"), (m(10), 5, 1)])
    usage(folder, "again", "1", [(m(11), 1.5, 1, "start"), (m(20), 4, 1)])
    cost = priced(tmp_path, {"1": 1000}).versions[0].cost
    assert cost is not None and cost.cpu_seconds == pytest.approx(2 + 3 + 1.5 + 2.5) and cost.processes == 2
    assert cost.memory_gb_hours == pytest.approx((10 + 9) / 60)  # the minute between the two is no one's


def test_consecutive_windows_count_each_second_once(tmp_path: Path) -> None:
    three_processes(tmp_path / "inference")
    whole = priced(tmp_path, {"1": 1}).total.cost
    halves = [Window(T0, T0 + m(30), False), Window(T0 + m(30), T0 + m(60), False)]
    parts = [priced(tmp_path, {"1": 1}, window=w).total.cost for w in halves]
    assert whole is not None and all(p is not None for p in parts)
    assert sum(p.cpu_seconds for p in parts if p) == pytest.approx(whole.cpu_seconds)
    assert sum(p.memory_gb_hours for p in parts if p) == pytest.approx(whole.memory_gb_hours)


def test_without_prices_the_usage_is_figured_and_the_cost_left_out_said_once(tmp_path: Path) -> None:
    from flowship.monitoring.report import service_markdown, service_metrics, service_table

    three_processes(tmp_path / "inference")
    found = priced(tmp_path, {"1": 1500, "2": 200}, prices=None)
    costs = [f.cost for f in (*found.versions, found.total)]
    assert all(c is not None and c.cpu_seconds > 0 and c.cost is None and c.cost_per_1000 is None for c in costs)
    assert found.usage is not None and found.usage.notes == [NO_PRICES]
    check = judged(found, ServiceAlertConfig(max_error_ratio=0.01, p99_ms=500, min_requests=100))
    assert check.verdict == "ok" and check.alert_kinds == []
    assert {"cpu_seconds", "memory_gb_hours"} <= service_table(check)[0].keys()
    assert "cost_per_1000" not in service_table(check)[0] and "cost" not in service_table(check)[0]
    text = "\n".join(service_markdown(check))
    assert "| version | predictions | processes | CPU-seconds | GiB-hours |\n" in text and "| cost |" not in text
    assert "| v1 | 1500 | 2 | 15.0 | 1.5000 |" in text and f"- cost: {NO_PRICES}" in text
    metrics = service_metrics(check.total)
    assert metrics["service.cost.cpu_seconds"] == 21 and "service.cost.per_1000" not in metrics
    assert metrics["service.requests"] == 320  # the rest of the figures as ever


def test_traffic_without_a_usage_sample_leaves_the_cost_unknown_and_nothing_else(tmp_path: Path) -> None:
    found = priced(tmp_path, {"1": 1500, "2": 200})
    assert [f.cost for f in (*found.versions, found.total)] == [None, None, None]
    assert found.usage is not None and found.usage.files == 0
    assert found.usage.notes == [
        "no usage sample in the window (0 usage-log files read): the serving processes' cost is unknown (they "
        "predate the usage log, or write it elsewhere)"
    ]
    check = judged(found)
    assert check.verdict == "ok" and check.total.requests == 320


def test_a_version_without_a_usage_sample_is_named_and_a_version_kept_warm_counts_in_all(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    usage(folder, "a", "1", [(m(0), 1, 1, "start"), (m(30), 4, 1)])
    usage(folder, "old", "0", [(m(-1), 50, 1), (m(30), 51, 1)], writer="previous-1")  # kept warm, no traffic
    found = priced(tmp_path, {"1": 1500, "2": 200})
    assert found.versions[0].cost is not None and found.versions[1].cost is None
    assert found.total.cost is not None and found.total.cost.cpu_seconds == pytest.approx(4 + 1)
    assert found.usage is not None and found.usage.notes == [
        "v2: 120 requests but no usage sample in the window: its cost is unknown",
        "v0 scored no record in the window, yet its processes used 1.0 CPU-seconds and 0.5167 GiB-hours (in all's "
        "cost: a version kept warm)",
    ]


# --- the usage log's reader -----------------------------------------------------------------------------------


def test_cut_and_corrupt_usage_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    usage(folder, "a", "1", [(m(0), 1, 1, "start"), (m(10), 3, 1)])
    path = next(folder.glob("usage-*.jsonl"))
    with path.open("a") as handle:
        handle.write('{"time": "2026-11-20T12:20:00+00:00", "process": "a", "cpu_seconds": "lots"}\n')
        handle.write("not json\n\n")
    usage(folder, "a", "1", [(m(30), 6, 1)])
    with path.open("a") as handle:
        handle.write('{"time":"2026-11-20T12:40:00+00:00","event":"sample","model_na')  # cut by a kill
    samples, read = read_usage_window(folder, WINDOW)
    assert (len(samples), read.skipped, read.files) == (3, 3, 1)
    cost = priced(tmp_path, {"1": 1000}).total.cost
    assert cost is not None and cost.cpu_seconds == 6


def test_the_reader_takes_the_day_before_the_window_for_each_process_start(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    midnight = datetime(2026, 11, 21, tzinfo=T0.tzinfo)
    usage(folder, "a", "1", [(midnight - T0 - m(0.5), 10, 1), (midnight - T0 + m(0.5), 13, 1)])
    usage(folder, "a", "1", [(m(-60 * 24 * 3), 1, 1, "start")])  # days before: not read
    window = Window(midnight, midnight + m(10), False)
    samples, read = read_usage_window(folder, window)
    assert read.files == 2 and len(samples) == 2  # yesterday's file and today's; the sample after the end left out
    found = with_cost(service_window(traffic(tmp_path), window), samples, read, window, {"1": 10}, PRICES)
    assert found.total.cost is not None and found.total.cost.cpu_seconds == 3


def test_a_missing_usage_folder_reads_as_no_sample(tmp_path: Path) -> None:
    samples, read = read_usage_window(tmp_path / "nowhere", WINDOW)
    assert len(samples) == 0 and (read.files, read.skipped) == (0, 0)


def test_the_predictions_are_the_windows_records_per_version() -> None:
    records = pd.DataFrame({"request_id": ["a", "a", "b"], "model_version": ["1", "1", "2"]})
    data = WindowData(WINDOW, records, 0, 1, pd.DataFrame(), 0)
    assert data.predictions == {"1": 2, "2": 1}
    assert WindowData(WINDOW, records.iloc[:0], 0, 0, pd.DataFrame(), 0).predictions == {}


# --- the alert ------------------------------------------------------------------------------------------------


def test_the_cost_alert_names_the_cost_the_ceiling_and_the_usage(tmp_path: Path) -> None:
    three_processes(tmp_path / "inference")
    check = judged(priced(tmp_path, {"1": 1500, "2": 200}))
    assert check.verdict == "degraded" and check.alert_kinds == ["service:cost:v2"]
    assert check.reasons == [
        "v2: 0.53 per 1,000 predictions > monitoring.service.cost.max_per_1000 (0.5): 0.106 for 200 predictions "
        "(6.0 CPU-seconds, 1.0000 GiB-hours of 1 process)"
    ]
    alert = plan_alerts("m", [check], WINDOW, tmp_path, {}, 24, T0)[0]
    assert alert.runbook == [f"{RUNBOOK}#cost-per-1000-predictions"]
    sent = {"alerts": {"m:v:service:cost:v2": T0.isoformat()}}
    assert plan_alerts("m", [check], WINDOW, tmp_path, sent, 24, T0 + timedelta(hours=23))[0].new == []


def test_too_few_requests_raise_no_cost_alert(tmp_path: Path) -> None:
    three_processes(tmp_path / "inference")
    found = priced(tmp_path, {"1": 15, "2": 2}, lines=traffic(tmp_path, v1=60, v2=30))
    assert found.total.cost is not None and found.total.cost.cost_per_1000 == pytest.approx(0.271 / 0.017)
    check = judged(found)
    assert check.alert_kinds == [] and check.verdict == "insufficient_data"


def test_no_ceiling_no_cost_alert(tmp_path: Path) -> None:
    three_processes(tmp_path / "inference")
    cfg = ServiceAlertConfig(min_requests=100, cost=CostConfig(vcpu_hour=3.6, gb_hour=0.1))
    assert judged(priced(tmp_path, {"1": 15, "2": 2}), cfg).alert_kinds == []


# --- the settings ---------------------------------------------------------------------------------------------


def cost_problem(cost: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw_params(monitoring={"service": {"cost": cost}}))
    return str(caught.value)


def test_prices_parse_and_are_optional() -> None:
    assert parse_params(raw_params()).monitoring.service.cost is None
    cost = {"vcpu_hour": 0.04, "gb_hour": 0.005, "max_per_1000": 0.05}
    assert parse_params(raw_params(monitoring={"service": {"cost": cost}})).monitoring.service.cost == CostConfig(
        **cost
    )
    assert parse_params(raw_params(monitoring={"service": {"cost": None}})).monitoring.service.cost is None


@pytest.mark.parametrize(
    ("cost", "named"),
    [
        ({"vcpu_hour": -0.04, "gb_hour": 0.005}, "monitoring.service.cost.vcpu_hour"),
        ({"vcpu_hour": 0.04, "gb_hour": -1}, "monitoring.service.cost.gb_hour"),
        ({"vcpu_hour": 0.04, "gb_hour": 0.005, "max_per_1000": 0}, "monitoring.service.cost.max_per_1000"),
        ({"vcpu_hour": 0.04, "gb_hour": 0.005, "per_hour": 1}, "monitoring.service.cost.per_hour"),
        ({"gb_hour": 0.005}, "monitoring.service.cost.vcpu_hour"),
        ({"vcpu_hour": "cheap", "gb_hour": 0.005}, "monitoring.service.cost.vcpu_hour"),
    ],
)
def test_a_bad_price_is_named(cost: dict[str, Any], named: str) -> None:
    assert named in cost_problem(cost)


# --- where the cost is shown ----------------------------------------------------------------------------------


def test_the_cost_in_the_metrics_the_table_the_markdown_and_the_summary(tmp_path: Path) -> None:
    import json

    from flowship.monitoring.report import service_markdown, service_metrics, service_run_metrics, service_table

    three_processes(tmp_path / "inference")
    check = judged(priced(tmp_path, {"1": 1500, "2": 200}))
    v1 = service_metrics(check.versions[0])
    assert v1["service.cost.cpu_seconds"] == 15 and v1["service.cost.memory_gb_hours"] == pytest.approx(1.5)
    assert v1["service.cost.total"] == pytest.approx(0.165) and v1["service.cost.per_1000"] == pytest.approx(0.11)
    whole = service_run_metrics(check)
    assert whole["service.cost.per_1000"] == pytest.approx(0.271 / 1.7) and whole["service.usage.skipped_lines"] == 0
    rows = service_table(check)
    assert [(r["version"], r["cpu_seconds"], r["cost_per_1000"]) for r in rows] == [
        ("1", 15, 0.11),
        ("2", 6, 0.53),
        ("*", 21, round(0.271 / 1.7, 6)),
    ]
    text = "\n".join(service_markdown(check))
    assert "| version | predictions | processes | CPU-seconds | GiB-hours | cost | per 1,000 predictions |" in text
    assert "| v2 | 200 | 1 | 6.0 | 1.0000 | 0.106 | 0.53 |" in text
    assert "| all | 1700 | 3 | 21.0 | 2.5000 | 0.271 | 0.1594 |" in text
    saved = json.loads(json.dumps(check.as_dict(), default=str))
    assert saved["total"]["cost"]["cost_per_1000"] == pytest.approx(0.271 / 1.7)
    assert saved["usage"] == {"files": 3, "skipped": 0, "notes": []}


def test_flowship_monitor_prints_the_cost_under_each_version_and_the_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowship.cli.monitoring import print_service

    three_processes(tmp_path / "inference")
    print_service(judged(priced(tmp_path, {"1": 1500, "2": 200})))
    shown = capsys.readouterr().out.splitlines()
    assert shown[2] == (
        "         cost 0.165 for 1500 predictions: 0.11 per 1,000 predictions; 15.0 CPU-seconds, 1.5000 GiB-hours "
        "(2 processes, 4 samples)"
    )
    assert shown[6].startswith("         cost 0.271 for 1700 predictions: 0.1594 per 1,000 predictions")
    print_service(judged(priced(tmp_path, {"1": 1500, "2": 200}, prices=None)))
    shown = capsys.readouterr().out.splitlines()
    assert shown[2] == "         15.0 CPU-seconds, 1.5000 GiB-hours (2 processes, 4 samples); 1500 predictions"
    assert [s for s in shown if s.startswith("  cost:")] == [f"  cost:  {NO_PRICES}"]
