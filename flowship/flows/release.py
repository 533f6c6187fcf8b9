"""The release flow: challenger → image → staging → checks → production and `champion`; and rollback."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flowship.flows.training import context
from flowship.tasks import release
from flowship.tasks.common import Context


def _stage_and_promote(ctx: Context, kind: str, ref: dict[str, Any], action: str, full: bool) -> dict[str, Any]:
    """Bundle and image of `ref`, staging and its checks; promoted only when every check passed."""
    bundle = release.export_bundle(ctx, ref)
    image = release.build_image(ctx, ref, bundle) if kind == "docker" else None
    staging = release.start_staging(ctx, kind, ref, bundle, image)
    checks = release.verify_staging(ctx, staging, bundle, full=full)
    release.teardown_staging(ctx, kind)
    if not all(c["passed"] for c in checks):
        release.record_failure(ctx, kind, ref, checks, action)
    promoted = release.promote(ctx, kind, ref, bundle, image, checks, action)
    return {"version": ref["version"], "released": True, "production": promoted, "runtime": kind, "checks": checks}


@flow(name="release", description="Build, stage, verify and promote the challenger (or a named version).")
def release_flow(
    params_path: str = "params.yaml", version: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    ctx = context(params_path, overrides)
    kind = release.choose_runtime(ctx)
    ref = release.resolve_release(ctx, version)
    production = release.production_now(ctx, kind)
    serving = production is not None and production.status == "running"
    if serving and production.version == ref["version"] and ref["champion"] == ref["version"]:
        return {"version": ref["version"], "released": False, "production": production.as_dict(), "runtime": kind}
    return _stage_and_promote(ctx, kind, ref, "release", full=True)


@flow(name="rollback", description="Serve the previous champion (or a named version) again, health-checked first.")
def rollback_flow(
    params_path: str = "params.yaml", to_version: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    ctx = context(params_path, overrides)
    kind = release.choose_runtime(ctx)
    target = release.rollback_target(ctx, to_version)
    ref = release.resolve_release(ctx, target)
    return _stage_and_promote(ctx, kind, ref, "rollback", full=False)
