"""The window a check reads: its bounds, the check's state, and the inference log records and safety events inside
it."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from flowship.errors import MonitoringError
from flowship.files import atomic_write, parse_lines
from flowship.serving.inference_log import SAFETY_COLUMNS, log_files, parse_line, read_safety_log
from flowship.serving.labels import read_labels
from flowship.values import utc

# Records reach the log within the writer's flush interval (0.5 s): a default window ends this long ago,
# so a record is never written behind a window that was already checked.
SETTLE = timedelta(seconds=2)
FEATURE_PREFIX = "features."
PROBA_PREFIX = "probabilities."


@dataclass(frozen=True)
class Window:
    start: datetime | None  # None: from the first record
    end: datetime
    default: bool  # "since the last check": a finished check moves the state on

    def label(self) -> str:
        start = self.start.isoformat(timespec="seconds") if self.start else "the first record"
        return f"{start} to {self.end.isoformat(timespec='seconds')}"


def parse_time(value: str, what: str) -> datetime:
    try:
        return utc(value)
    except ValueError:
        raise MonitoringError(
            f"{what}: {value!r} is not a date or ISO time (e.g. 2026-11-23 or 2026-11-23T06:00)"
        ) from None


def resolve_window(state: dict[str, Any], start: str | None, end: str | None, now: datetime | None = None) -> Window:
    """The given window, or since the end of the last check up to a moment ago."""
    now = now or datetime.now(UTC)
    lower = parse_time(start, "start") if start else None
    upper = parse_time(end, "end") if end else None
    default = start is None and end is None
    if default and state.get("last_end"):
        lower = parse_time(state["last_end"], "monitoring state last_end")
    upper = upper or now - SETTLE
    if lower is not None and upper <= lower:
        raise MonitoringError(
            f"the window {lower.isoformat()} to {upper.isoformat()} is empty: its end is not after its start"
        )
    return Window(lower, upper, default)


def read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise MonitoringError(f"{path}: not valid JSON ({exc}); delete it to start the checks afresh") from None
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(state, indent=2, sort_keys=True))


@dataclass
class LogWindow:
    records: pd.DataFrame  # time, request_id, row, model_name, model_version, prediction, probabilities.*, features.*
    skipped: int  # lines that could not be read (cut by a crash, corrupt)
    files: int


def read_log_window(folder: Path, window: Window, schema: dict[str, str] | None = None) -> LogWindow:
    """The window's records as one flat frame, read column-wise (pyarrow) so a million records stay cheap.

    `schema` (feature -> "numeric" | "categorical") fixes the feature types; other logged features are read
    as they come. A cut last line or a corrupt line is skipped and counted, never fatal.
    """
    frames: list[pd.DataFrame] = []
    skipped = files = 0
    first = None if window.start is None else window.start.date()
    for path in log_files(folder, first, window.end.date()):
        frame, bad = _read_file(path, schema or {})
        files += 1
        skipped += bad
        if len(frame):
            # Each file is cut to the window before the next is read: only the window's records stay in memory.
            frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
            keep = frame["time"] < pd.Timestamp(window.end)
            if window.start is not None:
                keep &= frame["time"] >= pd.Timestamp(window.start)
            if keep.any():
                frames.append(frame.loc[keep])
    if frames:
        records = pd.concat(frames, ignore_index=True, sort=False)
        del frames
    else:
        records = pd.DataFrame(
            {c: pd.Series(dtype=object) for c in ("request_id", "row", "model_name", "model_version", "prediction")}
        )
        records.insert(0, "time", pd.Series(dtype="datetime64[us, UTC]"))
    records["model_version"] = records["model_version"].astype(str)
    return LogWindow(records, skipped, files)


def _read_file(path: Path, schema: dict[str, str]) -> tuple[pd.DataFrame, int]:
    import pyarrow as pa
    import pyarrow.json as pj

    data = path.read_bytes()
    skipped = 0
    if data and not data.endswith(b"\n"):
        # A writer stopped mid-line: the last line is cut.
        data = data[: data.rfind(b"\n") + 1]
        skipped += 1
    if not data.strip():
        return pd.DataFrame(), skipped
    types = {"numeric": pa.float64(), "categorical": pa.string()}
    explicit = pa.schema(
        [
            ("time", pa.string()),
            ("request_id", pa.string()),
            ("row", pa.int64()),
            ("model_version", pa.string()),
            ("features", pa.struct([(name, types[kind]) for name, kind in schema.items()])),
        ]
    )
    try:
        table = pj.read_json(
            io.BytesIO(data),
            parse_options=pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"),
        )
        frame = _flat(table.flatten().to_pandas())
        if frame[["time", "request_id", "prediction"]].isna().any().any():
            raise ValueError("a line without time, request_id or prediction")
    except (pa.ArrowInvalid, KeyError, ValueError):
        # A corrupt line somewhere in the file: read it line by line and skip what cannot be read.
        frame, bad = _read_lines(data)
        skipped += bad
    return frame, skipped


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Nested columns flattened by pyarrow come as `features.x`; top level columns keep their names."""
    if "row" not in frame:
        frame["row"] = 0
    frame["row"] = frame["row"].fillna(0).astype("int64")
    return frame


def _read_lines(data: bytes) -> tuple[pd.DataFrame, int]:
    rows = []
    records, skipped = parse_lines(data.splitlines(), parse_line)
    for record in records:
        flat = {k: v for k, v in record.items() if k not in ("features", "probabilities")}
        flat["time"] = record["time"].isoformat()
        flat.update({FEATURE_PREFIX + k: v for k, v in record["features"].items()})
        for k, v in (record.get("probabilities") or {}).items():
            flat[PROBA_PREFIX + k] = v
        rows.append(flat)
    return _flat(pd.DataFrame(rows)), skipped


def features_of(records: pd.DataFrame) -> pd.DataFrame:
    """The logged feature columns, named as the model names them."""
    columns = [c for c in records.columns if c.startswith(FEATURE_PREFIX)]
    return records[columns].rename(columns=lambda c: c[len(FEATURE_PREFIX) :])


@dataclass(frozen=True)
class WindowData:
    """What a check reads: the window's inference records, and every label that has arrived so far."""

    window: Window
    records: pd.DataFrame
    skipped: int
    files: int
    labels: pd.DataFrame
    labels_skipped: int
    # the guardrails that fired in the window (`flowship.serving.inference_log.SAFETY_COLUMNS`)
    safety: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SAFETY_COLUMNS))
    # why the window has no records when its logs were deleted by the retention (`retention.window_note`)
    expired: str | None = None

    @property
    def labels_arrived(self) -> int:
        """How many records have a label (a rating alone is none)."""
        return int(self.labels["label"].notna().sum()) if "label" in self.labels else len(self.labels)

    @property
    def predictions(self) -> dict[str, int]:
        """Records scored in the window, per model version (what the cost per 1,000 predictions divides by)."""
        if not len(self.records):
            return {}
        counts = self.records["model_version"].astype(str).value_counts(sort=False)
        return {str(version): int(n) for version, n in counts.items()}


def window_data(
    log_dir: Path,
    label_dirs: Path | Sequence[Path],
    window: Window,
    numeric: list[str],
    categorical: list[str],
    leave_out: Sequence[str] = (),
) -> WindowData:
    """The window's records, the features typed as the project declares them, and the labels (and ratings) of every
    folder in `label_dirs`. Features in
    `leave_out` (the sensitive columns monitoring does not judge) are not kept."""
    schema = {
        **{c: "numeric" for c in numeric if c not in leave_out},
        **{c: "categorical" for c in categorical if c not in leave_out},
    }
    log = read_log_window(log_dir, window, schema)
    log.records = log.records.drop(columns=[FEATURE_PREFIX + c for c in leave_out], errors="ignore")
    # Every label that has arrived by now: a label usually comes after its prediction's window closed.
    labels, labels_skipped = read_labels(label_dirs)
    return WindowData(
        window, log.records, log.skipped, log.files, labels, labels_skipped, safety_events(log_dir, window)
    )


def safety_events(log_dir: Path, window: Window) -> pd.DataFrame:
    """The safety events of the window (read from the daily files of its days, then cut to its times)."""
    first = None if window.start is None else window.start.date()
    events, _ = read_safety_log(log_dir, first, window.end.date())
    keep = events["time"] < pd.Timestamp(window.end)
    if window.start is not None:
        keep &= events["time"] >= pd.Timestamp(window.start)
    events = events.loc[keep].reset_index(drop=True)
    events["model_version"] = events["model_version"].astype(str)
    return events
