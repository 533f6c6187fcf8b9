"""`flowship stage`, `deploy`, `rollback`, `pause`, `resume`, `history` and `stop`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flowship.cli.common import (
    ParamsOption,
    check_estimator,
    check_params,
    environment,
    fail,
    read_params,
    ready_for_flows,
    runtimes,
)
from flowship.errors import FlowshipError
from flowship.release.runtime import ROLES, Deployed
from flowship.services import temporary_api

if TYPE_CHECKING:
    from flowship.config import Params
    from flowship.release.gateway_runtime import GatewayRuntime


CANDIDATE_HELP = "The version registered from this commit's pipeline (its dvc.lock), not the challenger alias."


def _version_of(root: Path, cfg: Params, version: str | None, candidate: bool) -> str | None:
    """--version, or with --candidate the version `flowship train` registered from the working tree's dvc.lock."""
    if not candidate:
        return version
    if version is not None:
        fail("--version and --candidate: choose one")
    from flowship.pipeline.rerun import registered_candidate

    try:
        return registered_candidate(root, cfg.project.name)
    except FlowshipError as exc:
        fail(f"--candidate: {exc}")


def stage(
    params: ParamsOption = Path("params.yaml"),
    version: str | None = typer.Option(None, "--version", help="Stage this version instead of the challenger."),
    candidate: bool = typer.Option(False, "--candidate", help=CANDIDATE_HELP),
    push: str | None = typer.Option(
        None, "--push", metavar="REGISTRY", help="Push the image once staging passes (e.g. ghcr.io/acme)."
    ),
) -> None:
    """Build and stage the challenger, run the release's staging checks, stop staging; push the image when every
    check passed. Production is not touched (what CI runs on a merge)."""
    path = params.resolve()
    cfg = read_params(path)
    if push is not None:
        from flowship.release.docker_runtime import check_registry

        try:
            check_registry(push)
        except FlowshipError as exc:
            fail(f"--push: {exc}")
    environment(path.parent)
    os.chdir(path.parent)
    version = _version_of(path.parent, cfg, version, candidate)
    temporary_api.start_soon(path.parent)  # before Prefect is imported, which then reads its URL
    from flowship.flows.release import stage_flow

    try:
        ready_for_flows(path.parent)
        result = stage_flow(params_path=str(path), version=version, push=push, params=cfg)
    except FlowshipError as exc:
        fail(str(exc))
    for c in result.checks:
        typer.echo(f"check:         {c.name:<11} {'passed' if c.passed else 'FAILED'}  {c.detail}")
    typer.echo(f"staging:       v{result.version} passed every check ({result.runtime}); staging stopped")
    if result.image:
        typer.echo(f"image:         {result.image}")
    if result.pushed:
        typer.echo(f"pushed:        {result.pushed}")
    elif push is None:
        typer.echo("pushed:        nothing (no --push REGISTRY)")


def deploy(
    params: ParamsOption = Path("params.yaml"),
    version: str | None = typer.Option(None, "--version", help="Release this version instead of the challenger."),
    candidate: bool = typer.Option(False, "--candidate", help=CANDIDATE_HELP),
    full: bool = typer.Option(False, "--full", help="Run the release flow even when the challenger already serves."),
    canary: bool = typer.Option(False, "--canary", help="Live traffic in steps before promotion (release.canary)."),
    shadow: bool = typer.Option(
        False, "--shadow", help="A copy of live traffic first, answers compared (release.shadow)."
    ),
    direct: bool = typer.Option(False, "--direct", help="Production switches once staging passes."),
) -> None:
    """Release the challenger: image → staging → checks (health, golden set, bad input, latency) → production."""
    chosen = [name for name, on in (("canary", canary), ("shadow", shadow), ("direct", direct)) if on]
    if len(chosen) > 1:
        fail(f"--{' and --'.join(chosen)}: choose one strategy")
    path = params.resolve()
    # Read once; the estimator check (it imports scikit-learn) only when there is something to release.
    cfg = read_params(path, check_estimator=False)
    environment(path.parent)
    os.chdir(path.parent)
    version = _version_of(path.parent, cfg, version, candidate)
    release(path, cfg, version, full, chosen[0] if chosen else None)


def release(path: Path, cfg: Params, version: str | None, full: bool, strategy: str | None) -> None:
    """`flowship deploy` once its params are read and the command runs in the project."""
    if not full and version is None:
        serving = _challenger_already_serving(path.parent, cfg)
        if serving is not None:
            typer.echo(f"production:    v{serving.version} (champion and challenger) already serves at {serving.url}")
            typer.echo("               nothing to release")
            _reconfigure_gateway(path.parent, cfg)
            typer.echo(f"try:           {_example_request(path.parent, cfg, serving.url, serving.version)}")
            return
    temporary_api.start_soon(path.parent)  # starts while the checks run and the flow's modules load
    check_estimator(cfg)
    _safety_checklist(path.parent, cfg)
    from flowship.flows.release import release_flow

    try:
        ready_for_flows(path.parent)
        result = release_flow(params_path=str(path), version=version, params=cfg, strategy=strategy)
    except FlowshipError as exc:
        fail(str(exc))
    production = result.production
    if result.runtime == "process":
        if cfg.gateway.enabled and _gateway_runtime(path.parent, cfg).behind_gateway:
            typer.echo("runtime:       serving as local processes behind this host's nginx: no image")
        else:
            typer.echo("runtime:       serving as a local process on the production port: no image, no gateway")
    if not result.released:
        typer.echo(f"production:    v{result.version} already serves at {production.url}: nothing to release")
    else:
        for c in result.checks:
            typer.echo(f"check:         {c.name:<11} {'passed' if c.passed else 'FAILED'}  {c.detail}")
        typer.echo(f"production:    v{result.version} at {production.url} (was {_was(result.from_version)})")
        if production.image:
            typer.echo(f"image:         {production.image}")
    _gateway_line(path.parent, cfg)
    typer.echo(f"try:           {_example_request(path.parent, cfg, production.url, result.version)}")


def _safety_checklist(root: Path, cfg: Params) -> None:
    """The pre-release checklist (README: Safety), before any work; a refusal ends the command."""
    from flowship.release.checklist import refusals, safety_checklist

    items = safety_checklist(cfg, root, os.environ)
    marks = {"ok": "ok  ", "warn": "WARN", "refused": "NO  "}
    for item in items:
        typer.echo(f"safety:        {marks[item.status]} {item.name:<10} {item.detail}")
    refused = refusals(items)
    if refused:
        fail("not released: " + "; ".join(f"{item.name}: {item.detail}" for item in refused))


def _example_request(root: Path, cfg: Params, url: str, version: str) -> str:
    from flowship.paths import Layout

    golden = Layout(root).bundle_dir(cfg.project.name, version) / "golden.json"
    record = json.loads(golden.read_text())[0]["features"] if golden.exists() else {}
    return f"curl -s {url}/predict -H 'Content-Type: application/json' -d '{json.dumps(record)}'"


def _was(version: str | None) -> str:
    return f"v{version}" if version else "nothing served before"


def _challenger_already_serving(root: Path, cfg: Params) -> Deployed | None:
    """The production deployment when it runs the version that is both champion and challenger, else None."""
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker

    tracker = Tracker(root)
    try:
        tracker.check_available()
    except FlowshipError:
        return None
    challenger = tracker.version_by_alias(cfg.project.name, CHALLENGER)
    champion = tracker.version_by_alias(cfg.project.name, CHAMPION)
    if challenger is None or champion is None or challenger.version != champion.version:
        return None
    for runtime in runtimes(root, cfg):
        deployed = runtime.deployed("production")
        if deployed is not None and deployed.version == champion.version and deployed.status == "running":
            return deployed
    return None


def rollback(
    params: ParamsOption = Path("params.yaml"),
    to: str | None = typer.Option(None, "--to", help="The version to serve again (default: the previous champion)."),
) -> None:
    """Serve the previous champion (or --to VERSION) again; it is health-checked before the alias moves back."""
    path = params.resolve()
    cfg = read_params(path)
    environment(path.parent)
    os.chdir(path.parent)
    temporary_api.start_soon(path.parent)  # before Prefect is imported, which then reads its URL
    from flowship.flows.release import rollback_flow

    try:
        ready_for_flows(path.parent)
        result = rollback_flow(params_path=str(path), to_version=to, params=cfg)
    except FlowshipError as exc:
        fail(str(exc))
    typer.echo(f"production:    v{result.version} at {result.production.url} (was {_was(result.from_version)})")
    _gateway_line(path.parent, cfg)


def _reconfigure_gateway(root: Path, cfg: Params) -> None:
    """A gateway that serves follows params.yaml's `gateway:` as it is now (a changed limit, a new API key)."""
    if not cfg.gateway.enabled:
        return
    try:
        runtime = _gateway_runtime(root, cfg)
        if not runtime.behind_gateway or runtime.gateway_state() is None:
            return
        changed = runtime.reconfigure()
    except FlowshipError as exc:
        fail(str(exc))
    if changed:
        typer.echo("gateway:       its settings changed in params.yaml: applied (graceful reload)")


def _gateway_line(root: Path, cfg: Params) -> None:
    """What the gateway holds after a release: the serving version's replicas, and the version kept warm."""
    if not cfg.gateway.enabled:
        return
    runtime = _gateway_runtime(root, cfg)
    state = runtime.gateway_state() if runtime.behind_gateway else None
    if state is None:
        return
    where = "in a container" if runtime.gateway is not None and runtime.gateway.kind == "docker" else "on this host"
    warm = "".join(f"; v{w.pool.version} warm until {w.until:%H:%M} UTC" for w in state.warm)
    typer.echo(f"gateway:       nginx {where}, {len(state.stable.backends)} replicas of v{state.stable.version}{warm}")


def _gateway_runtime(root: Path, cfg: Params) -> GatewayRuntime:
    """The runtime a release would use now, with production as params.yaml says (a bad API keys file: a
    ConfigError)."""
    from flowship.release.discovery import gateway_runtime
    from flowship.release.gateway_runtime import ProductionSpec

    return gateway_runtime(root, cfg.project.name, ProductionSpec.from_params(cfg, root))


def history(params: ParamsOption = Path("params.yaml")) -> None:
    """Every promotion and rollback: when, from which version to which, image, check results; and each pause.
    `flowship audit` shows every change to production, with who made it and why."""
    path = check_params(params, check_estimator=False)
    from flowship.release import history as release_history

    events = release_history.read(path.parent)
    if not events:
        typer.echo("no releases yet: run `flowship deploy`")
    for e in events:
        if "to_version" not in e:  # a pause or resume: no version changes hands
            typer.echo(
                f"{e['time']}  {e['action']:<8} {e['outcome']:<6} v{e.get('version') or '-'}  {e.get('reason', '')}"
            )
            continue
        checks = ", ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}" for c in e.get("checks", []))
        typer.echo(
            f"{e['time']}  {e['action']:<8} {e['outcome']:<6} v{e.get('from_version') or '-'} → v{e['to_version']}"
            f"  {e.get('image') or e.get('runtime', '')}  [{checks}]"
        )


def stop(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop what serves this project (production and staging); the champion alias stays."""
    path = params.resolve()
    cfg = read_params(path, check_estimator=False)
    environment(path.parent)
    stopped = 0
    for runtime in runtimes(path.parent, cfg):
        for role in ROLES:
            deployed = runtime.deployed(role)
            if deployed is not None:
                runtime.stop(role)
                stopped += 1
                typer.echo(f"stopped {role}: v{deployed.version} ({deployed.kind} {deployed.ref})")
    if not stopped:
        typer.echo("nothing is serving")


def pause(
    params: ParamsOption = Path("params.yaml"),
    reason: str = typer.Option("paused by an operator", "--reason", help="Said in every answer while paused."),
) -> None:
    """The kill switch: the gateway answers every request with 503 and Retry-After; nothing is stopped."""
    _switch(params, reason)


def resume(params: ParamsOption = Path("params.yaml")) -> None:
    """Undo `flowship pause`: the gateway serves production again."""
    _switch(params, None)


def _switch(params: Path, reason: str | None) -> None:
    path = params.resolve()
    cfg = read_params(path, check_estimator=False)
    environment(path.parent)
    from flowship import audit
    from flowship.release import history as release_history

    root = path.parent
    try:
        runtime = _gateway_runtime(root, cfg)
        was = runtime.gateway_state()
        state = runtime.pause(reason)
    except FlowshipError as exc:
        fail(str(exc))
    audit.record(root, **release_history.switch_event(was, state))
    if reason is None:
        typer.echo(f"production:    v{state.stable.version} serves again at http://127.0.0.1:{state.port}")
    else:
        typer.echo(f"production:    paused ({reason}): every request to http://127.0.0.1:{state.port} gets 503 with "
                   f"Retry-After {cfg.gateway.retry_after_s} s until `flowship resume`")  # fmt: skip
