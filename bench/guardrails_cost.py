"""What the guardrails cost on the serving path: flowship's app with guardrails on and off, same model, same load.

After `make run` (the bundle build/flights-delay-v1/model, with its training profile), three servers run
`python -m flowship.serving` on it, one uvicorn worker each, in one run of this script:

* off: FLOWSHIP_GUARDRAILS='{"enabled": false}';
* on: the default policy (flag out-of-range, unseen categories, missing values) on the golden records brought
  inside the training profile (a number outside its training range set to the range's nearest end: the holdout's
  June is outside January to May), so that nothing trips: the price every request pays;
* on, all flagged: the same policy, each record sent with `temp` far outside its training range: every record
  carries a warning, a safety event and a counter increment (the worst case of the flag action).

Scenarios (wrk, as `bench/serving_compare.py` runs them, servers alternating which goes first): 1 record at
concurrency 1 (p50) and 16 (requests/s), 1000 records at concurrency 4 (rows/s). Each figure is the median of
the rounds; the ratios to "off" are what to read (the machines are shared and noisy). Nothing is asserted.

    .venv/bin/python bench/guardrails_cost.py [--duration S] [--rounds N]      (make bench-guardrails)

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

SCENARIOS = (sc.BY_KEY["single_c1"], sc.BY_KEY["single_c16"], sc.BY_KEY["batch1000_c4"])
OUT_JSON = sc.RESULTS / "guardrails_cost.json"
WORK = sc.RESULTS / "guardrails_cost"


def payloads(server: sc.Server, records: list[dict[str, Any]]) -> None:
    for rows in sorted({s.rows for s in SCENARIOS}):
        body = WORK / f"{server.name.replace(' ', '_').replace(',', '')}_{rows}.json"
        body.write_text(json.dumps(server.wrap(sc.cycled(records, rows), rows == 1)))
        lua = body.with_suffix(".lua")
        lua.write_text(sc.LUA.format(body=body.name, body_literal=json.dumps(str(body))))
        server.payloads.update({s.key: lua for s in SCENARIOS if s.rows == rows})


def within(record: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The record with each number inside its training range and each category one the training data had."""
    out = dict(record)
    for name, known in profile["numeric"].items():
        if out.get(name) is not None:
            out[name] = min(max(out[name], known["min"]), known["max"])
    for name, known in profile["categorical"].items():
        if out.get(name) is not None and out[name] not in known["values"]:
            out[name] = known["values"][0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every scenario on each server (default 3)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    if not (sc.BUNDLE / "profile.json").exists():
        sys.exit(f"missing: {sc.BUNDLE / 'profile.json'} (run `make run` first: a version trained with a profile)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    log_dir = Path(tempfile.mkdtemp(prefix="flowship-guardrails-bench-"))
    records, _ = sc.golden_records()
    profile = json.loads((sc.BUNDLE / "profile.json").read_text())
    inside = [within(r, profile) for r in records]
    temp = profile["numeric"]["temp"]
    far = [{**r, "temp": temp["max"] + 10 * (temp["max"] - temp["min"])} for r in inside]
    servers = [
        sc.flowship_server(WORK, log_dir, "off", {"FLOWSHIP_GUARDRAILS": json.dumps({"enabled": False})}),
        sc.flowship_server(WORK, log_dir, "on"),
        sc.flowship_server(WORK, log_dir, "on, all flagged"),
    ]
    for server, sent in zip(servers, (inside, inside, far), strict=True):
        payloads(server, sent)
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
        "| scenario | figure | off | on | ratio | on, all flagged | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        metrics = ("p50_ms", "requests_per_s") if scenario.single else ("rows_per_s",)
        for metric in metrics:
            base = figures["off"][scenario.key][metric]
            cells = []
            for name in ("on", "on, all flagged"):
                value = figures[name][scenario.key][metric]
                cells += [f"{value:,.2f}", f"{value / base:.3f}"]
            lines.append(f"| {scenario.label} | {metric} | {base:,.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"command: .venv/bin/python bench/guardrails_cost.py --duration {args.duration:g} --rounds {args.rounds}"
    )
    lines += [f"server {s.name}: {s.shown()}" for s in servers]
    print("\n".join(lines))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps({"figures": figures, "runs": runs, "machine": sc.machine()}, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(sc.REPO)}")


if __name__ == "__main__":
    main()
