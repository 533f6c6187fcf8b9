"""flowship's serving app beside `mlflow models serve`, same model, same machine, same load generator (wrk).

Four servers serve model flights-delay version 1 in one run of this script:

* mlflow: `mlflow models serve -m models:/flights-delay/1 --env-manager local` (MLflow's scoring server,
  one uvicorn worker; `{"dataframe_records": [...]}` on /invocations; it answers the predicted classes only);
* mlflow_best: the same with `--workers 2` and OMP_NUM_THREADS=1 (the best configuration found for these 2 cores);
* flowship: `python -m flowship.serving` on the bundle build/flights-delay-v1/model (one process;
  POST /predict with one JSON record or a JSON list of records; it answers classes and probabilities, writes
  the inference log and one JSON access line per request);
* flowship_gateway: what users get, production as `flowship deploy` serves it without Docker: the host's nginx
  in front of the replicas params.yaml asks for (each a `python -m flowship.serving` process; the rate limit off,
  as wrk is one client), on the code of this working tree.

The payloads are records of the bundle's golden.json (cycled for batches), and both servers' answers are
checked against the golden predictions before anything is measured. Scenarios, each run as
`wrk -t1 -cC -dDs --timeout 30s --latency -s <payload>.lua URL`, servers alternating which goes first:

* 1 record per request at concurrency 1 and 16: requests/s, p50, p99;
* 100 and 1000 records per request at concurrency 1 and 4: rows/s (and p50).

Each figure is the median over the rounds. Beside it: the server's CPU time per request (its process group,
from /proc: less sensitive to other work on the machine than wall time), and for flowship the rows per model
call (its /metrics), which shows what the micro-batcher did. For context: the in-process cost of
`pipeline.predict_proba` on a 1-row DataFrame (median of 200) and the Docker image sizes.

The targets are printed beside the figures, for flowship through its gateway against the best mlflow: single-record
p50 <= 2 ms at concurrency 1; >= 20x the requests/s at concurrency 16; >= 2x the rows/s of 1,000-record requests,
aiming at 100,000 rows/s. When flowship misses one (or with --explain always), py-spy profiles flowship (one
process) under three of the scenarios and two variants of it are measured briefly (OMP_NUM_THREADS=2;
FLOWSHIP_BATCH_WINDOW_MS=0) to show where the time goes.
Nothing is asserted. Figures go to bench/results/serving_compare.json; payloads, wrk scripts, server logs
and profiles to bench/results/serving_compare/.

    .venv/bin/python bench/serving_compare.py [--duration S] [--rounds N] [--warmup S] [--explain auto|always|never]

Needs wrk (`apt-get install -y wrk`); py-spy for the profiles (`python3 -m pip install py-spy`, outside .venv).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
OUT_JSON = RESULTS / "serving_compare.json"
WORK = RESULTS / "serving_compare"
PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent
BUNDLE = REPO / "build" / "flights-delay-v1" / "model"
MODEL_URI = "models:/flights-delay/1"
TRACKING_URI = f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
IMAGE = "flowship/flights-delay"
READY_TIMEOUT = 300.0
WRK_TIMEOUT = "30s"
IN_PROCESS_REPEAT = 200


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    rows: int  # records per request
    connections: int

    @property
    def single(self) -> bool:
        return self.rows == 1


SCENARIOS = (
    Scenario("single_c1", "1 record, c=1", 1, 1),
    Scenario("single_c16", "1 record, c=16", 1, 16),
    Scenario("batch100_c1", "100 records, c=1", 100, 1),
    Scenario("batch100_c4", "100 records, c=4", 100, 4),
    Scenario("batch1000_c1", "1000 records, c=1", 1000, 1),
    Scenario("batch1000_c4", "1000 records, c=4", 1000, 4),
)
BY_KEY = {s.key: s for s in SCENARIOS}
# the scenarios profiled (and measured on flowship's variants) when flowship misses a target
EXPLAIN_SCENARIOS = ("single_c1", "single_c16", "batch1000_c1")
# flowship with one setting changed, measured beside flowship as it is (diagnostics)
VARIANTS = {
    "batching off": {"FLOWSHIP_BATCH_WINDOW_MS": "0"},
    "two OpenMP threads": {"OMP_NUM_THREADS": "2"},
}
SERVER_NAMES = ("mlflow", "mlflow_best", "flowship", "flowship_gateway")


@dataclass(frozen=True)
class Target:
    scenario: str
    metric: str
    text: str
    met: Callable[[float, float], bool]  # (flowship, mlflow) -> met


# what the targets compare: flowship as users get it (through its gateway), and the best mlflow configuration
MEASURED, BASELINE = "flowship_gateway", "mlflow_best"
TARGETS = (
    Target("single_c1", "p50_ms", "p50 <= 2 ms", lambda fl, ml: fl <= 2.0),
    Target("single_c16", "requests_per_s", ">= 20x", lambda fl, ml: fl >= 20 * ml),
    Target("batch1000_c1", "rows_per_s", ">= 2x", lambda fl, ml: fl >= 2 * ml),
    Target("batch1000_c4", "rows_per_s", ">= 2x", lambda fl, ml: fl >= 2 * ml),
)
# and an aim of its own, in rows/s through the gateway whatever mlflow does
AIM_ROWS_PER_S = ("batch1000_c4", 100_000)


# --- the servers ----------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    env_shown: dict[str, str]  # the variables that matter, for the printed command
    env: dict[str, str]
    port: int
    path: str  # the scoring endpoint
    ready_path: str
    log: Path
    wrap: Callable[[list[dict[str, Any]], bool], Any]  # (records, single) -> the JSON body
    proc: subprocess.Popen[bytes] | None = None
    started_in: float | None = None
    payloads: dict[str, Path] = field(default_factory=dict)  # scenario key -> lua script
    # a server started by other means than one process (flowship's gateway: nginx and replicas)
    launch: Callable[[], None] | None = None
    halt: Callable[[], None] | None = None
    cpu: Callable[[], float] | None = None  # CPU-seconds of all its processes so far
    metrics: bool = False  # flowship's own /metrics (rows per model call)

    def cpu_seconds(self) -> float:
        if self.cpu is not None:
            return self.cpu()
        assert self.proc is not None
        return group_cpu_seconds(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def shown(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env_shown.items())
        return f"{env} {shlex.join(self.command)}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # `mlflow models serve` runs `uvicorn` from PATH: the virtualenv's
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def mlflow_server(work: Path, name: str = "mlflow", workers: int = 1) -> Server:
    port = free_port()
    shown = {"MLFLOW_TRACKING_URI": TRACKING_URI, **({"OMP_NUM_THREADS": "1"} if workers > 1 else {})}
    command = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        MODEL_URI,
        "--env-manager",
        "local",
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    return Server(
        name,
        command,
        shown,
        {**base_env(), **shown},
        port,
        "/invocations",
        "/ping",
        work / f"{name}.log",
        lambda records, single: {"dataframe_records": records},
    )


def flowship_server(work: Path, log_dir: Path, name: str = "flowship", extra: dict[str, str] | None = None) -> Server:
    port = free_port()
    shown = {
        "FLOWSHIP_MODEL_DIR": str(BUNDLE),
        "FLOWSHIP_LOG_DIR": str(log_dir / name),
        "FLOWSHIP_HOST": "127.0.0.1",
        "FLOWSHIP_PORT": str(port),
        **(extra or {}),
    }
    env = {k: v for k, v in base_env().items() if not k.startswith("FLOWSHIP_")}
    return Server(
        name,
        [str(PYTHON), "-m", "flowship.serving"],
        shown,
        {**env, **shown},
        port,
        "/predict",
        "/ready",
        work / f"{name}.log",
        lambda records, single: records[0] if single else records,
        metrics=True,
    )


def gateway_server(work: Path, log_dir: Path) -> Server:
    """flowship's production as users get it without Docker: the host's nginx in front of the replicas of
    params.yaml (the rate limit off: wrk is one client), started and stopped by flowship's own process runtime."""
    from flowship.config import load_params
    from flowship.gateway.host import find_nginx
    from flowship.release.gateway_runtime import ProductionSpec
    from flowship.release.process_runtime import ProcessRuntime
    from flowship.release.runtime import PRODUCTION, Release

    nginx = find_nginx()
    if nginx is None:
        sys.exit("nginx not found: apt-get install -y nginx-light")
    params = load_params(REPO / "params.yaml")
    spec = ProductionSpec.from_params(params, REPO)
    spec = replace(spec, warm_s=0, gateway=spec.gateway.model_copy(update={"rate_limit": None}))
    root = work / "gateway"
    root.mkdir(parents=True, exist_ok=True)
    runtime = ProcessRuntime(root, params.project.name, production=spec, nginx=nginx)
    port = free_port()
    release = Release(params.project.name, "1", BUNDLE)
    server = Server(
        "flowship_gateway",
        [nginx, "+", f"{spec.replicas} x", str(PYTHON), "-m", "flowship.serving"],
        {"FLOWSHIP_RUNTIME": "process", "replicas": str(spec.replicas), "rate_limit": "off"},
        {},
        port,
        "/predict",
        "/ready",
        root / "logs",
        lambda records, single: records[0] if single else records,
    )

    def processes() -> list[int]:
        pids = [int(json.loads(f.read_text())["pid"]) for f in (root / ".flowship/processes/replicas").glob("*.json")]
        master = root / ".flowship/gateway/nginx.pid"
        if master.exists():
            nginx_pid = int(master.read_text().strip())
            pids += [nginx_pid, *children(nginx_pid)]
        return pids

    def launch() -> None:
        runtime.start(PRODUCTION, release, port, log_dir / "gateway", restart=True)

    server.launch = launch
    server.halt = lambda: runtime.stop(PRODUCTION)
    server.cpu = lambda: sum(process_cpu_seconds(pid) for pid in processes())
    return server


def start(server: Server, cwd: Path) -> None:
    if server.launch is not None:
        server.launch()
        return
    with server.log.open("wb") as log:
        server.proc = subprocess.Popen(  # its own session: Ctrl-C reaches this script, which stops it
            server.command,
            env=server.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(server: Server, began: float) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    url = f"http://127.0.0.1:{server.port}{server.ready_path}"
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with code {server.proc.returncode}:\n{tail(server.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    server.started_in = time.monotonic() - began
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT:.0f} s:\n{tail(server.log)}")


def stop(server: Server) -> None:
    """SIGTERM to the server's process group (it was started in its own session), SIGKILL if it lingers."""
    if server.halt is not None:
        server.halt()
        server.halt = None
        return
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Each live process's pid and the fields of /proc/<pid>/stat after its command (state, ppid, pgrp, ...)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def cpu_of(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group (the server and its children)."""
    return sum(cpu_of(fields) for _, fields in proc_stats() if int(fields[2]) == pgid)


def process_cpu_seconds(pid: int) -> float:
    try:
        return cpu_of(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())
    except (OSError, IndexError):
        return 0.0


def children(parent: int) -> list[int]:
    return [pid for pid, fields in proc_stats() if int(fields[1]) == parent]


def post(url: str, body: bytes, timeout: float = 60) -> Any:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def model_calls(server: Server) -> tuple[float, float]:
    """flowship's model calls and rows scored so far, from its Prometheus metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = dict(re.findall(r"^flowship_model_call_rows_(count|sum) (\S+)$", text, re.MULTILINE))
    return float(found.get("count", "nan")), float(found.get("sum", "nan"))


# --- payloads and wrk ------------------------------------------------------------------------------------

LUA = """\
-- POST the body in {body}; print the figures as one JSON line at the end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open({body_literal}, "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FIGURES {{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"non_2xx":%d,"timeouts":%d,"latency_mean_us":%.1f,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def golden_records() -> tuple[list[dict[str, Any]], list[Any]]:
    golden = json.loads((BUNDLE / "golden.json").read_text())
    return [g["features"] for g in golden], [g["prediction"] for g in golden]


def cycled(items: list[Any], n: int) -> list[Any]:
    return [items[i % len(items)] for i in range(n)]


def write_payloads(server: Server, records: list[dict[str, Any]], folder: Path) -> None:
    """One JSON body and one wrk script per request size, for this server's request format."""
    for rows in sorted({s.rows for s in SCENARIOS}):
        body = folder / f"{server.name}_{rows}.json"
        body.write_text(json.dumps(server.wrap(cycled(records, rows), rows == 1)))
        lua = folder / f"{server.name}_{rows}.lua"
        lua.write_text(LUA.format(body=body.name, body_literal=json.dumps(str(body))))
        server.payloads.update({s.key: lua for s in SCENARIOS if s.rows == rows})


def check_answers(server: Server, records: list[dict[str, Any]], expected: list[Any]) -> None:
    """Each payload once: the server answers one prediction per record, equal to the golden ones."""
    for rows in sorted({s.rows for s in SCENARIOS}):
        body = json.dumps(server.wrap(cycled(records, rows), rows == 1)).encode()
        got = post(server.url, body)["predictions"]
        want = cycled(expected, rows)
        if [str(p) for p in got] != [str(p) for p in want]:
            wrong = sum(str(a) != str(b) for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))
            raise RuntimeError(f"{server.name}: {wrong} of {rows} predictions differ from the golden ones")


def wrk_command(server: Server, scenario: Scenario, seconds: float) -> list[str]:
    return [
        "wrk",
        "-t1",
        f"-c{scenario.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        WRK_TIMEOUT,
        "--latency",
        "-s",
        str(server.payloads[scenario.key]),
        server.url,
    ]


def run_wrk(server: Server, scenario: Scenario, seconds: float) -> dict[str, Any]:
    """One wrk run; its figures, the server's CPU time and (flowship) the rows per model call."""
    calls = model_calls(server) if server.metrics else None
    load = os.getloadavg()[0]
    cpu = server.cpu_seconds()
    command = wrk_command(server, scenario, seconds)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    cpu = server.cpu_seconds() - cpu
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("FIGURES ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {shlex.join(command)}\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("FIGURES "))
    wall = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non_2xx"]
    errors = {k: raw[k] for k in ("connect_errors", "read_errors", "write_errors", "non_2xx", "timeouts") if raw[k]}
    if not raw["requests"]:
        errors["no_response_within_the_run"] = 1
    result = {
        "requests_per_s": raw["requests"] / wall,
        "rows_per_s": ok * scenario.rows / wall,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "seconds": wall,
        "server_cpu_ms_per_request": 1000 * cpu / raw["requests"] if raw["requests"] else float("nan"),
        "server_cpu_share": cpu / wall,
        "bytes_per_response": raw["bytes"] / raw["requests"] if raw["requests"] else 0,
        "errors": errors,
        "load_1min_at_start": load,
    }
    if calls is not None:
        count, rows = (b - a for a, b in zip(calls, model_calls(server), strict=True))
        result["rows_per_model_call"] = rows / count if count else float("nan")
    return result


def warm_up(server: Server, seconds: float) -> None:
    if seconds > 0:
        for key in ("single_c16", "batch1000_c1"):
            run_wrk(server, BY_KEY[key], seconds)


# --- in-process cost and context ------------------------------------------------------------------------


def in_process_cost(repeat: int = IN_PROCESS_REPEAT) -> dict[str, Any]:
    """predict_proba on a 1-row DataFrame typed as the server types it; the median of `repeat` calls (ms)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from flowship.serving.bundle import load_bundle
    from flowship.serving.schema import RecordCodec, record_model

    bundle = load_bundle(BUNDLE)
    codec = RecordCodec(bundle, record_model(bundle.metadata))
    assert bundle.golden
    row = codec.row_from_dict(bundle.golden[0].features)
    frame = codec.frame([row])
    pipeline = bundle.pipeline

    def median_ms(call: Callable[[], Any]) -> float:
        for _ in range(20):
            call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    figures: dict[str, Any] = {"load_1min_at_start": os.getloadavg()[0]}
    figures["predict_proba_ms"] = median_ms(lambda: pipeline.predict_proba(frame))
    prepared = pipeline[:-1].transform(frame)
    figures["preprocessing_ms"] = median_ms(lambda: pipeline[:-1].transform(frame))
    figures["final_estimator_ms"] = median_ms(lambda: pipeline[-1].predict_proba(prepared))
    figures["frame_from_row_ms"] = median_ms(lambda: codec.frame([row]))
    with threadpool_limits(1):
        figures["predict_proba_one_thread_ms"] = median_ms(lambda: pipeline.predict_proba(frame))
        figures["final_estimator_one_thread_ms"] = median_ms(lambda: pipeline[-1].predict_proba(prepared))
    figures["threadpools"] = [
        {k: info.get(k) for k in ("internal_api", "num_threads", "prefix")} for info in threadpool_info()
    ]
    figures["pipeline_steps"] = [f"{name}: {type(step).__name__}" for name, step in pipeline.steps]
    return figures


def docker_images() -> list[dict[str, str]] | str:
    if shutil.which("docker") is None:
        return "docker not found"
    fmt = "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}\t{{.CreatedSince}}"
    try:
        done = subprocess.run(
            ["docker", "image", "ls", IMAGE, "--format", fmt], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker image ls failed: {exc}"
    if done.returncode != 0:
        return f"docker image ls failed: {done.stderr.strip()}"
    keys = ("image", "id", "size", "created")
    return [dict(zip(keys, line.split("\t"), strict=False)) for line in done.stdout.splitlines() if line.strip()]


def serving_digest() -> str:
    """A digest of flowship/serving's sources: the working tree may change while this runs."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "flowship" / "serving").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "flowship/serving"], cwd=REPO, capture_output=True, text=True
    ).stdout.split("\n")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk[0].split(" [")[0] if wrk else "?",
        "git_head": head.stdout.strip(),
        "flowship_serving_uncommitted": [line[3:] for line in status if line.strip()],
        "packages": {
            p: version(p) for p in ("mlflow", "fastapi", "uvicorn", "pydantic", "scikit-learn", "pandas", "numpy")
        },
    }


# --- profiling (py-spy) ------------------------------------------------------------------------------------

# (bucket, substrings of a stack, any of which puts a sample there); the first bucket that matches wins
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model: HGB tree traversal (TreePredictor.predict, an OpenMP region per tree)", ("TreePredictor.predict",)),
    (
        "model: HGB input checks and binning (_preprocess_X, validate_data)",
        ("HistGradientBoostingClassifier.predict_proba", "BaseHistGradientBoosting."),
    ),
    ("model: pipeline step 'coerce' (flowship.pipeline.training.coerce_features, pandas)", ("coerce_features",)),
    ("model: pipeline step 'encode' (ColumnTransformer + OrdinalEncoder, pandas)", ("ColumnTransformer.",)),
    ("model: sklearn Pipeline plumbing (set_output wrapping, checks)", ("Pipeline.", "_wrap_method_output")),
    ("model: all trees at once for a few rows (TreeTable)", ("TreeTable.",)),
    ("model: fast path encoding and outputs (FastPath)", ("FastPath.",)),
    ("DataFrame construction (RecordCodec.frame)", ("RecordCodec.frame",)),
    ("answers: outputs -> lists and dicts (Predictor._result)", ("Predictor._result",)),
    ("model thread: other", ("Predictor.", "flowship-model")),
    ("inference log (append, writer thread: JSON, writes)", ("InferenceLog", "InferenceEntry", "inference_log.py")),
    ("JSON access log (logging + JsonFormatter)", ("(logging/", "serving/logs.py")),
    ("Prometheus metrics", ("ServingMetrics", "prometheus_client")),
    ("guardrails (checks, events, warnings)", ("Guardrails.", "Event.", "safety_entry", "SafetyEntry")),
    ("response: JSON rendering (SafeJSONResponse)", ("SafeJSONResponse", "JSONResponse.")),
    (
        "request: body read, JSON parsing, validation (FastAPI's or the column checks)",
        (
            "request_body_to_args",
            "solve_dependencies",
            "Request.json",
            "Request.body",
            "_validate",
            "(json/",
            "encoding.py",
            "read_json",
        ),
    ),
    ("request: records -> rows and feature dicts (RecordCodec)", ("RecordCodec.",)),
    ("micro-batcher (asyncio bookkeeping)", ("MicroBatcher.", "Arrival.")),
    ("HTTP plumbing: uvicorn, starlette, FastAPI routing, middleware", ("uvicorn/", "starlette/", "fastapi/")),
)
# innermost frames that mean the thread was waiting, not working
IDLE_LEAVES = ("Condition.wait", "Event.wait", "_worker (concurrent/futures/thread.py", "Runner.run", "select")


def classify(stack: str) -> str:
    frames = stack.split(";")
    if frames[-1].startswith(IDLE_LEAVES):
        return "idle"
    for bucket, needles in BUCKETS:
        if any(needle in stack for needle in needles):
            return bucket
    return "other"


def summarize_profile(raw: Path) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        bucket = classify(stack)
        counts[bucket] += int(n)
        if bucket != "idle":
            leaves[re.sub(r"^thread \([^)]*\): [^;]*;", "", stack).split(";")[-1]] += int(n)
    busy = sum(n for b, n in counts.items() if b != "idle")
    return {
        "samples": sum(counts.values()),
        "busy_samples": busy,
        "buckets": {b: n / busy for b, n in counts.most_common() if b != "idle" and busy},
        "top_leaves": {f: n / busy for f, n in leaves.most_common(8) if busy},
    }


def profile(py_spy: str, server: Server, scenario: Scenario, seconds: float, folder: Path) -> dict[str, Any]:
    """py-spy samples flowship's process while wrk runs the scenario; the samples by bucket."""
    assert server.proc is not None
    raw = folder / f"profile_{scenario.key}.txt"
    command = wrk_command(server, scenario, seconds + 2)
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as wrk:
        time.sleep(1)
        spy = [py_spy, "record", "--pid", str(server.proc.pid), "--rate", "200", "--duration", f"{seconds:g}"]
        spy += ["--format", "raw", "--threads", "--output", str(raw)]
        done = subprocess.run(spy, capture_output=True, text=True, timeout=seconds + 60)
        wrk.wait(seconds + 60)
    if done.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}", "command": spy}
    return {"command": shlex.join(spy), "raw": str(raw.relative_to(REPO)), **summarize_profile(raw)}


def find_py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    for candidate in sorted(Path.home().glob(".pyenv/versions/*/bin/py-spy")):
        return str(candidate)
    return None


# --- rounds, figures, report -------------------------------------------------------------------------------

METRICS = ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "rows_per_model_call")


def interleaved_rounds(
    servers: list[Server], scenarios: list[Scenario] | tuple[Scenario, ...], rounds: int, seconds: float
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """wrk runs of every scenario on every server, `rounds` times, the servers' order rotated from one scenario to
    the next (so that none gains from going first on a machine whose load drifts); each run printed as it ends.
    Returns the runs by server name and scenario key."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {k.key: [] for k in scenarios} for s in servers}
    width = max(len(s.name) for s in servers)
    for r in range(rounds):
        for i, scenario in enumerate(scenarios):
            shift = (r + i) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                run = run_wrk(server, scenario, seconds)
                runs[server.name][scenario.key].append(run)
                print(
                    f"round {r + 1}/{rounds} {scenario.label:<18} {server.name:<{width}} "
                    f"{run['requests_per_s']:8.1f} req/s {run['rows_per_s']:10,.0f} rows/s "
                    f"p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms"
                    + (f" errors {run['errors']}" if run["errors"] else ""),
                    flush=True,
                )
    return runs


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in runs if metric in r]
        if values:
            out[metric] = statistics.median(values)
    return out


def targets_of(figures: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    rows = []
    for t in TARGETS:
        fl, ml = figures[MEASURED][t.scenario][t.metric], figures[BASELINE][t.scenario][t.metric]
        rows.append(
            {
                "scenario": t.scenario,
                "metric": t.metric,
                "target": t.text,
                MEASURED: fl,
                BASELINE: ml,
                "ratio": fl / ml if ml else float("nan"),
                "met": t.met(fl, ml),
            }
        )
    return rows


def fmt(value: float | None, metric: str) -> str:
    if value is None or value != value:
        return "-"
    if metric.endswith("_ms") or metric == "server_cpu_ms_per_request":
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if metric == "rows_per_model_call":
        return f"{value:.1f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


LABELS = {
    "requests_per_s": "requests/s",
    "rows_per_s": "rows/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "server_cpu_ms_per_request": "server CPU ms/request",
    "rows_per_model_call": "rows per model call",
}
SHOWN = {
    True: ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "rows_per_model_call"),
    False: ("rows_per_s", "requests_per_s", "p50_ms", "server_cpu_ms_per_request", "rows_per_model_call"),
}


def table(result: dict[str, Any]) -> list[str]:
    figures, targets = result["figures"], {(t["scenario"], t["metric"]): t for t in result["targets"]}
    names = [n for n in SERVER_NAMES if n in figures]
    header = ("scenario", "metric", *names, f"{MEASURED}/{BASELINE}", "target")
    rows: list[tuple[str, ...]] = []
    for s in SCENARIOS:
        for i, metric in enumerate(SHOWN[s.single]):
            values = [figures[n][s.key].get(metric) for n in names]
            if all(v is None for v in values):
                continue
            fl, ml = figures[MEASURED][s.key].get(metric), figures[BASELINE][s.key].get(metric)
            ratio = f"{fl / ml:.2f}x" if ml and fl is not None and metric != "rows_per_model_call" else ""
            target = targets.get((s.key, metric))
            verdict = f"{target['target']}: {'met' if target['met'] else 'MISSED'}" if target else ""
            shown = tuple(fmt(v, metric) for v in values)
            rows.append((s.label if i == 0 else "", LABELS[metric], *shown, ratio, verdict))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for n, row in enumerate((header, *rows)):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:-1], widths[2:-1], strict=True)] + [row[-1]]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def report(result: dict[str, Any]) -> str:
    m, ip, digest = result["machine"], result["in_process"], result["flowship_serving_digest"]
    loads = [r["load_1min_at_start"] for runs in result["runs"].values() for rs in runs.values() for r in rs]
    lines = [
        f"flowship serving vs mlflow models serve: model flights-delay v1, wrk, {result['duration_s']:g} s per run, "
        f"median of {result['rounds']} round(s), servers alternating",
        "",
        *table(result),
        "",
        "targets: "
        + "; ".join(f"{t['scenario']} {t['target']}: {'met' if t['met'] else 'MISSED'}" for t in result["targets"]),
    ]
    aim_key, aim = AIM_ROWS_PER_S
    reached = result["figures"][MEASURED][aim_key].get("rows_per_s", float("nan"))
    lines.append(
        f"aim: {aim:,} rows/s through the gateway ({BY_KEY[aim_key].label}): {reached:,.0f} "
        f"({'met' if reached >= aim else 'not met'})"
    )
    errors = [
        f"{name} {key} round {i + 1}: {r['errors']}"
        for name, runs in result["runs"].items()
        for key, rs in runs.items()
        for i, r in enumerate(rs)
        if r["errors"]
    ]
    lines += ["errors: " + ("; ".join(errors) if errors else "none (every response 2xx, no socket errors)")]
    bytes_per = {
        name: {key: rs[0]["bytes_per_response"] for key, rs in runs.items()} for name, runs in result["runs"].items()
    }
    lines += [
        "answers: mlflow the predicted classes (pyfunc predict); flowship classes, probabilities, guardrail warnings, "
        "model and request id, and it writes an inference-log entry (and safety events) and a JSON access-log line "
        "per request",
        "response bytes (single / 1000 records): "
        + ", ".join(f"{n} {b['single_c1']:.0f} / {b['batch1000_c1']:.0f}" for n, b in bytes_per.items()),
        "",
        f"in-process, 1-row DataFrame, median of {IN_PROCESS_REPEAT} (1-min load {ip['load_1min_at_start']:.2f}): "
        f"pipeline.predict_proba {ip['predict_proba_ms']:.2f} ms "
        f"(preprocessing {ip['preprocessing_ms']:.2f} + final estimator {ip['final_estimator_ms']:.2f}); "
        f"with one OpenMP thread {ip['predict_proba_one_thread_ms']:.2f} ms "
        f"(final estimator {ip['final_estimator_one_thread_ms']:.2f}); "
        f"RecordCodec.frame of one row {ip['frame_from_row_ms']:.2f} ms",
        "  pipeline: " + ", ".join(ip["pipeline_steps"]),
        "server start to ready: "
        + ", ".join(f"{name} {t:.1f} s" for name, t in result["started_in_s"].items() if t is not None),
    ]
    images = result["docker_images"]
    if isinstance(images, list):
        lines.append(f"docker image ls {IMAGE}: " + (", ".join(f"{i['image']} {i['size']}" for i in images) or "none"))
    else:
        lines.append(f"docker images: {images}")
    explain = result.get("explain")
    if explain:
        lines += ["", "where flowship's time goes (py-spy, busy samples of flowship's process; idle waits left out):"]
        for key, prof in explain["profiles"].items():
            if "error" in prof:
                lines.append(f"  {key}: {prof['error']}")
                continue
            lines.append(
                f"  {BY_KEY[key].label} ({prof['busy_samples']} busy of {prof['samples']} samples, {prof['raw']}):"
            )
            lines += [f"    {share:6.1%}  {bucket}" for bucket, share in list(prof["buckets"].items())[:9]]
            lines.append(
                "    top leaves: " + "; ".join(f"{f} {s:.0%}" for f, s in list(prof["top_leaves"].items())[:4])
            )
        if explain.get("variants"):
            lines += ["", "flowship beside variants of itself (one run each, in turn, same moment; diagnostics):"]
            for key in EXPLAIN_SCENARIOS:
                parts = []
                for label, variant in explain["variants"].items():
                    r = variant["runs"].get(key)
                    if r is None:
                        continue
                    shown = (
                        f"{r['requests_per_s']:.1f} req/s" if BY_KEY[key].single else f"{r['rows_per_s']:,.0f} rows/s"
                    )
                    name = f"{label} ({variant['env']})" if variant["env"] else label
                    parts.append(
                        f"{name}: {shown}, p50 {r['p50_ms']:.1f} ms, CPU {r['server_cpu_ms_per_request']:.1f} ms/req"
                    )
                lines.append(f"  {BY_KEY[key].label}: " + "; ".join(parts))
        if explain.get("variants_error"):
            lines.append(f"  variants failed: {explain['variants_error']}")
        if explain.get("variants_code") and explain["variants_code"] != digest["at_start"]:
            lines.append(
                f"  (the variants run flowship/serving sources {explain['variants_code']}, not {digest['at_start']})"
            )
    lines += [
        "",
        "commands:",
        *(f"  {name}: {command}" for name, command in result["commands"].items() if name != "wrk"),
        *(f"  wrk: {c}" for c in result["commands"]["wrk"]),
        f"  payloads: {WORK.relative_to(REPO)}/<server>_<records>.json, records of "
        f"{BUNDLE.relative_to(REPO)}/golden.json (cycled), read by the .lua beside them",
        "",
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), Python {m['python']}, {m['platform']}, "
        f"{m['wrk']}",
        "         " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"         1-min load average at the start of the runs: {min(loads):.2f} to {max(loads):.2f} "
        "(wrk and the server under test share these CPUs with whatever else runs)",
        f"code: HEAD {m['git_head']} at the start, flowship/serving sources {digest['at_start']}"
        + (
            f" (changed to {digest['at_end']} during the run: the figures are of the code at the start)"
            if digest["at_end"] != digest["at_start"]
            else ""
        )
        + (
            f", with uncommitted changes in {', '.join(m['flowship_serving_uncommitted'])}"
            if m["flowship_serving_uncommitted"]
            else ""
        ),
    ]
    return "\n".join(lines)


@contextmanager
def servers_running(servers: list[Server], cwd: Path) -> Iterator[None]:
    """Start the servers together, wait until each is ready; stop them all however the block ends."""
    try:
        began = time.monotonic()
        for server in servers:
            start(server, cwd)
        for server in servers:
            wait_ready(server, began)
        yield
    finally:
        for server in servers:
            stop(server)


def explain(
    args: argparse.Namespace, flowship: Server, work: Path, log_dir: Path, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """py-spy profiles of flowship under a few scenarios, and two variants of it measured briefly."""
    out: dict[str, Any] = {"profiles": {}, "variants": {}}
    py_spy = find_py_spy()
    for key in EXPLAIN_SCENARIOS:
        if py_spy is None:
            out["profiles"][key] = {"error": "py-spy not found (python3 -m pip install py-spy, outside .venv)"}
            continue
        print(f"profiling flowship: {BY_KEY[key].label}", flush=True)
        out["profiles"][key] = profile(py_spy, flowship, BY_KEY[key], args.duration, work)
    # Variants run beside flowship as it is, scenario by scenario, so each is compared with a run of the
    # same moment (other work on the machine comes and goes).
    variants = [
        (flowship_server(work, log_dir, f"flowship_variant{i + 1}", extra), label)
        for i, (label, extra) in enumerate(VARIANTS.items())
    ]
    for variant, _ in variants:
        write_payloads(variant, records, work)
    print("measuring flowship beside two variants of it ...", flush=True)
    try:
        with servers_running([v for v, _ in variants], work):
            out["variants_code"] = serving_digest()
            for variant, _ in variants:
                warm_up(variant, args.warmup)
            for key in EXPLAIN_SCENARIOS:
                for server, label in [(flowship, "flowship as it is"), *variants]:
                    env = " ".join(f"{k}={v}" for k, v in VARIANTS.get(label, {}).items())
                    entry = out["variants"].setdefault(label, {"env": env, "runs": {}})
                    entry["runs"][key] = run_wrk(server, BY_KEY[key], args.duration)
    except RuntimeError as exc:
        out["variants_error"] = str(exc)[:500]
    return out


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every scenario on each server (default 3)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk per warm-up payload (default 3)")
    parser.add_argument(
        "--explain",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile flowship and measure two variants of it: when it misses a target (auto), always or never",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    for needed in (BUNDLE / "golden.json", BUNDLE / "model.pkl", REPO / "mlruns" / "mlflow.db"):
        if not needed.exists():
            sys.exit(f"missing: {needed}")

    # Ctrl-C and SIGTERM end the run with KeyboardInterrupt (even when started with SIGINT ignored, as a
    # background job): the finally blocks stop the servers
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    log_dir = Path(tempfile.mkdtemp(prefix="flowship-serving-bench-"))  # the inference logs grow: not kept
    records, expected = golden_records()
    mlflow, flowship = mlflow_server(WORK), flowship_server(WORK, log_dir)
    mlflow_best, gateway = mlflow_server(WORK, "mlflow_best", workers=2), gateway_server(WORK, log_dir)
    servers = [mlflow, mlflow_best, flowship, gateway]
    for server in servers:
        write_payloads(server, records, WORK)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {k.key: [] for k in SCENARIOS} for s in servers}
    result: dict[str, Any] = {}
    try:
        print("in-process cost of one row ...", flush=True)
        in_process = in_process_cost()
        print("starting both servers ...", flush=True)
        code_at_start = serving_digest()
        machine_at_start = machine()
        with servers_running(servers, WORK):
            for server in servers:
                check_answers(server, records, expected)
                warm_up(server, args.warmup)
            runs = interleaved_rounds(servers, SCENARIOS, args.rounds, args.duration)
            figures = {name: {key: medians(rs) for key, rs in by.items()} for name, by in runs.items()}
            targets = targets_of(figures)
            result = {
                "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "duration_s": args.duration,
                "rounds": args.rounds,
                "figures": figures,
                "targets": targets,
                "in_process": in_process,
                "started_in_s": {s.name: s.started_in for s in servers},
                "docker_images": docker_images(),
                "commands": {
                    **{server.name: server.shown() for server in servers},
                    "wrk": [
                        shlex.join(wrk_command(server, s, args.duration)) + f"   # {server.name}, {s.label}"
                        for s in SCENARIOS
                        for server in servers
                    ],
                },
                "machine": machine_at_start,
                "flowship_serving_digest": {"at_start": code_at_start, "at_end": serving_digest()},
                "runs": runs,
            }
            missed = not all(t["met"] for t in targets)
            if args.explain == "always" or (args.explain == "auto" and missed):
                for server in (mlflow, mlflow_best, gateway):
                    stop(server)  # the profiles and variants have the machine to themselves (but for wrk)
                result["explain"] = explain(args, flowship, WORK, log_dir, records)
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped, nothing written")
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)

    print()
    print(report(result))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(REPO)} (payloads, wrk scripts, logs, profiles: {WORK.relative_to(REPO)}/)")


if __name__ == "__main__":
    main()
