"""The one home of durable writes, JSON-lines reading and time parsing (flowship.files, flowship.values)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from flowship.files import append_durably, atomic_path, atomic_write, daily_path, daily_paths, parse_lines
from flowship.values import plain, utc


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state" / "file.json"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "file.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.parquet"]


def test_append_ends_a_line_cut_by_a_crash_so_only_that_line_is_lost(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "events.jsonl"
    append_durably(log, b'{"a": 1}\n')
    with log.open("ab") as handle:
        handle.write(b'{"cut')
    append_durably(log, b'{"a": 2}\n')
    append_durably(log, b"")
    records, skipped = parse_lines(log.read_bytes().splitlines(), _json_or_none)
    assert records == [{"a": 1}, {"a": 2}]
    assert skipped == 1


def _json_or_none(raw: bytes) -> dict[str, int] | None:
    try:
        return dict(json.loads(raw))
    except ValueError:
        return None


def test_parse_lines_passes_over_blank_lines_and_counts_unreadable_ones() -> None:
    records, skipped = parse_lines(["1", "", "  ", "x", "2"], lambda line: int(line) if line.isdigit() else None)
    assert (records, skipped) == ([1, 2], 1)


def test_daily_paths_keep_the_days_asked_for_in_order_and_pass_over_other_names(tmp_path: Path) -> None:
    days = [date(2026, 11, d) for d in (3, 1, 2)]
    for day in days:
        daily_path(tmp_path, "log-", day).write_text("")
    (tmp_path / "log-latest.jsonl").write_text("")
    (tmp_path / "other-20261102.jsonl").write_text("")
    assert [p.name for p in daily_paths(tmp_path, "log-")] == [
        "log-20261101.jsonl",
        "log-20261102.jsonl",
        "log-20261103.jsonl",
    ]
    assert [p.name for p in daily_paths(tmp_path, "log-", date(2026, 11, 2), date(2026, 11, 2))] == [
        "log-20261102.jsonl"
    ]


def test_utc_reads_iso_text_and_datetimes_naive_meaning_utc() -> None:
    assert utc("2026-11-23") == datetime(2026, 11, 23, tzinfo=UTC)
    assert utc("2026-11-23T07:00+01:00") == datetime(2026, 11, 23, 6, tzinfo=UTC)
    assert utc(datetime(2026, 11, 23, 6)) == datetime(2026, 11, 23, 6, tzinfo=UTC)
    aware = datetime(2026, 11, 23, 8, tzinfo=timezone(timedelta(hours=2)))
    assert utc(aware).tzinfo is UTC and utc(aware) == aware
    with pytest.raises(ValueError, match="Invalid isoformat"):
        utc("yesterday")
    with pytest.raises(TypeError, match="not a time: 42"):
        utc(42)  # type: ignore[arg-type]


def test_plain_turns_numpy_scalars_into_python_values_and_keeps_the_rest() -> None:
    assert type(plain(np.int64(3))) is int and plain(np.int64(3)) == 3
    assert type(plain(np.float32(0.5))) is float
    assert type(plain(np.bool_(True))) is bool
    assert plain("text") == "text"
    assert plain([1, 2]) == [1, 2]
    assert plain(None) is None
