"""The service as its clients see it, from the gateway's access log: traffic, errors, refusals and latency per window
and per model version, and the error budget over the last days; and what it cost (`flowship.monitoring.cost`).

The access log is `access.jsonl`, one JSON line per request (flowship/gateway/nginx.py's `flowship` format), and the
host's logrotate leaves `access-<YYYYMMDD>.jsonl` beside it, named by the day it was rotated: a rotated file holds the
lines written before that day's rotation, and `access.jsonl` the lines since the last one. The files are read in
chunks, column-wise (pyarrow), and each chunk is cut to the window before the next is read, so a million lines stay
cheap; a cut or corrupt line is skipped and counted, as the inference log's reader does.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowship.monitoring.window import Window

ACCESS_LOG = "access.jsonl"
ROTATED = re.compile(r"access-(\d{8})\.jsonl")
CHUNK_BYTES = 16 << 20
COLUMNS = ("time", "status", "request_time", "upstream_time", "version", "path")
# what a client was told when its request did not get an answer, by status
REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    499: "client_closed",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}
GATEWAY = ""  # the version of a request the gateway answered itself (refused, paused): none


def reason(status: int) -> str:
    return REASONS.get(status, f"other_{status // 100}xx")


@dataclass(frozen=True)
class AccessWindow:
    """The window's access-log lines (`COLUMNS`; times in seconds, `upstream_time` NaN where no upstream answered)."""

    lines: pd.DataFrame
    skipped: int  # lines that could not be read (cut by a crash, corrupt)
    files: int


def access_files(folder: Path, window: Window) -> list[Path]:
    """The files that may hold the window's lines, oldest first: the rotated days from the window's start on, up to
    the first rotated after its end (lines written later are past it), then `access.jsonl` unless such a file
    exists."""
    rotated = []
    for path in folder.glob("access-*.jsonl"):
        match = ROTATED.fullmatch(path.name)
        if match is not None:
            rotated.append((datetime.strptime(match.group(1), "%Y%m%d").date(), path))
    first: date | None = None if window.start is None else window.start.date()
    files: list[Path] = []
    for day, path in sorted(rotated):
        if first is not None and day < first:
            continue  # rotated before the window began: every line in it is older
        files.append(path)
        if day > window.end.date():
            return files
    current = folder / ACCESS_LOG
    return [*files, current] if current.exists() else files


def read_access_window(folder: Path, window: Window, chunk_bytes: int = CHUNK_BYTES) -> AccessWindow:
    """The window's lines of the gateway's access log and its rotated files."""
    frames: list[pd.DataFrame] = []
    skipped = files = 0
    for path in access_files(folder, window):
        files += 1
        for chunk, bad in _chunks(path, chunk_bytes):
            skipped += bad
            frame, unreadable = _parse_chunk(chunk)
            skipped += unreadable
            keep = frame["time"] < pd.Timestamp(window.end)
            if window.start is not None:
                keep &= frame["time"] >= pd.Timestamp(window.start)
            if keep.any():
                frames.append(frame.loc[keep])
    lines = pd.concat(frames, ignore_index=True) if frames else _empty()
    return AccessWindow(lines, skipped, files)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.Series(dtype="datetime64[s, UTC]"),
            "status": pd.Series(dtype="int64"),
            "request_time": pd.Series(dtype="float64"),
            "upstream_time": pd.Series(dtype="float64"),
            "version": pd.Series(dtype=object),
            "path": pd.Series(dtype=object),
        }
    )


def _chunks(path: Path, size: int) -> Iterator[tuple[bytes, int]]:
    """Whole lines of `path`, about `size` bytes at a time, and whether the file's last line was cut (1 or 0)."""
    rest = b""
    with path.open("rb") as handle:
        while block := handle.read(size):
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest = block[end:]
            if end:
                yield block[:end], 0
    if rest.strip():
        # A writer stopped mid-line (or the rotation copied a line half written): the last line is cut.
        yield b"", 1


def _parse_chunk(data: bytes) -> tuple[pd.DataFrame, int]:
    """The chunk's lines column-wise; a chunk with a corrupt line is read line by line, the unreadable ones counted."""
    import pyarrow as pa
    import pyarrow.json as pj

    if not data or data.isspace():  # no copy of the chunk, as strip() would make
        return _empty(), 0
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=max(1 << 20, len(data) // 2 + 1)),
            parse_options=pj.ParseOptions(explicit_schema=_schema(), unexpected_field_behavior="ignore"),
        )
        bad = 0
    except pa.ArrowInvalid:
        rows, bad = _read_lines(data)
        table = pa.Table.from_pylist(rows, schema=_schema())
    return _typed(table, bad)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("time", pa.string()),
            ("status", pa.int64()),
            ("request_time", pa.float64()),
            ("upstream_time", pa.string()),
            ("version", pa.string()),
            ("path", pa.string()),
        ]
    )


def _read_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Each readable line's columns; a line that is no JSON object, or whose status or request time is no number,
    is counted."""
    rows, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            row = {
                "time": str(entry["time"]),
                "status": int(entry["status"]),
                "request_time": float(entry["request_time"]) if entry.get("request_time") is not None else None,
                **{c: None if entry.get(c) is None else str(entry[c]) for c in ("upstream_time", "version", "path")},
            }
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        rows.append(row)
    return rows, bad


def _typed(table: Any, bad: int) -> tuple[pd.DataFrame, int]:
    """The lines typed (pyarrow compute: a million lines in well under a second); one without a readable time or
    status is counted as unreadable."""
    import pyarrow as pa
    import pyarrow.compute as pc

    time = pc.strptime(table["time"], format="%Y-%m-%dT%H:%M:%S%z", unit="s", error_is_null=True)
    if time.null_count > table["time"].null_count:
        # other ISO 8601 spellings (fractions of a second, no offset): pandas reads those
        parsed = pd.to_datetime(table["time"].to_pandas(), utc=True, format="ISO8601", errors="coerce")
        time = pa.chunked_array([pa.array(parsed.astype("datetime64[s, UTC]"))])
    ok = pc.and_(pc.is_valid(time), pc.is_valid(table["status"]))
    unreadable = len(table) - pc.sum(ok.cast(pa.int64())).as_py() if len(table) else 0
    typed = pa.table(
        {
            "time": time,
            "status": table["status"],
            "request_time": table["request_time"],
            "upstream_time": upstream_seconds(table["upstream_time"]),
            "version": pc.fill_null(table["version"], GATEWAY),
            "path": pc.fill_null(table["path"], ""),
        }
    ).filter(ok)
    frame = typed.to_pandas()
    return frame, bad + int(unreadable)


def upstream_seconds(values: Any) -> Any:
    """nginx's `$upstream_response_time` in seconds: "0.004"; "0.002, 0.004" when a second server was tried (the
    times add up); "-" or "" when none answered (null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    number = pc.fill_null(pc.match_substring_regex(values, r"^\d+(\.\d+)?$"), False)
    seconds = pc.cast(pc.if_else(number, values, pa.scalar(None, pa.string())), pa.float64())
    several = pc.fill_null(pc.match_substring_regex(values, r"[,:]"), False)
    if pc.any(several).as_py():
        sums = [_sum_times(v) if s else x for v, s, x in zip(values.to_pylist(), several.to_pylist(),
                                                             seconds.to_pylist(), strict=True)]  # fmt: skip
        seconds = pa.array(sums, pa.float64(), from_pandas=True)
    return seconds


def _sum_times(value: str) -> float:
    parts = [p.strip() for p in re.split(r"[,:]", value)]
    numbers = [float(p) for p in parts if re.fullmatch(r"\d+(\.\d+)?", p)]
    return sum(numbers) if numbers else math.nan


@dataclass(frozen=True)
class Percentiles:
    """Latency in milliseconds (None: no request to measure)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


def percentiles(seconds: pd.Series) -> Percentiles:
    values = seconds.dropna().to_numpy(dtype=float) * 1000
    if not len(values):
        return Percentiles()
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return Percentiles(float(p50), float(p95), float(p99))


@dataclass(frozen=True)
class ServiceCost:
    """What a version's (or the whole service's) serving processes used in a window, from their usage log, and what
    that cost at params.yaml's prices (None: no prices; `cost_per_1000` None too when nothing was predicted)."""

    predictions: int  # records scored in the window (the inference log's)
    processes: int  # serving processes that sampled their usage in the window
    samples: int
    cpu_seconds: float
    memory_gb_hours: float  # GiB (2**30 bytes) of resident memory held for an hour
    cost: float | None = None
    cost_per_1000: float | None = None


@dataclass(frozen=True)
class UsageRead:
    """What the usage log gave a window: its files, the lines skipped as unreadable, and what the cost figures
    could not say (no prices, a version with traffic but no usage sample), each said once."""

    files: int
    skipped: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceFigures:
    """One version's (or the whole service's, `version` "*") traffic in a window: what the dashboard reads."""

    version: str
    requests: int
    per_second: float  # throughput over the window
    status_classes: dict[str, int]  # "2xx" -> requests
    error_ratio: float  # server errors (5xx) of all requests
    client_error_ratio: float  # refused as the client's fault (4xx) of all requests
    rejected: dict[str, int]  # reason (`REASONS`) -> requests not answered with a 2xx/3xx
    gateway_ms: Percentiles  # the request's whole time at the gateway
    app_ms: Percentiles  # the upstream's (the serving app's) answer time
    cost: ServiceCost | None = None  # None: no usage sample of its processes in the window

    @property
    def errors(self) -> int:
        return self.status_classes.get("5xx", 0)


def figures(lines: pd.DataFrame, version: str, seconds: float) -> ServiceFigures:
    """The figures of `lines` over a window of `seconds`. Latency is measured on the requests that reached a
    version: the gateway's own refusals take no time and would hide a slow model."""
    requests = len(lines)
    status = lines["status"]
    classes = np.bincount(status.to_numpy(dtype="int64") // 100, minlength=6)
    status_classes = {f"{k}xx": int(n) for k, n in enumerate(classes) if n}
    rejected: dict[str, int] = {}
    codes, counts = np.unique(status[status >= 400].to_numpy(dtype="int64"), return_counts=True)
    for code, n in zip(codes.tolist(), counts.tolist(), strict=True):
        key = reason(code)
        rejected[key] = rejected.get(key, 0) + n
    answered = lines["upstream_time"].notna()
    return ServiceFigures(
        version=version,
        requests=requests,
        per_second=requests / seconds if seconds > 0 else 0.0,
        status_classes=status_classes,
        error_ratio=status_classes.get("5xx", 0) / requests if requests else 0.0,
        client_error_ratio=status_classes.get("4xx", 0) / requests if requests else 0.0,
        rejected=rejected,
        gateway_ms=percentiles(lines["request_time"][answered]),
        app_ms=percentiles(lines["upstream_time"][answered]),
    )


@dataclass(frozen=True)
class ServiceWindow:
    """The whole service's figures and each answering version's in a window."""

    total: ServiceFigures
    versions: list[ServiceFigures]
    seconds: float
    usage: UsageRead | None = None  # None: the usage log was not read


def service_window(lines: pd.DataFrame, window: Window) -> ServiceWindow:
    """Figures per version (the versions that answered, by the `X-Model-Version` the gateway logged) and in all; a
    request the gateway answered itself counts in all only."""
    start = window.start
    if start is None:
        start = lines["time"].min().to_pydatetime() if len(lines) else window.end
    seconds = max((window.end - start).total_seconds(), 1.0)
    versions = [
        figures(group, str(version), seconds)
        for version, group in lines.groupby("version", sort=True)
        if str(version) != GATEWAY
    ]
    return ServiceWindow(figures(lines, "*", seconds), versions, seconds)


def day_counts(lines: pd.DataFrame) -> dict[str, list[int]]:
    """Requests and server errors per UTC day (`YYYY-MM-DD` -> [requests, errors]): the error budget's tally."""
    if not len(lines):
        return {}
    days = lines["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    found, index = np.unique(days, return_inverse=True)
    requests = np.bincount(index, minlength=len(found))
    errors = np.bincount(index, weights=(lines["status"] >= 500).to_numpy(), minlength=len(found))
    return {str(day): [int(r), int(e)] for day, r, e in zip(found, requests, errors, strict=True)}


def merge_days(*tallies: Mapping[str, list[int]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for tally in tallies:
        for day, (requests, errors) in tally.items():
            total = merged.setdefault(day, [0, 0])
            total[0] += int(requests)
            total[1] += int(errors)
    return merged


def recent_days(tally: Mapping[str, list[int]], days: int, end: datetime) -> dict[str, list[int]]:
    """The tally's last `days` UTC days up to `end`'s day."""
    first = (end - timedelta(days=days - 1)).date().isoformat()
    last = end.date().isoformat()
    return {day: list(counts) for day, counts in sorted(tally.items()) if first <= day <= last}


@dataclass(frozen=True)
class ErrorBudget:
    """`target` of the requests over `days` days should be good (not a server error): how much of the errors that
    allows has been spent."""

    target: float
    days: int
    requests: int
    errors: int

    @property
    def good_ratio(self) -> float | None:
        return 1 - self.errors / self.requests if self.requests else None

    @property
    def allowed(self) -> float:
        """The server errors the target allows on these requests."""
        return (1 - self.target) * self.requests

    @property
    def left(self) -> float | None:
        """The share of the budget left: 1 untouched, 0 spent, below 0 overspent (None: no request)."""
        if not self.requests:
            return None
        return round(1 - self.errors / self.allowed, 9)  # (1 - target) is rarely exact in binary

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "good_ratio": self.good_ratio, "allowed": self.allowed, "left": self.left}


def error_budget(tally: Mapping[str, list[int]], target: float, days: int, end: datetime) -> ErrorBudget:
    recent = recent_days(tally, days, end)
    return ErrorBudget(target, days, sum(c[0] for c in recent.values()), sum(c[1] for c in recent.values()))


@dataclass(frozen=True)
class ServiceCheck:
    """The service's check in a window: its figures, the error budget, the verdict with its reasons, and the
    alert kinds (`service:...`). `version` is "" as the check is of the whole service, whatever version answered."""

    verdict: str  # ok | insufficient_data | no_traffic | degraded | no_log
    reasons: list[str]
    total: ServiceFigures
    versions: list[ServiceFigures]
    budget: ErrorBudget
    skipped: int
    files: int
    days: dict[str, list[int]] = field(default_factory=dict)  # this window's tally, kept by a finished default check
    alert_kinds: list[str] = field(default_factory=list)
    version: str = ""
    usage: UsageRead | None = None  # the usage log's account (None: not read)

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["budget"] = self.budget.as_dict()
        return found
