"""The release flow: challenger → image → staging → checks → [a shadow, canary steps] → [a person's approval] →
production and `champion`; rollback; and the stage flow, which stops after staging (and pushes the image that
passed), for CI on a merge.

A run ends in a state that says what happened: `Promoted` (or `RolledBack`), `Aborted` with the reason when a step
on live traffic failed or the approval was refused, `Failed` for anything else (a staging check, an error).
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.states import Completed, Failed
from prefect.transactions import transaction

from flowship.config import Params  # at run time: Prefect reads the flow's annotations
from flowship.errors import ReleaseAborted, ReleaseError
from flowship.flows.training import context
from flowship.release.checks import Check
from flowship.release.docker_runtime import check_registry
from flowship.release.live import LiveStep
from flowship.release.promotion import ReleaseResult, ReleaseTarget, StageResult
from flowship.tasks import release
from flowship.tasks.common import Context

STRATEGIES = ("direct", "canary", "shadow")


def _stage_and_promote(
    ctx: Context, kind: str, target: ReleaseTarget, action: str, full: bool, live: str | None = "direct"
) -> ReleaseResult:
    """Bundle and image of `target`, staging and its checks, then live traffic as `live` says (None: as
    `release.strategy` says): canary steps (after a shadow step with `canary.shadow_first`), or the shadow; then
    a person's approval where `release.approval` asks for one; promoted only when every check passed."""
    strategy = ctx.params.release.strategy if live is None else live
    if strategy not in STRATEGIES:
        raise ReleaseError(f"strategy {strategy!r}: allowed values are {', '.join(STRATEGIES)}")
    if strategy != "direct":
        release.check_live_possible(ctx, kind)
    approval = ctx.params.release.approval.before if action == "release" else "none"  # a rollback is not held
    if approval != "none":
        release.check_approval_possible(ctx)
    bundle, image, checks = _staged(ctx, kind, target, action, full)
    # Each step on live traffic and each approval adds its checks in the order they came.
    steps: list[LiveStep] = []
    if strategy != "direct":
        if strategy == "shadow" or ctx.params.release.canary.shadow_first:
            steps.append(release.shadow_step(ctx, kind, target.ref, bundle, image))
            checks = (*checks, *release.live_checks(tuple(steps[-1:])))
        if strategy == "canary" and all(s.passed for s in steps):  # a shadow first must have passed
            for weight in ctx.params.release.canary.step_weights:
                if steps and approval == "each_step":
                    checks = (*checks, _approved(ctx, kind, target, f"canary {weight}%", checks, steps))
                steps.append(release.canary_step(ctx, kind, target.ref, bundle, image, weight))
                checks = (*checks, *release.live_checks(tuple(steps[-1:])))
                if not steps[-1].passed:
                    break
        if not steps[-1].passed:
            release.abort_live_release(ctx, kind, target, tuple(steps))
    if approval != "none":
        checks = (*checks, _approved(ctx, kind, target, "promotion", checks, steps))
    # All or nothing: a step that fails undoes the steps before it (production, `champion`, tags).
    with transaction():
        production = release.start_production(ctx, kind, target.ref, bundle, image)
        release.move_champion(ctx, target)
        release.tag_release(ctx, target, image, checks)
        promoted = release.record_release(ctx, target, production, image, checks, action)
    release.publish_release(ctx, target, promoted, checks, action)
    return ReleaseResult.promoted(target.version, kind, promoted, checks)


def _staged(
    ctx: Context, kind: str, target: ReleaseTarget, action: str, full: bool
) -> tuple[str, str | None, tuple[Check, ...]]:
    """The target's bundle and image (None for a process) in staging, its checks, staging stopped: the bundle, the
    image and the checks, all passed (a failed check is recorded and raises ReleaseCheckFailed)."""
    bundle = release.export_bundle(ctx, target.ref)
    image = release.build_image(ctx, target.ref, bundle) if kind == "docker" else None
    staging = release.start_staging(ctx, kind, target.ref, bundle, image)
    checks = release.verify_staging(ctx, staging, bundle, full=full)
    release.teardown_staging(ctx, kind)
    if not all(c.passed for c in checks):
        release.record_failure(ctx, kind, target, checks, action)
    return bundle, image, checks


def _approved(
    ctx: Context, kind: str, target: ReleaseTarget, before: str, checks: tuple[Check, ...], steps: list[LiveStep]
) -> Check:
    """A person's approval before `before`, as a check; a refusal (or no answer in time) ends the release."""
    decision = release.ask_approval(ctx, target, before, checks, tuple(steps))
    if not decision.passed:
        release.reject_release(ctx, kind, target, before, decision)
    return decision


def _ended(run: Any, name: str) -> ReleaseResult:
    """The run's final state named for what happened (`run()` returns a ReleaseResult or raises). Prefect makes a
    state a flow returns its run's final state, and hands its data (or raises its exception) to the caller, so the
    flow's callers still get a ReleaseResult, or the exception."""
    try:
        result: ReleaseResult = run()
    except ReleaseAborted as exc:
        return cast(ReleaseResult, Failed(name="Aborted", message=str(exc), data=exc))
    if not result.released:
        return cast(ReleaseResult, Completed(message=f"v{result.version} already serves", data=result))
    return cast(ReleaseResult, Completed(name=name, message=f"v{result.version} serves in production", data=result))


@flow(name="release", description="Build, stage, verify and promote the challenger (or a named version).")
def release_flow(
    params_path: str = "params.yaml",
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
    strategy: str | None = None,
) -> ReleaseResult:
    """The CLI, which has read and checked params.yaml, hands `params` over: the file is read once per command.
    `strategy` (direct, canary, shadow; None: as `release.strategy` says) says what live traffic the challenger
    gets before promotion."""

    def run() -> ReleaseResult:
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
        return _stage_and_promote(ctx, kind, target, "release", full=True, live=strategy)

    return _ended(run, "Promoted")


@flow(
    name="stage",
    description="Build and stage the challenger (or a named version), verify it, push its image; production untouched.",
)
def stage_flow(
    params_path: str = "params.yaml",
    version: str | None = None,
    push: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
) -> StageResult:
    """Image → staging → the release's staging checks → staging stopped; when every check passed, the image is
    pushed to the registry `push` (e.g. ghcr.io/acme) and the version tagged with it. A failed check raises
    ReleaseCheckFailed (recorded as a release that stopped in staging) and pushes nothing."""
    ctx = context(params_path, overrides, params)
    if push is not None:
        check_registry(push)  # a registry name that cannot work ends the run before any work
    kind = release.choose_runtime(ctx)
    if push is not None and kind != "docker":
        raise ReleaseError(f"--push {push}: an image needs a Docker daemon, and none answers")
    target = release.resolve_release(ctx, version)
    _, image, checks = _staged(ctx, kind, target, "stage", full=True)
    pushed = release.push_image(ctx, image, push) if push is not None and image is not None else None
    release.record_staged(ctx, target, checks, pushed)
    return StageResult(target.version, kind, image, checks, pushed)


@flow(name="rollback", description="Serve the previous champion (or a named version) again, health-checked first.")
def rollback_flow(
    params_path: str = "params.yaml",
    to_version: str | None = None,
    overrides: dict[str, Any] | None = None,
    params: Params | None = None,
) -> ReleaseResult:
    """The CLI, which has read and checked params.yaml, hands `params` over: the file is read once per command."""

    def run() -> ReleaseResult:
        ctx = context(params_path, overrides, params)
        kind = release.choose_runtime(ctx)
        target = release.resolve_release(ctx, release.rollback_target(ctx, to_version))
        return _stage_and_promote(ctx, kind, target, "rollback", full=False)

    return _ended(run, "RolledBack")
