"""Release tasks: export the challenger, build its image, stage it, verify it, try it on live traffic (canary
steps or a shadow, behind the gateway), promote it, roll back.

Promotion is four steps, each with a rollback hook: run inside one Prefect transaction (as the release flow does),
a failure in a later step undoes the earlier ones, newest first, so production, `champion` and the version's tags
are as they were and the history records nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout, NotPausedError
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as prefect_flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.transactions import Transaction, get_transaction
from pydantic import Field

from flowship import audit
from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker, VersionRef
from flowship.errors import ReleaseAborted, ReleaseCheckFailed, ReleaseError
from flowship.release import discovery, history, http_checks, live, promotion
from flowship.release.checks import Check, summary
from flowship.release.export import already_exported, export_version, guardrails_problem
from flowship.release.gateway_runtime import GatewayRuntime, ProductionSpec
from flowship.release.live import LiveStep
from flowship.release.promotion import PRODUCTION, STAGING, Promotion, ReleaseTarget
from flowship.release.runtime import Deployed, Release, Runtime
from flowship.serving.inference_log import read_inference_log
from flowship.serving.privacy import KEY_VAR, project_key
from flowship.tasks.common import Context, is_transient, run_actor


def serving_env(ctx: Context) -> dict[str, str]:
    """What the serving app started by a release is told: the batch limit, the guardrails' policy, the privacy policy
    with the project's key when it hashes, and from this environment the API token and a drill's fault
    (FLOWSHIP_FAULT_DELAY_MS: the versions released meanwhile answer that much later)."""
    env = {
        "FLOWSHIP_MAX_BATCH": str(ctx.params.release.max_batch),
        "FLOWSHIP_GUARDRAILS": ctx.params.guardrails.model_dump_json(),
        "FLOWSHIP_PRIVACY": ctx.params.privacy.model_dump_json(),
    }
    if ctx.params.privacy.needs_key:
        env[KEY_VAR] = project_key(ctx.layout.privacy_key)
    for name in ("FLOWSHIP_API_TOKEN", "FLOWSHIP_FAULT_DELAY_MS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def runtime_for(ctx: Context, kind: str) -> Runtime:
    return discovery.runtime_for(kind, ctx.root, ctx.params.project.name, serving_env(ctx), production_spec(ctx))


def production_spec(ctx: Context) -> ProductionSpec:
    return ProductionSpec.from_params(ctx.params, ctx.root)


def bundle_dir(ctx: Context, version: str) -> Path:
    return ctx.layout.bundle_dir(ctx.params.project.name, version)


def _remember(**values: Any) -> None:
    """Keep what a rollback hook needs in this task's transaction (none when the task runs outside a flow)."""
    txn = get_transaction()
    if txn is not None:
        for name, value in values.items():
            txn.set(name, value)


@task(name="choose_runtime")
def choose_runtime(ctx: Context) -> str:
    """Docker when a daemon answers; otherwise say so plainly and serve as a local process."""
    choice = discovery.choose_runtime()
    if choice.note is not None:
        log = get_run_logger()
        (log.warning if choice.fallback else log.info)(choice.note)
    return choice.kind


@task(name="resolve_release", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def resolve_release(ctx: Context, version: str | None) -> ReleaseTarget:
    """The version to release: the challenger unless one is named; and the champion it would replace."""
    tracker = Tracker(ctx.root)
    tracker.check_available()
    name = ctx.params.project.name
    if version is None:
        ref = tracker.version_by_alias(name, CHALLENGER)
        if ref is None:
            raise ReleaseError(f"{name} has no {CHALLENGER!r} version yet: run `flowship train` first")
    else:
        ref = tracker.version(name, version)
    champion = tracker.version_by_alias(name, CHAMPION)
    return ReleaseTarget(ref, champion.version if champion else None)


@task(name="export_bundle", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def export_bundle(ctx: Context, ref: VersionRef) -> str:
    """The registered model as a serving bundle (the fitted pipeline, its metadata, golden set and training profile),
    refused when the guardrails' policy names a fallback the model cannot give."""
    dest = bundle_dir(ctx, ref.version)
    if already_exported(dest, ref.version):
        get_run_logger().info("bundle for v%s already exported: %s", ref.version, dest)
    else:
        export_version(Tracker(ctx.root), ref, dest, ctx.params.data.task)
        get_run_logger().info("exported %s v%s to %s", ref.name, ref.version, dest)
    problem = guardrails_problem(dest, ctx.params.guardrails)
    if problem:
        raise ReleaseError(f"v{ref.version} cannot be served with this policy: {problem}")
    return str(dest)


@task(name="build_image", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def build_image(ctx: Context, ref: VersionRef, bundle: str) -> str:
    """The image for this version (reused when its tag exists); the build log goes to the Prefect log."""
    from flowship.release.docker_runtime import build_release_image

    log = get_run_logger()
    return build_release_image(ref, Path(bundle), on_log=lambda line: log.info("build: %s", line))


@task(name="production_now")
def production_now(ctx: Context, kind: str) -> Deployed | None:
    return runtime_for(ctx, kind).deployed(PRODUCTION)


@task(name="start_staging")
def start_staging(ctx: Context, kind: str, ref: VersionRef, bundle: str, image: str | None) -> Deployed:
    release = Release(ref.name, ref.version, Path(bundle), image)
    log_dir = promotion.inference_log_dir(ctx.layout, STAGING)
    deployed = runtime_for(ctx, kind).start(STAGING, release, ctx.params.release.staging_port, log_dir, restart=False)
    get_run_logger().info("staging: v%s at %s (%s)", ref.version, deployed.url, deployed.ref)
    return deployed


@task(name="verify_staging")
def verify_staging(ctx: Context, staging: Deployed, bundle: str, full: bool = True) -> tuple[Check, ...]:
    """Health, the golden set over HTTP, a bad record, the guardrails, p95 latency: every check runs and is
    reported."""
    token = os.environ.get("FLOWSHIP_API_TOKEN")
    checks = http_checks.verify_staging(
        staging.url, Path(bundle), ctx.params.release, token, full, ctx.params.guardrails
    )
    log = get_run_logger()
    for c in checks:
        log.info("check %s: %s (%s)", c.name, "passed" if c.passed else "FAILED", c.detail)
    return tuple(checks)


@task(name="teardown_staging")
def teardown_staging(ctx: Context, kind: str) -> None:
    runtime_for(ctx, kind).stop(STAGING)


@task(name="record_failure", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def record_failure(ctx: Context, kind: str, target: ReleaseTarget, checks: tuple[Check, ...], action: str) -> None:
    """A failed release leaves its numbers in MLflow, a Prefect artifact and the history; then it raises."""
    assert not all(c.passed for c in checks)
    Tracker(ctx.root).set_version_tags(target.name, target.version, promotion.failure_tags(checks))
    create_markdown_artifact(
        key=f"{action}-checks",
        markdown=promotion.checks_markdown(action.capitalize(), target.version, checks, "stopped in staging"),
        description=f"{action} of v{target.version}: failed",
    )
    production = runtime_for(ctx, kind).deployed(PRODUCTION)
    audit.record(ctx.root, actor=run_actor(), **promotion.failure_event(action, target, production, kind, checks))
    raise ReleaseCheckFailed(target.version, [c.as_dict() for c in checks])


@task(name="push_image", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def push_image(ctx: Context, image: str, registry: str) -> str:
    """The image that passed staging, pushed to `registry`: its name and digest there."""
    from flowship.adapters.docker_engine import DockerEngine
    from flowship.release.docker_runtime import registry_name

    repository, tag = registry_name(image, registry)
    pushed = DockerEngine().push(image, repository, tag)
    get_run_logger().info("pushed %s as %s", image, pushed)
    return pushed


@task(name="record_staged", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def record_staged(ctx: Context, target: ReleaseTarget, checks: tuple[Check, ...], pushed: str | None) -> None:
    """A version that passed staging carries the checks' numbers (and where its image was pushed) in MLflow and in
    a Prefect artifact; production is not touched, so the audit log has nothing to record."""
    Tracker(ctx.root).set_version_tags(target.name, target.version, promotion.staged_tags(checks, pushed))
    where = f"image pushed: `{pushed}`" if pushed else "image not pushed"
    create_markdown_artifact(
        key="stage-checks",
        markdown=promotion.checks_markdown("Staging", target.version, checks, f"passed ({where})"),
        description=f"staging of v{target.version}: passed",
    )


# --- promotion: each step undoes itself when a later step of the same transaction fails ---


@task(name="start_production", retries=0)
def start_production(ctx: Context, kind: str, ref: VersionRef, bundle: str, image: str | None) -> Deployed:
    """Production runs the new version and answers; a failed start brings the old one back."""
    runtime = runtime_for(ctx, kind)
    previous = promotion.previous_release(ctx.layout, runtime.deployed(PRODUCTION))
    new = Release(ref.name, ref.version, Path(bundle), image)
    _remember(ctx=ctx, kind=kind, previous=previous, new=new)
    cfg = ctx.params.release
    return promotion.start_production(
        runtime,
        new,
        previous,
        cfg.production_port,
        promotion.inference_log_dir(ctx.layout, PRODUCTION),
        cfg.health_timeout_s,
    )


@start_production.on_rollback
def _restore_production(txn: Transaction) -> None:
    ctx: Context = txn.get("ctx")
    previous: Release | None = txn.get("previous")
    cfg = ctx.params.release
    log_dir = promotion.inference_log_dir(ctx.layout, PRODUCTION)
    runtime = runtime_for(ctx, txn.get("kind"))
    promotion.restore_production(runtime, previous, txn.get("new"), cfg.production_port, log_dir, cfg.health_timeout_s)


@task(name="move_champion", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def move_champion(ctx: Context, target: ReleaseTarget) -> None:
    _remember(ctx=ctx, target=target)
    promotion.move_champion(Tracker(ctx.root), target)


@move_champion.on_rollback
def _restore_champion(txn: Transaction) -> None:
    ctx: Context = txn.get("ctx")
    promotion.restore_champion(Tracker(ctx.root), txn.get("target"))


@task(name="tag_release", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def tag_release(ctx: Context, target: ReleaseTarget, image: str | None, checks: tuple[Check, ...]) -> None:
    """The verdict, the image and the checks on the version, for the registry to show."""
    tags = promotion.release_tags(target, image, checks)
    before = promotion.set_tags(Tracker(ctx.root), target.ref, tags)
    _remember(ctx=ctx, ref=target.ref, before=before)


@tag_release.on_rollback
def _restore_tags(txn: Transaction) -> None:
    ctx: Context = txn.get("ctx")
    promotion.restore_tags(Tracker(ctx.root), txn.get("ref"), txn.get("before"))


@task(name="record_release")
def record_release(
    ctx: Context, target: ReleaseTarget, production: Deployed, image: str | None, checks: tuple[Check, ...], action: str
) -> Promotion:
    """The history entry (and a `guardrails` entry when the policy production gets changed), written together: the
    last step, so the history names only promotions that stand."""
    policy = ctx.params.guardrails.model_dump(mode="json")
    event = promotion.release_event(action, target, production, image, checks, policy)
    entries = history.promotion_entries(history.read(ctx.root), event, run_actor())
    audit.append(ctx.root, entries)
    return Promotion(production, target.champion, str(entries[0]["time"]))


@task(name="publish_release")
def publish_release(
    ctx: Context, target: ReleaseTarget, promoted: Promotion, checks: tuple[Check, ...], action: str
) -> None:
    """The checks as a Prefect artifact, once the promotion stands."""
    url = promoted.production.url
    create_markdown_artifact(
        key=f"{action}-checks",
        markdown=promotion.checks_markdown(action.capitalize(), target.version, checks, f"in production at {url}"),
        description=f"{action} of v{target.version}: done",
    )
    get_run_logger().info(
        "production: v%s at %s; champion v%s (was %s)", target.version, url, target.version, promoted.from_version
    )


@task(name="rollback_target")
def rollback_target(ctx: Context, to_version: str | None) -> str:
    """The named version, or the champion before the current one (from the history)."""
    if to_version is not None:
        return to_version
    tracker = Tracker(ctx.root)
    champion = tracker.version_by_alias(ctx.params.project.name, CHAMPION)
    current = champion.version if champion else None
    target = history.previous_champion(ctx.root, current)
    if target is None:
        raise ReleaseError(
            f"no previous champion recorded before v{current}: name the version to go back to with --to VERSION"
        )
    return target


# --- canary: live traffic in steps, each judged against stable on the same traffic ---


def _gateway_runtime(ctx: Context, kind: str) -> GatewayRuntime:
    runtime = runtime_for(ctx, kind)
    if not isinstance(runtime, GatewayRuntime) or not runtime.behind_gateway:
        why = "gateway.enabled is false" if not ctx.params.gateway.enabled else "no Docker daemon and no nginx here"
        raise ReleaseError(f"a canary or shadow release needs production behind the gateway, and {why}")
    return runtime


@task(name="check_live_possible")
def check_live_possible(ctx: Context, kind: str) -> None:
    """Before staging: a canary or a shadow needs the gateway, and something serving behind it to compare with."""
    runtime = _gateway_runtime(ctx, kind)
    if runtime.gateway_state() is None:
        raise ReleaseError("nothing serves behind the gateway yet: release the first version directly")


@task(name="canary_step", task_run_name="canary-{weight}pct")
def canary_step(ctx: Context, kind: str, ref: VersionRef, bundle: str, image: str | None, weight: float) -> LiveStep:
    """`weight` percent of live traffic on the challenger for at least `interval_s` and `min_requests` of its answers
    (at most `max_wait_s`), then judged against stable on that step's traffic."""
    runtime = _gateway_runtime(ctx, kind)
    cfg = ctx.params.release.canary
    access = runtime.require_gateway().access_log
    offset = access.stat().st_size if access.exists() else 0
    release = Release(ref.name, ref.version, Path(bundle), image)
    before = runtime.gateway_state()
    state = runtime.set_canary(release, weight, promotion.inference_log_dir(ctx.layout, PRODUCTION))
    was = before.canary_share(ref.version) if before is not None else 0.0
    audit.record(ctx.root, "canary", actor=run_actor(), from_=was, to=float(weight), version=ref.version)
    started, began = datetime.now(UTC), time.monotonic()
    while True:
        time.sleep(1.0)
        lines = live.read_access_log(access, offset)
        seconds = time.monotonic() - began
        alive = runtime.canary_alive()
        own = live.traffic(lines, "canary", answered_elsewhere=state.stable.version)
        if not alive or (seconds >= cfg.interval_s and own.requests >= cfg.min_requests) or seconds >= cfg.max_wait_s:
            break
    records, _ = read_inference_log(ctx.layout.inference_log_dir, started, datetime.now(UTC))
    versions = records["model_version"].astype(str)
    distance = live.prediction_distance(
        list(records.loc[versions == ref.version, "prediction"]),
        list(records.loc[versions == state.stable.version, "prediction"]),
        ctx.params.data.task,
    )
    measure = live.StepMeasure(weight, seconds, own, live.traffic(lines, "stable"), distance)
    replicas = Check("canary_replicas", alive, "every canary replica ran" if alive else "a canary replica stopped")
    return _reported(live.LiveStep(f"canary {weight:g}%", measure, (replicas, *live.judge_step(measure, cfg))), ref)


@task(name="shadow_step")
def shadow_step(ctx: Context, kind: str, ref: VersionRef, bundle: str, image: str | None) -> LiveStep:
    """A copy of every live request for the challenger (clients get stable's answers only) until `min_requests`
    records were answered by both (at most `max_wait_s`); then the copies stop and the answers are compared."""
    runtime = _gateway_runtime(ctx, kind)
    cfg = ctx.params.release.shadow
    access, shadow_log = runtime.require_gateway().access_log, runtime.require_gateway().shadow_log
    offsets = [path.stat().st_size if path.exists() else 0 for path in (access, shadow_log)]
    release = Release(ref.name, ref.version, Path(bundle), image)
    state = runtime.set_shadow(release, ctx.layout.shadow_inference_log_dir)
    audit.record(ctx.root, "shadow", actor=run_actor(), from_="off", to="on", version=ref.version)
    started, began = datetime.now(UTC), time.monotonic()
    try:
        while True:
            time.sleep(1.0)
            answered = [e for e in live.read_access_log(shadow_log, offsets[1]) if e.get("status") == "200"]
            seconds = time.monotonic() - began
            alive = runtime.shadow_alive()
            if not alive or len(answered) >= cfg.min_requests * 1.1 or seconds >= cfg.max_wait_s:
                break
    finally:
        runtime.clear_shadow()  # a shadow never serves: its replicas go, pass or fail
        audit.record(ctx.root, "shadow", actor=run_actor(), from_="on", to="off", version=ref.version)
    until = datetime.now(UTC)
    stable, _ = read_inference_log(ctx.layout.inference_log_dir, started, until)
    copies, _ = read_inference_log(ctx.layout.shadow_inference_log_dir, started, until)
    stable = stable[stable["model_version"].astype(str) == state.stable.version]
    compared, agreement, largest, difference = live.compare_answers(stable, copies, ctx.params.data.task)
    measure = live.ShadowMeasure(
        seconds,
        compared,
        agreement,
        largest,
        difference,
        live.upstream_p99(live.read_access_log(shadow_log, offsets[1])),
        live.upstream_p99(live.read_access_log(access, offsets[0]), pool="stable"),
    )
    replicas = Check("shadow_replicas", alive, "every shadow replica ran" if alive else "a shadow replica stopped")
    return _reported(live.LiveStep("shadow", measure, (replicas, *live.judge_shadow(measure, cfg))), ref)


def _reported(step: LiveStep, ref: VersionRef) -> LiveStep:
    """Each check in the run's log, the step as an artifact."""
    log = get_run_logger()
    for c in step.checks:
        log.info("%s: %s %s (%s)", step.name, c.name, "passed" if c.passed else "FAILED", c.detail)
    create_markdown_artifact(
        key=f"live-{step.name.replace(' ', '-').replace('%', 'pct')}",
        markdown=live.steps_markdown(ref.version, [step], f"{step.name} {'passed' if step.passed else 'failed'}"),
        description=f"v{ref.version}: {step.name}",
    )
    return step


@task(name="abort_live_release", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def abort_live_release(ctx: Context, kind: str, target: ReleaseTarget, steps: tuple[LiveStep, ...]) -> None:
    """All traffic back to stable (a canary's replicas gone; a shadow's went when its step ended), the numbers kept
    (version tags, artifact, history); the aliases are untouched. Raises ReleaseAborted."""
    runtime = _gateway_runtime(ctx, kind)
    failed = steps[-1]
    reason = summary(list(failed.checks))[1]
    _clear_canary(ctx, runtime, f"{failed.name}: {reason}")
    checks = live_checks(steps)
    Tracker(ctx.root).set_version_tags(target.name, target.version, promotion.failure_tags(checks))
    create_markdown_artifact(
        key="live-steps",
        markdown=live.steps_markdown(target.version, steps, f"aborted at {failed.name}"),
        description=f"v{target.version} on live traffic: aborted",
    )
    action = failed.name.split()[0]  # canary, shadow
    audit.record(
        ctx.root,
        action,
        actor=run_actor(),
        reason=reason,
        action=action,
        outcome="aborted",
        version=target.version,
        from_version=target.champion,
        to_version=target.version,
        steps=[s.as_dict() for s in steps],
    )
    raise ReleaseAborted(target.version, failed.name, [c.as_dict() for c in failed.checks])


def _clear_canary(ctx: Context, runtime: GatewayRuntime, reason: str) -> None:
    """No live traffic to a canary any more (none serving: nothing to do); its share back to stable is an entry in
    the audit log."""
    state = runtime.gateway_state()
    if state is None or state.canary is None:
        return
    runtime.clear_canary()
    was, version = state.canary_weight, state.canary.version
    audit.record(ctx.root, "canary", actor=run_actor(), from_=was, to=0.0, version=version, reason=reason)


def live_checks(steps: tuple[LiveStep, ...]) -> tuple[Check, ...]:
    """Every step's checks, each named with its step."""
    return tuple(replace(c, name=f"{s.name} {c.name}") for s in steps for c in s.checks)


# --- a person's decision ---

APPROVAL_POLL_S = 2  # how often a paused release asks the Prefect server whether it was resumed
APPROVAL_GRACE_S = 3600  # Prefect's own timeout beyond ours: fails a paused run whose process died
UNANSWERED = "(no decision in time)"  # who refused, when nobody decided


class Decision(RunInput):
    """The form a paused release shows in the Prefect UI (Resume)."""

    approve: bool = Field(default=False, description="Tick to approve; leave unticked to reject.")
    by: str = Field(min_length=1, max_length=200, description="Who decides: kept with the release's history.")
    comment: str = Field(default="", max_length=2000, description="Why (optional).")


@task(name="check_approval_possible")
def check_approval_possible(ctx: Context) -> None:
    """Before any work: an approval needs a Prefect server whose UI the approver can open (not the temporary one
    Prefect starts in-process when none is configured)."""
    if ctx.params.release.approval.before != "none" and not PREFECT_API_URL.value():
        raise ReleaseError(
            f"release.approval.before is {ctx.params.release.approval.before!r}: a person approves in the Prefect "
            "UI, and no Prefect server is configured (PREFECT_API_URL); start one with `flowship up`, or set "
            "release.approval.before: none"
        )


@task(name="approval", task_run_name="approval-before-{before}")
def ask_approval(
    ctx: Context, target: ReleaseTarget, before: str, checks: tuple[Check, ...], steps: tuple[LiveStep, ...]
) -> Check:
    """Pause the flow run until someone resumes it in the Prefect UI with a `Decision` (at most
    `release.approval.timeout_s`: no decision by then is a rejection). The form shows every check so far."""
    cfg = ctx.params.release.approval
    title = f"v{target.version}: approve before {before}?"
    shown = promotion.checks_markdown("Release", target.version, checks, "passed its checks")
    if steps:
        shown += "\n" + live.steps_markdown(target.version, list(steps), "on live traffic so far")
    ui = PREFECT_UI_URL.value()
    where = f"{ui}/runs/flow-run/{prefect_flow_run.id}" if ui else "in the Prefect UI"
    get_run_logger().warning("%s waiting up to %d s for a decision: Resume the run at %s", title, cfg.timeout_s, where)
    # The timeout is ours: when it is up, the run is resumed with a refusal, as a person would; Prefect's own,
    # later, only fails a run whose process is gone (its server would otherwise fail the run itself, and the
    # refusal could not be recorded).
    run_id = prefect_flow_run.id
    timer = threading.Timer(cfg.timeout_s, _refuse_unanswered, args=(run_id, cfg.timeout_s))
    timer.daemon = True
    timer.start()
    try:
        decision = pause_flow_run(
            wait_for_input=Decision.with_initial_data(description=f"# {title}\n\n{shown}", approve=False),
            timeout=cfg.timeout_s + APPROVAL_GRACE_S,
            poll_interval=APPROVAL_POLL_S,
        )
    except FlowPauseTimeout:
        return Check("approval", False, f"no decision within {cfg.timeout_s} s")
    finally:
        timer.cancel()
    if decision.by == UNANSWERED:
        return Check("approval", False, f"no decision within {cfg.timeout_s} s")
    verdict = "approved" if decision.approve else "rejected"
    detail = f"{verdict} by {decision.by}" + (f" ({decision.comment})" if decision.comment else "")
    return Check("approval", decision.approve, detail)


def _refuse_unanswered(run_id: str, seconds: int) -> None:
    """Resume the paused run `run_id` with a refusal (its approval's time is up), unless someone just decided."""
    try:
        resume_flow_run(UUID(run_id), run_input={"approve": False, "by": UNANSWERED, "comment": f"{seconds} s"})
    except (NotPausedError, RuntimeError):
        pass  # decided meanwhile: their decision stands


@task(name="reject_release", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def reject_release(ctx: Context, kind: str, target: ReleaseTarget, before: str, decision: Check) -> None:
    """Production as it was (a canary's share back to stable), the decision kept (version tags, history).
    Raises ReleaseAborted."""
    runtime = runtime_for(ctx, kind)
    if isinstance(runtime, GatewayRuntime):
        _clear_canary(ctx, runtime, f"approval before {before}: {decision.detail}")
    Tracker(ctx.root).set_version_tags(target.name, target.version, promotion.failure_tags((decision,)))
    audit.record(
        ctx.root,
        "approval",
        actor=run_actor(),
        reason=decision.detail,
        action="approval",
        outcome="rejected",
        version=target.version,
        from_version=target.champion,
        to_version=target.version,
        before=before,
    )
    raise ReleaseAborted(target.version, f"approval before {before}", [decision.as_dict()])
