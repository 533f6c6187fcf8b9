from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import mmap
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import flowship.serving.inference_log as module
from flowship.serving.errors import LogUnavailable
from flowship.serving.inference_log import (
    SAFETY_PREFIX,
    InferenceEntry,
    InferenceLog,
    SafetyEntry,
    feature_frame,
    log_path,
    read_inference_log,
    read_safety_log,
)
from tests.helpers import wait_until

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


def cached_pages(path: Path) -> int:
    """How many of the file's pages the page cache holds (mincore(2) over a private mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with path.open("rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        if libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del address  # the mapping can close: no buffer export is left
        return sum(byte & 1 for byte in vector)


def test_synced_records_leave_the_page_cache_and_stay_readable(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, flush_seconds=0.05).start()
    try:
        for i in range(4):
            log.wait_written(log.append(entry(f"r{i}", n=500)), timeout=30)
        path = log_path(tmp_path, T0.date())
        # written, then fsync'ed by the syncer, then dropped from the cache
        wait_until(lambda: cached_pages(path) == 0, 30, "the synced log's pages to leave the page cache")
        records, _ = read_inference_log(tmp_path)
        assert len(records) == 2000 and records["request_id"].unique().tolist() == ["r0", "r1", "r2", "r3"]
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


# --- group commit ---


class Gate:
    """Holds every `os.write` (or `os.fsync`) of the log at the gate until `open()`; counts them, and the threads
    that made them."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.opened = threading.Event()
        self.arrived = threading.Event()
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self, *args: object) -> object:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        self.arrived.set()
        assert self.opened.wait(30), "the gate was never opened"
        return self.real(*args)  # type: ignore[operator]

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gated_write(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate(os.write)
    monkeypatch.setattr(module.os, "write", gate)
    yield gate
    gate.open()


def lines_of(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()] if path.exists() else []


def test_commit_returns_only_once_the_bytes_are_in_the_file(tmp_path: Path, gated_write: Gate) -> None:
    path = log_path(tmp_path, T0.date())

    async def scenario() -> None:
        with InferenceLog(tmp_path, flush_seconds=60) as log:
            waiting = asyncio.create_task(log.commit(entry("a", n=2), timeout=30))
            await asyncio.to_thread(gated_write.arrived.wait, 30)  # the writer is inside os.write
            await asyncio.sleep(0)
            assert not waiting.done() and lines_of(path) == []
            gated_write.open()
            await waiting
            assert lines_of(path) == ["a", "a"]  # no close, no fsync: the bytes are in the OS's hands

    asyncio.run(scenario())


def test_concurrent_commits_are_written_in_one_os_write(tmp_path: Path, gated_write: Gate) -> None:
    async def scenario() -> None:
        with InferenceLog(tmp_path, flush_seconds=60) as log:
            first = asyncio.create_task(log.commit(entry("first"), timeout=30))
            await asyncio.to_thread(gated_write.arrived.wait, 30)
            # the writer is busy with the first: these queue up meanwhile, and go together
            others = [asyncio.create_task(log.commit(entry(f"r{i}", n=2), timeout=30)) for i in range(50)]
            await asyncio.sleep(0)
            gated_write.open()
            await asyncio.gather(first, *others)
            assert gated_write.calls == 2
            path = log_path(tmp_path, T0.date())
            assert lines_of(path) == ["first", *[f"r{i}" for i in range(50) for _ in range(2)]]

    asyncio.run(scenario())


def test_a_commit_waits_for_write_not_for_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(os.fsync)
    monkeypatch.setattr(module.os, "fsync", gate)

    async def scenario(log: InferenceLog) -> None:
        await log.commit(entry("a"), timeout=30)
        await asyncio.to_thread(gate.arrived.wait, 30)  # the syncer is stuck in fsync
        await log.commit(entry("b"), timeout=30)  # and commits still go through

    log = InferenceLog(tmp_path, flush_seconds=0.01).start()
    try:
        asyncio.run(scenario(log))
        assert lines_of(log_path(tmp_path, T0.date())) == ["a", "b"]
        assert gate.threads == {"flowship-inference-log-sync"}
    finally:
        gate.open()
        log.close()


def test_append_gives_a_ticket_to_wait_for(tmp_path: Path) -> None:
    with InferenceLog(tmp_path, flush_seconds=60) as log:
        tickets = [log.append(entry(f"t{i}")) for i in range(20)]
        assert tickets == sorted(set(tickets))
        log.wait_written(tickets[-1], timeout=30)
        assert lines_of(log_path(tmp_path, T0.date())) == [f"t{i}" for i in range(20)]


def test_the_safety_log_commits_the_same_way(tmp_path: Path) -> None:
    event = {"guardrail": "out_of_range", "action": "flag", "feature": "temp"}

    async def scenario() -> None:
        with InferenceLog(tmp_path, flush_seconds=60, writer="v3-1", prefix=SAFETY_PREFIX) as log:
            await log.commit(SafetyEntry(T0, "s1", "m", "7", [(0, event), (2, event)]), timeout=30)
            assert (tmp_path / "safety-20260301.v3-1.jsonl").read_text().count("\n") == 2

    asyncio.run(scenario())
    events, skipped = read_safety_log(tmp_path)
    assert (events["row"].tolist(), skipped) == ([0, 2], 0)


@pytest.fixture
def broken_disk(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """os.write fails with ENOSPC while `broken["now"]`; the log retries quickly."""
    real_write = os.write
    broken = {"now": True}

    def write(fd: int, data: bytes) -> int:
        if broken["now"]:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(module.os, "write", write)
    monkeypatch.setattr(module, "RETRY_SECONDS", 0.01)
    return broken


def test_a_write_failure_fails_the_waiters_at_their_deadline_and_the_records_follow_later(
    tmp_path: Path, broken_disk: dict[str, bool]
) -> None:
    log = InferenceLog(tmp_path, flush_seconds=60).start()
    try:
        with pytest.raises(LogUnavailable, match="No space left on device") as caught:
            asyncio.run(log.commit(entry("a"), timeout=0.2))
        assert caught.value.waited == 0.2
        assert "within 0.2 s" in str(caught.value)
        ticket = log.append(entry("b"))
        with pytest.raises(LogUnavailable, match="No space left on device"):
            log.wait_written(ticket, timeout=0.1)
        assert log.error is not None and "No space left on device" in log.error

        broken_disk["now"] = False  # the disk recovers: what waited in memory is written, in order
        log.wait_written(ticket, timeout=30)
        assert lines_of(log_path(tmp_path, T0.date())) == ["a", "b"]
        assert log.error is None
    finally:
        log.close()


def test_close_writes_everything_still_queued(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, flush_seconds=60).start()
    for i in range(500):
        log.append(entry(f"q{i}", n=2))
    log.close()
    records, skipped = read_inference_log(tmp_path)
    assert (len(records), skipped, log.lost) == (1000, 0, 0)


def test_close_on_a_disk_that_never_recovers_ends_and_says_what_was_lost(
    tmp_path: Path, broken_disk: dict[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    log = InferenceLog(tmp_path, flush_seconds=60).start()
    tickets: list[int] = []

    async def committed() -> BaseException | None:
        try:
            await log.commit(entry("waiting", n=3), timeout=30)
        except LogUnavailable as exc:
            return exc
        return None

    async def scenario() -> BaseException | None:
        waiter = asyncio.create_task(committed())
        await asyncio.to_thread(wait_until, lambda: log.error is not None, 30, "the first failed write")
        for i in range(4):
            tickets.append(log.append(entry(f"late{i}", n=2)))
        closing = threading.Thread(target=log.close)
        with caplog.at_level(logging.ERROR, logger=module.__name__):
            closing.start()
            outcome = await waiter
            await asyncio.to_thread(closing.join, 30)
        assert not closing.is_alive(), "close() did not end"
        return outcome

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, LogUnavailable) and "closed without writing it" in str(outcome)
    assert log.lost == 3 + 4 * 2
    assert "inference log closed with 11 records not written after 3 attempts" in caplog.text
    with pytest.raises(LogUnavailable, match="closed without writing it"):
        log.wait_written(tickets[-1], timeout=1)
