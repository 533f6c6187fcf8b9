"""The release flow: challenger → image → staging → checks → [canary steps] → production and `champion`; and
rollback."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.transactions import transaction

from flowship.config import Params  # at run time: Prefect reads the flow's annotations
from flowship.flows.training import context
from flowship.release.canary import CanaryStep
from flowship.release.promotion import ReleaseResult, ReleaseTarget
from flowship.tasks import release
from flowship.tasks.common import Context


def _stage_and_promote(
    ctx: Context, kind: str, target: ReleaseTarget, action: str, full: bool, canary: bool = False
) -> ReleaseResult:
    """Bundle and image of `target`, staging and its checks (then, for a canary, live traffic in steps); promoted
    only when every check passed."""
    if canary:
        release.check_canary_possible(ctx, kind)
    bundle = release.export_bundle(ctx, target.ref)
    image = release.build_image(ctx, target.ref, bundle) if kind == "docker" else None
    staging = release.start_staging(ctx, kind, target.ref, bundle, image)
    checks = release.verify_staging(ctx, staging, bundle, full=full)
    release.teardown_staging(ctx, kind)
    if not all(c.passed for c in checks):
        release.record_failure(ctx, kind, target, checks, action)
    if canary:
        steps: list[CanaryStep] = []
        for weight in ctx.params.release.canary.step_weights:
            steps.append(release.canary_step(ctx, kind, target.ref, bundle, image, weight))
            if not steps[-1].passed:
                release.abort_canary(ctx, kind, target, tuple(steps))
        checks = (*checks, *release.canary_checks(tuple(steps)))
    # All or nothing: a step that fails undoes the steps before it (production, `champion`, tags).
    with transaction():
        production = release.start_production(ctx, kind, target.ref, bundle, image)
        release.move_champion(ctx, target)
        release.tag_release(ctx, target, image, checks)
        promoted = release.record_release(ctx, target, production, image, checks, action)
    release.publish_release(ctx, target, promoted, checks, action)
    return ReleaseResult.promoted(target.version, kind, promoted, checks)


@flow(name="release", description="Build, stage, verify and promote the challenger (or a named version).")
def release_flow(
    params_path: str = "params.yaml",
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
    canary: bool | None = None,
) -> ReleaseResult:
    """The CLI, which has read and checked params.yaml, hands `params` over: the file is read once per command.
    `canary` (None: as `release.strategy` says) gives the challenger live traffic in steps before promotion."""
    ctx = context(params_path, overrides, params)
    kind = release.choose_runtime(ctx)
    target = release.resolve_release(ctx, version)
    production = release.production_now(ctx, kind)
    if (
        production is not None
        and production.status == "running"
        and production.version == target.version
        and target.champion == target.version
    ):
        return ReleaseResult.already_serving(target.version, kind, production)
    as_canary = ctx.params.release.strategy == "canary" if canary is None else canary
    return _stage_and_promote(ctx, kind, target, "release", full=True, canary=as_canary)


@flow(name="rollback", description="Serve the previous champion (or a named version) again, health-checked first.")
def rollback_flow(
    params_path: str = "params.yaml",
    to_version: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
) -> ReleaseResult:
    """The CLI, which has read and checked params.yaml, hands `params` over: the file is read once per command."""
    ctx = context(params_path, overrides, params)
    kind = release.choose_runtime(ctx)
    version = release.rollback_target(ctx, to_version)
    target = release.resolve_release(ctx, version)
    return _stage_and_promote(ctx, kind, target, "rollback", full=False)
