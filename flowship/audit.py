"""The audit log: every change to production, one JSON line each, append-only, in `.flowship/history.jsonl`.

An entry holds when (`time`, UTC), who (`actor`: the OS user, or the Prefect flow run and the user it ran as), what
kind of change (`change`: release, rollback, canary, shadow, pause, resume, approval, guardrails, retention...),
what changed from what to what (`from` and `to`; the release history's entries say it with `from_version` and
`to_version`) and why (`reason`, when one was given), plus what the writer knows besides (`outcome`, `version`,
checks...). Lines written before the log had `change` and `actor` read as entries too: their `action` is their
change, their actor unknown.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowship.errors import ConfigError
from flowship.files import append_durably, parse_lines
from flowship.values import utc

UNKNOWN = "-"  # what a line shows for a value the entry does not have
SINCE_FORMS = "an ISO date or time (2026-11-23, 2026-11-23T06:00, UTC unless it says) or an age: 30m, 12h, 7d, 2w"
_AGE = re.compile(r"(\d+)([mhdw])")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def audit_file(root: Path) -> Path:
    return root / ".flowship" / "history.jsonl"


def os_user() -> str:
    """The OS user running this process; its uid when the system has no name for it (a container's user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry for the uid
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown user"


@dataclass(frozen=True)
class Actor:
    """Who made a change: a person (the OS user), or a Prefect flow run (and the OS user it ran as)."""

    user: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    @classmethod
    def current_user(cls) -> Actor:
        return cls(os_user())

    @classmethod
    def flow_run(cls, run_id: str, name: str | None) -> Actor:
        return cls(os_user(), run_id, name)

    def as_dict(self) -> dict[str, Any]:
        if self.flow_run_id is None:
            return {"user": self.user}
        return {"user": self.user, "flow_run": {"id": self.flow_run_id, "name": self.flow_run_name}}


def entry(
    change: str,
    *,
    actor: Actor,
    from_: Any = None,
    to: Any = None,
    reason: str | None = None,
    at: datetime | None = None,
    **details: Any,
) -> dict[str, Any]:
    """One entry, stamped with `at` (default: now); `from`/`to` are kept when either is given, `reason` when it
    is not empty."""
    stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    made: dict[str, Any] = {"time": stamp, "actor": actor.as_dict(), "change": change, **details}
    if from_ is not None or to is not None:
        made |= {"from": from_, "to": to}
    if reason:
        made["reason"] = reason
    return made


def append(root: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Append `entries` in one write, durable before returning: they are all in the log, or (a crash) none is."""
    lines = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in entries)
    append_durably(audit_file(root), lines.encode("utf-8"))


def record(
    root: Path,
    change: str,
    *,
    actor: Actor | None = None,
    from_: Any = None,
    to: Any = None,
    reason: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Append one entry and return it. `actor` None: the OS user (a command a person ran); a Prefect task passes
    its flow run (`flowship.tasks.common.run_actor`).

    Every writer of the log calls this (or `entry` and `append` for entries that go in together); a retention run
    records itself here too: `record(root, "retention", reason=..., removed=..., kept=...)`.
    """
    made = entry(change, actor=actor or Actor.current_user(), from_=from_, to=to, reason=reason, **details)
    append(root, [made])
    return made


def read(root: Path, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every entry, oldest first (from `since` on, when given); a line cut short by a crash is skipped."""
    path = audit_file(root)
    if not path.exists():
        return []
    entries, _ = parse_lines(path.read_text(encoding="utf-8").splitlines(), _parse_entry)
    if since is None:
        return entries
    return [e for e in entries if (stamp := entry_time(e)) is not None and stamp >= since]


def _parse_entry(line: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    parsed.setdefault("change", parsed.get("action") or UNKNOWN)  # a line from before the audit log
    return parsed


def entry_time(made: Mapping[str, Any]) -> datetime | None:
    try:
        return utc(str(made["time"]))
    except (KeyError, ValueError):
        return None


def parse_since(value: str, now: datetime) -> datetime:
    """`--since`: an ISO date or time, or an age (`7d`: seven days before `now`). Raises ConfigError naming the
    argument and the forms it takes."""
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age is not None:
        return now - timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        return utc(text)
    except ValueError:
        raise ConfigError([f"--since {value!r}: not a time; give {SINCE_FORMS}"]) from None


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keys whose values differ between two nested mappings, named by their path (`out_of_range.action`): what
    each was and what it is (None: not there)."""
    old, new = _flat(before), _flat(after)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return {k: old.get(k) for k in keys}, {k: new.get(k) for k in keys}


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- one line per entry, for people ---


def actor_label(made: Mapping[str, Any]) -> str:
    """`flow-run/<name>` for a flow run, the user's name for a person, `-` for a line from before the audit log."""
    actor = made.get("actor")
    if not isinstance(actor, Mapping):
        return str(actor) if actor else UNKNOWN
    run = actor.get("flow_run")
    if isinstance(run, Mapping):
        return f"flow-run/{run.get('name') or run.get('id')}"
    return str(actor.get("user") or UNKNOWN)


def change_label(made: Mapping[str, Any]) -> str:
    """The kind of change, with its outcome unless it was done (`release failed`, `canary aborted`)."""
    outcome = made.get("outcome")
    return f"{made['change']} {outcome}" if outcome and outcome != "done" else str(made["change"])


def transition(made: Mapping[str, Any]) -> str:
    """What changed from what to what, as people read it."""
    version = made.get("version")
    if "from" in made or "to" in made:
        old, new = made.get("from"), made.get("to")
        if isinstance(old, Mapping) or isinstance(new, Mapping):
            old, new = old or {}, new or {}
            return "; ".join(f"{k} {_shown(old.get(k))} → {_shown(new.get(k))}" for k in sorted({*old, *new}))
        unit = "%" if made["change"] == "canary" else ""
        moved = f"{_shown(old, unit)} → {_shown(new, unit)}"
        return f"v{version} {moved}" if version else moved
    if "from_version" in made or "to_version" in made:
        old_version, new_version = made.get("from_version"), made.get("to_version")
        return f"{f'v{old_version}' if old_version else UNKNOWN} → {f'v{new_version}' if new_version else UNKNOWN}"
    return f"v{version}" if version else ""


def _shown(value: Any, unit: str = "") -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per entry: time, actor, change, from → to, reason; columns as wide as their widest value."""
    rows = [
        (str(e.get("time", UNKNOWN)), actor_label(e), change_label(e), transition(e), str(e.get("reason") or ""))
        for e in entries
    ]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    padded = [[cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)] + [row[4]] for row in rows]
    return ["  ".join(cells).rstrip() for cells in padded]
