from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flowship.serving.inference_log import (
    InferenceEntry,
    InferenceLog,
    feature_frame,
    log_path,
    read_inference_log,
)

T0 = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)


def entry(request_id: str, n: int = 1, time: datetime = T0, classifier: bool = True) -> InferenceEntry:
    return InferenceEntry(
        time=time,
        request_id=request_id,
        model_name="m",
        model_version="7",
        features=[{"distance": float(i), "carrier": "AA" if i % 2 else None} for i in range(n)],
        predictions=[bool(i % 2) for i in range(n)] if classifier else [float(i) for i in range(n)],
        probabilities=[{"False": 0.25, "True": 0.75}] * n if classifier else None,
    )


def test_each_record_is_one_json_line_in_the_day_file(tmp_path: Path) -> None:
    with InferenceLog(tmp_path, flush_seconds=0.05) as log:
        log.append(entry("r1", n=2))
        log.append(entry("r2", time=T0 + timedelta(seconds=2)))  # the next UTC day
    first, second = log_path(tmp_path, T0.date()), log_path(tmp_path, (T0 + timedelta(days=1)).date())
    assert first.name == "inference-20260301.jsonl"
    assert second.name == "inference-20260302.jsonl"
    lines = [json.loads(line) for line in first.read_text().splitlines()]
    assert lines[1] == {
        "time": "2026-03-01T23:59:59.000000+00:00",
        "request_id": "r1",
        "row": 1,
        "model_name": "m",
        "model_version": "7",
        "features": {"distance": 1.0, "carrier": "AA"},
        "prediction": True,
        "probabilities": {"False": 0.25, "True": 0.75},
    }
    assert len(second.read_text().splitlines()) == 1


def test_read_returns_records_and_filters_by_time(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("a", n=3))
        log.append(entry("b", time=T0 + timedelta(hours=1), classifier=False))
    records, skipped = read_inference_log(tmp_path)
    assert skipped == 0
    assert list(records.columns) == [
        "time",
        "request_id",
        "row",
        "model_name",
        "model_version",
        "features",
        "prediction",
        "probabilities",
    ]
    assert records["request_id"].tolist() == ["a", "a", "a", "b"]
    assert records["row"].tolist() == [0, 1, 2, 0]
    assert isinstance(records["time"].dtype, pd.DatetimeTZDtype) and str(records["time"].dtype.tz) == "UTC"
    assert records["time"].iloc[0] == pd.Timestamp(T0)
    assert records["probabilities"].iloc[3] is None
    assert feature_frame(records)["distance"].tolist() == [0.0, 1.0, 2.0, 0.0]

    later, _ = read_inference_log(tmp_path, start=T0 + timedelta(minutes=30))
    assert later["request_id"].tolist() == ["b"]
    earlier, _ = read_inference_log(tmp_path, end="2026-03-02T00:30:00")  # naive means UTC
    assert earlier["request_id"].tolist() == ["a", "a", "a"]


def test_replicas_write_their_own_files_and_are_read_as_one_log_in_time_order(tmp_path: Path) -> None:
    with InferenceLog(tmp_path, writer="v7-ab12-1") as one, InferenceLog(tmp_path, writer="v7-ab12-2") as two:
        one.append(entry("a", time=T0 - timedelta(seconds=3)))
        two.append(entry("b", time=T0 - timedelta(seconds=2)))
        one.append(entry("c", time=T0 - timedelta(seconds=1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "inference-20260301.v7-ab12-1.jsonl",
        "inference-20260301.v7-ab12-2.jsonl",
    ]
    records, skipped = read_inference_log(tmp_path)
    assert skipped == 0 and list(records["request_id"]) == ["a", "b", "c"] and list(records.index) == [0, 1, 2]


def test_an_empty_or_missing_folder_reads_as_no_records(tmp_path: Path) -> None:
    records, skipped = read_inference_log(tmp_path / "none")
    assert (len(records), skipped) == (0, 0)
    assert "prediction" in records.columns


def test_a_truncated_last_line_and_a_corrupt_line_are_skipped_and_counted(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("good", n=3))
    path = log_path(tmp_path, T0.date())
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"time": "2026-03-01T00:00:00+00:00", "request_id": oops\n'
    path.write_text("".join(lines) + lines[2][:25])  # the crash cut the last line short
    records, skipped = read_inference_log(tmp_path)
    assert skipped == 2
    assert len(records) == 2

    # a line that parses but is not a record counts as well
    path.write_text('[1, 2]\n{"no": "fields"}\n' + lines[0])
    records, skipped = read_inference_log(tmp_path)
    assert (len(records), skipped) == (1, 2)


def test_a_restart_appends_and_starts_on_a_fresh_line_after_a_crash(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.append(entry("first", n=2))
    path = log_path(tmp_path, T0.date())
    path.write_bytes(path.read_bytes()[:-10])  # the first lifetime died mid-line
    with InferenceLog(tmp_path) as log:
        log.append(entry("second", n=2))
    records, skipped = read_inference_log(tmp_path)
    assert records["request_id"].tolist() == ["first", "second", "second"]
    assert skipped == 1


def test_records_are_on_disk_after_the_flush_interval_without_close(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, flush_seconds=0.05).start()
    try:
        log.append(entry("x"))
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while datetime.now(UTC) < deadline and not log_path(tmp_path, T0.date()).exists():
            threading.Event().wait(0.02)
        threading.Event().wait(0.2)
        records, _ = read_inference_log(tmp_path)
        assert records["request_id"].tolist() == ["x"]
    finally:
        log.close()


def test_a_full_backlog_makes_the_writer_wait_and_nothing_is_dropped(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, flush_seconds=0.01, max_pending_rows=5).start()
    threads = [threading.Thread(target=lambda i=i: log.append(entry(f"t{i}", n=3))) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    log.close()
    records, skipped = read_inference_log(tmp_path)
    assert (len(records), skipped) == (120, 0)
    assert records.groupby("request_id").size().eq(3).all()


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path).start()
    log.close()
    log.close()  # twice is fine
    with pytest.raises(RuntimeError, match="not open"):
        log.append(entry("late"))


def test_a_failing_disk_keeps_the_records_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flowship.serving.inference_log as module

    real_write = module.os.write
    failures = {"left": 2}

    def flaky_write(fd: int, data: bytes) -> int:
        if failures["left"]:
            failures["left"] -= 1
            if failures["left"] == 1:
                return real_write(fd, data[:7])  # a short write first, then an error
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(module.os, "write", flaky_write)
    monkeypatch.setattr(module, "RETRY_SECONDS", 0.01)
    with InferenceLog(tmp_path, flush_seconds=0.01) as log:
        log.append(entry("a", n=4))
    records, skipped = read_inference_log(tmp_path)
    assert (len(records), skipped) == (4, 0)
    assert log.error is None
