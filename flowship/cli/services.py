"""`flowship up`, `down` and `schedule`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from flowship.cli.common import EnvOption, IntervalOption, ParamsOption, check_params, environment, fail
from flowship.errors import FlowshipError
from flowship.services.processes import CRASH_AFTER_S, HEARTBEAT_S, MLFLOW_PORT, PREFECT_PORT, ZOMBIE_AUTOMATION


def schedule(
    params: ParamsOption = Path("params.yaml"), env: EnvOption = "dev", interval: IntervalOption = None
) -> None:
    """Register one environment's deployments of deployments/prefect.yaml (monitoring daily at 06:00 UTC;
    training, release and retraining to start from the UI) on the Prefect server named by PREFECT_API_URL,
    creating their work pool if missing. `flowship up` does this too, on servers it starts itself."""
    path = check_params(params, check_estimator=False)
    root = path.parent
    environment(root)
    import httpx

    from flowship.services import prefect_api as deploy

    try:
        chosen = deploy.declared(root, env)
    except FlowshipError as exc:
        fail(str(exc))
    api_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    start_server = (
        "start one with `flowship up` (or `prefect server start` and PREFECT_API_URL=http://127.0.0.1:4200/api)"
    )
    if not api_url:
        fail(f"PREFECT_API_URL is not set: schedules need a Prefect server; {start_server}")
    try:
        httpx.get(f"{api_url}/health", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        fail(f"no Prefect server answers at PREFECT_API_URL={api_url} ({exc}); {start_server}")
    pools = sorted({d["work_pool"]["name"] for d in chosen})
    try:
        for pool in pools:
            typer.echo(f"work pool:     {pool} ({deploy.ensure_process_pool(pool)})")
        automation = deploy.ensure_zombie_automation(ZOMBIE_AUTOMATION, CRASH_AFTER_S)
        typer.echo(f"automation:    runs without a heartbeat for {CRASH_AFTER_S} s are marked Crashed ({automation})")
        typer.echo(f"registering:   {deploy.PREFECT_FILE}, environment {env!r}, on {api_url}")
        lines = deploy.register(root, env, interval)
    except FlowshipError as exc:
        fail(str(exc))
    for name, text in lines:
        typer.echo(f"deployment:    {name:<20} {text}")
    typer.echo(f"worker:        PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_S} prefect worker start --pool {pools[0]}")
    typer.echo(f"               (from this virtualenv, with PREFECT_API_URL={api_url}; runs start in {root})")


def up(
    params: ParamsOption = Path("params.yaml"),
    env: EnvOption = "dev",
    interval: IntervalOption = None,
    prefect_port: int = typer.Option(PREFECT_PORT, min=1024, max=65535, help="Prefect server port."),
    mlflow_port: int = typer.Option(MLFLOW_PORT, min=1024, max=65535, help="MLflow server port."),
    timeout: float = typer.Option(120.0, min=1.0, help="Seconds to wait for each service to answer."),
) -> None:
    """Start, in the background on 127.0.0.1, a Prefect server with its UI, an MLflow tracking server with its
    UI and a Prefect worker; register the environment's deployments; print the URLs. Their logs go to
    logs/services/; `flowship down` stops them. While they run, flowship's commands in this project use them."""
    path = check_params(params, check_estimator=False)
    root = path.parent
    environment(root, use_services=False)
    from flowship.services import prefect_api as deploy
    from flowship.services import processes as svc

    running: Any = None
    started_here: set[str] = set()
    try:
        chosen = deploy.declared(root, env)
        started = time.monotonic()
        running, waiting = _start_servers(root, env, prefect_port, mlflow_port)
        started_here = set(waiting)
        _wait_for(running, waiting, "prefect-server", timeout)
        os.environ["PREFECT_API_URL"] = running.api_url
        os.environ["MLFLOW_TRACKING_URI"] = running.mlflow_url
        pools = sorted({d["work_pool"]["name"] for d in chosen})
        for pool in pools:
            typer.echo(f"work pool:     {pool} ({deploy.ensure_process_pool(pool)})")
        # The worker starts (and imports) while the rest is set up; it needs only the pool.
        worker = running.processes.get("worker")
        new_worker = worker is None or not worker.alive()
        if new_worker:
            worker = svc.spawn("worker", svc.worker_argv(pools[0]), root, svc.worker_environment(root, running))
            running.processes["worker"] = worker
            svc.write_services(root, running)
            started_here.add("worker")
        _wait_for(running, waiting, "mlflow-server", timeout)
        automation = deploy.ensure_zombie_automation(svc.ZOMBIE_AUTOMATION, svc.CRASH_AFTER_S)
        typer.echo(
            f"automation:    runs without a heartbeat for {svc.CRASH_AFTER_S} s are marked Crashed ({automation})"
        )
        lines = deploy.register(root, env, interval)
        for name, text in lines:
            typer.echo(f"deployment:    {name:<20} {text}")
        assert worker is not None
        if new_worker:
            svc.wait_until("the Prefect worker", lambda: deploy.online_workers(pools[0]) > 0, worker, timeout, 0.5)
            typer.echo(f"worker:        started (pid {worker.pid}), pool {pools[0]}")
        else:
            typer.echo(f"worker:        running (pid {worker.pid}), pool {pools[0]}")
    except FlowshipError as exc:
        fail(f"{exc}\n{_undo_start(root, running, started_here)}")
    except BaseException:  # an unexpected error, or Ctrl-C: nothing is left half-started either
        typer.echo(_undo_start(root, running, started_here), err=True)
        raise
    typer.echo(f"ready in:      {time.monotonic() - started:.1f} s")
    typer.echo(f"Prefect UI:    {running.prefect_url}")
    typer.echo(f"MLflow UI:     {running.mlflow_url}")
    typer.echo(f"logs:          {svc.log_dir(root)}/")
    typer.echo(f"in this shell: export PREFECT_API_URL={running.api_url} MLFLOW_TRACKING_URI={running.mlflow_url}")
    typer.echo("               (flowship's own commands in this project use the servers without it)")


def _undo_start(root: Path, running: Any, started_here: set[str]) -> str:
    """What this `flowship up` started is stopped again when it fails: nothing is left half-started. What an
    earlier `flowship up` started stays (and stays recorded)."""
    from flowship.services import processes as svc

    if running is None or not started_here:
        return "nothing was started"
    lines = []
    for name in ("worker", "mlflow-server", "prefect-server"):
        if name in started_here and name in running.processes:
            lines.append(f"{name}: {svc.stop_process(running.processes.pop(name))}")
    if running.processes:
        svc.write_services(root, running)
    else:
        svc.state_file(root).unlink(missing_ok=True)
    return "what this command started was stopped again (" + "; ".join(lines) + ")"


def _start_servers(root: Path, env: str, prefect_port: int, mlflow_port: int) -> tuple[Any, dict[str, float]]:
    """The servers started here before, or new ones, recorded before anyone waits for them (so that
    `flowship down` finds them even if they never answer); returns them and when each new one was started."""
    from flowship.services import processes as svc

    existing = svc.read_services(root)
    if existing is not None and {"prefect-server", "mlflow-server"} <= set(existing.running()):
        typer.echo(f"servers:       running since {existing.processes['prefect-server'].started}")
        asked = (f"http://{svc.HOST}:{prefect_port}", f"http://{svc.HOST}:{mlflow_port}")
        if asked != (existing.prefect_url, existing.mlflow_url):
            typer.echo(f"               at {existing.prefect_url} and {existing.mlflow_url}, not the ports asked for: "
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
        if svc.port_taken(port):
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
    return running, {"prefect-server": spawned, "mlflow-server": spawned}


def _wait_for(running: Any, waiting: dict[str, float], name: str, timeout: float) -> None:
    from flowship.services import processes as svc

    if name not in waiting:
        return
    process = running.processes[name]
    health = f"{process.url}/api/health" if name == "prefect-server" else f"{process.url}/health"
    svc.wait_until(name, lambda: svc.answers(health), process, timeout)
    took = time.monotonic() - waiting[name]
    typer.echo(f"{name + ':':<16}started (pid {process.pid}), answering after {took:.1f} s")


def down(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop what `flowship up` started in this project (worker, MLflow server, Prefect server), and nothing else.
    Runs still going are cancelled first; the servers' state stays (`flowship up` finds it again)."""
    path = check_params(params, check_estimator=False)
    root = path.parent
    environment(root, use_services=False)
    from flowship.services import processes as svc

    try:
        running = svc.read_services(root)
    except FlowshipError as exc:
        fail(str(exc))
    if running is None:
        typer.echo("nothing to stop: `flowship up` started nothing here")
        return
    alive = running.running()
    if "prefect-server" in alive and "worker" in alive:
        from flowship.services import prefect_api as deploy

        os.environ["PREFECT_API_URL"] = running.api_url
        try:
            for name in deploy.cancel_running():
                typer.echo(f"cancelled:     flow run {name}")
        except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the API says
            typer.echo(f"could not cancel the running flow runs ({exc}); stopping anyway")
    for name in ("worker", "mlflow-server", "prefect-server"):
        process = running.processes.get(name)
        if process is not None:
            began = time.monotonic()
            outcome = svc.stop_process(process)
            took = time.monotonic() - began
            typer.echo(f"{name + ':':<16}{outcome} in {took:.1f} s (pid {process.pid}; log {process.log})")
    svc.state_file(root).unlink(missing_ok=True)
