"""What the gateway costs, and what a release through it loses: the same model served directly and behind nginx.

After `make run` (the champion's bundle and image exist), in one run of this script, on Docker:

* direct: one container of the champion's image published on a loopback port (production without a gateway);
* gateway: flowship's gateway (nginx) in front of one replica of the same image, with the default
  `keepalive_s: 0` (each answer closes its connection) and with `keepalive_s: 60`; no rate limit (wrk is one
  client, which the default limit would slow down).

Single-record requests at concurrency 1 and 16 (`wrk -t1 -cC -dDs --latency`), the three targets alternating
over the rounds; each figure is the median over the rounds, and the gateway's figures are given as the p50
added and the throughput ratio to direct, the issue's aims printed beside them (under 0.3 ms added at p50;
at least 0.9x the direct requests/s).

Then a promotion and a rollback under load: 16 wrk connections keep sending single records through the gateway
(two replicas) while the production pool is replaced by a new one (the same model under a second image tag,
so new containers start and the gateway switches to them) and then back; wrk's socket errors and non-2xx
answers are the failed requests (aim: 0). Nothing is asserted; figures go to bench/results/gateway.json.

    .venv/bin/python bench/gateway_overhead.py [--duration S] [--rounds N]

Needs wrk (`apt-get install -y wrk`) and a Docker daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowship.adapters.docker_engine import DockerEngine  # noqa: E402
from flowship.config import load_params  # noqa: E402
from flowship.paths import Layout  # noqa: E402
from flowship.release.docker_runtime import DockerRuntime  # noqa: E402
from flowship.release.gateway_runtime import ProductionSpec  # noqa: E402
from flowship.release.runtime import PRODUCTION, Release  # noqa: E402

RESULTS = REPO / "bench" / "results"
MEDIANS = ("requests_per_s", "p50_ms", "p99_ms")
OUT_JSON = RESULTS / "gateway.json"
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('FIGURES {{"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50_us":%d,'
    .. '"p99_us":%d}}\\n', summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("FIGURES ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {shlex.join(command)}\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("FIGURES "))
    wall = raw["duration_us"] / 1e6
    return {
        "requests_per_s": raw["requests"] / wall,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "failed": raw["errors"] + raw["non_2xx"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    name = params.project.name
    engine = DockerEngine()
    if not engine.available():
        print("no Docker daemon answers", file=sys.stderr)
        return 1
    from flowship.adapters.tracking import CHAMPION, Tracker

    champion = Tracker(REPO).version_by_alias(name, CHAMPION)
    if champion is None:
        print("no champion: run `make run` first", file=sys.stderr)
        return 1
    image = champion.tags.get("flowship.release.image")
    bundle = Layout(REPO).bundle_dir(name, champion.version)
    if not image or not engine.image_exists(image) or not bundle.exists():
        print(f"v{champion.version}'s image or bundle is missing: run `flowship deploy` first", file=sys.stderr)
        return 1
    golden = json.loads((bundle / "golden.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="flowship-bench-gateway-"))
    script = work / "single.lua"
    script.write_text(LUA.format(body=json.dumps(json.dumps(golden[0]["features"]))))
    release = Release(name, champion.version, bundle, image)
    # the proxy's own cost: no rate limit (one wrk process is one client, and would be limited)
    spec = ProductionSpec.from_params(params, REPO)
    spec = replace(spec, gateway=spec.gateway.model_copy(update={"rate_limit": None}))

    direct_port, gateway_port, keepalive_port = free_port(), free_port(), free_port()
    direct_name = f"flowship-bench-direct-{os.getpid()}"
    runtimes = {
        "gateway": DockerRuntime(work / "gw", name, None, replace(spec, replicas=1, warm_s=0)),
        "gateway_keepalive_60s": DockerRuntime(
            work / "gw-ka", name, None,
            replace(spec, replicas=1, warm_s=0, gateway=spec.gateway.model_copy(update={"keepalive_s": 60.0})),
        ),
    }  # fmt: skip
    urls = {
        "direct": f"http://127.0.0.1:{direct_port}/predict",
        "gateway": f"http://127.0.0.1:{gateway_port}/predict",
        "gateway_keepalive_60s": f"http://127.0.0.1:{keepalive_port}/predict",
    }
    results: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "model": f"{name} v{champion.version}",
    }
    try:
        engine.run(image, direct_name, host_port=direct_port, log_dir=work / "direct-logs", restart_policy="no")
        engine.wait_healthy(direct_name, timeout=120)
        runtimes["gateway"].start(PRODUCTION, release, gateway_port, work / "gw-logs", restart=True)
        runtimes["gateway_keepalive_60s"].start(PRODUCTION, release, keepalive_port, work / "gw-ka-logs", restart=True)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {k: {1: [], 16: []} for k in urls}
        for target in urls:  # warm-up
            wrk(urls[target], script, 16, 2)
        for round_ in range(args.rounds):
            order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
            for connections in (1, 16):
                for target in order:
                    runs[target][connections].append(wrk(urls[target], script, connections, args.duration))
        figures = {
            target: {
                f"c{c}": {k: statistics.median(r[k] for r in runs[target][c]) for k in MEDIANS}
                | {"failed": sum(r["failed"] for r in runs[target][c])}
                for c in (1, 16)
            }
            for target in urls
        }  # fmt: skip
        results["single_record"] = figures
        for target in ("gateway", "gateway_keepalive_60s"):
            for c in ("c1", "c16"):
                figures[target][c]["p50_added_ms"] = figures[target][c]["p50_ms"] - figures["direct"][c]["p50_ms"]
                figures[target][c]["throughput_vs_direct"] = (
                    figures[target][c]["requests_per_s"] / figures["direct"][c]["requests_per_s"]
                )
        for runtime in runtimes.values():
            runtime.stop(PRODUCTION)
        engine.remove(direct_name)
        results["release_under_load"] = release_under_load(engine, release, spec, work, script, args.duration)
    finally:
        for runtime in runtimes.values():
            runtime.stop(PRODUCTION)
        engine.remove(direct_name)
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    return 0


def release_under_load(
    engine: DockerEngine, release: Release, spec: ProductionSpec, work: Path, script: Path, seconds: float
) -> dict[str, Any]:
    """16 connections through the gateway while production moves to new containers and back."""
    assert release.image is not None
    second_tag = release.image.rsplit(":", 1)[0] + ":bench-second-image"
    engine.client.images.get(release.image).tag(second_tag)
    port = free_port()
    runtime = DockerRuntime(work / "release", release.name, None, replace(spec, replicas=2, warm_s=600))
    runtime.start(PRODUCTION, release, port, work / "release-logs", restart=True)
    moves: list[float] = []

    def move() -> None:
        time.sleep(seconds / 4)
        for image in (second_tag, release.image):
            began = time.perf_counter()
            runtime.start(PRODUCTION, replace(release, image=image), port, work / "release-logs", restart=True)
            moves.append(time.perf_counter() - began)

    mover = threading.Thread(target=move)
    mover.start()
    try:
        load = wrk(f"http://127.0.0.1:{port}/predict", script, 16, seconds * 4)
        mover.join()
    finally:
        runtime.stop(PRODUCTION)
        engine.client.images.remove(second_tag)
    return {"requests": load["requests"], "failed": load["failed"], "switches": len(moves), "switch_seconds": moves}


def print_report(results: dict[str, Any]) -> None:
    print(f"command: {results['command']}")
    print(f"model:   {results['model']}; single-record requests, median over the rounds")
    header = [("conc", 5), ("req/s", 10), ("p50 ms", 9), ("p99 ms", 9), ("p50 added", 11), ("x direct", 10)]
    header.append(("failed", 8))
    print(f"{'target':<24}" + "".join(f"{title:>{width}}" for title, width in header))
    for target, by_c in results["single_record"].items():
        for c, f in by_c.items():
            added = f"{f['p50_added_ms']:+.2f}" if "p50_added_ms" in f else ""
            ratio = f"{f['throughput_vs_direct']:.2f}" if "throughput_vs_direct" in f else ""
            print(f"{target:<24}{c[1:]:>5}{f['requests_per_s']:>10.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
                  f"{added:>11}{ratio:>10}{f['failed']:>8}")  # fmt: skip
    print("aims: the gateway adds under 0.3 ms at p50 and keeps at least 0.9x the direct requests/s")
    load = results["release_under_load"]
    switches = ", ".join(f"{s:.1f} s" for s in load["switch_seconds"])
    print(f"release under load (16 connections): {load['failed']} failed of {load['requests']} requests over "
          f"{load['switches']} switches ({switches}); aim: 0")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
