"""The usage log: what a serving process spends, for monitoring's cost figures. One JSON line per sample in
`usage-<YYYYMMDD>.jsonl` (`usage-<YYYYMMDD>.<writer>.jsonl` for one of several replicas), beside the inference log.

A sample holds the process's CPU time so far (user + system, all threads: cumulative from the process's start) and
its resident memory now. A sampler thread takes one when the process starts serving, one every `interval` seconds,
and one at a clean shutdown; the lines go through the inference log's durable writer, never on the request path.
`process` is random per process: a restarted replica (same writer, maybe the same pid in a new container) starts a
new counter under a new name, so a reader never takes its counter's fall for negative usage.

Standard library only, as the rest of the serving image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flowship.serving.encoding import json_line
from flowship.serving.inference_log import InferenceLog
from flowship.values import utc

log = logging.getLogger(__name__)

USAGE_PREFIX = "usage-"
START, SAMPLE, STOP = "start", "sample", "stop"
USAGE_COLUMNS = ["time", "event", "model_name", "model_version", "writer", "process", "pid", "cpu_seconds",
                 "rss_bytes"]  # fmt: skip


def cpu_seconds() -> float:
    """The process's CPU time so far, user and system, every thread's."""
    return time.process_time()


def resident_bytes() -> int | None:
    """The process's resident memory now (Linux's /proc/self/statm); None where the system does not say."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class UsageEntry:
    """One sample of a serving process's resources: a line of the usage log."""

    time: datetime
    event: str  # START | SAMPLE | STOP
    model_name: str
    model_version: str
    writer: str | None
    process: str
    pid: int
    cpu_seconds: float
    rss_bytes: int | None

    @property
    def size(self) -> int:
        return 1

    def encode(self) -> tuple[date, bytes]:
        stamp = self.time.astimezone(UTC)
        record = {
            "time": stamp.isoformat(timespec="microseconds"),
            "event": self.event,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "writer": self.writer,
            "process": self.process,
            "pid": self.pid,
            "cpu_seconds": round(self.cpu_seconds, 6),
            "rss_bytes": self.rss_bytes,
        }
        return stamp.date(), json_line(record)


class UsageSampler:
    """Samples this process's CPU time and resident memory into `usage_log` every `interval` seconds, from its own
    thread; `start()` and `close()` take one each. `close()` leaves the log open: its owner closes it after."""

    def __init__(
        self,
        usage_log: InferenceLog,
        model_name: str,
        model_version: str,
        interval: float,
        writer: str | None = None,
        measure: Callable[[], tuple[float, int | None]] | None = None,
    ) -> None:
        self.usage_log = usage_log
        self.model_name = model_name
        self.model_version = model_version
        self.interval = interval
        self.writer = writer
        self.process = secrets.token_hex(8)
        self._measure = measure or (lambda: (cpu_seconds(), resident_bytes()))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> UsageSampler:
        self.sample(START)
        self._thread = threading.Thread(target=self._run, name="flowship-usage", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop sampling and take the last sample (none when the log is closed already); safe to call twice."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            self.sample(STOP)
        except RuntimeError:
            log.warning("usage log closed before the last sample: the process's last seconds are not counted")

    def sample(self, event: str = SAMPLE) -> None:
        cpu, rss = self._measure()
        self.usage_log.append(
            UsageEntry(
                datetime.now(UTC),
                event,
                self.model_name,
                self.model_version,
                self.writer,
                self.process,
                os.getpid(),
                cpu,
                rss,
            )
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except RuntimeError:  # the log was closed under us: the process is ending
                return


def parse_usage_line(raw: bytes) -> dict[str, Any] | None:
    """One line of the usage log with `USAGE_COLUMNS` (time as a UTC datetime, `rss_bytes` None where the system did
    not say); None when it cannot be read: no JSON object, no time, process or version, a CPU time that is no
    finite number of seconds, a memory that is no count of bytes."""
    try:
        sample = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(sample, dict):
        return None
    cpu, rss = sample.get("cpu_seconds"), sample.get("rss_bytes")
    try:
        stamp = utc(sample["time"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(sample.get("process"), str) or not sample["process"] or sample.get("model_version") is None:
        return None
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not math.isfinite(cpu) or cpu < 0:
        return None
    if rss is not None and (isinstance(rss, bool) or not isinstance(rss, int) or rss < 0):
        return None
    found = {column: sample.get(column) for column in USAGE_COLUMNS}
    found.update(time=stamp, event=sample.get("event") or SAMPLE, model_version=str(sample["model_version"]),
                 cpu_seconds=float(cpu))  # fmt: skip
    return found
