"""The release history in the audit log: the previous champion, the policy a promotion installs, pause and resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowship import audit
from flowship.gateway.nginx import Backend, Pool
from flowship.gateway.routing import GatewayState
from flowship.release import history
from tests.unit.test_audit import DEFAULT_POLICY, PERSON, RUN, release_event, write_old_history


def test_previous_champion_follows_done_events_only(tmp_path: Path) -> None:
    for outcome, old, new in [("done", None, "1"), ("done", "1", "2"), ("failed", "2", "3")]:
        audit.record(tmp_path, "release", actor=PERSON, action="release", outcome=outcome, from_version=old,
                     to_version=new)  # fmt: skip
    audit.record(tmp_path, "canary", actor=RUN, from_=0.0, to=5.0, version="3")  # not a change of version
    assert history.previous_champion(tmp_path, "2") == "1"
    assert history.previous_champion(tmp_path, "1") is None  # nothing served before v1
    assert history.previous_champion(tmp_path, "3") is None  # v3 never reached production
    audit.record(tmp_path, "rollback", actor=PERSON, action="rollback", outcome="done", from_version="2",
                 to_version="1")  # fmt: skip
    assert history.previous_champion(tmp_path, "1") == "2"


def test_a_promotion_that_changes_the_policy_adds_a_guardrails_entry() -> None:
    refuse = DEFAULT_POLICY | {"out_of_range": {"action": "refuse", "margin": 0.1}}
    past = [release_event("1", DEFAULT_POLICY), release_event("2", refuse, outcome="failed")]  # failed: not installed
    done, changed = history.promotion_entries(past, release_event("2", refuse), RUN)
    assert done["change"] == "release" and done[history.POLICY_KEY] == refuse and done["actor"] == RUN.as_dict()
    assert changed["change"] == "guardrails" and changed["version"] == "2" and changed["time"] == done["time"]
    assert (changed["from"], changed["to"]) == ({"out_of_range.action": "flag"}, {"out_of_range.action": "refuse"})
    assert changed["reason"] == "the release of v2 hands production params.yaml's guardrails"
    assert changed["actor"] == RUN.as_dict()


@pytest.mark.parametrize(
    "past",
    [
        [],  # the first release: nothing served before
        [release_event("1", None)],  # a promotion recorded before promotions kept their policy
        [release_event("1", DEFAULT_POLICY)],  # the same policy
    ],
)
def test_a_promotion_adds_no_guardrails_entry_without_a_known_change(past: list[dict]) -> None:
    (done,) = history.promotion_entries(past, release_event("2", DEFAULT_POLICY, action="rollback"), RUN)
    assert done["change"] == "rollback"


def test_the_history_leaves_out_the_audit_logs_other_entries(tmp_path: Path) -> None:
    write_old_history(tmp_path)
    audit.record(tmp_path, "canary", actor=RUN, from_=0.0, to=5.0, version="2")
    audit.record(tmp_path, "guardrails", actor=RUN, from_={"a": 1}, to={"a": 2})
    audit.record(tmp_path, actor=RUN, **release_event("2", DEFAULT_POLICY))
    assert [e["action"] for e in history.read(tmp_path)] == ["release", "pause", "release"]
    assert history.previous_champion(tmp_path, "2") == "1"


def test_a_pause_and_a_resume_say_from_what_to_what(tmp_path: Path) -> None:
    serving = GatewayState(8000, Pool("3", (Backend("v3-a", "127.0.0.1:9001"),)))
    paused = GatewayState(8000, serving.stable, paused="bad answers")
    pause = audit.record(tmp_path, actor=PERSON, **history.switch_event(serving, paused))
    assert (pause["change"], pause["action"], pause["from"], pause["to"]) == ("pause", "pause", "serving", "paused")
    assert pause["reason"] == "bad answers" and pause["version"] == "3" and pause["url"] == "http://127.0.0.1:8000"
    resume = audit.record(tmp_path, actor=PERSON, **history.switch_event(paused, serving))
    assert (resume["change"], resume["from"], resume["to"]) == ("resume", "paused", "serving")
    assert "reason" not in resume
    assert history.switch_event(None, paused)["from_"] == "serving"  # no state before: it served
