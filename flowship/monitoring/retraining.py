"""Retraining on a newer window: the training split moved up to the newest labelled data."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from flowship.config import Params, TimeSplit, load_params
from flowship.errors import ConfigError


@dataclass(frozen=True)
class RetrainingResult:
    """What a retraining did: `skipped` (with the reason), `gate_failed` (window, reason) or `registered`
    (window, version and, when it was released, what the release gave)."""

    status: str
    window: dict[str, str | None] | None = None
    version: str | None = None
    reason: str | None = None
    release: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The keys that apply to its status, as the monitoring summary records them."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def newer_split(params: Params, labels: pd.DataFrame) -> dict[str, str | None] | None:
    """The split moved so that training ends after the newest labelled record (same length), or None when
    no label is newer than the current training window. Needs a time split and labels with event times."""
    split = params.split
    if not isinstance(split, TimeSplit):
        raise ConfigError(["split.method: retraining on a newer window needs a time split (method: time)"])
    if labels.empty or "event_time" not in labels or labels["event_time"].isna().all():
        return None
    newest = pd.Timestamp(labels["event_time"].max()).date()
    end = newest + dt.timedelta(days=1)
    if end <= split.train_end:
        return None
    start = end - (split.train_end - split.train_start)
    values: dict[str, str | None] = {"train_start": start.isoformat(), "train_end": end.isoformat()}
    if split.production_start is not None and split.production_end is not None:
        if split.production_end > end:
            values.update(production_start=end.isoformat(), production_end=split.production_end.isoformat())
        else:
            values.update(production_start=None, production_end=None)
    return values


def rewrite_split(path: Path, values: dict[str, str | None]) -> str:
    """Write the new dates into params.yaml's `split:` section, keeping every comment; returns the old text.

    The file is checked after the edit and put back as it was if it no longer loads.
    """
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    in_split = False
    found: set[str] = set()
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            in_split = line.startswith("split:")
            continue
        match = re.match(r"^(\s+)(\w+):(\s*)([^#\n]*?)(\s*#.*)?(\n?)$", line)
        if in_split and match and match.group(2) in values:
            key = match.group(2)
            value = values[key]
            shown = "null" if value is None else f'"{value}"'
            lines[i] = f"{match.group(1)}{key}: {shown}{match.group(5) or ''}{match.group(6)}"
            found.add(key)
    missing = [k for k in values if k not in found and values[k] is not None]
    if missing:
        raise ConfigError([f"split.{k}: not written in {path}; cannot move the training window" for k in missing])
    path.write_text("".join(lines))
    try:
        load_params(path)
    except ConfigError:
        path.write_text(original)
        raise
    return original
