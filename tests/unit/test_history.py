"""The release history file: append-only, durable, tolerant of a cut line."""

from __future__ import annotations

from pathlib import Path

from flowship.release import history


def test_events_are_appended_in_order_with_a_time(tmp_path: Path) -> None:
    assert history.read(tmp_path) == []
    history.record(tmp_path, {"action": "release", "outcome": "done", "from_version": None, "to_version": "1"})
    history.record(tmp_path, {"action": "release", "outcome": "done", "from_version": "1", "to_version": "2"})
    events = history.read(tmp_path)
    assert [e["to_version"] for e in events] == ["1", "2"]
    assert all("time" in e for e in events)


def test_a_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    history.record(tmp_path, {"action": "release", "outcome": "done", "from_version": None, "to_version": "1"})
    with history.history_file(tmp_path).open("a") as fh:
        fh.write('{"action": "release", "outc')
    assert [e["to_version"] for e in history.read(tmp_path)] == ["1"]


def test_previous_champion_follows_done_events_only(tmp_path: Path) -> None:
    history.record(tmp_path, {"action": "release", "outcome": "done", "from_version": None, "to_version": "1"})
    history.record(tmp_path, {"action": "release", "outcome": "done", "from_version": "1", "to_version": "2"})
    history.record(tmp_path, {"action": "release", "outcome": "failed", "from_version": "2", "to_version": "3"})
    assert history.previous_champion(tmp_path, "2") == "1"
    assert history.previous_champion(tmp_path, "1") is None  # nothing served before v1
    assert history.previous_champion(tmp_path, "3") is None  # v3 never reached production
    history.record(tmp_path, {"action": "rollback", "outcome": "done", "from_version": "2", "to_version": "1"})
    assert history.previous_champion(tmp_path, "1") == "2"
