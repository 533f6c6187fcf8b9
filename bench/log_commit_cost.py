"""What the inference log's group commit costs on the serving path: an answer that waits until its records are
written (the app as it is) beside one that only queues them (the log's writer thread writes them soon after:
the behaviour before group commit, which a crash of the process could cut short), same model, same load.

Two servers run `python -m flowship.serving` on the bundle (after `make run`: build/flights-delay-v1/model; or
--model-dir), one uvicorn worker each, in one run of this script:

* group commit: the app as it is (the answer leaves once its records are in the OS's hands);
* queue only: the same app started by this script (`--serve-queue-only`) with `InferenceLog.commit` replaced
  by an append that does not wait. Only this script can start it: the service has no such setting.

Scenarios (wrk, as `bench/serving_compare.py` runs them, servers alternating which goes first): 1 record at
concurrency 1 and 16, 100 records at concurrency 1 and 4. Each figure is the median of the rounds; the ratios
(group commit / queue only) are what to read (the machines are shared and noisy: the server's CPU time per
request, from /proc, is the figure least moved by other work; the load average is printed). Nothing is asserted.

    .venv/bin/python bench/log_commit_cost.py [--duration S] [--rounds N] [--model-dir DIR]   (make bench-log-commit)

Needs wrk (`apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import serving_compare as sc  # bench/ is the script's folder: its servers, payloads and wrk runs

SCENARIOS = (sc.BY_KEY["single_c1"], sc.BY_KEY["single_c16"], sc.BY_KEY["batch100_c1"], sc.BY_KEY["batch100_c4"])
OUT_JSON = sc.RESULTS / "log_commit_cost.json"
WORK = sc.RESULTS / "log_commit_cost"
GROUP, QUEUE = "group commit", "queue only"


def serve_queue_only() -> int:
    """The serving entry point with answers that do not wait for the log (the bench's baseline only)."""
    from flowship.serving import __main__ as entry
    from flowship.serving.inference_log import InferenceLog, LogEntry

    async def append_only(self: InferenceLog, entry: LogEntry, timeout: float) -> None:
        self.append(entry)

    InferenceLog.commit = append_only  # type: ignore[method-assign]
    return entry.main()


def payloads(server: sc.Server, records: list[dict[str, Any]]) -> None:
    for rows in sorted({s.rows for s in SCENARIOS}):
        body = WORK / f"{server.name.replace(' ', '_')}_{rows}.json"
        body.write_text(json.dumps(server.wrap(sc.cycled(records, rows), rows == 1)))
        lua = body.with_suffix(".lua")
        lua.write_text(sc.LUA.format(body=body.name, body_literal=json.dumps(str(body))))
        server.payloads.update({s.key: lua for s in SCENARIOS if s.rows == rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every scenario on each server (default 3)")
    parser.add_argument("--model-dir", type=Path, default=sc.BUNDLE, help=f"the bundle served (default {sc.BUNDLE})")
    parser.add_argument("--serve-queue-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_queue_only:
        sys.exit(serve_queue_only())
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    model_dir = args.model_dir.resolve()
    if not (model_dir / "golden.json").exists():
        sys.exit(f"missing: {model_dir / 'golden.json'} (run `make run` first, or pass --model-dir)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    log_dir = Path(tempfile.mkdtemp(prefix="flowship-log-commit-bench-"))
    records = [g["features"] for g in json.loads((model_dir / "golden.json").read_text())]
    model = {"FLOWSHIP_MODEL_DIR": str(model_dir)}
    servers = [sc.flowship_server(WORK, log_dir, GROUP, model), sc.flowship_server(WORK, log_dir, QUEUE, model)]
    servers[1].command = [str(sc.PYTHON), str(Path(__file__).resolve()), "--serve-queue-only"]
    for server in servers:
        payloads(server, records)
    try:
        with sc.servers_running(servers, WORK):
            for server in servers:
                sc.run_wrk(server, SCENARIOS[1], 2)  # warm-up
            runs = sc.interleaved_rounds(servers, SCENARIOS, args.rounds, args.duration)
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped, nothing written")
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    figures = {name: {key: sc.medians(rs) for key, rs in by.items()} for name, by in runs.items()}
    lines = [
        "",
        f"| scenario | figure | {QUEUE} | {GROUP} | ratio ({GROUP} / {QUEUE}) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        for metric in ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request"):
            if metric == ("rows_per_s" if scenario.single else "requests_per_s"):
                continue
            base, value = figures[QUEUE][scenario.key][metric], figures[GROUP][scenario.key][metric]
            lines.append(f"| {scenario.label} | {metric} | {base:,.2f} | {value:,.2f} | {value / base:.3f} |")
    loads = [r["load_1min_at_start"] for by in runs.values() for rs in by.values() for r in rs]
    lines.append(f"\nthe machine's 1-minute load average at the runs' start: {min(loads):.1f} to {max(loads):.1f}")
    shown = "" if model_dir == sc.BUNDLE else f" --model-dir {model_dir}"
    lines.append(
        f"command: .venv/bin/python bench/log_commit_cost.py --duration {args.duration:g} --rounds {args.rounds}"
        + shown
    )
    lines += [f"server {s.name}: {s.shown()}" for s in servers]
    print("\n".join(lines))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps({"figures": figures, "runs": runs, "machine": sc.machine()}, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(sc.REPO)}")


if __name__ == "__main__":
    main()
