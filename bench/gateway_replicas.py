"""What the gateway's choice of replica costs: production as `flowship deploy` serves it without Docker (the host's
nginx in front of params.yaml's replicas, bench/serving_compare.py's `flowship_gateway`), beside variants of it.

After `make run`, in one run of this script, four targets alternating over the rounds:

* gateway: as it is: a request goes to a replica with nothing in flight, the first one above all (a lone client's
  requests all go to one process), and once every replica has one, to each in turn (`nginx._first_free`);
* gateway_round_robin: the same gateway with the plain round robin it had before (its nginx.conf edited and
  reloaded): a lone client's requests go to each replica in turn;
* gateway_one_replica: the same gateway with one replica left in its upstream: every request to the same process;
* replica: the first replica of `gateway`, straight, without nginx.

(The first version of this bench, at b5a982f, also had each replica's threads pinned to a core of their own:
1.09x round robin's 1,000 records at c=1, 1.04x at c=4, 1.07x one record; pinning was not taken.)

Scenarios: 1,000 records at concurrency 1 and 4, one record at concurrency 1 (bench/serving_compare.py's wrk
runs). Printed: rows/s (or requests/s), p50 and the processes' CPU a request, medians over the rounds, each beside
`gateway`'s. Written to bench/results/gateway_replicas.json; nothing is asserted.

    .venv/bin/python bench/gateway_replicas.py [--duration S] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import serving_compare as sc  # bench/ is the script's folder: the servers, payloads and wrk runs

REPO = sc.REPO
OUT_JSON = REPO / "bench" / "results" / "gateway_replicas.json"
WORK = REPO / "bench" / "results" / "gateway_replicas"
SCENARIOS = tuple(sc.BY_KEY[k] for k in ("batch1000_c1", "batch1000_c4", "single_c1"))
REFERENCE = "gateway"


def gateway(name: str, log_dir: Path) -> tuple[sc.Server, Path]:
    folder = WORK / name
    folder.mkdir(parents=True)
    server = sc.gateway_server(folder, log_dir / name)
    server.name = name
    return server, folder / "gateway"


def replica_pids(root: Path) -> list[int]:
    files = sorted((root / ".flowship/processes/replicas").glob("*.json"))
    return [int(json.loads(f.read_text())["pid"]) for f in files]


def reload(root: Path, text: str) -> None:
    (root / ".flowship/gateway/nginx.conf").write_text(text)
    os.kill(int((root / ".flowship/gateway/nginx.pid").read_text()), signal.SIGHUP)
    time.sleep(2)  # the old workers finish, the new ones take the edited upstream


def stable_upstream(root: Path) -> tuple[str, str]:
    """The gateway's nginx.conf and its `upstream stable { ... }` block."""
    text = (root / ".flowship/gateway/nginx.conf").read_text()
    found = re.search(r"^    upstream stable \{\n.*?^    \}\n", text, flags=re.MULTILINE | re.DOTALL)
    if found is None or text.count(" backup ") < 2:
        sys.exit(f"{root}/.flowship/gateway/nginx.conf: no stable upstream of two replicas or more, first free")
    return text, found.group(0)


def one_replica(root: Path) -> str:
    """Leave the first replica alone in the gateway's upstream; nginx reloads. Returns the upstream as it is then."""
    text, block = stable_upstream(root)
    servers = re.findall(r"^\s*server 127\.0\.0\.1:(\d+)", block, flags=re.MULTILINE)
    lines = [line for line in block.splitlines(keepends=True) if "server " not in line or servers[0] in line]
    lines = [line for line in lines if " backup " not in line and "zone " not in line]
    edited = "".join(line.replace("max_conns=1 ", "") for line in lines)
    reload(root, text.replace(block, edited))
    return edited


def round_robin(root: Path) -> str:
    """The gateway's stable upstream as it was before `_first_free`: each replica once, in turn, no limit."""
    text, block = stable_upstream(root)
    lines = [line for line in block.splitlines(keepends=True) if " backup " not in line and "zone " not in line]
    edited = "".join(re.sub(r"(weight=\d+ )?max_conns=1 ", "", line) for line in lines)
    reload(root, text.replace(block, edited))
    return edited


def direct(root: Path, log_dir: Path) -> sc.Server:
    """The gateway's first replica, reached on its own port."""
    pid = replica_pids(root)[0]
    port = int(re.findall(r"server 127\.0\.0\.1:(\d+)", (root / ".flowship/gateway/nginx.conf").read_text())[0])
    server = sc.Server(
        "replica",
        ["(the first replica of gateway)"],
        {"port": str(port)},
        {},
        port,
        "/predict",
        "/ready",
        log_dir / "replica.log",
        lambda records, single: records[0] if single else records,
    )
    server.cpu = lambda: sc.process_cpu_seconds(pid)
    return server


def report(result: dict[str, Any]) -> str:
    figures = result["figures"]
    lines = [
        f"the gateway's replicas at concurrency 1 and 4: wrk, {result['duration_s']:g} s a run, "
        f"medians of {result['rounds']} rounds, targets alternating",
        f"command: {result['command']}",
    ]
    for scenario in SCENARIOS:
        metric = "requests_per_s" if scenario.single else "rows_per_s"
        unit = "req/s" if scenario.single else "rows/s"
        base = figures[REFERENCE][scenario.key][metric]
        lines.append(f"  {scenario.label}:")
        for name, by in figures.items():
            f = by[scenario.key]
            lines.append(
                f"    {name:<20} {f[metric]:>10,.0f} {unit:<6} p50 {f['p50_ms']:6.2f} ms  "
                f"CPU {f['server_cpu_ms_per_request']:6.2f} ms/req  {f[metric] / base:5.2f}x {REFERENCE}"
            )
    lines += ["", *result["notes"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6, help="seconds of each wrk run (default 6)")
    parser.add_argument("--rounds", type=int, default=4, help="runs of every scenario on each target (default 4)")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    if not (sc.BUNDLE / "golden.json").exists():
        sys.exit(f"missing: {sc.BUNDLE / 'golden.json'} (run `make run` first)")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    log_dir = Path(tempfile.mkdtemp(prefix="flowship-gateway-replicas-"))
    records, expected = sc.golden_records()
    (plain, plain_root), (turns, turns_root), (single, single_root) = (
        gateway(name, log_dir) for name in ("gateway", "gateway_round_robin", "gateway_one_replica")
    )
    gateways = [plain, turns, single]
    notes: list[str] = []
    try:
        for server in gateways:
            sc.start(server, REPO)
            sc.wait_ready(server, time.monotonic())
        notes.append(f"gateway: its upstream:\n{stable_upstream(plain_root)[1]}")
        notes.append(f"gateway_round_robin: its upstream:\n{round_robin(turns_root)}")
        notes.append(f"gateway_one_replica: its upstream:\n{one_replica(single_root)}")
        straight = direct(plain_root, log_dir)
        servers = [*gateways, straight]
        for server in servers:
            sc.write_payloads(server, records, WORK)
            sc.check_answers(server, records, expected)
            sc.warm_up(server, 2)
        runs = sc.interleaved_rounds(servers, SCENARIOS, args.rounds, args.duration)
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped, nothing written")
    finally:
        for server in gateways:
            sc.stop(server)
        shutil.rmtree(log_dir, ignore_errors=True)
    figures = {name: {key: sc.medians(rs) for key, rs in by.items()} for name, by in runs.items()}
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "command": shlex.join([".venv/bin/python", "bench/gateway_replicas.py", *sys.argv[1:]]),
        "figures": figures,
        "notes": notes,
        "machine": sc.machine(),
        "runs": runs,
    }
    print()
    print(report(result))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
