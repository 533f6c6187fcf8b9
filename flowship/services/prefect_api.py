"""Registering the deployments of deployments/prefect.yaml on a Prefect server, for one environment: the work
pool, the zombie-run automation, `prefect deploy`, and what the server then holds."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from flowship.errors import FlowshipError

# The Prefect deployments (Prefect's own prefect.yaml format), relative to the project root.
PREFECT_FILE = Path("deployments") / "prefect.yaml"
MONITORING_ENTRYPOINT = "flowship/flows/monitoring.py:monitoring"


class DeployError(FlowshipError):
    """The deployments could not be read or registered."""


def _load(root: Path) -> dict[str, Any]:
    path = root / PREFECT_FILE
    try:
        text = path.read_text()
    except OSError:
        raise DeployError(f"no {PREFECT_FILE} in {root}: the deployments are declared there") from None
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML ({exc})") from None
    return spec if isinstance(spec, dict) else {}


def _chosen(spec: dict[str, Any], env: str) -> list[dict[str, Any]]:
    deployments = spec.get("deployments") or []
    names = sorted({str(d["name"]) for d in deployments if isinstance(d, dict) and d.get("name") is not None})
    chosen = [d for d in deployments if isinstance(d, dict) and d.get("name") == env]
    if not chosen:
        raise DeployError(f"no deployment named {env!r} in {PREFECT_FILE}; environments declared there: {names}")
    return chosen


def declared(root: Path, env: str) -> list[dict[str, Any]]:
    """The deployments of one environment (those named after it), as `prefect deploy` will read them."""
    return _chosen(_load(root), env)


def environment_file(root: Path, env: str) -> Path:
    """deployments/prefect.yaml cut to one environment (anchors resolved), for `prefect deploy --all`."""
    spec = _load(root)
    spec["deployments"] = _chosen(spec, env)
    spec.pop("definitions", None)
    out = root / ".flowship" / f"deployments-{env}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Generated from {PREFECT_FILE} for the {env!r} environment by flowship; edit that file instead.\n"
        + yaml.safe_dump(spec, sort_keys=False)
    )
    return out


def ensure_process_pool(name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            return "process, created"
    if pool.type != "process":
        raise DeployError(f"work pool {name!r} exists with type {pool.type!r}; the deployments need a 'process' pool")
    return "process, exists"


def ensure_zombie_automation(name: str, crash_after_s: int, keep: bool = False) -> tuple[str, int]:
    """An automation that marks a flow run Crashed when its heartbeats stop (its process or machine died
    without reporting), as Prefect documents for self-hosted servers; one per server, by name: created, or
    updated when it waits another time than `crash_after_s` (unless `keep`: then an existing one stays).
    Returns what was done and the seconds it waits."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = AutomationCore(
        name=name,
        description="A flow run that stops sending heartbeats (its process was killed) is marked Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {crash_after_s} s: the run's process or its machine went away.",
            )
        ],
    )
    # Through the synchronous client: `Automation.read/create` dispatch on the caller's context, and return a
    # coroutine (that nobody would await: no automation) when called where an event loop runs.
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(name)
        if not found:
            client.create_automation(wanted)
            return "created", crash_after_s
        within = getattr(found[0].trigger, "within", None)
        seconds = round(within.total_seconds()) if within is not None else None
        if seconds is not None and (keep or seconds == crash_after_s):
            return "exists", seconds
        client.update_automation(found[0].id, wanted)
        return (f"updated from {seconds} s" if seconds is not None else "updated"), crash_after_s


def register(root: Path, env: str, interval: int | None = None) -> list[tuple[str, str]]:
    """`prefect deploy` of one environment's deployments on the server named by PREFECT_API_URL; returns each
    deployment as the server now holds it (flow/name, schedule)."""
    prefect_file = environment_file(root, env)
    chosen = yaml.safe_load(prefect_file.read_text())["deployments"]
    # `prefect deploy` writes FLOWSHIP_ROOT into the deployments' pull step: runs start in this folder.
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "prefect", "deploy", "--all", "--prefect-file", str(prefect_file), "--no-prompt"],
        cwd=root,
        env={**os.environ, "FLOWSHIP_ROOT": str(root)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise DeployError(f"`prefect deploy` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return registered(chosen, interval)


def registered(chosen: list[dict[str, Any]], interval: int | None) -> list[tuple[str, str]]:
    """Each chosen deployment as the server now holds it (flow/name, schedule); with `interval`, the monitoring
    deployment's schedules replaced by that interval (the server then drops the runs the old ones had planned)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleUpdate, DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    wanted = {(d["name"], d["entrypoint"]) for d in chosen}
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=sorted({n for n, _ in wanted})))
        )
        lines = []
        for d in sorted((d for d in found if (d.name, d.entrypoint) in wanted), key=lambda d: d.entrypoint or ""):
            schedules = [s.schedule for s in d.schedules if s.active]
            if interval is not None and d.entrypoint == MONITORING_ENTRYPOINT:
                schedules = [IntervalSchedule(interval=timedelta(seconds=interval))]
                update = [DeploymentScheduleUpdate(schedule=schedules[0], active=True)]
                client.update_deployment(d.id, DeploymentUpdate(schedules=update))
            name = f"{client.read_flow(d.flow_id).name}/{d.name}"
            texts = [
                f"every {s.interval.total_seconds():g} s"
                if isinstance(s, IntervalSchedule)
                else f"cron '{s.cron}' ({s.timezone})"
                if isinstance(s, CronSchedule)
                else str(s)
                for s in schedules
            ]
            inactive = [s for s in d.schedules if not s.active]
            manual = "no schedule: start it from the UI or `prefect deployment run " + name + "`"
            text = ", ".join(texts) or manual
            if inactive and not texts:
                text += f" ({len(inactive)} schedule(s) declared, off: turn on in the UI)"
            lines.append((name, text))
    return lines


def cancel_running(timeout: float = 30.0) -> list[str]:
    """Cancel the flow runs that are still running or about to (so stopping the worker leaves no run behind),
    and wait for the worker to end them; returns their names."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    active = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=active)
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(message="flowship down"), force=True)
        ending = FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id for run in runs]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING])
            ),
        )
        deadline = time.monotonic() + timeout
        while runs and time.monotonic() < deadline and client.read_flow_runs(flow_run_filter=ending):
            time.sleep(0.5)
    return [run.name for run in runs]


def online_workers(pool: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sum(1 for w in client.read_workers_for_work_pool(pool) if str(w.status).upper().endswith("ONLINE"))
