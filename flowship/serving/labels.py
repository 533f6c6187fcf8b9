"""The label store: true labels and ratings as they arrive, one JSON line each, in `labels-<YYYYMMDD>.jsonl` per UTC
day of arrival (`labels-<YYYYMMDD>.<writer>.jsonl` for one of several replicas writing into one folder). A label is
keyed by the request id and the record's position in the request (`row`), the same key as the inference log's lines,
so it finds its prediction however late it comes. A line holds a `label`, a `rating` (1: thumbs up, -1: thumbs down),
or both; a user's free-text comment is kept apart, in `comments-<YYYYMMDD>[.<writer>].jsonl`, never in this log.

Each batch of lines is appended with one `os.write` and fsync'ed before the call returns. A crash can leave a
truncated last line; readers skip and count it, and the next writer starts on a fresh line.

The serving app writes here (`POST /feedback`), and so does a labelling job (the replay); monitoring reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from flowship.files import JSONL_SUFFIX, append_durably, daily_path, daily_paths, parse_lines
from flowship.values import plain, utc

FILE_PREFIX = "labels-"
COMMENTS_PREFIX = "comments-"
FILE_SUFFIX = JSONL_SUFFIX
COLUMNS = ["time", "request_id", "row", "label", "event_time", "rating"]
REQUIRED = {"time", "request_id", "row"}
KEY = ["request_id", "row"]
RATINGS = (1, -1)


class _Unlabelled:
    def __repr__(self) -> str:
        return "NO_LABEL"


# a line that carries no label (a rating alone); a missing label *value* is None (written as null)
NO_LABEL: Final = _Unlabelled()


@dataclass(frozen=True)
class Label:
    """The true outcome of one predicted record and/or a user's rating of its answer; `event_time` is when the
    record's event happened."""

    request_id: str
    row: int
    label: Any = NO_LABEL
    event_time: datetime | None = None
    rating: int | None = None


@dataclass(frozen=True)
class Comment:
    """A user's words about one answer; `feedback_id` is the request that brought them."""

    request_id: str
    row: int
    text: str
    feedback_id: str | None = None


def labels_path(folder: Path, day: date, writer: str | None = None) -> Path:
    return daily_path(folder, FILE_PREFIX, day, writer)


def write_labels(
    folder: Path, labels: Iterable[Label], arrived: datetime | None = None, writer: str | None = None
) -> Path:
    """Append the labels, as arrived at `arrived` (default now; naive means UTC), to that day's file (this
    `writer`'s own, when several replicas write into `folder`); on disk when this returns."""
    stamp = utc(arrived) if arrived is not None else datetime.now(UTC)
    iso = stamp.isoformat(timespec="microseconds")
    blob = "".join(_line(iso, label) for label in labels).encode("ascii")
    path = labels_path(folder, stamp.date(), writer)
    append_durably(path, blob)
    return path


def write_comments(
    folder: Path, comments: Iterable[Comment], arrived: datetime | None = None, writer: str | None = None
) -> Path:
    """Append the comments to that day's comment file, as `write_labels` does labels."""
    stamp = utc(arrived) if arrived is not None else datetime.now(UTC)
    iso = stamp.isoformat(timespec="microseconds")
    lines = [
        {"time": iso, "request_id": c.request_id, "row": int(c.row), "comment": c.text, "feedback_id": c.feedback_id}
        for c in comments
    ]
    # ensure_ascii: any text a client sent (even a lone surrogate) encodes
    blob = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode("ascii")
    path = daily_path(folder, COMMENTS_PREFIX, stamp.date(), writer)
    append_durably(path, blob)
    return path


def read_labels(folders: Path | Sequence[Path], until: datetime | str | None = None) -> tuple[pd.DataFrame, int]:
    """Labels and ratings that arrived before `until` (naive means UTC) in any of `folders` (every writer's files),
    and how many lines were skipped as unreadable.

    One row per (request_id, row). Columns: time (the last arrival, UTC), request_id, row, label (None: none
    arrived), event_time (UTC or NaT), rating (1, -1 or <NA>). A key that arrived more than once keeps its last
    label and, separately, its last rating.
    """
    upper = utc(until) if until is not None else None
    records: list[dict[str, Any]] = []
    skipped = 0
    for folder in [folders] if isinstance(folders, Path) else folders:
        for path in daily_paths(Path(folder), FILE_PREFIX, last=None if upper is None else upper.date()):
            with path.open("rb") as handle:
                parsed, unreadable = parse_lines(handle, _parse_line)
            skipped += unreadable
            records += [r for r in parsed if upper is None or r["time"] < upper]
    frame = pd.DataFrame(records, columns=[*COLUMNS, "labelled"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["row"] = frame["row"].astype("int64")
    frame["rating"] = frame["rating"].astype("Int64")
    # files are read in day order and lines in write order: a stable sort keeps ties in arrival order
    frame = frame.sort_values("time", kind="stable")
    labels = frame.loc[frame["labelled"].astype(bool), ["time", *KEY, "label", "event_time"]]
    labels = labels.drop_duplicates(KEY, keep="last").astype({"label": object})  # ints stay ints beside gaps
    ratings = frame.loc[frame["rating"].notna(), ["time", *KEY, "rating"]].drop_duplicates(KEY, keep="last")
    merged = labels.merge(ratings, on=KEY, how="outer", suffixes=("", "_rated"))
    merged["time"] = merged[["time", "time_rated"]].max(axis=1)
    merged["label"] = merged["label"].astype(object).where(merged["label"].notna(), None)
    merged = merged.sort_values("time", kind="stable")[COLUMNS]
    return merged.reset_index(drop=True), skipped


def _line(iso: str, label: Label) -> str:
    record: dict[str, Any] = {"time": iso, "request_id": str(label.request_id), "row": int(label.row)}
    if label.label is not NO_LABEL:
        record["label"] = _label_value(label.label)
    if label.rating is not None:
        if plain(label.rating) not in RATINGS or isinstance(label.rating, bool):
            raise ValueError(f"a rating is 1 (thumbs up) or -1 (thumbs down), got {label.rating!r}")
        record["rating"] = int(label.rating)
    if len(record) == 3:
        raise ValueError(f"request {label.request_id} row {label.row}: neither a label nor a rating")
    record["event_time"] = _event_time(label.event_time)
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
    row, rating = record["row"], record.get("rating")
    if not isinstance(record["request_id"], str) or not isinstance(row, int) or isinstance(row, bool):
        return None
    if rating is not None and (rating not in RATINGS or isinstance(rating, bool)):
        return None
    labelled = "label" in record
    if not labelled and rating is None:
        return None
    try:
        record["time"] = utc(record["time"])
        event = record.get("event_time")
        record["event_time"] = None if event is None else utc(event)
    except (TypeError, ValueError):
        return None
    return {**{column: record.get(column) for column in COLUMNS}, "labelled": labelled}


def _event_time(value: datetime | None) -> str | None:
    if value is None or pd.isna(value):  # None, or pandas' NaT
        return None
    return utc(value).isoformat()
