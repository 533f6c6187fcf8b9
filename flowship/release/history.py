"""The release history: every promotion and rollback (and each pause and resume of the gateway), append-only, one
JSON line each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowship.files import append_durably, parse_lines

# the events that change which version serves (a pause or resume leaves it as it is)
CHANGES_OF_VERSION = ("release", "rollback")


def history_file(root: Path) -> Path:
    return root / ".flowship" / "history.jsonl"


def record(root: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one event (stamped with the time) and make it durable before returning."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    append_durably(history_file(root), (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("utf-8"))
    return entry


def read(root: Path) -> list[dict[str, Any]]:
    """Every event, oldest first; a line cut short by a crash is skipped."""
    path = history_file(root)
    if not path.exists():
        return []
    events, _ = parse_lines(path.read_text(encoding="utf-8").splitlines(), _parse_event)
    return events


def _parse_event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def previous_champion(root: Path, current: str | None) -> str | None:
    """The version that served before `current`, from the last promotion or rollback that installed it."""
    for event in reversed(read(root)):
        if event.get("action") not in CHANGES_OF_VERSION or event.get("outcome") != "done":
            continue
        if event.get("to_version") == current and event.get("from_version"):
            return str(event["from_version"])
    return None
