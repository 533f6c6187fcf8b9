"""What a release hands from step to step, and the steps of a promotion that touch production and the registry.

A promotion starts the new version in production, moves `champion`, tags the version and records the event;
each step here has its undo beside it, so a failure half-way leaves production, aliases and tags as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowship.adapters.tracking import CHAMPION, TAG, Tracker, VersionRef
from flowship.errors import ReleaseError
from flowship.paths import Layout
from flowship.release import http_checks
from flowship.release.checks import Check, summary
from flowship.release.runtime import PRODUCTION, STAGING, Deployed, Release, Runtime

__all__ = ["PRODUCTION", "STAGING"]  # re-exported: the release tasks name the roles from here

# MLflow refuses tag values above 5000 characters.
CHECKS_TAG_LIMIT = 4900
REASONS_TAG_LIMIT = 4000


@dataclass(frozen=True)
class ReleaseTarget:
    """The registered version to release, and the champion it would replace."""

    ref: VersionRef
    champion: str | None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version


@dataclass(frozen=True)
class Promotion:
    """Production after a promotion: what serves now, the champion before it, when it was recorded."""

    production: Deployed
    from_version: str | None
    time: str


@dataclass(frozen=True)
class ReleaseResult:
    """What the release (or rollback) flow returns: the version, whether it was released, what serves."""

    version: str
    runtime: str
    production: Deployed
    released: bool
    from_version: str | None = None
    time: str | None = None
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @classmethod
    def promoted(cls, version: str, runtime: str, promotion: Promotion, checks: tuple[Check, ...]) -> ReleaseResult:
        return cls(version, runtime, promotion.production, True, promotion.from_version, promotion.time, checks)

    @classmethod
    def already_serving(cls, version: str, runtime: str, production: Deployed) -> ReleaseResult:
        return cls(version, runtime, production, released=False)

    def as_dict(self) -> dict[str, Any]:
        """The plain form kept in summaries (the monitoring flow's retraining record)."""
        production = self.production.as_dict()
        if not self.released:
            return {"version": self.version, "released": False, "production": production, "runtime": self.runtime}
        production |= {"from_version": self.from_version, "time": self.time}
        return {
            "version": self.version,
            "released": True,
            "production": production,
            "runtime": self.runtime,
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class StageResult:
    """What the stage flow returns: the version that passed every staging check, its image (None when it was staged
    as a process) and, when it was pushed, the image's name and digest in the registry."""

    version: str
    runtime: str
    image: str | None
    checks: tuple[Check, ...]
    pushed: str | None = None


def staged_tags(checks: tuple[Check, ...], pushed: str | None) -> dict[str, str]:
    """The model version's tags once staging passed (and the image was pushed)."""
    tags = {f"{TAG}staging.verdict": "passed", f"{TAG}staging.checks": checks_json(checks)}
    return tags | ({f"{TAG}image.pushed": pushed} if pushed else {})


def inference_log_dir(layout: Layout, role: str) -> Path:
    return layout.inference_log_dir if role == PRODUCTION else layout.staging_inference_log_dir


def checks_json(checks: tuple[Check, ...]) -> str:
    return json.dumps([c.as_dict() for c in checks], default=str)[:CHECKS_TAG_LIMIT]


def checks_markdown(title: str, version: str, checks: tuple[Check, ...], outcome: str) -> str:
    lines = [f"# {title}: v{version} {outcome}", "", "| check | verdict | detail |", "| --- | --- | --- |"]
    lines += [f"| {c.name} | {'pass' if c.passed else '**fail**'} | {c.detail} |" for c in checks]
    return "\n".join(lines) + "\n"


def failure_tags(checks: tuple[Check, ...]) -> dict[str, str]:
    _, reasons = summary(list(checks))
    return {
        f"{TAG}release.verdict": "failed",
        f"{TAG}release.failed_checks": reasons[:REASONS_TAG_LIMIT],
        f"{TAG}release.checks": checks_json(checks),
    }


def release_tags(target: ReleaseTarget, image: str | None, checks: tuple[Check, ...]) -> dict[str, str]:
    return {
        f"{TAG}release.verdict": "passed",
        f"{TAG}release.failed_checks": "none",
        f"{TAG}release.image": image or "none (local process)",
        f"{TAG}release.previous_champion": target.champion or "none",
        f"{TAG}release.checks": checks_json(checks),
    }


def failure_event(
    action: str, target: ReleaseTarget, production: Deployed | None, runtime: str, checks: tuple[Check, ...]
) -> dict[str, Any]:
    """The history entry of a release stopped in staging (`change` and the history's `action` alike)."""
    return {
        "change": action,
        "action": action,
        "outcome": "failed",
        "from_version": production.version if production else target.champion,
        "to_version": target.version,
        "image": None,
        "runtime": runtime,
        "checks": [c.as_dict() for c in checks],
        "reason": summary(list(checks))[1],
    }


def release_event(
    action: str,
    target: ReleaseTarget,
    production: Deployed,
    image: str | None,
    checks: tuple[Check, ...],
    guardrails: dict[str, Any],
) -> dict[str, Any]:
    """The history entry of a promotion (or rollback) done, with the guardrails' policy it hands production (the
    next promotion compares its own with it)."""
    return {
        "change": action,
        "action": action,
        "outcome": "done",
        "from_version": target.champion,
        "to_version": target.version,
        "image": image,
        "runtime": production.kind,
        "url": production.url,
        "checks": [c.as_dict() for c in checks],
        "guardrails": guardrails,
    }


# --- the steps that touch production and the registry, each with its undo ---


def previous_release(layout: Layout, production: Deployed | None) -> Release | None:
    """What production serves now, as a release that can be started again (its own bundle and image)."""
    if production is None:
        return None
    bundle = layout.bundle_dir(production.name, production.version)
    return Release(production.name, production.version, bundle, production.image)


def start_production(
    runtime: Runtime, release: Release, previous: Release | None, port: int, log_dir: Path, timeout_s: float
) -> Deployed:
    """The new version serving in production and ready; if it does not come up, the previous one serves again."""
    new = runtime.start(PRODUCTION, release, port, log_dir, restart=True)
    ready = http_checks.wait_ready(new.url, timeout_s)
    if not ready.passed:
        restore_production(runtime, previous, release, port, log_dir, timeout_s)
        back = f"v{previous.version} serves again" if previous else "nothing served before"
        raise ReleaseError(f"production did not come up with v{release.version} ({ready.detail}); {back}")
    return new


def restore_production(
    runtime: Runtime, previous: Release | None, failed: Release, port: int, log_dir: Path, timeout_s: float
) -> None:
    """Production as it was: the previous version serving again (behind a gateway: switched back to, as it was kept
    warm) and the failed one stopped; or nothing serving."""
    if previous is None:
        runtime.stop(PRODUCTION)
        return
    back = runtime.start(PRODUCTION, previous, port, log_dir, restart=True)
    runtime.retire(PRODUCTION, failed.version)
    http_checks.wait_ready(back.url, timeout_s)


def move_champion(tracker: Tracker, target: ReleaseTarget) -> None:
    tracker.set_alias(target.name, CHAMPION, target.version)


def restore_champion(tracker: Tracker, target: ReleaseTarget) -> None:
    """`champion` back on the version it named before, or gone if there was none."""
    if target.champion is None:
        tracker.delete_alias(target.name, CHAMPION)
    else:
        tracker.set_alias(target.name, CHAMPION, target.champion)


def set_tags(tracker: Tracker, ref: VersionRef, tags: dict[str, str]) -> dict[str, str | None]:
    """Set the version's tags; returns what they were before (None: not set), for `restore_tags`."""
    before = tracker.version(ref.name, ref.version).tags
    tracker.set_version_tags(ref.name, ref.version, tags)
    return {key: before.get(key) for key in tags}


def restore_tags(tracker: Tracker, ref: VersionRef, before: dict[str, str | None]) -> None:
    tracker.set_version_tags(ref.name, ref.version, {k: v for k, v in before.items() if v is not None})
    tracker.delete_version_tags(ref.name, ref.version, [k for k, v in before.items() if v is None])
