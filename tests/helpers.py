"""What the tests share beyond fixtures: a free loopback port, waiting for a condition with a deadline, the
`flowship` command run as a user runs it, long-running processes started and stopped with their group,
Prefect's REST API called as Prefect's own client calls it, and the handler of a small test HTTP server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import httpx

BIN = Path(sys.executable).parent
FLOWSHIP = str(BIN / "flowship")

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that; past `timeout` seconds, fail the test
    naming what was awaited (and `detail()`, e.g. the end of a log, read then). A deadline, never a fixed sleep:
    a busy machine only takes longer."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}" + (f":\n{detail()}" if detail else "")
            )
        time.sleep(interval)


def environment(**values: str) -> dict[str, str]:
    """This process's environment for a subprocess, this interpreter's bin first on PATH, without any Prefect
    server or home or MLflow store set by the developer's shell or by an in-process test (the session's test
    harness sets its own only inside this process): each subprocess is told its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_") and k != "PREFECT_HOME"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return {**env, **values}


def flowship(
    args: list[str], cwd: Path, *, check: bool = False, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    """The `flowship` executable as a user runs it, in `cwd`; with `check`, a failure fails the test with its
    output."""
    done = subprocess.run(
        [FLOWSHIP, *args], cwd=cwd, env=environment(**env), capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"flowship {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def start(cmd: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A long-running process in its own process group (so that what it starts can be stopped with it)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=environment(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes], interrupts: int = 2, grace: float = 15.0) -> None:
    """SIGINT, once more if needed (`prefect worker start` forwards the first to the worker it runs), then kill
    whatever is left of the process group."""
    for _ in range(interrupts):
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(grace)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def prefect_api(method: str, url: str, body: dict[str, Any] | None = None, attempts: int = 6) -> Any:
    """One call to a Prefect server's REST API (`url` ends in /api/...), retried as Prefect's own client does while
    the server is busy (its SQLite database locked by the scheduler or a worker: 503, also 429 and 502); the JSON
    answer, or None when it has no body. A read (GET, or a POST to a `/filter` endpoint) that gets no answer in
    30 s is asked again too (a server on SQLite, on a loaded machine, can hold a request that long); a write is not,
    since it may have been done."""
    read = method == "GET" or url.endswith("/filter")
    for attempt in range(attempts):
        try:
            response = httpx.request(method, url, json=body, timeout=30.0)
        except httpx.TimeoutException:
            if not read or attempt == attempts - 1:
                raise
            continue
        if response.status_code not in (429, 502, 503) or attempt == attempts - 1:
            break
        time.sleep(1.0 + attempt)
    response.raise_for_status()
    return response.json() if response.content else None


class SteadyLoad:
    """`clients` threads, each with its own keep-alive connection, posting `body` to `url` at a steady pace until
    the block ends; every answer is counted by status (or by the exception that stood for one), and the versions
    that answered are collected (`X-Model-Version`).

    Paced, not back to back: a client sends `per_second` requests a second (sooner only when late). Back-to-back
    clients would take both cores from the release they are meant to watch; paced, every switch of the release
    still finds requests in flight and keep-alive connections idle between requests (the case a reload must not
    break)."""

    def __init__(
        self,
        url: str,
        body: Any,
        clients: int = 16,
        headers: dict[str, str] | None = None,
        keyed: bool = True,
        per_second: float = 10.0,
    ) -> None:
        """`keyed`: each client sends its own X-Client-Key (a gateway then rate-limits and splits them apart);
        without, every request is anonymous (split request by request)."""
        import threading
        from collections import Counter

        self.url, self.body, self.clients, self.headers, self.keyed = url, body, clients, headers or {}, keyed
        self.interval = 1.0 / per_second
        self.statuses: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, number: int) -> None:
        # each its own client key: a gateway's per-client rate limit counts them apart
        key = {"X-Client-Key": f"load-{number}"} if self.keyed else {}
        with httpx.Client(timeout=30.0, headers={**key, **self.headers}) as client:
            # the clients start spread over one interval, not all at once
            due = time.monotonic() + self.interval * number / self.clients
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                due = max(due + self.interval, time.monotonic())
                try:
                    response = client.post(self.url, json=self.body)
                    key, version = str(response.status_code), response.headers.get("X-Model-Version")
                except httpx.HTTPError as exc:
                    key, version = type(exc).__name__, None
                with self._lock:
                    self.statuses[key] += 1
                    if version:
                        self.versions[version] += 1
                    if key != "200" and len(self.errors) < 20:
                        self.errors.append(key)

    @property
    def answered(self) -> int:
        return self.statuses["200"]

    @property
    def failed(self) -> int:
        return sum(self.statuses.values()) - self.answered

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        wait_until(
            lambda: self.answered >= self.clients, 60, "the load's first answers", detail=lambda: str(self.statuses)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


class QuietHandler(BaseHTTPRequestHandler):
    """A test HTTP server's handler base: `answer` sends a JSON body; requests are not logged on stderr."""

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass
