"""The audit log: who changed production, from what to what and why; old history lines; `--since`; policy diffs."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowship import audit
from flowship.errors import ConfigError
from flowship.gateway.nginx import Pool
from flowship.gateway.routing import GatewayState
from flowship.release import history

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PERSON = audit.Actor("alice")
RUN = audit.Actor("alice", "0b9e-run-id", "crimson-fox")
# What the history file held before the audit log: no `change`, no `actor`.
OLD_LINES = [
    {"time": "2026-11-01T09:00:00+00:00", "action": "release", "outcome": "done", "from_version": None,
     "to_version": "1", "image": "flights:1", "runtime": "docker", "checks": []},
    {"time": "2026-11-02T09:00:00+00:00", "action": "pause", "outcome": "done", "version": "1",
     "reason": "bad answers"},
]  # fmt: skip
DEFAULT_POLICY = {
    "enabled": True,
    "out_of_range": {"action": "flag", "margin": 0.1},
    "low_confidence": {"action": "off"},
}


def write_old_history(root: Path) -> None:
    path = audit.audit_file(root)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in OLD_LINES))


def release_event(to_version: str, policy: dict | None, action: str = "release", outcome: str = "done") -> dict:
    event = {"change": action, "action": action, "outcome": outcome, "from_version": "1", "to_version": to_version}
    return event if policy is None else event | {history.POLICY_KEY: policy}


def test_an_entry_says_when_who_what_from_what_to_what_and_why(tmp_path: Path) -> None:
    made = audit.record(tmp_path, "canary", actor=RUN, from_=5.0, to=25.0, reason="step 2", version="2")
    assert made["change"] == "canary" and (made["from"], made["to"]) == (5.0, 25.0) and made["reason"] == "step 2"
    assert made["actor"] == {"user": "alice", "flow_run": {"id": "0b9e-run-id", "name": "crimson-fox"}}
    assert made["version"] == "2" and audit.entry_time(made) is not None
    assert audit.read(tmp_path) == [made]


def test_from_to_and_reason_are_left_out_when_not_given(tmp_path: Path) -> None:
    made = audit.entry("retention", actor=PERSON, reason="", at=NOW, removed=3)
    assert made == {"time": "2026-12-02T12:00:00+00:00", "actor": {"user": "alice"}, "change": "retention",
                    "removed": 3}  # fmt: skip


def test_without_an_actor_the_os_user_made_the_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "bob")
    assert audit.record(tmp_path, "retention")["actor"] == {"user": "bob"}


@pytest.mark.parametrize("error", [OSError("no login name"), KeyError("getpwuid(): uid not found: 1234")])
def test_a_user_the_system_cannot_name_is_its_uid(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def no_name() -> str:
        raise error

    monkeypatch.setattr(getpass, "getuser", no_name)
    monkeypatch.setattr(audit.os, "getuid", lambda: 1234)
    assert audit.os_user() == "uid 1234"


def test_inside_a_flow_run_the_run_is_the_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowship.tasks.common import run_actor

    monkeypatch.setattr(getpass, "getuser", lambda: "worker")
    assert run_actor() == audit.Actor("worker")  # no flow run: the OS user
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", "0b9e-run-id")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "crimson-fox")
    assert run_actor() == audit.Actor("worker", "0b9e-run-id", "crimson-fox")


def test_entries_written_together_land_together_in_order(tmp_path: Path) -> None:
    first, second = (audit.entry(c, actor=PERSON, at=NOW) for c in ("release", "guardrails"))
    audit.append(tmp_path, [first, second])
    assert [e["change"] for e in audit.read(tmp_path)] == ["release", "guardrails"]
    assert audit.audit_file(tmp_path) == tmp_path / ".flowship" / "history.jsonl"  # the history's file


def test_a_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    audit.record(tmp_path, "release", actor=PERSON, to_version="1")
    with audit.audit_file(tmp_path).open("a") as fh:
        fh.write('{"change": "release", "outc')
    assert [e["to_version"] for e in audit.read(tmp_path)] == ["1"]


def test_history_lines_from_before_the_audit_log_read_and_print(tmp_path: Path) -> None:
    write_old_history(tmp_path)
    audit.record(tmp_path, "canary", actor=RUN, from_=0.0, to=5.0, version="2")
    entries = audit.read(tmp_path)
    assert [e["change"] for e in entries] == ["release", "pause", "canary"]
    assert [audit.actor_label(e) for e in entries] == ["-", "-", "flow-run/crimson-fox"]
    lines = audit.table(entries)
    assert lines[0].startswith("2026-11-01T09:00:00+00:00  -  ") and lines[0].endswith("release  - → v1")
    assert lines[1].split() == ["2026-11-02T09:00:00+00:00", "-", "pause", "v1", "bad", "answers"]
    assert lines[2].split()[1:] == ["flow-run/crimson-fox", "canary", "v2", "0%", "→", "5%"]
    assert history.previous_champion(tmp_path, "1") is None and len(history.read(tmp_path)) == 2


def test_each_kind_of_change_prints_its_from_and_to() -> None:
    def line(**made: object) -> str:
        return audit.table([{"time": "t", "actor": {"user": "alice"}, **made}])[0]

    failed = line(change="release", action="release", outcome="failed", from_version="1", to_version="2", reason="slow")
    assert failed == "t  alice  release failed  v1 → v2  slow"
    assert line(change="shadow", version="3", **{"from": "off", "to": "on"}) == "t  alice  shadow  v3 off → on"
    assert line(change="resume", version="3", **{"from": "paused", "to": "serving"}) == (
        "t  alice  resume  v3 paused → serving"
    )
    changed = {"from": {"low_confidence.action": "off", "out_of_range.action": "flag"},
               "to": {"low_confidence.action": "flag", "out_of_range.action": "refuse"}}  # fmt: skip
    assert line(change="guardrails", **changed) == (
        "t  alice  guardrails  low_confidence.action off → flag; out_of_range.action flag → refuse"
    )
    assert line(change="retention") == "t  alice  retention"


def test_columns_line_up_across_entries() -> None:
    lines = audit.table(
        [
            {"time": "t", "actor": {"user": "al"}, "change": "release", "from_version": "1", "to_version": "2"},
            {"time": "t", "actor": {"user": "alice"}, "change": "pause", "version": "2", "reason": "why"},
        ]
    )
    assert lines == ["t  al     release  v1 → v2", "t  alice  pause    v2       why"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23", datetime(2026, 11, 23, tzinfo=UTC)),
        ("2026-11-23T06:00", datetime(2026, 11, 23, 6, tzinfo=UTC)),  # naive: UTC
        ("2026-11-23T07:00+01:00", datetime(2026, 11, 23, 6, tzinfo=UTC)),
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        (" 0d ", NOW),
    ],
)
def test_since_takes_an_iso_time_or_an_age(value: str, expected: datetime) -> None:
    assert audit.parse_since(value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "7", "-1d", "7y", "1.5h", "", "2026-13-01"])
def test_a_bad_since_names_the_argument_and_what_it_takes(value: str) -> None:
    with pytest.raises(ConfigError, match=r"--since .*: not a time; give an ISO date or time .* or an age: .*7d"):
        audit.parse_since(value, NOW)


def test_since_keeps_the_entries_from_that_time_on(tmp_path: Path) -> None:
    for day in (1, 2, 3):
        audit.append(tmp_path, [audit.entry("pause", actor=PERSON, at=datetime(2026, 11, day, tzinfo=UTC))])
    since = audit.parse_since("2026-11-02", NOW)
    assert [e["time"][:10] for e in audit.read(tmp_path, since=since)] == ["2026-11-02", "2026-11-03"]
    assert audit.read(tmp_path, since=NOW) == []


def test_changed_keys_name_each_nested_key_that_differs() -> None:
    after = {"enabled": True, "out_of_range": {"action": "refuse", "margin": 0.1}, "missing": {"action": "flag"}}
    old, new = audit.changed_keys(DEFAULT_POLICY, after)
    assert old == {"low_confidence.action": "off", "missing.action": None, "out_of_range.action": "flag"}
    assert new == {"low_confidence.action": None, "missing.action": "flag", "out_of_range.action": "refuse"}
    assert audit.changed_keys(DEFAULT_POLICY, DEFAULT_POLICY) == ({}, {})


def test_a_canary_share_is_its_own_versions_only() -> None:
    stable, canary = Pool("1", ()), Pool("2", ())
    state = GatewayState(8000, stable).with_canary(canary, 25.0)
    assert state.canary_share("2") == 25.0 and state.canary_share("3") == 0.0
    assert GatewayState(8000, stable).canary_share("2") == 0.0
