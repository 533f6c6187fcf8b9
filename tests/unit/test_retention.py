"""params.yaml `retention:` (0 or fewer days refused, naming the key), the deletion of whole expired daily files (which
go, which stay, the audit record, a dry run), and a monitoring window older than the retention."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flowship import audit
from flowship.config import RetentionConfig, load_params, parse_params
from flowship.errors import ConfigError
from flowship.monitoring.report import summarize, summary_markdown
from flowship.monitoring.retention import STILL_WRITTEN, apply_retention, past_retention
from flowship.monitoring.window import Window, WindowData
from flowship.paths import Layout
from tests.unit.conftest import raw_params

REPO = Path(__file__).resolve().parents[2]
TODAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0


# --- params.yaml ---


def test_the_repository_params_keep_each_log_a_stated_number_of_days() -> None:
    retention = load_params(REPO / "params.yaml").retention
    assert retention == RetentionConfig(inference=90, labels=90, access=30, safety=90)


@pytest.mark.parametrize("days", [0, -3])
@pytest.mark.parametrize("log", ["inference", "labels", "access", "safety"])
def test_zero_or_negative_days_are_refused_naming_the_key(log: str, days: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw_params(retention={log: days}))
    assert caught.value.problems == [
        f"retention.{log}: Value error, days to keep must be at least 1 (today's and yesterday's files are always "
        f"kept), or null to keep the files for ever (got {days})"
    ]


def test_null_keeps_a_log_for_ever_and_an_unknown_log_is_refused() -> None:
    assert parse_params(raw_params(retention={"labels": None})).retention.labels is None
    with pytest.raises(ConfigError, match=r"retention.alerts: unknown key \(value 7\)"):
        parse_params(raw_params(retention={"alerts": 7}))


# --- deleting expired files ---


def write(path: Path, age_days: float = 2.0, text: str = '{"x":1}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    """Dated files of every log, around a retention of 3 days for inference and 1 for labels and access."""
    layout = Layout(tmp_path)
    files = {
        # inference, 3 days: 2026-11-29 is the oldest day kept
        "old_inference": write(layout.inference_log_dir / "inference-20261128.jsonl", 4),
        "old_replica": write(layout.inference_log_dir / "inference-20261101.prod-0.jsonl", 30),
        "old_staging": write(layout.staging_inference_log_dir / "inference-20261120.jsonl", 12),
        "kept_inference": write(layout.inference_log_dir / "inference-20261129.jsonl", 3),
        "today_inference": write(layout.inference_log_dir / "inference-20261202.jsonl", 0),
        # the serving processes' usage goes with the predictions
        "old_usage": write(layout.inference_log_dir / "usage-20261128.prod-0.jsonl", 4),
        "kept_usage": write(layout.inference_log_dir / "usage-20261129.prod-0.jsonl", 3),
        # expired by its name, but written to a moment ago (a writer far behind): kept
        "busy": write(layout.inference_log_dir / "inference-20261127.late.jsonl", 0.01),
        # safety: kept for ever
        "old_safety": write(layout.inference_log_dir / "safety-20261001.jsonl", 60),
        # labels, 1 day: yesterday's stays
        "old_labels": write(layout.labels_dir / "labels-20261130.jsonl", 2),
        "yesterday_labels": write(layout.labels_dir / "labels-20261201.jsonl", 1),
        # feedback: the labels and comments each replica writes beside its inference log, with the labels' days
        "old_feedback": write(layout.inference_log_dir / "labels-20261130.prod-0.jsonl", 2),
        "old_comments": write(layout.inference_log_dir / "comments-20261129.prod-1.jsonl", 3),
        "old_staging_feedback": write(layout.staging_inference_log_dir / "labels-20261120.jsonl", 12),
        "yesterday_comments": write(layout.inference_log_dir / "comments-20261201.prod-0.jsonl", 1),
        # access, 1 day: rotated files go; the live file is never touched
        "old_access": write(layout.gateway_log_dir / "access-20261130.jsonl", 2),
        "old_shadow": write(layout.gateway_log_dir / "shadow-20261129.jsonl", 3),
        "live_access": write(layout.gateway_log_dir / "access.jsonl", 40),
        # not a daily file of any log
        "other": write(layout.inference_log_dir / "inference-notes.jsonl", 40),
    }
    return files


RETENTION = RetentionConfig(inference=3, labels=1, access=1, safety=None)
REMOVED = {
    "old_inference",
    "old_replica",
    "old_staging",
    "old_usage",
    "old_labels",
    "old_feedback",
    "old_comments",
    "old_staging_feedback",
    "old_access",
    "old_shadow",
}


def test_whole_daily_files_past_their_retention_are_deleted_and_the_run_recorded(
    tmp_path: Path, logs: dict[str, Path]
) -> None:
    run = apply_retention(Layout(tmp_path), RETENTION, today=TODAY, now=NOW)

    assert {name for name, path in logs.items() if not path.exists()} == REMOVED
    assert {f.path for f in run.removed} == {logs[name] for name in REMOVED}
    assert run.kept_while_written == [logs["busy"]]
    size = len('{"x":1}\n')
    assert run.per_log() == {
        "inference": {"files": 4, "bytes": 4 * size},
        "labels": {"files": 4, "bytes": 4 * size},
        "access": {"files": 2, "bytes": 2 * size},
        "safety": {"files": 0, "bytes": 0},
    }
    (event,) = audit.read(tmp_path)
    assert event["change"] == "retention" and event["outcome"] == "done"
    assert event["days"] == {"inference": 3, "labels": 1, "access": 1, "safety": None}
    assert event["removed"] == run.per_log()
    assert sorted(event["files"]) == sorted(str(logs[name].relative_to(tmp_path)) for name in REMOVED)
    assert event["kept_while_written"] == ["logs/inference/inference-20261127.late.jsonl"]
    assert event["reason"] == f"10 expired log files removed ({10 * size} bytes)"


def test_a_second_run_removes_nothing_more(tmp_path: Path, logs: dict[str, Path]) -> None:
    apply_retention(Layout(tmp_path), RETENTION, today=TODAY, now=NOW)
    again = apply_retention(Layout(tmp_path), RETENTION, today=TODAY, now=NOW)
    assert again.removed == []
    assert [e["removed"]["inference"]["files"] for e in audit.read(tmp_path)] == [4, 0]


def test_a_dry_run_lists_the_files_and_deletes_and_records_nothing(tmp_path: Path, logs: dict[str, Path]) -> None:
    run = apply_retention(Layout(tmp_path), RETENTION, dry_run=True, today=TODAY, now=NOW)
    assert {f.path for f in run.removed} == {logs[name] for name in REMOVED}
    assert all(path.exists() for path in logs.values())
    assert audit.read(tmp_path) == []


def test_the_busy_file_goes_once_no_one_wrote_to_it_for_an_hour(tmp_path: Path, logs: dict[str, Path]) -> None:
    later = NOW + STILL_WRITTEN.total_seconds() + 60
    run = apply_retention(Layout(tmp_path), RETENTION, today=TODAY, now=later)
    assert logs["busy"] in {f.path for f in run.removed} and not logs["busy"].exists()


def test_keeping_every_log_for_ever_removes_nothing(tmp_path: Path, logs: dict[str, Path]) -> None:
    run = apply_retention(Layout(tmp_path), RetentionConfig(inference=None, labels=None, access=None, safety=None))
    assert run.removed == [] and all(path.exists() for path in logs.values())


def test_no_log_folder_yet_is_nothing_to_do(tmp_path: Path) -> None:
    assert apply_retention(Layout(tmp_path), RETENTION, today=TODAY, now=NOW).removed == []


# --- monitoring a window older than the retention ---


def window_data(end: datetime, records: int = 0) -> WindowData:
    frame = pd.DataFrame({"time": [end - timedelta(hours=1)] * records, "model_version": ["1"] * records})
    return WindowData(Window(None, end, default=False), frame, 0, 0, pd.DataFrame(), 0)


def at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("end", "records", "expired"),
    [
        (at(date(2026, 11, 29)), 0, True),  # every file of that window was past 3 days
        (at(date(2026, 11, 29), 1), 0, False),  # its last hour is on a day still kept: simply empty
        (at(date(2026, 11, 20)), 5, False),  # records still there (not deleted yet): checked as always
    ],
)
def test_a_window_older_than_the_retention_says_so(end: datetime, records: int, expired: bool) -> None:
    data = past_retention(window_data(end, records), RETENTION, TODAY)
    assert data.expired == ("the logs of that window were deleted by the retention (3 days)" if expired else None)


def test_an_expired_window_is_reported_as_such_not_as_missing_data(tmp_path: Path) -> None:
    data = past_retention(window_data(at(date(2026, 10, 1))), RETENTION, TODAY)
    summary = summarize(data, [], tmp_path / "report")
    assert (summary.verdict, summary.message) == (
        "expired",
        "the logs of that window were deleted by the retention (3 days)",
    )
    assert "- the logs of that window were deleted by the retention (3 days)" in summary_markdown(summary)


def test_without_retention_an_old_empty_window_is_just_empty(tmp_path: Path) -> None:
    kept = RetentionConfig(inference=None)
    data = past_retention(window_data(at(date(2020, 1, 1))), kept, TODAY)
    assert data.expired is None and summarize(data, [], tmp_path).verdict == "no_data"
