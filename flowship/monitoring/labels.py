"""The label store: true labels as they arrive, one JSON line each, in `labels-<YYYYMMDD>.jsonl` per UTC day of
arrival. A label is keyed by the request id and the record's position in the request (`row`), the same key as
the inference log's lines, so it finds its prediction however late it comes.

Each batch of labels is appended with one `os.write` and fsync'ed. A crash can leave a truncated last line;
readers skip and count it, and the next writer starts on a fresh line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from flowship.files import JSONL_SUFFIX, append_durably, daily_path, daily_paths, parse_lines
from flowship.values import plain, utc

FILE_PREFIX = "labels-"
FILE_SUFFIX = JSONL_SUFFIX
COLUMNS = ["time", "request_id", "row", "label", "event_time"]
REQUIRED = {"time", "request_id", "row", "label"}
KEY = ["request_id", "row"]


@dataclass(frozen=True)
class Label:
    """The true outcome of one predicted record; `event_time` is when the record's event happened."""

    request_id: str
    row: int
    label: Any
    event_time: datetime | None = None


def labels_path(folder: Path, day: date) -> Path:
    return daily_path(folder, FILE_PREFIX, day)


def write_labels(folder: Path, labels: Iterable[Label], arrived: datetime | None = None) -> Path:
    """Append the labels, as arrived at `arrived` (default now; naive means UTC), to that day's file."""
    stamp = utc(arrived) if arrived is not None else datetime.now(UTC)
    iso = stamp.isoformat(timespec="microseconds")
    blob = "".join(_line(iso, label) for label in labels).encode("ascii")
    path = labels_path(folder, stamp.date())
    append_durably(path, blob)
    return path


def read_labels(folder: Path, until: datetime | str | None = None) -> tuple[pd.DataFrame, int]:
    """Labels that arrived before `until` (naive means UTC), and how many lines were skipped as unreadable.

    Columns: time (arrival, UTC), request_id, row, label, event_time (UTC or NaT). A key that arrived more
    than once keeps its last arrival.
    """
    upper = utc(until) if until is not None else None
    records: list[dict[str, Any]] = []
    skipped = 0
    for path in daily_paths(Path(folder), FILE_PREFIX, last=None if upper is None else upper.date()):
        with path.open("rb") as handle:
            parsed, unreadable = parse_lines(handle, _parse_line)
        skipped += unreadable
        records += [r for r in parsed if upper is None or r["time"] < upper]
    frame = pd.DataFrame(records, columns=COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["row"] = frame["row"].astype("int64")
    # files are read in day order and lines in write order: a stable sort keeps ties in arrival order
    frame = frame.sort_values("time", kind="stable").drop_duplicates(KEY, keep="last")
    return frame.reset_index(drop=True), skipped


def _line(iso: str, label: Label) -> str:
    record = {
        "time": iso,
        "request_id": str(label.request_id),
        "row": int(label.row),
        "label": _label_value(label.label),
        "event_time": _event_time(label.event_time),
    }
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def _label_value(value: Any) -> Any:
    """A label as the Python value JSON knows; a missing value as null."""
    value = plain(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, bool | int | float | str):
        raise TypeError(f"a label must be a bool, int, float or str, got {type(value).__name__}: {value!r}")
    return value


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(record, dict) or not REQUIRED <= record.keys():
        return None
    row = record["row"]
    if not isinstance(record["request_id"], str) or not isinstance(row, int) or isinstance(row, bool):
        return None
    try:
        record["time"] = utc(record["time"])
        event = record.get("event_time")
        record["event_time"] = None if event is None else utc(event)
    except (TypeError, ValueError):
        return None
    return {column: record.get(column) for column in COLUMNS}


def _event_time(value: datetime | None) -> str | None:
    if value is None or pd.isna(value):  # None, or pandas' NaT
        return None
    return utc(value).isoformat()
