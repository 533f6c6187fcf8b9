"""The inference log: every prediction, one JSON line each, in `inference-<YYYYMMDD>.jsonl` per UTC day; and
beside it the safety-event log: every guardrail that fired, one line each, in `safety-<YYYYMMDD>.jsonl`.

Group commit: the request path hands over its entry and awaits `commit()`; a writer thread takes every entry
queued meanwhile, encodes them, writes them with one `os.write` per day file (append-only) and then releases
their waiters. So an answer leaves only once its records are in the operating system's hands: a crash of the
process (even SIGKILL) loses no answered prediction. A syncer thread fsyncs every `flush_seconds` and at close,
off the request path: a power loss can still lose what was written in the last `flush_seconds`. Once on disk, the
log's pages are dropped from the page cache: a write-once log should not crowd out what the process reads, and
appends then reuse freed pages (on this project's test machines an append of a 1,000-record request took 3 ms
into fresh page cache, 0.1 ms into recycled pages).

Nothing is dropped while the log is open: when the backlog is full new entries wait for room, and a failed
write is retried with the exact bytes still missing (the waiters meanwhile time out, so their answers do not
leave). `close()` retries a few times only, then says how many records it could not write. A crash can leave
a truncated last line; readers skip and count it, and the next writer starts on a fresh line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pandas as pd
from msgspec import UNSET

from flowship.files import JSONL_SUFFIX, daily_path, daily_paths, ends_mid_line, parse_lines
from flowship.serving.encoding import json_lines
from flowship.serving.errors import LogUnavailable
from flowship.values import utc

log = logging.getLogger(__name__)

FILE_PREFIX = "inference-"
SAFETY_PREFIX = "safety-"
FILE_SUFFIX = JSONL_SUFFIX
COLUMNS = ["time", "request_id", "row", "model_name", "model_version", "features", "prediction", "probabilities"]
REQUIRED = {"time", "request_id", "features", "prediction"}
# Retry pause after a failed write (disk full, volume gone): the records wait in memory meanwhile.
RETRY_SECONDS = 1.0
# Writes `close()` tries before it gives up on a disk that keeps refusing them (and says how much was lost).
CLOSE_ATTEMPTS = 3
# the day after, for callers that want whole days: read_inference_log(folder, day, day + ONE_DAY)
ONE_DAY = timedelta(days=1)


class LogEntry(Protocol):
    """What a log writer takes: something that says how many lines it has and gives them, one JSON object each, as
    one blob with the UTC day they belong to (an entry is made at one time: its lines go to one day's file)."""

    @property
    def size(self) -> int: ...

    def encode(self) -> tuple[date, bytes]: ...


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
    features: Sequence[Any]  # per record a dict of its features, or the struct it was read into (schema.read_body)
    predictions: Sequence[Any]
    probabilities: Sequence[dict[str, float]] | None = None
    guardrails: Sequence[Sequence[dict[str, Any]]] | None = None
    answers: dict[int, Any] | None = None

    @property
    def size(self) -> int:
        return len(self.features)

    def encode(self) -> tuple[date, bytes]:
        stamp = self.time.astimezone(UTC)
        iso = stamp.isoformat(timespec="microseconds")
        guardrails, answers = self.guardrails, self.answers or {}
        probabilities = self.probabilities if self.probabilities is not None else [UNSET] * len(self.features)
        name, version = self.model_name, self.model_version
        lines = [
            _InferenceLine(iso, self.request_id, i, name, version, features, prediction, shares)
            for i, (features, prediction, shares) in enumerate(
                zip(self.features, self.predictions, probabilities, strict=True)
            )
        ]
        if guardrails is not None:
            for i, fired in enumerate(guardrails):
                if fired:
                    lines[i].guardrails = fired
        for i, answer in answers.items():
            lines[i].answer = answer
        return stamp.date(), json_lines(lines)


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

    def encode(self) -> tuple[date, bytes]:
        stamp = self.time.astimezone(UTC)
        iso = stamp.isoformat(timespec="microseconds")
        name, version = self.model_name, self.model_version
        lines = [
            _SafetyLine(iso, self.request_id, row, name, version, event["guardrail"], event["action"], event["feature"])
            for row, event in self.events
        ]
        return stamp.date(), json_lines(lines)


class _InferenceLine(msgspec.Struct, gc=False):
    """One line of the inference log, its keys in this order (unset ones left out)."""

    time: str
    request_id: str
    row: int
    model_name: str
    model_version: str
    features: Any
    prediction: Any
    probabilities: Any = UNSET
    guardrails: Any = UNSET
    answer: Any = UNSET


class _SafetyLine(msgspec.Struct, gc=False):
    """One line of the safety-event log."""

    time: str
    request_id: str
    row: int
    model_name: str
    model_version: str
    guardrail: str
    action: str
    feature: str | None


def log_path(folder: Path, day: date, writer: str | None = None, prefix: str = FILE_PREFIX) -> Path:
    return daily_path(folder, prefix, day, writer)


def log_files(folder: Path, first: date | None = None, last: date | None = None) -> list[Path]:
    """The log's daily files from day `first` to day `last` (both included; None: no bound), oldest first."""
    return daily_paths(folder, FILE_PREFIX, first, last)


@dataclass
class _Queued:
    """An entry waiting for the writer, with its ticket and, from `commit()`, the future its request awaits."""

    ticket: int
    entry: LogEntry
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


class InferenceLog:
    """Appends entries to the day's file from a writer thread (group commit); fsyncs from a syncer thread.

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
        self._pending: list[_Queued] = []
        self._pending_rows = 0
        self._tickets = 0  # the last ticket given
        self._written = 0  # every ticket up to this one is written (the writer keeps the order)
        self._closing = False
        self._closed = False  # the writer has ended: what is not written by now never will be
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        # the open day files; files of past days wait in `_retired` for their last fsync
        self._files = threading.Lock()
        self._fds: dict[date, int] = {}
        self._retired: list[int] = []
        self._unsynced = False
        self._stop_syncing = threading.Event()
        # the last write error, cleared by the next successful write (readiness reports it)
        self.error: str | None = None
        # records `close()` could not write (the disk kept refusing them)
        self.lost = 0

    def start(self) -> InferenceLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"flowship-{self.prefix}log"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._syncer = threading.Thread(target=self._sync_every_interval, name=f"{name}-sync", daemon=True)
        self._thread.start()
        self._syncer.start()
        return self

    def __enter__(self) -> InferenceLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, entry: LogEntry) -> int:
        """Queue one request's records and return its ticket for `wait_written`; waits (rather than drop them)
        while the backlog is full."""
        with self._cond:
            return self._enqueue(entry, None, None, None)

    def wait_written(self, ticket: int, timeout: float | None = None) -> None:
        """Return once the entry of `ticket` is written (in the OS's hands, not yet fsync'ed); `LogUnavailable`
        when it is not within `timeout` seconds, or never will be (closed without it)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._written >= ticket or self._closed, timeout):
                raise LogUnavailable(self.error or "the writer is behind", timeout)
            if self._written < ticket:
                raise LogUnavailable(f"closed without writing it ({self.error})")

    async def commit(self, entry: LogEntry, timeout: float) -> None:
        """Queue the entry and return once it is written (in the OS's hands, not yet fsync'ed); `LogUnavailable`
        when it is not within `timeout` seconds (the entry may still be written later, if the disk recovers)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        deadline = time.monotonic() + timeout
        with self._cond:
            queued = self._enqueue(entry, future, loop, 0.0)
        if not queued:  # the backlog is full: wait for room off the event loop, within the same deadline
            queued = await asyncio.to_thread(self._enqueue_within, entry, future, loop, deadline)
            if not queued:
                raise LogUnavailable(f"its backlog stayed full ({self.error or 'the writer is behind'})", timeout)
        try:
            await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise LogUnavailable(self.error or "the writer is behind", timeout) from None

    def _enqueue_within(
        self, entry: LogEntry, future: asyncio.Future[None], loop: asyncio.AbstractEventLoop, deadline: float
    ) -> int:
        with self._cond:
            return self._enqueue(entry, future, loop, deadline - time.monotonic())

    def _enqueue(
        self,
        entry: LogEntry,
        future: asyncio.Future[None] | None,
        loop: asyncio.AbstractEventLoop | None,
        timeout: float | None,
    ) -> int:
        """Queue the entry and return its ticket; 0 when the backlog stayed full for `timeout` seconds (None: no
        limit). Call with `_cond` held."""
        if self._closing or self._thread is None:
            raise RuntimeError("the inference log is not open")
        room = self._cond.wait_for(
            lambda: self._pending_rows < self.max_pending_rows or self._closing,
            None if timeout is None else max(timeout, 0.0),
        )
        if self._closing:
            raise RuntimeError("the inference log is not open")
        if not room:
            return 0
        self._tickets += 1
        self._pending.append(_Queued(self._tickets, entry, future, loop))
        self._pending_rows += entry.size
        self._cond.notify_all()
        return self._tickets

    def close(self) -> None:
        """Write every queued record, fsync and close the files; safe to call twice. When the disk keeps
        refusing writes, it gives up after `CLOSE_ATTEMPTS` tries and logs how many records were lost."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._syncer is not None:
            self._stop_syncing.set()
            self._syncer.join()
            self._syncer = None
            self._sync(final=True)

    def _run(self) -> None:
        carry: list[tuple[date, bytes]] = []  # bytes not written yet (only while the disk refuses them)
        batch: list[_Queued] = []  # the entries of `carry`, released once it is all written
        failed_at_close = 0
        while True:
            with self._cond:
                while not self._pending and not self._closing and not carry:
                    self._cond.wait()
                if not carry:
                    batch, self._pending, self._pending_rows = self._pending, [], 0
                    self._cond.notify_all()  # room for the entries waiting for it
                closing = self._closing
            if not carry:
                carry = _by_day([queued.entry for queued in batch])
            carry = self._write(carry)
            if carry:
                failed_at_close += closing
                if failed_at_close >= CLOSE_ATTEMPTS:
                    self._give_up(carry, batch)
                    return
                time.sleep(RETRY_SECONDS)
                continue
            self._release(batch)
            batch = []
            if closing:
                with self._cond:
                    if not self._pending:
                        self._closed = True
                        self._cond.notify_all()
                        return

    def _release(self, batch: list[_Queued]) -> None:
        """Tell the batch's waiters their entries are written."""
        if not batch:
            return
        with self._cond:
            self._written = batch[-1].ticket
            self._cond.notify_all()
        for queued in batch:
            if queued.future is not None and queued.loop is not None:
                _settle(queued.loop, queued.future, None)

    def _give_up(self, carry: list[tuple[date, bytes]], batch: list[_Queued]) -> None:
        with self._cond:
            pending, self._pending, self._pending_rows = self._pending, [], 0
            self.lost = sum(data.count(b"\n") for _, data in carry) + sum(q.entry.size for q in pending)
            self._closed = True
            self._cond.notify_all()
        log.error(
            "%s log closed with %d records not written after %d attempts: %s",
            self.prefix.rstrip("-"),
            self.lost,
            CLOSE_ATTEMPTS,
            self.error,
        )
        failure = LogUnavailable(f"closed without writing it ({self.error})")
        for queued in [*batch, *pending]:
            if queued.future is not None and queued.loop is not None:
                _settle(queued.loop, queued.future, failure)

    def _write(self, blobs: list[tuple[date, bytes]]) -> list[tuple[date, bytes]]:
        """Write each day's bytes (one `os.write` each, unless the OS takes less); returns exactly the bytes that
        did not reach a file yet."""
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
        fd = self._fds.get(day)
        if fd is not None:
            return fd
        path = log_path(self.folder, day, self.writer, self.prefix)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if ends_mid_line(path, os.fstat(fd).st_size):
            # a crash cut the last line: start ours on a fresh line so only that one is lost
            os.write(fd, b"\n")
        with self._files:
            self._fds[day] = fd
            # keep today's and yesterday's open (late lines around midnight); the syncer closes the others
            for old in [d for d in self._fds if d < day - ONE_DAY]:
                self._retired.append(self._fds.pop(old))
        return fd

    def _sync_every_interval(self) -> None:
        while not self._stop_syncing.wait(self.flush_seconds):
            self._sync()

    def _sync(self, final: bool = False) -> None:
        """fsync what was written since the last time and close the retired files; `final`: close them all."""
        with self._files:
            if not (self._unsynced or self._retired or final):
                return
            self._unsynced = False
            owned, self._retired = self._retired, []
            if final:
                owned, self._fds = [*owned, *self._fds.values()], {}
            else:  # copies of the open descriptors: the writer may retire the originals meanwhile
                owned += [os.dup(fd) for fd in self._fds.values()]
        for fd in owned:
            try:
                os.fsync(fd)
            except OSError:
                log.exception("%s log fsync failed", self.prefix.rstrip("-"))
            else:
                _drop_cached(fd)
            os.close(fd)


def _drop_cached(fd: int) -> None:
    """Drop the file's clean pages from the page cache (after an fsync: all but what was written since). Advice
    only: where the OS cannot take it, the pages stay."""
    if hasattr(os, "posix_fadvise"):  # not on macOS
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            log.debug("posix_fadvise refused", exc_info=True)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], error: BaseException | None) -> None:
    """Resolve a `commit()` waiter from the writer thread (unless it has given up waiting)."""

    def resolve() -> None:
        if future.done():  # timed out, or the request was cancelled
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


def _by_day(entries: list[LogEntry]) -> list[tuple[date, bytes]]:
    """The entries' lines as one blob per UTC day (each day's lines in their order)."""
    days: dict[date, list[bytes]] = {}
    for entry in entries:
        day, blob = entry.encode()
        days.setdefault(day, []).append(blob)
    return [(day, b"".join(lines)) for day, lines in days.items()]


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
