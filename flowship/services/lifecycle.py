"""What `flowship up`, `down` and `schedule` do: start the servers, the Evidently UI and the worker (recorded before
anyone waits for them), register the work pools, the zombie-run automation and the deployments, and stop it all again.

Each step reports its outcome as it happens through `say`, one line each, worded as the command prints it; what
is left running comes back as a small frozen dataclass. When `start` fails half-way, it stops again what it
started itself, and only that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowship.errors import FlowshipError
from flowship.release.runtime import port_taken
from flowship.services import prefect_api as deploy
from flowship.services import processes as svc
from flowship.services import temporary_api

Say = Callable[[str], None]

SERVERS = ("prefect-server", "mlflow-server")
# The worker first (its runs are cancelled before), the servers it reports to last.
STOP_ORDER = ("worker", svc.DASHBOARD, "mlflow-server", "prefect-server")
START_SERVER = "start one with `flowship up` (or `prefect server start` and PREFECT_API_URL=http://127.0.0.1:4200/api)"


def _quiet(line: str) -> None:
    """The default `say`: report nothing."""


class StartFailed(svc.ServiceError):
    """`flowship up` failed; what it had started itself was stopped again (`undone` says what)."""

    def __init__(self, error: FlowshipError, undone: str) -> None:
        self.error = error
        self.undone = undone
        super().__init__(f"{error}\n{undone}")


@dataclass(frozen=True)
class Ready:
    """What `flowship up` leaves running, and how long it took to get there."""

    prefect_url: str
    mlflow_url: str
    api_url: str
    logs: Path
    seconds: float
    evidently_url: str
    workspace: Path


@dataclass(frozen=True)
class Scheduled:
    """Where `flowship schedule` registered the deployments, and the pool a worker for them takes."""

    api_url: str
    pool: str
    deployments: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Stopped:
    """One process `flowship down` stopped: how (stopped, killed, was not running) and in how many seconds."""

    name: str
    outcome: str
    seconds: float
    pid: int
    log: str


def schedule(root: Path, env: str, interval: int | None, say: Say = _quiet) -> Scheduled:
    """Register one environment's deployments, their work pools and the automation on the Prefect server named by
    PREFECT_API_URL, which must be set and answer (a `ServiceError` says how to start one otherwise)."""
    import httpx

    pools = _pools(root, env)
    api_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not api_url:
        raise svc.ServiceError(f"PREFECT_API_URL is not set: schedules need a Prefect server; {START_SERVER}")
    try:
        httpx.get(f"{api_url}/health", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise svc.ServiceError(
            f"no Prefect server answers at PREFECT_API_URL={api_url} ({exc}); {START_SERVER}"
        ) from exc
    _ensure_pools(pools, say)
    _ensure_automation(None, say)
    say(f"registering:   {deploy.PREFECT_FILE}, environment {env!r}, on {api_url}")
    return Scheduled(api_url, pools[0], _register(root, env, interval, say))


def start(
    root: Path,
    env: str,
    interval: int | None,
    ports: tuple[int, int, int],
    timeout: float,
    workspace: Path,
    say: Say = _quiet,
    warn: Say = _quiet,
    crash_after_s: int | None = None,
) -> Ready:
    """Start (or find running) the Prefect server on `ports[0]`, the MLflow server on `ports[1]`, the Evidently UI on
    `ports[2]` (serving the monitoring checks' `workspace`) and a worker, point this process at them, and register
    one environment's deployments there. A `StartFailed` (or any other exception, after `warn` was told) leaves
    running only what an earlier `flowship up` had started."""
    running: svc.Services | None = None
    started_here: set[str] = set()
    try:
        pools = _pools(root, env)
        began = time.monotonic()
        _retire_temporary_api(root, say)  # the project's runs go to the server from now on
        _check_dashboard_port(root, ports[2])
        running, waiting = _start_servers(root, env, ports[:2], say)
        started_here = set(waiting)
        if _start_dashboard(root, running, workspace, ports[2], say):
            waiting[svc.DASHBOARD] = time.monotonic()
            started_here.add(svc.DASHBOARD)
        _wait_for(running, waiting, "prefect-server", timeout, say)
        os.environ["PREFECT_API_URL"] = running.api_url
        os.environ["MLFLOW_TRACKING_URI"] = running.mlflow_url
        _ensure_pools(pools, say)
        # The worker starts (and imports) while the rest is set up; it needs only the pool.
        worker = running.processes.get("worker")
        new_worker = worker is None or not worker.alive()
        if worker is None or new_worker:
            worker = svc.spawn("worker", svc.worker_argv(pools[0]), root, svc.worker_environment(root, running))
            started_here.add("worker")
            running.processes["worker"] = worker
            svc.write_services(root, running)
        _wait_for(running, waiting, "mlflow-server", timeout, say)
        _wait_for(running, waiting, svc.DASHBOARD, timeout, say)
        _ensure_automation(crash_after_s, say)
        _register(root, env, interval, say)
        if new_worker:
            svc.wait_until("the Prefect worker", lambda: deploy.online_workers(pools[0]) > 0, worker, timeout, 0.5)
            say(f"worker:        started (pid {worker.pid}), pool {pools[0]}")
        else:
            say(f"worker:        running (pid {worker.pid}), pool {pools[0]}")
    except FlowshipError as exc:
        raise StartFailed(exc, undo_start(root, running, started_here)) from exc
    except BaseException:  # an unexpected error, or Ctrl-C: nothing is left half-started either
        warn(undo_start(root, running, started_here))
        raise
    seconds = time.monotonic() - began
    return Ready(
        running.prefect_url,
        running.mlflow_url,
        running.api_url,
        svc.log_dir(root),
        seconds,
        running.evidently_url,
        workspace,
    )


def undo_start(root: Path, running: svc.Services | None, started_here: set[str]) -> str:
    """Stop what this `flowship up` started, after it failed: nothing is left half-started. What an earlier
    `flowship up` started stays (and stays recorded). Returns what was done, as one sentence."""
    if running is None or not started_here:
        return "nothing was started"
    lines = []
    for name in STOP_ORDER:
        if name in started_here and name in running.processes:
            lines.append(f"{name}: {svc.stop_process(running.processes.pop(name))}")
    if running.processes:
        svc.write_services(root, running)
    else:
        svc.state_file(root).unlink(missing_ok=True)
    return "what this command started was stopped again (" + "; ".join(lines) + ")"


def stop(root: Path, say: Say = _quiet) -> list[Stopped] | None:
    """Stop what `flowship up` started in this project, and nothing else, after cancelling the runs still going;
    None when it started nothing here. The servers' state stays (`flowship up` finds it again). The temporary
    Prefect API an earlier command left running is stopped too, unless a command uses it."""
    _retire_temporary_api(root, say)
    running = svc.read_services(root)
    if running is None:
        return None
    alive = running.running()
    if "prefect-server" in alive and "worker" in alive:
        os.environ["PREFECT_API_URL"] = running.api_url
        try:
            for name in deploy.cancel_running():
                say(f"cancelled:     flow run {name}")
        except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the API says
            say(f"could not cancel the running flow runs ({exc}); stopping anyway")
    stopped = []
    for name in STOP_ORDER:
        process = running.processes.get(name)
        if process is not None:
            began = time.monotonic()
            outcome = svc.stop_process(process)
            done = Stopped(name, outcome, time.monotonic() - began, process.pid, process.log)
            say(f"{name + ':':<16}{done.outcome} in {done.seconds:.1f} s (pid {done.pid}; log {done.log})")
            stopped.append(done)
    svc.state_file(root).unlink(missing_ok=True)
    return stopped


def _retire_temporary_api(root: Path, say: Say) -> None:
    outcome = temporary_api.retire(root)
    if outcome is not None:
        say(f"{temporary_api.NAME}: {outcome}")


def _pools(root: Path, env: str) -> list[str]:
    """The work pools of one environment's deployments, sorted; the first one is the worker's."""
    return sorted({d["work_pool"]["name"] for d in deploy.declared(root, env)})


def _ensure_pools(pools: list[str], say: Say) -> None:
    for pool in pools:
        say(f"work pool:     {pool} ({deploy.ensure_process_pool(pool)})")


def _ensure_automation(crash_after_s: int | None, say: Say) -> None:
    """The crash automation: as `flowship up --crash-after` asks, or (None) the one the server has, else the default."""
    wanted = svc.CRASH_AFTER_S if crash_after_s is None else crash_after_s
    done, seconds = deploy.ensure_zombie_automation(svc.ZOMBIE_AUTOMATION, wanted, keep=crash_after_s is None)
    say(f"automation:    runs without a heartbeat for {seconds} s are marked Crashed ({done})")


def _register(root: Path, env: str, interval: int | None, say: Say) -> tuple[tuple[str, str], ...]:
    registered = tuple(deploy.register(root, env, interval))
    for name, text in registered:
        say(f"deployment:    {name:<20} {text}")
    return registered


def _check_dashboard_port(root: Path, port: int) -> None:
    """Refuse, before anything starts, a port another program holds for the Evidently UI (unless it is the UI an
    earlier `flowship up` started)."""
    existing = svc.read_services(root)
    if existing is not None and svc.DASHBOARD in existing.running():
        return
    if port_taken(port):
        raise svc.ServiceError(
            f"port {port} on {svc.HOST} is in use by another program, not by an Evidently UI flowship started here; "
            "stop it, or choose another port with --evidently-port"
        )


def _start_dashboard(root: Path, running: svc.Services, workspace: Path, port: int, say: Say) -> bool:
    """The Evidently UI on the monitoring checks' workspace, unless the one started here before still runs (then it
    keeps its port); recorded before anyone waits for it. Returns whether it was started now."""
    process = running.processes.get(svc.DASHBOARD)
    if process is not None and process.alive():
        say(f"evidently-ui:   running since {process.started}, on {workspace}")
        return False
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise svc.ServiceError(f"the dashboard workspace {workspace} cannot be made ({exc.strerror})") from None
    url = f"http://{svc.HOST}:{port}"
    running.processes[svc.DASHBOARD] = svc.spawn(
        svc.DASHBOARD,
        svc.evidently_ui_argv(workspace, port),
        root,
        svc.child_environment(root, {"DO_NOT_TRACK": "1"}),
        url,
    )
    running.evidently_url = url
    svc.write_services(root, running)
    return True


def _start_servers(root: Path, env: str, ports: tuple[int, int], say: Say) -> tuple[svc.Services, dict[str, float]]:
    """The servers started here before, or new ones, recorded before anyone waits for them (so that
    `flowship down` finds them even if they never answer); returns them and when each new one was started."""
    prefect_port, mlflow_port = ports
    existing = svc.read_services(root)
    if existing is not None and set(SERVERS) <= set(existing.running()):
        say(f"servers:       running since {existing.processes['prefect-server'].started}")
        asked = (f"http://{svc.HOST}:{prefect_port}", f"http://{svc.HOST}:{mlflow_port}")
        if asked != (existing.prefect_url, existing.mlflow_url):
            say(f"               at {existing.prefect_url} and {existing.mlflow_url}, not the ports asked for: "
                "`flowship down` first to move them")  # fmt: skip
        if existing.env != env:
            existing.env = env
            svc.write_services(root, existing)
        return existing, {}
    if existing is not None and existing.running():
        raise svc.ServiceError(
            f"only part of what `flowship up` started still runs ({', '.join(existing.running())}); "
            "run `flowship down`, then `flowship up`"
        )
    for what, port, option in (("Prefect", prefect_port, "--prefect-port"), ("MLflow", mlflow_port, "--mlflow-port")):
        if port_taken(port):
            raise svc.ServiceError(
                f"port {port} on {svc.HOST} is in use by another program, not by a {what} server flowship started "
                f"here; stop it, or choose another port with {option}"
            )
    prefect_url = f"http://{svc.HOST}:{prefect_port}"
    mlflow_url = f"http://{svc.HOST}:{mlflow_port}"
    env_vars = svc.child_environment(root)
    env_vars.pop("PREFECT_API_URL", None)
    # The UI asks its API at this address; without it Prefect assumes port 4200 whatever --port says.
    env_vars["PREFECT_UI_API_URL"] = f"{prefect_url}/api"
    running = svc.Services(str(root), env, prefect_url, mlflow_url, {})
    spawned = time.monotonic()
    running.processes["prefect-server"] = svc.spawn(
        "prefect-server", svc.prefect_server_argv(prefect_port), root, env_vars, prefect_url
    )
    running.processes["mlflow-server"] = svc.spawn(
        "mlflow-server", svc.mlflow_server_argv(root, mlflow_port, env_vars), root, env_vars, mlflow_url
    )
    svc.write_services(root, running)
    return running, {name: spawned for name in SERVERS}


def _wait_for(running: svc.Services, waiting: dict[str, float], name: str, timeout: float, say: Say) -> None:
    """Until the server `name` answers its health check, when this call started it."""
    if name not in waiting:
        return
    process = running.processes[name]
    health = {"prefect-server": f"{process.url}/api/health", svc.DASHBOARD: f"{process.url}/api/version"}.get(
        name, f"{process.url}/health"
    )
    svc.wait_until(name, lambda: svc.answers(health), process, timeout)
    took = time.monotonic() - waiting[name]
    say(f"{name + ':':<16}started (pid {process.pid}), answering after {took:.1f} s")
