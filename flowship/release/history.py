"""The release history: the audit log's entries that carry an `action` (each promotion and rollback, a release
stopped in staging or on live traffic, a refused approval, each pause and resume of the gateway), which
`flowship history` shows; and what a release reads from and adds to the audit log beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowship import audit

if TYPE_CHECKING:
    from flowship.gateway.routing import GatewayState

# the events that change which version serves (a pause or resume leaves it as it is)
CHANGES_OF_VERSION = ("release", "rollback")
# where a promotion's entry keeps the guardrails' policy it handed production
POLICY_KEY = "guardrails"


def read(root: Path) -> list[dict[str, Any]]:
    """The release history's events, oldest first (the audit log's other entries, e.g. canary steps, left out)."""
    return [e for e in audit.read(root) if "action" in e]


def previous_champion(root: Path, current: str | None) -> str | None:
    """The version that served before `current`, from the last promotion or rollback that installed it."""
    for event in reversed(read(root)):
        if not _done(event):
            continue
        if event.get("to_version") == current and event.get("from_version"):
            return str(event["from_version"])
    return None


def _done(event: dict[str, Any]) -> bool:
    return event.get("action") in CHANGES_OF_VERSION and event.get("outcome") == "done"


def installed_policy(events: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The guardrails' policy the last promotion or rollback handed production (None: none is recorded, e.g. it
    was done before promotions kept their policy)."""
    for event in reversed(events):
        if _done(event):
            policy = event.get(POLICY_KEY)
            return policy if isinstance(policy, dict) else None
    return None


def promotion_entries(
    events: Sequence[dict[str, Any]], event: dict[str, Any], actor: audit.Actor
) -> list[dict[str, Any]]:
    """What a promotion (or rollback) done adds to the audit log, given the history so far: its own entry, and a
    `guardrails` entry (the keys that changed, from → to) when the policy it hands production (`event`'s
    `guardrails`) differs from the one production ran before. None recorded before: only its own entry."""
    done = audit.entry(actor=actor, **event)
    before, after = installed_policy(events), event.get(POLICY_KEY)
    if before is None or after is None:
        return [done]
    old, new = audit.changed_keys(before, after)
    if not old:
        return [done]
    reason = f"the {event['action']} of v{event['to_version']} hands production params.yaml's guardrails"
    at = audit.entry_time(done)
    policy = audit.entry(
        "guardrails", actor=actor, from_=old, to=new, reason=reason, at=at, version=event["to_version"]
    )
    return [done, policy]


def switch_event(was: GatewayState | None, now: GatewayState) -> dict[str, Any]:
    """The entry of a pause (or resume) of the gateway, for `audit.record`: from serving to paused or back."""
    action = "resume" if now.paused is None else "pause"
    state = {True: "paused", False: "serving"}
    return {
        "change": action,
        "action": action,
        "outcome": "done",
        "version": now.stable.version,
        "url": f"http://127.0.0.1:{now.port}",
        "from_": state[was is not None and was.paused is not None],
        "to": state[now.paused is not None],
        "reason": now.paused,
    }
