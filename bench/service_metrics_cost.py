"""The extra time the service metrics add to a monitoring check over 1,000,000 logged requests.

Setup (timed, not measured): bench/monitoring_scale.py's training frame, model and reference, and its inference
log with one record per request (N records over 7 days, the serving app's own lines); beside it, the gateway's
access log of the same N requests in nginx's `flowship` log_format (flowship/gateway/nginx.py): one line per
request, its request id, a status mix (about 97% 200, then 422, 429, 413, 500, 504), request and upstream times
drawn from a lognormal, two versions, rotated daily (`access-<YYYYMMDD>.jsonl`) with the last day in `access.jsonl`.

Measured, in this process, each `--repeat` times (the median is reported):

* the model check: what the monitoring flow does for one version (monitoring_scale's `child_flowship`: read the
  inference log, the reference, drift and data-quality reports, the verdict);
* the service metrics: `read_access_window` (every file) -> `service_window` (per version and in all) ->
  `day_counts` -> `error_budget` -> `judge_service`.

The figure is the service metrics' time as a share of the model check's (the issue's aim: <= 10%). Printed and
written to bench/results/service_metrics_cost.json; nothing is asserted.

    .venv/bin/python bench/service_metrics_cost.py [--requests 1000000] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import monitoring_scale as ms  # bench/ is the script's folder: the model check's setup and its measured steps

REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "bench" / "results" / "service_metrics_cost.json"
REQUESTS = 1_000_000
STATUSES = (200, 422, 429, 413, 500, 504)
SHARES = (0.97, 0.01, 0.01, 0.003, 0.005, 0.002)
AIM_SHARE = 0.10


def write_access_log(folder: Path, requests: int, seed: int) -> dict[str, Any]:
    """`requests` lines as the gateway writes them, spread as the inference log's requests are, a file per day."""
    import numpy as np

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    step = dt.timedelta(days=ms.DAYS) / requests
    status = rng.choice(np.array(STATUSES), size=requests, p=np.array(SHARES))
    upstream = rng.lognormal(mean=-4.5, sigma=0.6, size=requests)  # about 11 ms, a long tail
    total = upstream + rng.exponential(0.001, size=requests)
    days: dict[dt.date, list[str]] = {}
    for i in range(requests):
        at = ms.START + i * step
        code = int(status[i])
        refused = code in (429, 413)  # the gateway's own answers: no upstream, no version
        line = (
            f'{{"time":"{at:%Y-%m-%dT%H:%M:%S}+00:00","request_id":"{i:032x}","client":"10.0.0.{i % 250}",'
            f'"client_key":"","method":"POST","path":"/predict","status":{code},"request_bytes":512,'
            f'"response_bytes":96,"request_time":{0.0 if refused else total[i]:.3f},'
            f'"upstream":"{"" if refused else "127.0.0.1:9001"}","upstream_status":"{"" if refused else code}",'
            f'"upstream_time":"{"-" if refused else f"{upstream[i]:.3f}"}","pool":"stable",'
            f'"version":"{"" if refused or code == 504 else 1 + i % 2}"}}\n'
        )
        days.setdefault(at.date(), []).append(line)
    ordered = sorted(days)
    for day in ordered[:-1]:
        # logrotate's dateext names a file by the day it rotated: the next morning
        (folder / f"access-{day + dt.timedelta(days=1):%Y%m%d}.jsonl").write_text("".join(days[day]))
    (folder / "access.jsonl").write_text("".join(days[ordered[-1]]))
    files = sorted(folder.iterdir())
    return {
        "requests": requests,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "seconds": time.perf_counter() - started,
    }


def service_metrics(folder: Path, end: dt.datetime) -> tuple[dict[str, float], Any]:
    from flowship.config import ServiceAlertConfig
    from flowship.monitoring.alerts import judge_service
    from flowship.monitoring.service import day_counts, error_budget, read_access_window, service_window
    from flowship.monitoring.window import Window

    cfg = ServiceAlertConfig()
    window = Window(None, end, True)
    steps = ms.Steps()
    access = steps.run("read_access_window", lambda: read_access_window(folder, window))
    found = steps.run("service_window", lambda: service_window(access.lines, window))
    days = steps.run("day_counts", lambda: day_counts(access.lines))
    budget = error_budget(days, cfg.error_budget.target, cfg.error_budget.days, end)
    check = steps.run(
        "judge_service", lambda: judge_service(found, budget, cfg, True, access.skipped, access.files, days)
    )
    return {r["step"]: r["seconds"] for r in steps.rows}, check


def model_check(workdir: Path, size: int, setup: dict[str, Any]) -> float:
    steps = ms.Steps()
    ms.child_flowship(workdir, size, setup, steps)
    return steps.seconds({r["step"] for r in steps.rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS, help="logged requests (one record each)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each, the median reported")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.requests < 1 or args.repeat < 1:
        parser.error("--requests and --repeat must be at least 1")
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    before = ms.uptime()
    print(f"uptime: {before}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="flowship-service-metrics-"))
    n = args.requests
    try:
        model, setup = ms.prepare_run(workdir)
        ms.ROWS_PER_REQUEST = 1  # a request per record: as many access-log lines as inference records
        setup["log"] = ms.write_log(workdir / f"log-{n}", model, n, fast=True)
        access = write_access_log(workdir / "gateway", n, ms.SEED)
        print(
            f"setup: inference log {setup['log']['seconds']:.0f} s ({setup['log']['bytes'] / 2**20:.0f} MiB), "
            f"access log {access['seconds']:.0f} s ({access['bytes'] / 2**20:.0f} MiB, {access['files']} files)",
            flush=True,
        )
        end = dt.datetime.fromisoformat(setup["log"]["window_end"])
        checks, services, steps = [], [], []
        for attempt in range(args.repeat):
            checks.append(model_check(workdir, n, setup))
            shutil.rmtree(workdir / f"reports-{n}", ignore_errors=True)
            timed, found = service_metrics(workdir / "gateway", end)
            services.append(sum(timed.values()))
            steps.append(timed)
            print(f"  {attempt + 1}: model check {checks[-1]:.1f} s, service metrics {services[-1]:.2f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    check_s, service_s = statistics.median(checks), statistics.median(services)
    share = service_s / check_s
    total = found.total
    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "requests": n,
        "access_log": access,
        "model_check_seconds": checks,
        "service_metrics_seconds": services,
        "service_steps": steps,
        "median_model_check_seconds": check_s,
        "median_service_metrics_seconds": service_s,
        "share_of_check": share,
        "aim_share": AIM_SHARE,
        "lines_read": total.requests,
        "skipped": found.skipped,
        "uptime": {"before": before, "after": ms.uptime()},
        "machine": ms.machine(),
    }
    print()
    print(f"{n:,} requests: model check {check_s:.1f} s, service metrics {service_s:.2f} s (medians of {args.repeat})")
    print(f"service metrics add {share:.1%} to the check (aim: <= {AIM_SHARE:.0%})")
    slowest = max(steps[-1], key=lambda k: steps[-1][k])
    print(f"  slowest step: {slowest} {steps[-1][slowest]:.2f} s; {total.requests:,} lines, {found.skipped} skipped")
    print(f"  uptime before: {before}; after: {result['uptime']['after']}")
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written: {OUT_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
