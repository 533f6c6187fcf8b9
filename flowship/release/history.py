"""The release history: every promotion and rollback, append-only, one JSON line each."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def history_file(root: Path) -> Path:
    return root / ".flowship" / "history.jsonl"


def record(root: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one event (stamped with the time) and make it durable before returning."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    path = history_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def read(root: Path) -> list[dict[str, Any]]:
    """Every event, oldest first; a line cut short by a crash is skipped."""
    path = history_file(root)
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def previous_champion(root: Path, current: str | None) -> str | None:
    """The version that served before `current`, from the last promotion or rollback that installed it."""
    for event in reversed(read(root)):
        if event.get("outcome") == "done" and event.get("to_version") == current and event.get("from_version"):
            return str(event["from_version"])
    return None
