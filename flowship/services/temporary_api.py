"""The temporary Prefect API of the commands run without a Prefect server (no PREFECT_API_URL, no `flowship up`).

A command that will run a flow calls `start_soon` as soon as it knows, before it imports Prefect (which reads the
API's URL once). The API an earlier command of this project left running is used again; else one is started in the
background, so that its start (Prefect's server imports and its database set-up: two to three seconds of one core)
overlaps the command's own work (importing MLflow and the flow's modules). The command waits for it only before its
first flow (`ready`).

The API stays up after its command until no command has used it for FLOWSHIP_PREFECT_API_IDLE seconds (600 by
default), then stops by itself: the next command of an iteration loop (`flowship train` after a changed
hyperparameter) finds it ready, where starting one beside the command's own imports made up a sixth of that
command. `flowship up` and `flowship down` stop it when no command uses it. With FLOWSHIP_PREFECT_API_IDLE=0 each
command has an API of its own that ends with it (on Linux also when the command is killed).

A command uses an API while it holds a shared lock on `.flowship/prefect-api.lease`; the API's process stops once it
has been able to take that lock exclusively for its idle time (`prefect_api_server.py`). An API is recorded in
`.flowship/prefect-api-<settings>.json`, named by what it was started for (Python, Prefect and the PREFECT_* settings,
its database among them): a command uses the one recorded for its own, while it is still that process.

Its flows send no heartbeats: its services do not run (as in Prefect's own temporary server), so nothing would read
them. Prefect's own temporary server would start only when the first flow calls the API, and wait there; it also
takes a random port between 8000 and 9000, where production may listen (`release.production_port`, 8000 by
default). This one takes a port the OS gives.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from flowship.files import atomic_write
from flowship.services.processes import (
    HOST,
    Process,
    ServiceError,
    answers,
    child_environment,
    spawn,
    stop_process,
    wait_until,
)

NAME = "prefect-temporary"
# how long `ready` waits for the API (the setting Prefect's own temporary server reads; `flowship` sets it to 90 s)
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 90.0
# seconds the API stays up once no command uses it; 0: each command's API ends with it
IDLE_ENV = "FLOWSHIP_PREFECT_API_IDLE"
IDLE_S = 600.0
# how long `retire` waits for the lease before it says a command uses the API
RETIRE_WAIT_S = 3.0
# what Prefect's own temporary server runs with: no UI, no background services (scheduler, late runs, ...)
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}

# Prefect's setting of the interval of flow-run heartbeats (None: none are sent)
HEARTBEAT_SETTING = "flows.heartbeat_frequency"


@dataclass
class Recorded:
    """The state file: the API's process and what it was started for."""

    process: Process
    fingerprint: str  # Python, Prefect's version and the PREFECT_* settings it started with
    idle_s: float


_started: Process | None = None  # the API this command uses
_own = False  # started for this command alone (FLOWSHIP_PREFECT_API_IDLE=0): stopped at its end
_answered = False
_lease: int | None = None  # the open lease file, locked shared while this command uses the API
_settings = contextlib.ExitStack()  # Prefect's settings while the API runs


def idle_seconds() -> float:
    """FLOWSHIP_PREFECT_API_IDLE, checked: a `ServiceError` naming it when it is not a number of seconds >= 0."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return IDLE_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ServiceError(
            f"{IDLE_ENV}={raw!r}: expected the seconds the temporary Prefect API stays up once no command uses it "
            "(a number, 0 or more; 0: it ends with its command)"
        )
    return seconds


def state_file(root: Path, fingerprint: str) -> Path:
    return root / ".flowship" / f"prefect-api-{fingerprint[:16]}.json"


def state_files(root: Path) -> list[Path]:
    return sorted((root / ".flowship").glob("prefect-api-*.json"))


def lease_file(root: Path) -> Path:
    return root / ".flowship" / "prefect-api.lease"


def start_soon(root: Path) -> None:
    """Point this process (and its children) at the temporary API: the one left running in this project when it
    can serve, else one started now in the background.

    Nothing is done when a Prefect server is configured (PREFECT_API_URL), or when this process has already
    imported Prefect without one: Prefect reads its settings once, and keeps its own temporary server then."""
    global _started, _own
    if _started is not None or os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return
    idle = idle_seconds()
    env = child_environment(root, SERVER_ENV)
    if idle == 0:
        _started, _own = _spawn(root, env, die_with_parent=True), True
    else:
        _take_lease(root)
        fingerprint = _fingerprint(env)
        with _start_lock(root):
            _started = _reusable(root, fingerprint) or _spawn_lasting(root, env, idle, fingerprint)
    atexit.register(stop)
    os.environ["PREFECT_API_URL"] = f"{_started.url}/api"


def ready(root: Path) -> None:
    """Before a flow: the temporary API started (if it is to be) and answering. A `ServiceError` with the end of its
    log when it exits or does not answer in time."""
    global _answered
    start_soon(root)
    if _started is None or _answered:
        return
    health = f"{_started.url}/api/health"
    wait_until("the temporary Prefect API", lambda: answers(health), _started, _startup_timeout(), 0.1)
    _answered = True
    _without_heartbeats()


def _without_heartbeats() -> None:
    """Flows on the temporary API send no heartbeats. Prefect sends them (every 180 s by default since 3.8) so that a
    server's services can mark Crashed a run whose process died; this server runs none, so nothing would read them.
    They also make each flow end up to a second late: Prefect's heartbeat thread sleeps in 1 s steps, and the flow
    waits for it when it ends. (An environment variable cannot turn them off: Prefect reads it as an integer.)"""
    from prefect.settings import temporary_settings

    _settings.enter_context(temporary_settings(updates={HEARTBEAT_SETTING: None}))


def stop() -> None:
    """At the command's end: stop its own API, or let go of the one it shares (which then counts its idle time)."""
    global _started, _answered, _own, _lease
    if _started is not None:
        if _own:
            stop_process(_started, grace=5.0)
        if os.environ.get("PREFECT_API_URL") == f"{_started.url}/api":
            del os.environ["PREFECT_API_URL"]
        _started, _answered, _own = None, False, False
        _settings.close()
    if _lease is not None:
        os.close(_lease)  # the shared lock goes with it
        _lease = None


def retire(root: Path) -> str | None:
    """Stop the APIs left running in this project when no command uses them (`flowship up`, `flowship down`). None
    when there is none; else what became of them, as one phrase."""
    running = []
    for path in state_files(root):
        recorded = _read(path)
        if recorded is not None and recorded.process.alive():
            running.append(recorded.process)
        else:
            path.unlink(missing_ok=True)
    if not running:
        return None
    pids = ", ".join(str(p.pid) for p in running)
    fd = os.open(lease_file(root), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # An API checking whether it is idle, or stopping because it is, holds the lease for a moment: a command
        # that uses it holds it for as long as it runs.
        deadline = time.monotonic() + RETIRE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return f"left running: a command uses it (pid {pids}; it stops once idle)"
                time.sleep(0.1)
        outcomes = {stop_process(process, grace=10.0) for process in running}
        for path in state_files(root):
            path.unlink(missing_ok=True)
        return f"{', '.join(sorted(outcomes))} (pid {pids})"
    finally:
        os.close(fd)


def _take_lease(root: Path) -> None:
    """Hold the lease (shared) for the rest of this command; waits only while an idle API is stopping."""
    global _lease
    path = lease_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _lease = fd


@contextlib.contextmanager
def _start_lock(root: Path) -> Iterator[None]:
    """One command at a time decides which API to use, so that two starting together share one."""
    path = root / ".flowship" / "prefect-api.start"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fingerprint(env: Mapping[str, str]) -> str:
    """What an API must have been started with to serve this command: the same Python, Prefect and settings."""
    settings = sorted((k, v) for k, v in env.items() if k.startswith("PREFECT_"))
    described = json.dumps([sys.executable, version("prefect"), settings])
    return hashlib.sha256(described.encode()).hexdigest()


def _read(path: Path) -> Recorded | None:
    try:
        raw = json.loads(path.read_text())
        return Recorded(**{**raw, "process": Process(**raw["process"])})
    except (OSError, ValueError, TypeError, KeyError):  # none, or unreadable: treated as none
        return None


def _reusable(root: Path, fingerprint: str) -> Process | None:
    """The API recorded for this command's settings, when it is still that process and answers (or is still within
    its start: another command started it a moment ago)."""
    recorded = _read(state_file(root, fingerprint))
    if recorded is None or recorded.fingerprint != fingerprint or not recorded.process.alive():
        return None
    process = recorded.process
    if answers(f"{process.url}/api/health", timeout=2.0):
        return process
    started = datetime.fromisoformat(process.started).timestamp()
    return process if time.time() - started < _startup_timeout() else None


def _spawn(root: Path, env: Mapping[str, str], *args: str, die_with_parent: bool = False) -> Process:
    """The API's process on a port the OS gives (`args`: its idle stop's, for one that outlives this command)."""
    port = _free_port()
    argv = [sys.executable, "-m", "flowship.services.prefect_api_server", "--port", str(port), *args]
    return spawn(NAME, argv, root, env, url=f"http://{HOST}:{port}", die_with_parent=die_with_parent)


def _spawn_lasting(root: Path, env: Mapping[str, str], idle: float, fingerprint: str) -> Process:
    state = state_file(root, fingerprint)
    process = _spawn(root, env, "--lease", str(lease_file(root)), "--state", str(state), "--idle", f"{idle:g}")
    atomic_write(state, json.dumps(asdict(Recorded(process, fingerprint, idle)), indent=2))
    return process


def _startup_timeout() -> float:
    """Seconds `ready` waits for a starting API (and a recorded one counts as still starting)."""
    return float(os.environ.get(STARTUP_TIMEOUT_ENV) or STARTUP_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
