"""The inference log: every prediction, one JSON line each, in `inference-<YYYYMMDD>.jsonl` per UTC day; and
beside it the safety-event log: every guardrail that fired, one line each, in `safety-<YYYYMMDD>.jsonl`.

Writing happens on a background thread: the request path only hands over its records. Lines reach the disk
with `os.write` on an append-only file and are fsync'ed every `flush_seconds` and at close. Nothing is
dropped: when the backlog is full the request path waits, and a failed write is retried with the exact
bytes that are still missing. A crash can leave a truncated last line; readers skip and count it, and the
next writer starts on a fresh line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from flowship.files import JSONL_SUFFIX, daily_path, daily_paths, ends_mid_line, parse_lines
from flowship.values import utc

log = logging.getLogger(__name__)

FILE_PREFIX = "inference-"
SAFETY_PREFIX = "safety-"
FILE_SUFFIX = JSONL_SUFFIX
COLUMNS = ["time", "request_id", "row", "model_name", "model_version", "features", "prediction", "probabilities"]
REQUIRED = {"time", "request_id", "features", "prediction"}
# Retry pause after a failed write (disk full, volume gone): the records wait in memory meanwhile.
RETRY_SECONDS = 1.0


class LogEntry(Protocol):
    """What a log writer takes: something that gives its lines (by UTC day) and says how many."""

    @property
    def size(self) -> int: ...

    def lines(self) -> Iterator[tuple[date, str]]: ...


@dataclass(frozen=True)
class InferenceEntry:
    """One request's predictions: one line each, with the request's time and id and the record's position
    (`row`) in the request, so a label that arrives later finds its prediction by (request_id, row).

    `prediction` is always the model's own output (monitoring judges the model); a record whose answer the
    guardrails replaced (a fallback, a clipped value) also carries `answer`, and one they flagged `guardrails`
    (which fired and what they did; never the values)."""

    time: datetime
    request_id: str
    model_name: str
    model_version: str
    features: Sequence[dict[str, Any]]
    predictions: Sequence[Any]
    probabilities: Sequence[dict[str, float]] | None = None
    guardrails: Sequence[Sequence[dict[str, Any]]] | None = None
    answers: dict[int, Any] | None = None

    @property
    def size(self) -> int:
        return len(self.features)

    def lines(self) -> Iterator[tuple[date, str]]:
        stamp = self.time.astimezone(UTC)
        iso = stamp.isoformat(timespec="microseconds")
        for i, features in enumerate(self.features):
            record: dict[str, Any] = {
                "time": iso,
                "request_id": self.request_id,
                "row": i,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "features": features,
                "prediction": self.predictions[i],
            }
            if self.probabilities is not None:
                record["probabilities"] = self.probabilities[i]
            if self.guardrails is not None and self.guardrails[i]:
                record["guardrails"] = self.guardrails[i]
            if self.answers is not None and i in self.answers:
                record["answer"] = self.answers[i]
            yield stamp.date(), _json_line(record)


@dataclass(frozen=True)
class SafetyEntry:
    """The guardrails that fired on one request: one line per (record, guardrail), without feature values."""

    time: datetime
    request_id: str
    model_name: str
    model_version: str
    events: Sequence[tuple[int, dict[str, Any]]]  # (row, {"guardrail", "action", "feature"})

    @property
    def size(self) -> int:
        return len(self.events)

    def lines(self) -> Iterator[tuple[date, str]]:
        stamp = self.time.astimezone(UTC)
        iso = stamp.isoformat(timespec="microseconds")
        for row, event in self.events:
            record = {
                "time": iso,
                "request_id": self.request_id,
                "row": row,
                "model_name": self.model_name,
                "model_version": self.model_version,
                **event,
            }
            yield stamp.date(), _json_line(record)


def _json_line(record: dict[str, Any]) -> str:
    # ensure_ascii: any string the client sent (even a lone surrogate) encodes; default=str: never raise here
    return json.dumps(record, separators=(",", ":"), default=str) + "\n"


def log_path(folder: Path, day: date, writer: str | None = None, prefix: str = FILE_PREFIX) -> Path:
    return daily_path(folder, prefix, day, writer)


def log_files(folder: Path, first: date | None = None, last: date | None = None) -> list[Path]:
    """The log's daily files from day `first` to day `last` (both included; None: no bound), oldest first."""
    return daily_paths(folder, FILE_PREFIX, first, last)


class InferenceLog:
    """Appends entries to the day's file from a background thread; `close()` writes and fsyncs everything.

    The safety-event log is one too, with `prefix=SAFETY_PREFIX`."""

    def __init__(
        self,
        folder: str | Path,
        flush_seconds: float = 0.5,
        max_pending_rows: int = 100_000,
        writer: str | None = None,
        prefix: str = FILE_PREFIX,
    ) -> None:
        """`writer` names this process's own file when several processes log into `folder` (replicas)."""
        self.folder = Path(folder)
        self.writer = writer
        self.prefix = prefix
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self._cond = threading.Condition()
        self._pending: list[LogEntry] = []
        self._pending_rows = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._day: date | None = None
        self._unsynced = False
        # the last write error, cleared by the next successful write (readiness reports it)
        self.error: str | None = None

    def start(self) -> InferenceLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"flowship-{self.prefix}log", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> InferenceLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, entry: LogEntry) -> None:
        """Queue one request's records; waits (rather than drop them) while the backlog is full."""
        with self._cond:
            if self._closing or self._thread is None:
                raise RuntimeError("the inference log is not open")
            while self._pending_rows >= self.max_pending_rows and not self._closing:
                self._cond.wait()
            self._pending.append(entry)
            self._pending_rows += entry.size
            self._cond.notify_all()

    def close(self) -> None:
        """Write every queued record, fsync and close the file; safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        carry: list[tuple[date, bytes]] = []  # bytes not written yet (only while the disk refuses them)
        next_sync = time.monotonic() + self.flush_seconds
        while True:
            with self._cond:
                while not self._pending and not self._closing and not carry:
                    timeout = next_sync - time.monotonic() if self._unsynced else None
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                entries: list[LogEntry] = []
                if not carry:  # while writes fail, the backlog stays counted, so `append` pushes back
                    entries, self._pending, self._pending_rows = self._pending, [], 0
                    self._cond.notify_all()
                closing = self._closing
            carry = self._write(_by_day(carry, entries))
            if carry:
                time.sleep(RETRY_SECONDS)
                continue
            if self._unsynced and (closing or time.monotonic() >= next_sync):
                self._sync()
                next_sync = time.monotonic() + self.flush_seconds
            if closing:
                with self._cond:
                    if not self._pending:
                        self._close_file()
                        return

    def _write(self, blobs: list[tuple[date, bytes]]) -> list[tuple[date, bytes]]:
        """Write each day's bytes in order; returns exactly the bytes that did not reach a file yet."""
        for index, (day, data) in enumerate(blobs):
            done = 0
            try:
                fd = self._open(day)
                while done < len(data):
                    done += os.write(fd, data[done:])
                    self._unsynced = True
            except OSError as exc:
                self.error = f"cannot write {self.prefix}*{FILE_SUFFIX} in {self.folder}: {exc}"
                log.exception("%s log write failed; the records are kept and retried", self.prefix.rstrip("-"))
                return [(day, data[done:]), *blobs[index + 1 :]]
        self.error = None
        return []

    def _open(self, day: date) -> int:
        if self._fd is not None and self._day == day:
            return self._fd
        self._close_file()
        path = log_path(self.folder, day, self.writer, self.prefix)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if ends_mid_line(path, os.fstat(fd).st_size):
            # a crash cut the last line: start ours on a fresh line so only that one is lost
            os.write(fd, b"\n")
        self._fd, self._day = fd, day
        return fd

    def _sync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                log.exception("inference log fsync failed")
                return
        self._unsynced = False

    def _close_file(self) -> None:
        if self._fd is not None:
            self._sync()
            os.close(self._fd)
            self._fd, self._day = None, None


def _by_day(blobs: list[tuple[date, bytes]], entries: list[LogEntry]) -> list[tuple[date, bytes]]:
    """Append the entries' lines to the blobs, one blob per run of lines of the same day."""
    runs: list[tuple[date, list[bytes]]] = [(day, [data]) for day, data in blobs]
    for entry in entries:
        for day, line in entry.lines():
            if not runs or runs[-1][0] != day:
                runs.append((day, []))
            runs[-1][1].append(line.encode("ascii"))
    return [(day, b"".join(parts)) for day, parts in runs]


def read_inference_log(
    folder: str | Path, start: datetime | str | None = None, end: datetime | str | None = None
) -> tuple[pd.DataFrame, int]:
    """Records with `start <= time < end` (UTC; naive means UTC), and how many lines were skipped as
    unreadable (a line cut by a crash, a corrupt line). Columns: time (UTC), request_id, model_name,
    model_version, features (dict), prediction, probabilities (dict, classifiers; else None)."""
    lower = None if start is None else utc(start)
    upper = None if end is None else utc(end)
    records: list[dict[str, Any]] = []
    skipped = 0
    first = None if lower is None else lower.date()
    last = None if upper is None else upper.date()
    paths = log_files(Path(folder), first, last)
    for path in paths:
        with path.open("rb") as handle:
            parsed, unreadable = parse_lines(handle, parse_line)
        skipped += unreadable
        records += [r for r in parsed if (lower is None or r["time"] >= lower) and (upper is None or r["time"] < upper)]
    frame = pd.DataFrame(records, columns=COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if len({path.name[len(FILE_PREFIX) :][:8] for path in paths}) < len(paths):  # several writers on one day
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
    return frame, skipped


SAFETY_COLUMNS = ["time", "request_id", "row", "model_name", "model_version", "guardrail", "action", "feature"]


def read_safety_log(
    folder: str | Path, first: date | None = None, last: date | None = None
) -> tuple[pd.DataFrame, int]:
    """The safety events of days `first` to `last` (both included; None: no bound), oldest first, and how many
    lines could not be read. Columns: `SAFETY_COLUMNS` (time as UTC)."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for path in daily_paths(Path(folder), SAFETY_PREFIX, first, last):
        with path.open("rb") as handle:
            parsed, unreadable = parse_lines(handle, _parse_safety_line)
        events += parsed
        skipped += unreadable
    frame = pd.DataFrame(events, columns=SAFETY_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.sort_values("time", kind="stable", ignore_index=True), skipped


def _parse_safety_line(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict) or not {"time", "guardrail", "action"} <= event.keys():
        return None
    return {column: event.get(column) for column in SAFETY_COLUMNS}


def feature_frame(records: pd.DataFrame) -> pd.DataFrame:
    """The logged features as one column per feature (index aligned with `records`)."""
    return pd.DataFrame(list(records["features"]), index=records.index)


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One line of the log as a record with `COLUMNS` (time as a UTC datetime); None when it cannot be read."""
    try:
        record = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(record, dict) or not REQUIRED <= record.keys() or not isinstance(record["features"], dict):
        return None
    try:
        record["time"] = utc(record["time"])
    except (TypeError, ValueError):
        return None
    record.setdefault("probabilities", None)
    record.setdefault("row", 0)  # lines written before records carried their position in the request
    return {column: record.get(column) for column in COLUMNS}


# the day after, for callers that want whole days: read_inference_log(folder, day, day + ONE_DAY)
ONE_DAY = timedelta(days=1)
