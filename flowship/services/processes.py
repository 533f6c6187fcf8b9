"""Local services behind `flowship up` / `flowship down`: a Prefect server with its UI, an MLflow tracking server
with its UI, the Evidently UI (the monitoring dashboard, on the project's workspace folder) and a Prefect process
worker, each a background process in its own process group on loopback.

What was started is recorded in `.flowship/services.json` (pid, process group, command line, log file), so
`flowship down` stops exactly those processes and nothing else, and a later command finds the servers. The
servers keep their state in the project (Prefect: `.prefect/prefect.db`, MLflow: `mlruns/`), or in the
databases their own settings name (PREFECT_API_DATABASE_CONNECTION_URL, MLFLOW_BACKEND_STORE_URI), so a
restart loses nothing; the Evidently UI reads the workspace that each monitoring check writes into. This module never
imports prefect or evidently: it starts their own command lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flowship import pids
from flowship.errors import FlowshipError
from flowship.files import atomic_write

HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
# Never Evidently's own default (8000): that is the serving port.
EVIDENTLY_PORT = 8050
DASHBOARD = "evidently-ui"  # the process of the Evidently UI, the monitoring dashboard
POOL = "flowship"
# Flow runs started by the worker send a heartbeat this often (seconds; Prefect's minimum is 30); a run
# that misses them for CRASH_AFTER seconds (`flowship up --crash-after`; at least MIN_CRASH_AFTER, so that one late
# heartbeat is not a crash) is marked Crashed by an automation `flowship up` creates.
HEARTBEAT_S = 30
CRASH_AFTER_S = 90
MIN_CRASH_AFTER_S = 45
ZOMBIE_AUTOMATION = "flowship: crash flow runs that stopped sending heartbeats"
# the line `spawn` writes into a process's log before each start
_START_LINE = re.compile(r"--- \d{4}-\d\d-\d\dT\S+ starting: ")


class ServiceError(FlowshipError):
    """A local service could not be started, or is not what flowship started."""


@dataclass
class Process:
    """One started process: enough to find it again, check it is still the same one, and stop its group."""

    name: str
    pid: int
    argv: list[str]
    log: str
    url: str | None = None
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def alive(self) -> bool:
        """Running, and still the process flowship started (a pid can be reused by another program). While it is
        being started or is exiting, its command line reads empty: it counts as running then (`flowship.pids`)."""
        argv = pids.command_line(self.pid)
        return argv is not None and pids.running(self.pid) and argv in ([], self.argv)


@dataclass
class Services:
    """What `flowship up` started, as recorded in the state file."""

    root: str
    env: str
    prefect_url: str
    mlflow_url: str
    processes: dict[str, Process]
    evidently_url: str = ""  # "" in a state file written before the dashboard

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    def running(self) -> dict[str, Process]:
        return {name: p for name, p in self.processes.items() if p.alive()}


def state_file(root: Path) -> Path:
    return root / ".flowship" / "services.json"


def log_dir(root: Path) -> Path:
    return root / "logs" / "services"


def read_services(root: Path) -> Services | None:
    path = state_file(root)
    try:
        raw = json.loads(path.read_text())
        processes = {name: Process(**p) for name, p in raw.pop("processes").items()}
        return Services(**raw, processes=processes)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ServiceError(f"{path} cannot be read ({exc}); remove it once no flowship service runs") from None


def write_services(root: Path, services: Services) -> None:
    atomic_write(state_file(root), json.dumps(asdict(services), indent=2))


def live_services(root: Path) -> Services | None:
    """The services `flowship up` started in this project, when both servers still run."""
    try:
        services = read_services(root)
    except ServiceError:
        return None
    if services is None:
        return None
    running = services.running()
    return services if {"prefect-server", "mlflow-server"} <= set(running) else None


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http
            return bool(response.status == 200)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
        return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def startup_log(path: Path, lines: int = 30) -> str:
    """What a process wrote since its last start (`spawn`'s marker line), for an error about that start: its end,
    preceded by its first ERROR line when that is further up (a server that cannot bind its port logs the reason
    first, then tracebacks of its shutdown)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    logged = text.splitlines()
    starts = [i for i, line in enumerate(logged) if _START_LINE.match(line)]
    logged = logged[starts[-1] + 1 :] if starts else logged
    end = logged[-lines:]
    first_error = next((line for line in logged if "ERROR" in line), None)
    if first_error is not None and first_error not in end:
        return "\n".join([first_error, "...", *end])
    return "\n".join(end)


def child_environment(root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(root / ".prefect"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's server-side job runners (GenAI jobs flowship never submits): eight processes fewer per server,
    # and a server that stops in seconds.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.update(extra or {})
    return env


def spawn(
    name: str,
    argv: list[str],
    root: Path,
    env: Mapping[str, str],
    url: str | None = None,
    die_with_parent: bool = False,
) -> Process:
    """Start `argv` in the background in its own process group (so that stopping it stops what it started),
    its output appended to logs/services/<name>.log. `die_with_parent`: on Linux, it gets SIGTERM when this
    process ends, however it ends (killed too), for a process that serves this one only."""
    logs = log_dir(root)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        out.write(f"\n--- {datetime.now(UTC).isoformat(timespec='seconds')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(  # noqa: S603 - our own command lines
            argv,
            cwd=root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_death_signal() if die_with_parent else None,  # noqa: PLW1509
        )
    return Process(name=name, pid=popen.pid, argv=argv, log=str(log), url=url)


def _death_signal() -> Callable[[], None] | None:
    """What the child runs before its command so that it gets SIGTERM when this process ends (Linux's prctl
    PR_SET_PDEATHSIG; None elsewhere). libc is loaded here, in the parent: the child only calls it."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def wait_until(what: str, ready: Callable[[], bool], process: Process, timeout: float, interval: float = 0.25) -> float:
    """Seconds until `ready()`; a ServiceError with the end of the log when the process dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        if not process.alive():
            raise ServiceError(f"{what} exited while starting; from {process.log}:\n{startup_log(Path(process.log))}")
        time.sleep(interval)
    raise ServiceError(
        f"{what} did not answer within {timeout:.0f} s; from {process.log}:\n{startup_log(Path(process.log))}"
    )


def stop_process(process: Process, grace: float = 20.0) -> str:
    """SIGTERM to the process group, SIGKILL to what is left after `grace` seconds."""
    if not process.alive():
        return "was not running"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process.alive():
            _reap(process.pid)
            return "stopped"
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for _ in range(50):
        if not process.alive():
            break
        time.sleep(0.1)
    _reap(process.pid)
    return f"killed (no exit within {grace:.0f} s of SIGTERM)"


def _reap(pid: int) -> None:
    """Collect the exit status when the process is this one's child (started by this same command)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def prefect_server_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]


def mlflow_server_argv(root: Path, port: int, env: Mapping[str, str]) -> list[str]:
    """The local store under mlruns/ (the one flowship uses without a server, so runs made before and after
    `flowship up` are the same), unless MLFLOW_BACKEND_STORE_URI names another (team mode: PostgreSQL, with
    artifacts served through the server from MLFLOW_ARTIFACTS_DESTINATION)."""
    argv = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1"]
    if not env.get("MLFLOW_BACKEND_STORE_URI"):
        store = root / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        argv += [
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root",
            (store / "artifacts").as_uri(),
        ]
    elif not env.get("MLFLOW_ARTIFACTS_DESTINATION"):
        argv += ["--artifacts-destination", str(root / "mlruns" / "served-artifacts")]
    return argv


def evidently_ui_argv(workspace: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace), "--host", HOST,
            "--port", str(port)]  # fmt: skip


def worker_argv(pool: str) -> list[str]:
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--name", f"flowship-{socket.gethostname()}-{os.getpid()}"]  # fmt: skip


def worker_environment(root: Path, services: Services) -> dict[str, str]:
    return child_environment(
        root,
        {
            "PREFECT_API_URL": services.api_url,
            "MLFLOW_TRACKING_URI": services.mlflow_url,
            "FLOWSHIP_ROOT": str(root),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        },
    )
