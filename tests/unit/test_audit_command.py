"""`flowship audit` (and `flowship history` beside it) on a project folder whose log was written by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowship import audit

REPO = Path(__file__).resolve().parents[2]
RUN = {"user": "ci", "flow_run": {"id": "0b9e-run-id", "name": "crimson-fox"}}
LOG = [
    # two lines from before the audit log: no `change`, no `actor`
    {"time": "2020-03-01T09:00:00+00:00", "action": "release", "outcome": "done", "from_version": None,
     "to_version": "1", "image": "flights:1", "runtime": "docker", "checks": [{"name": "golden_set", "passed": True}]},
    {"time": "2020-03-02T09:00:00+00:00", "action": "pause", "outcome": "done", "version": "1",
     "reason": "bad answers"},
    {"time": "2020-03-03T10:00:00+00:00", "actor": {"user": "alice"}, "change": "resume", "action": "resume",
     "outcome": "done", "version": "1", "from": "paused", "to": "serving"},
    {"time": "2020-03-04T11:00:00+00:00", "actor": RUN, "change": "canary", "version": "2", "from": 0.0, "to": 5.0},
    {"time": "2020-03-04T11:05:00+00:00", "actor": RUN, "change": "canary", "version": "2", "from": 5.0, "to": 0.0,
     "reason": "canary 5%: success 0.91"},
    {"time": "2020-03-04T11:05:00+00:00", "actor": RUN, "change": "canary", "action": "canary", "outcome": "aborted",
     "version": "2", "from_version": "1", "to_version": "2", "reason": "success_rate 0.91"},
]  # fmt: skip
EXPECTED = [
    "2020-03-01T09:00:00+00:00  -                     release         - → v1",
    "2020-03-02T09:00:00+00:00  -                     pause           v1                   bad answers",
    "2020-03-03T10:00:00+00:00  alice                 resume          v1 paused → serving",
    "2020-03-04T11:00:00+00:00  flow-run/crimson-fox  canary          v2 0% → 5%",
    "2020-03-04T11:05:00+00:00  flow-run/crimson-fox  canary          v2 5% → 0%           canary 5%: success 0.91",
    "2020-03-04T11:05:00+00:00  flow-run/crimson-fox  canary aborted  v1 → v2              success_rate 0.91",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: its params.yaml and the audit log above."""
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    path = audit.audit_file(tmp_path)
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in LOG))
    return tmp_path


def flowship(root: Path, *args: str) -> Any:
    from flowship.cli.main import app

    return CliRunner().invoke(app, [*args, "--params", str(root / "params.yaml")])


def test_audit_prints_every_change_oldest_first_one_line_each(project: Path) -> None:
    done = flowship(project, "audit")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == EXPECTED


@pytest.mark.parametrize(
    ("since", "first"),
    [("2020-03-03", 2), ("2020-03-04T11:05", 4), ("2020-03-04T12:05+01:00", 4), ("100000d", 0), ("1h", 6)],
)
def test_since_keeps_the_changes_from_then_on(project: Path, since: str, first: int) -> None:
    done = flowship(project, "audit", "--since", since)
    assert done.exit_code == 0, done.output
    shown = [line.split()[:3] for line in done.stdout.splitlines()]  # time, actor, change (columns fit what is shown)
    if first < len(EXPECTED):
        assert shown == [line.split()[:3] for line in EXPECTED[first:]]
    else:
        assert done.stdout.startswith("no changes to production recorded since ") and len(shown) == 1


def test_json_gives_the_entries_as_the_log_keeps_them(project: Path) -> None:
    done = flowship(project, "audit", "--json", "--since", "2020-03-02")
    assert done.exit_code == 0, done.output
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert entries == [{**LOG[1], "change": "pause"}, *LOG[2:]]  # an old line gets its change from its action


@pytest.mark.parametrize("since", ["yesterday", "7", "-3d"])
def test_a_bad_since_fails_naming_the_argument_and_what_it_takes(project: Path, since: str) -> None:
    done = flowship(project, "audit", "--since", since)
    assert done.exit_code == 1 and done.stdout == ""
    assert f"--since {since!r}: not a time; give an ISO date or time" in done.stderr
    assert "or an age: 30m, 12h, 7d, 2w" in done.stderr


def test_audit_without_the_projects_params_fails_naming_the_file(tmp_path: Path) -> None:
    done = flowship(tmp_path, "audit")
    assert done.exit_code == 1
    assert f"{tmp_path / 'params.yaml'}: no such file" in done.stderr


def test_a_project_without_changes_says_so(project: Path) -> None:
    audit.audit_file(project).unlink()
    done = flowship(project, "audit")
    assert done.exit_code == 0 and done.stdout == "no changes to production recorded\n"
    assert flowship(project, "audit", "--json").stdout == ""


def test_history_still_shows_the_releases_only(project: Path) -> None:
    done = flowship(project, "history")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert len(lines) == 4  # the canary's steps are in the audit log only
    assert "release  done   v- → v1" in lines[0] and "golden_set ok" in lines[0]
    assert "pause" in lines[1] and "bad answers" in lines[1] and "canary   aborted" in lines[3]
