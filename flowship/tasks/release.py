"""Release tasks: export the challenger, build its image, stage it, verify it, promote it, roll back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flowship.adapters.tracking import CHALLENGER, CHAMPION, TAG, Tracker
from flowship.errors import ReleaseCheckFailed, ReleaseError
from flowship.release import history
from flowship.release import http_checks as probe
from flowship.release.checks import Check, summary
from flowship.release.runtime import Deployed, ProcessRuntime, Release, Runtime
from flowship.tasks.common import Context, is_transient

STAGING, PRODUCTION = "staging", "production"


def bundle_dir(ctx: Context, version: str) -> Path:
    return ctx.root / "build" / f"{ctx.params.project.name}-v{version}" / "model"


def inference_log_dir(ctx: Context, role: str) -> Path:
    return ctx.root / "logs" / ("inference" if role == PRODUCTION else "inference-staging")


def serving_env(ctx: Context) -> dict[str, str]:
    env = {"FLOWSHIP_MAX_BATCH": str(ctx.params.release.max_batch)}
    if os.environ.get("FLOWSHIP_API_TOKEN"):
        env["FLOWSHIP_API_TOKEN"] = os.environ["FLOWSHIP_API_TOKEN"]
    return env


def runtime_for(ctx: Context, kind: str) -> Runtime:
    if kind == "docker":
        from flowship.release.docker_runtime import DockerRuntime

        return DockerRuntime(ctx.root, ctx.params.project.name, serving_env(ctx))
    return ProcessRuntime(ctx.root, ctx.params.project.name, serving_env(ctx))


@task(name="choose_runtime")
def choose_runtime(ctx: Context) -> str:
    """Docker when a daemon answers; otherwise say so plainly and serve as a local process.

    FLOWSHIP_RUNTIME=docker|process forces one (docker then fails when no daemon answers).
    """
    from flowship.adapters.docker_engine import DockerEngine

    wanted = os.environ.get("FLOWSHIP_RUNTIME", "auto")
    if wanted not in ("auto", "docker", "process"):
        raise ReleaseError(f"FLOWSHIP_RUNTIME={wanted!r}: allowed values are auto, docker, process")
    if wanted == "process":
        get_run_logger().info("FLOWSHIP_RUNTIME=process: serving as a local process")
        return "process"
    if DockerEngine().available():
        return "docker"
    if wanted == "docker" or os.environ.get("FLOWSHIP_REQUIRE_DOCKER") == "1":
        raise ReleaseError("no Docker daemon answers (FLOWSHIP_RUNTIME=docker or FLOWSHIP_REQUIRE_DOCKER=1 wants one)")
    get_run_logger().warning(
        "no Docker daemon answers: serving the same app as a local process instead (no image is built)"
    )
    return "process"


@task(name="resolve_release", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def resolve_release(ctx: Context, version: str | None) -> dict[str, Any]:
    """The version to release: the challenger unless one is named."""
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
    return {
        "name": name,
        "version": ref.version,
        "run_id": ref.run_id,
        "uri": ref.uri,
        "tags": ref.tags,
        "champion": champion.version if champion else None,
    }


@task(name="export_bundle", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def export_bundle(ctx: Context, ref: dict[str, Any]) -> str:
    """The registered model as a serving bundle: the fitted pipeline, its metadata and golden set."""
    from flowship.serving.bundle import write_bundle

    dest = bundle_dir(ctx, ref["version"])
    meta_file = dest / "metadata.json"
    if meta_file.exists() and json.loads(meta_file.read_text()).get("version") == ref["version"]:
        get_run_logger().info("bundle for v%s already exported: %s", ref["version"], dest)
        return str(dest)
    tracker = Tracker(ctx.root)
    model = tracker.load_model(ref["uri"])
    with tempfile.TemporaryDirectory() as tmp:
        golden_path = tracker.download(ref["uri"], Path(tmp))
        found = sorted(golden_path.rglob("golden.json"))
        golden = json.loads(found[0].read_text()) if found else None
    # From the version itself, not today's params: a rollback may serve a model trained on other features.
    schema = tracker.input_schema(ref["uri"])
    metadata = {
        "name": ref["name"],
        "version": ref["version"],
        "task": ref["tags"].get(f"{TAG}task", ctx.params.data.task),
        "features": {
            "numeric": [f["name"] for f in schema if f["type"] != "string"],
            "categorical": [f["name"] for f in schema if f["type"] == "string"],
        },
        "classes": [c.item() if hasattr(c, "item") else c for c in model.classes_]
        if hasattr(model, "classes_")
        else None,
        "lineage": {k: v for k, v in ref["tags"].items() if k.startswith(TAG) and not k.startswith(f"{TAG}gate.")},
        "input_schema": schema,
    }
    if dest.exists():
        shutil.rmtree(dest)
    write_bundle(dest, model, metadata, golden)
    get_run_logger().info("exported %s v%s to %s", ref["name"], ref["version"], dest)
    return str(dest)


@task(name="build_image", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def build_image(ctx: Context, ref: dict[str, Any], bundle: str) -> str:
    """The image for this version (reused when its tag exists); the build log goes to the Prefect log."""
    from flowship.release.docker_runtime import build_release_image

    log = get_run_logger()
    return build_release_image(ctx.root, ref, Path(bundle), on_log=lambda line: log.info("build: %s", line))


def _release(ref: dict[str, Any], bundle: str, image: str | None) -> Release:
    return Release(name=ref["name"], version=ref["version"], bundle_dir=Path(bundle), image=image)


@task(name="start_staging")
def start_staging(ctx: Context, kind: str, ref: dict[str, Any], bundle: str, image: str | None) -> dict[str, Any]:
    runtime = runtime_for(ctx, kind)
    deployed = runtime.start(
        STAGING,
        _release(ref, bundle, image),
        ctx.params.release.staging_port,
        inference_log_dir(ctx, STAGING),
        restart=False,
    )
    get_run_logger().info("staging: v%s at %s (%s)", ref["version"], deployed.url, deployed.ref)
    return deployed.as_dict()


@task(name="verify_staging")
def verify_staging(ctx: Context, staging: dict[str, Any], bundle: str, full: bool = True) -> list[dict[str, Any]]:
    """Health, the golden set over HTTP, a bad record, p95 latency: every check runs and is reported."""
    cfg = ctx.params.release
    url = staging["url"]
    token = os.environ.get("FLOWSHIP_API_TOKEN")
    checks: list[Check] = [probe.wait_ready(url, cfg.health_timeout_s)]
    golden_file = Path(bundle) / "golden.json"
    if checks[0].passed and full and not golden_file.exists():
        checks.append(Check("golden_set", False, "this model version carries no golden set to replay"))
    elif checks[0].passed and full:
        golden = json.loads(golden_file.read_text())
        checks.append(probe.replay_golden(url, golden, cfg.golden_tolerance, token))
        checks.append(probe.bad_record(url, golden[0]["features"], token))
        checks.append(
            probe.measure_latency(url, golden[0]["features"], cfg.latency_requests, cfg.latency_p95_ms, token)
        )
    log = get_run_logger()
    for c in checks:
        log.info("check %s: %s (%s)", c.name, "passed" if c.passed else "FAILED", c.detail)
    return [c.as_dict() for c in checks]


@task(name="teardown_staging")
def teardown_staging(ctx: Context, kind: str) -> None:
    runtime_for(ctx, kind).stop(STAGING)


def _checks_markdown(title: str, version: str, checks: list[dict[str, Any]], outcome: str) -> str:
    lines = [f"# {title}: v{version} {outcome}", "", "| check | verdict | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['name']} | {'pass' if c['passed'] else '**fail**'} | {c['detail']} |" for c in checks]
    return "\n".join(lines) + "\n"


@task(name="record_failure", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def record_failure(ctx: Context, kind: str, ref: dict[str, Any], checks: list[dict[str, Any]], action: str) -> None:
    """A failed release leaves its numbers in MLflow, a Prefect artifact and the history; then it raises."""
    passed, reasons = summary([Check(**c) for c in checks])
    assert not passed
    Tracker(ctx.root).set_version_tags(
        ref["name"],
        ref["version"],
        {
            f"{TAG}release.verdict": "failed",
            f"{TAG}release.failed_checks": reasons[:4000],
            f"{TAG}release.checks": json.dumps(checks, default=str)[:4900],
        },
    )
    create_markdown_artifact(
        key=f"{action}-checks",
        markdown=_checks_markdown(action.capitalize(), ref["version"], checks, "stopped in staging"),
        description=f"{action} of v{ref['version']}: failed",
    )
    production = runtime_for(ctx, kind).deployed(PRODUCTION)
    history.record(
        ctx.root,
        {
            "action": action,
            "outcome": "failed",
            "from_version": production.version if production else ref.get("champion"),
            "to_version": ref["version"],
            "image": None,
            "runtime": kind,
            "checks": checks,
            "reason": reasons,
        },
    )
    raise ReleaseCheckFailed(ref["version"], checks)


@task(name="promote", retries=0)
def promote(
    ctx: Context,
    kind: str,
    ref: dict[str, Any],
    bundle: str,
    image: str | None,
    checks: list[dict[str, Any]],
    action: str,
) -> dict[str, Any]:
    """Production runs the new version, then `champion` moves to it; a failed start brings the old one back."""
    log = get_run_logger()
    runtime = runtime_for(ctx, kind)
    cfg = ctx.params.release
    previous = runtime.deployed(PRODUCTION)
    new = runtime.start(
        PRODUCTION, _release(ref, bundle, image), cfg.production_port, inference_log_dir(ctx, PRODUCTION), restart=True
    )
    ready = probe.wait_ready(new.url, cfg.health_timeout_s)
    if not ready.passed:
        runtime.stop(PRODUCTION)
        if previous is not None:
            old_bundle = bundle_dir(ctx, previous.version)
            runtime.start(
                PRODUCTION,
                Release(previous.name, previous.version, old_bundle, previous.image),
                cfg.production_port,
                inference_log_dir(ctx, PRODUCTION),
                restart=True,
            )
            probe.wait_ready(previous.url, cfg.health_timeout_s)
        back = f"v{previous.version} serves again" if previous else "nothing served before"
        raise ReleaseError(f"production did not come up with v{ref['version']} ({ready.detail}); {back}")
    tracker = Tracker(ctx.root)
    from_version = ref.get("champion")
    tracker.set_alias(ref["name"], CHAMPION, ref["version"])
    tracker.set_version_tags(
        ref["name"],
        ref["version"],
        {
            f"{TAG}release.verdict": "passed",
            f"{TAG}release.failed_checks": "none",
            f"{TAG}release.image": image or "none (local process)",
            f"{TAG}release.previous_champion": from_version or "none",
            f"{TAG}release.checks": json.dumps(checks, default=str)[:4900],
        },
    )
    entry = history.record(
        ctx.root,
        {
            "action": action,
            "outcome": "done",
            "from_version": from_version,
            "to_version": ref["version"],
            "image": image,
            "runtime": kind,
            "url": new.url,
            "checks": checks,
        },
    )
    create_markdown_artifact(
        key=f"{action}-checks",
        markdown=_checks_markdown(action.capitalize(), ref["version"], checks, f"in production at {new.url}"),
        description=f"{action} of v{ref['version']}: done",
    )
    log.info("production: v%s at %s; champion v%s (was %s)", ref["version"], new.url, ref["version"], from_version)
    return {**new.as_dict(), "from_version": from_version, "time": entry["time"]}


def production_now(ctx: Context, kind: str) -> Deployed | None:
    return runtime_for(ctx, kind).deployed(PRODUCTION)


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
