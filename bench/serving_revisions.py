"""flowship's serving process at a git revision beside the working tree's: same bundle, same machine, same wrk loads,
the two servers taking turns to go first (bench/serving_compare.py's rounds).

The revision's files are checked out into a temporary git worktree and served from there (PYTHONPATH), with this
virtualenv; both serve build/flights-delay-v1/model (after `make run`) and log into folders of one temporary
directory. Both share the machine, its page cache included: what one process frees, the other may reuse.

    .venv/bin/python bench/serving_revisions.py [--rev REV] [--duration S] [--rounds N] [--scenarios K,K]
                                                                        (make bench-serving-revisions REV=...)

Scenarios are bench/serving_compare.py's (single_c1, single_c16, batch100_c1, batch100_c4, batch1000_c1,
batch1000_c4; default: single_c1, single_c16, batch1000_c1, batch1000_c4). Printed per scenario: rows/s (or
requests/s), p50 and the server's CPU per request, medians over the rounds, and the working tree's figure over the
revision's. Written to bench/results/serving_revisions.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import serving_compare as sc  # bench/ is the script's folder: the servers, payloads and wrk runs

REPO, BUNDLE = sc.REPO, sc.BUNDLE
OUT_JSON = REPO / "bench" / "results" / "serving_revisions.json"
DEFAULT_SCENARIOS = ("single_c1", "single_c16", "batch1000_c1", "batch1000_c4")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the revision to compare the working tree with (default HEAD)")
    parser.add_argument("--duration", type=float, default=5, help="seconds of each wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario (default 3)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help="comma-separated scenario keys")
    args = parser.parse_args()
    keys = [k for k in args.scenarios.split(",") if k]
    unknown = [k for k in keys if k not in sc.BY_KEY]
    if unknown or not keys:
        parser.error(f"--scenarios: unknown {unknown or 'none given'}; known: {', '.join(sc.BY_KEY)}")
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    if not (BUNDLE / "model.pkl").exists():
        sys.exit(f"missing: {BUNDLE / 'model.pkl'} (run `make run` first)")
    try:
        commit = git("rev-parse", "--verify", f"{args.rev}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"--rev {args.rev}: not a revision of this repository")

    work = Path(tempfile.mkdtemp(prefix="flowship-serving-revisions-"))
    checkout = work / "revision"
    git("worktree", "add", "--detach", str(checkout), commit)
    try:
        if not (checkout / "flowship" / "serving" / "__main__.py").exists():
            sys.exit(f"--rev {args.rev}: has no flowship/serving")
        result = measure(args, keys, commit, checkout, work)
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped, nothing written")
    finally:
        git("worktree", "remove", "--force", str(checkout))
        shutil.rmtree(work, ignore_errors=True)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(REPO)}")


def measure(args: argparse.Namespace, keys: list[str], commit: str, checkout: Path, work: Path) -> dict[str, Any]:
    records, expected = sc.golden_records()
    revision = sc.flowship_server(work, work / "logs", "revision", {"PYTHONPATH": str(checkout)})
    tree = sc.flowship_server(work, work / "logs", "working_tree")
    servers = [revision, tree]
    for server in servers:
        sc.write_payloads(server, records, work)
    with sc.servers_running(servers, work):
        for server in servers:
            sc.check_answers(server, records, expected)
            sc.warm_up(server, 2)
        runs = sc.interleaved_rounds(servers, [sc.BY_KEY[k] for k in keys], args.rounds, args.duration)
    figures = {name: {key: sc.medians(rs) for key, rs in by.items()} for name, by in runs.items()}
    command = shlex.join([sys.executable, *sys.argv])
    print(f"flowship serving at {args.rev} ({commit[:7]}) beside the working tree, medians of {args.rounds} rounds")
    print(f"command: {command}")
    for key in keys:
        scenario = sc.BY_KEY[key]
        metric = "requests_per_s" if scenario.single else "rows_per_s"
        unit = "req/s" if scenario.single else "rows/s"
        old, new = figures["revision"][key], figures["working_tree"][key]
        print(
            f"  {scenario.label:<18} revision {old[metric]:>9,.0f} {unit}, p50 {old['p50_ms']:6.2f} ms, "
            f"CPU {old['server_cpu_ms_per_request']:6.2f} ms/req | working tree {new[metric]:>9,.0f} {unit}, "
            f"p50 {new['p50_ms']:6.2f} ms, CPU {new['server_cpu_ms_per_request']:6.2f} ms/req | "
            f"{new[metric] / old[metric]:.2f}x"
        )
    return {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "revision": {"rev": args.rev, "commit": commit},
        "working_tree": {"head": git("rev-parse", "HEAD"), "serving_digest": sc.serving_digest()},
        "duration_s": args.duration,
        "rounds": args.rounds,
        "figures": figures,
        "runs": runs,
        "machine": sc.machine(),
    }


if __name__ == "__main__":
    main()
