"""The temporary Prefect API of a command run without a server (flowship/services/temporary_api.py), in processes of
their own: this one has Prefect imported and the session's test API set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowship.pids import running
from tests.conftest import REPO
from tests.helpers import environment, flowship, wait_until

SCRIPT = """
import json, os, socket, sys, urllib.request
from pathlib import Path
from flowship.errors import FlowshipError
from flowship.services import temporary_api

root = Path(sys.argv[1])
os.environ["PREFECT_HOME"] = str(root / ".prefect")
{setup}
temporary_api.start_soon(root)
url = os.environ.get("PREFECT_API_URL")
started = temporary_api._started
out = {{"url": url, "prefect_imported": "prefect" in sys.modules, "pid": started.pid if started else None}}
try:
    temporary_api.ready(root)
    from prefect import flow
    from prefect.settings import get_current_settings

    heartbeat = lambda: get_current_settings().flows.heartbeat_frequency
    out["heartbeat"] = heartbeat()
    if started is not None:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            out["health"] = json.load(answer)
        out["flow_heartbeat"] = flow(name="probe")(heartbeat)()  # what a flow run on it reads
except FlowshipError as exc:
    out["error"] = str(exc)
temporary_api.stop()
out["url_after_stop"] = os.environ.get("PREFECT_API_URL")
if "prefect" in sys.modules:
    out["heartbeat_after_stop"] = heartbeat()
print(json.dumps(out))
"""


def run(root: Path, setup: str = "", **env: str) -> dict[str, object]:
    script = SCRIPT.format(setup=textwrap.dedent(setup))
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_a_command_without_a_server_gets_one_on_a_port_the_os_gives_and_stops_it(tmp_path: Path) -> None:
    out = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="0")  # an API of its own, that ends with it
    url = str(out["url"])
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert url == f"http://127.0.0.1:{port}/api"
    assert not 8000 <= port < 9000  # where Prefect's own temporary server looks, and production may listen
    assert out["prefect_imported"] is False  # started before Prefect is imported, so Prefect reads the URL
    assert out["health"] is True
    # its flows send no heartbeats (nothing outlives the command to read them); Prefect's default comes back after
    assert out["heartbeat"] is None and out["flow_heartbeat"] is None and out["heartbeat_after_stop"] == 180
    assert out["url_after_stop"] is None and isinstance(out["pid"], int) and not running(out["pid"])
    log = tmp_path / "logs" / "services" / "prefect-temporary.log"
    assert f"--port {port}" in log.read_text()


@pytest.mark.timeout(300)
def test_a_server_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    # the port it is given is taken: the server exits, and the error says so with the end of its log
    setup = """
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    temporary_api._free_port = lambda: taken.getsockname()[1]
    """
    out = run(tmp_path, setup)
    error = str(out["error"])
    assert error.startswith("the temporary Prefect API exited while starting; from")
    assert "prefect-temporary.log" in error and "address already in use" in error.lower()


@pytest.mark.timeout(300)
def test_nothing_is_started_when_a_server_is_configured_or_prefect_is_already_in_use(tmp_path: Path) -> None:
    configured = run(tmp_path, PREFECT_API_URL="http://127.0.0.1:4200/api")
    assert configured["url"] == "http://127.0.0.1:4200/api" and configured["pid"] is None
    assert configured["heartbeat"] == 180  # a server that outlives the command gets the heartbeats
    imported = run(tmp_path, "import prefect")
    assert imported["url"] is None and imported["pid"] is None  # Prefect keeps its own temporary server then
    assert not (tmp_path / "logs" / "services" / "prefect-temporary.log").exists()


@pytest.mark.timeout(300)
def test_a_killed_command_takes_its_own_temporary_api_with_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from flowship.services import temporary_api
        root = Path(sys.argv[1])
        os.environ["PREFECT_HOME"] = str(root / ".prefect")
        temporary_api.start_soon(root)
        temporary_api.ready(root)
        print(temporary_api._started.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup of its own
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=environment(FLOWSHIP_PREFECT_API_IDLE="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr
    server = int(done.stdout.strip())
    wait_until(lambda: not running(server), 30, "the temporary API to end with the command that started it")


# The API that outlives its command (FLOWSHIP_PREFECT_API_IDLE > 0, the default outside this suite).


def recorded_pids(root: Path) -> set[int]:
    return {int(json.loads(p.read_text())["process"]["pid"]) for p in (root / ".flowship").glob("prefect-api-*.json")}


@pytest.mark.timeout(300)
def test_the_api_outlives_its_command_serves_the_next_and_stops_once_no_command_uses_it(tmp_path: Path) -> None:
    first = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="3")
    pid = int(str(first["pid"]))
    assert first["health"] is True and first["flow_heartbeat"] is None and first["url_after_stop"] is None
    assert running(pid) and recorded_pids(tmp_path) == {pid}  # left running for the next command, and recorded
    second = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="3")
    assert second["pid"] == pid and second["url"] == first["url"]  # the same API, not a new one
    assert second["health"] is True and second["flow_heartbeat"] is None  # its flow ran there
    log = tmp_path / "logs" / "services" / "prefect-temporary.log"
    assert log.read_text().count("starting: ") == 1
    wait_until(lambda: not running(pid), 60, "the idle API to stop")
    assert "no command used it for 3 s: stopping" in log.read_text()
    assert recorded_pids(tmp_path) == set()  # it took its record with it
    third = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="3")
    assert third["pid"] != pid and third["health"] is True  # a new one once it stopped
    wait_until(lambda: not running(int(str(third["pid"]))), 60, "the third API to stop once idle")


@pytest.mark.timeout(300)
def test_a_flow_longer_than_the_idle_time_keeps_its_api(tmp_path: Path) -> None:
    # the command holds the API for its whole run: a flow of 4 s on an API idle after 1 s still reaches it at its end
    setup = "import time"
    script = SCRIPT.replace(
        'out["flow_heartbeat"] = flow(name="probe")(heartbeat)()',
        'out["flow_heartbeat"] = flow(name="slow")(lambda: (time.sleep(4), heartbeat())[1])()',
    )
    done = subprocess.run(
        [sys.executable, "-c", script.format(setup=textwrap.dedent(setup)), str(tmp_path)],
        env=environment(FLOWSHIP_PREFECT_API_IDLE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    assert out["flow_heartbeat"] is None  # the flow ran to its end on the API
    pid = int(out["pid"])
    wait_until(lambda: not running(pid), 60, "the API to stop once the command let it go")


@pytest.mark.timeout(300)
def test_commands_of_other_settings_get_an_api_of_their_own_and_a_stale_record_a_new_one(tmp_path: Path) -> None:
    first = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="30")
    a = int(str(first["pid"]))
    # other Prefect settings (here its logging level): an API of their own, recorded beside the first
    other = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="30", PREFECT_LOGGING_LEVEL="WARNING")
    b = int(str(other["pid"]))
    assert b != a and other["health"] is True and recorded_pids(tmp_path) == {a, b}
    again = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="30")
    assert again["pid"] == a and again["health"] is True  # the first settings' API, used again
    # a record naming a process that is not that API (its pid reused by another program): a new API
    (state,) = [p for p in (tmp_path / ".flowship").glob("prefect-api-*.json") if f'"pid": {b},' in p.read_text()]
    record = json.loads(state.read_text())
    record["process"]["pid"] = os.getpid()
    state.write_text(json.dumps(record))
    third = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="30", PREFECT_LOGGING_LEVEL="WARNING")
    c = int(str(third["pid"]))
    assert c not in (a, b, os.getpid()) and third["health"] is True and recorded_pids(tmp_path) == {a, c}
    assert running(b)  # not stopped: no longer recorded, it stops once idle
    for started in (a, b, c):
        os.kill(started, signal.SIGTERM)
        wait_until(lambda started=started: not running(started), 60, "the API to stop on SIGTERM")


@pytest.mark.timeout(300)
def test_two_commands_starting_together_share_one_api(tmp_path: Path) -> None:
    script = SCRIPT.format(setup="")
    env = environment(FLOWSHIP_PREFECT_API_IDLE="2")
    both = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = []
    for command in both:
        stdout, stderr = command.communicate(timeout=300)
        assert command.returncode == 0, stderr.decode()
        outs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert outs[0]["pid"] == outs[1]["pid"] and outs[0]["health"] is outs[1]["health"] is True
    log = (tmp_path / "logs" / "services" / "prefect-temporary.log").read_text()
    assert log.count("starting: ") == 1
    wait_until(lambda: not running(int(outs[0]["pid"])), 60, "the shared API to stop once idle")


DOWN = """
import json, sys
from pathlib import Path
from flowship.services import lifecycle
said = []
lifecycle.stop(Path(sys.argv[1]), said.append)  # what `flowship down` runs (`flowship up` stops it the same way)
print(json.dumps(said))
"""

HOLD = """
import os, sys, time
from pathlib import Path
from flowship.services import temporary_api
root = Path(sys.argv[1])
os.environ["PREFECT_HOME"] = str(root / ".prefect")
temporary_api.start_soon(root)
temporary_api.ready(root)
print("using", flush=True)
sys.stdin.read()  # until the test closes it
temporary_api.stop()
"""


def down(root: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", DOWN, str(root)], env=environment(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    said: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return said


@pytest.mark.timeout(300)
def test_down_stops_the_api_unless_a_command_uses_it(tmp_path: Path) -> None:
    assert down(tmp_path) == []  # none recorded
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        env=environment(FLOWSHIP_PREFECT_API_IDLE="600"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "using"
        (pid,) = recorded_pids(tmp_path)
        assert down(tmp_path) == [f"prefect-temporary: left running: a command uses it (pid {pid}; it stops once idle)"]
        assert running(pid)
    finally:
        holder.communicate(input="", timeout=120)
    assert holder.returncode == 0
    assert running(pid)  # idle now, for 600 s
    assert down(tmp_path) == [f"prefect-temporary: stopped (pid {pid})"]
    assert not running(pid) and recorded_pids(tmp_path) == set()


def test_a_wrong_idle_time_is_named(tmp_path: Path) -> None:
    for wrong in ("abc", "-1", "nan", "inf"):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(setup=""), str(tmp_path)],
            env=environment(FLOWSHIP_PREFECT_API_IDLE=wrong),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode != 0
        assert f"FLOWSHIP_PREFECT_API_IDLE={wrong!r}: expected the seconds the temporary Prefect API" in done.stderr
    assert not (tmp_path / "logs").exists()  # nothing started


@pytest.mark.timeout(300)
def test_flowship_down_stops_the_api_left_running(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    left = run(tmp_path, FLOWSHIP_PREFECT_API_IDLE="600")
    pid = int(str(left["pid"]))
    assert running(pid)
    done = flowship(["down"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"prefect-temporary: stopped (pid {pid})", "`flowship up` started nothing here"]
    assert not running(pid) and recorded_pids(tmp_path) == set()
