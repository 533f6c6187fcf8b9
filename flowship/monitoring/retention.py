"""The logs' retention (params.yaml `retention:`): whole daily files older than their log's setting are deleted, and
each run is recorded in the audit log with what it removed.

A daily file is named by its UTC day (`<prefix><YYYYMMDD>[.<writer>].jsonl`); it goes once that day is more than N
days before today, so today's and yesterday's files always stay. A file modified within the last hour is kept
whatever its name says: a writer may still be appending to it.

The gateway's access log is one file that nginx keeps open, read by byte offset by the canary and shadow steps: it
is never renamed or cut here. Its rotation is the host's (logrotate with `dateext`, see the README), which leaves
`access-<YYYYMMDD>.jsonl` files beside it; those are what the access retention deletes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flowship import audit
from flowship.audit import Actor
from flowship.config import RETAINED_LOGS, RetentionConfig
from flowship.files import daily_paths
from flowship.monitoring.window import WindowData
from flowship.paths import Layout
from flowship.serving.inference_log import FILE_PREFIX as INFERENCE_PREFIX
from flowship.serving.inference_log import SAFETY_PREFIX
from flowship.serving.labels import COMMENTS_PREFIX
from flowship.serving.labels import FILE_PREFIX as LABELS_PREFIX
from flowship.serving.usage import USAGE_PREFIX

# a file modified this recently may still be written to: never deleted
STILL_WRITTEN = timedelta(hours=1)
ACCESS_PREFIXES = ("access-", "shadow-")


def log_files(layout: Layout) -> dict[str, list[tuple[Path, str]]]:
    """Per log, the folders and name prefixes of its daily files: production's, staging's and a shadow's inference
    (with their usage logs) and safety logs alike (they hold the same records). The labels are the batches' and what
    `POST /feedback` brought to each serving folder, its comments with them."""
    serving = [layout.inference_log_dir, layout.staging_inference_log_dir, layout.shadow_inference_log_dir]
    return {
        # the serving processes' usage goes with the predictions whose cost it tells
        "inference": [(folder, prefix) for folder in serving for prefix in (INFERENCE_PREFIX, USAGE_PREFIX)],
        "safety": [(folder, SAFETY_PREFIX) for folder in serving],
        "labels": [
            (layout.labels_dir, LABELS_PREFIX),
            *((folder, prefix) for folder in serving for prefix in (LABELS_PREFIX, COMMENTS_PREFIX)),
        ],
        "access": [(layout.gateway_log_dir, prefix) for prefix in ACCESS_PREFIXES],
    }


def first_kept_day(days: int, today: date) -> date:
    """The oldest day whose files a retention of `days` keeps."""
    return today - timedelta(days=days)


@dataclass(frozen=True)
class RemovedFile:
    log: str
    path: Path
    bytes: int


@dataclass(frozen=True)
class RetentionRun:
    """What a run removed (or, for a dry run, would remove), and the settings it applied."""

    removed: list[RemovedFile]
    days: Mapping[str, int | None]  # per log, as params.yaml says (None: kept for ever)
    today: date
    dry_run: bool = False
    kept_while_written: list[Path] = field(default_factory=list)  # expired by name, but modified too recently

    def per_log(self) -> dict[str, dict[str, int]]:
        totals = {log: {"files": 0, "bytes": 0} for log in self.days}
        for f in self.removed:
            totals[f.log]["files"] += 1
            totals[f.log]["bytes"] += f.bytes
        return totals

    def details(self, root: Path) -> dict[str, Any]:
        """What the audit log keeps of the run (paths relative to the project)."""
        return {
            "outcome": "dry_run" if self.dry_run else "done",
            "today": self.today.isoformat(),
            "days": dict(self.days),
            "removed": self.per_log(),
            "files": [_relative(f.path, root) for f in self.removed],
            "kept_while_written": [_relative(p, root) for p in self.kept_while_written],
        }

    @property
    def reason(self) -> str:
        return f"{len(self.removed)} expired log files removed ({sum(f.bytes for f in self.removed)} bytes)"


def expired_files(
    layout: Layout, retention: RetentionConfig, today: date, now: float
) -> tuple[list[RemovedFile], list[Path]]:
    """The daily files past their log's retention, and those past it by name but modified within STILL_WRITTEN."""
    expired: list[RemovedFile] = []
    busy: list[Path] = []
    for log, places in log_files(layout).items():
        days = retention.days(log)
        if days is None:
            continue
        last = first_kept_day(days, today) - timedelta(days=1)
        for folder, prefix in places:
            for path in daily_paths(folder, prefix, None, last):
                info = path.stat()
                if now - info.st_mtime < STILL_WRITTEN.total_seconds():
                    busy.append(path)
                else:
                    expired.append(RemovedFile(log, path, info.st_size))
    return expired, busy


def apply_retention(
    layout: Layout,
    retention: RetentionConfig,
    dry_run: bool = False,
    today: date | None = None,
    now: float | None = None,
    actor: Actor | None = None,
) -> RetentionRun:
    """Delete the expired daily files of every log and record the run in the audit log, as `actor` (default: the OS
    user); a dry run deletes and records nothing. `today` (UTC) and `now` (epoch seconds) default to the clock."""
    now = time.time() if now is None else now
    today = today or datetime.fromtimestamp(now, UTC).date()
    expired, busy = expired_files(layout, retention, today, now)
    removed: list[RemovedFile] = []
    for f in expired:
        if not dry_run:
            try:
                f.path.unlink()
            except FileNotFoundError:
                continue  # another run removed it meanwhile
        removed.append(f)
    run = RetentionRun(removed, {log: retention.days(log) for log in RETAINED_LOGS}, today, dry_run, busy)
    if not dry_run:
        audit.record(layout.root, "retention", actor=actor, reason=run.reason, **run.details(layout.root))
    return run


def past_retention(data: WindowData, retention: RetentionConfig, today: date) -> WindowData:
    """`data`, saying why it holds no record when the whole window is older than the inference log's retention (its
    files were deleted, or would have been): a check of it is not a problem to report."""
    days = retention.days("inference")
    if days is None or not data.records.empty:
        return data
    if data.window.end.astimezone(UTC) > datetime.combine(first_kept_day(days, today), datetime.min.time(), UTC):
        return data
    return replace(data, expired=f"the logs of that window were deleted by the retention ({days} days)")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
