"""Time from `flowship up` to both UIs answering, and to `flowship up` returning (deployments registered, a
worker polling), on a fresh project (new databases) and again after `flowship down` (existing databases).

    .venv/bin/python bench/services_startup.py [--runs 2] [--prefect-port 4310] [--mlflow-port 5310]

Each run: a copy of this repository's params.yaml, dvc.yaml, deployments/ and flowship/ in a temp folder,
`flowship up` started as a subprocess; the Prefect UI (/) and the MLflow UI (/) polled every 0.1 s from the moment
it starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FLOWSHIP = str(Path(sys.executable).parent / "flowship")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def one_start(root: Path, prefect_port: int, mlflow_port: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_") and k != "PREFECT_HOME"}
    env.pop("MLFLOW_TRACKING_URI", None)
    urls = {"prefect_ui": f"http://127.0.0.1:{prefect_port}/", "mlflow_ui": f"http://127.0.0.1:{mlflow_port}/"}
    started = time.monotonic()
    process = subprocess.Popen(
        [FLOWSHIP, "up", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    times: dict[str, float] = {}
    while not ({"up_returned", *urls} <= set(times)):
        for name, url in urls.items():
            if name not in times and answers(url):
                times[name] = time.monotonic() - started
        if "up_returned" not in times and process.poll() is not None:
            times["up_returned"] = time.monotonic() - started
            if process.returncode != 0:
                raise SystemExit(f"flowship up failed:\n{process.stdout.read() if process.stdout else ''}")
        if time.monotonic() - started > 600:
            raise SystemExit("no answer within 600 s")
        time.sleep(0.1)
    times["both_uis"] = max(times["prefect_ui"], times["mlflow_ui"])
    return times


def down(root: Path) -> float:
    started = time.monotonic()
    subprocess.run([FLOWSHIP, "down"], cwd=root, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prefect-port", type=int, default=4310)
    parser.add_argument("--mlflow-port", type=int, default=5310)
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    header = ("run", "databases", "Prefect UI", "MLflow UI", "both UIs", "up returned", "down")
    print("{:<4} {:<10} {:>11} {:>10} {:>9} {:>12} {:>6}".format(*header))
    for n in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="flowship-up-") as tmp:
            root = Path(tmp)
            for name in ("params.yaml", "dvc.yaml"):
                shutil.copy(REPO / name, root / name)
            for code in ("deployments", "flowship"):  # what `prefect deploy` and the worker load
                shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
            for label in ("fresh", "existing"):
                try:
                    t = one_start(root, args.prefect_port, args.mlflow_port)
                finally:
                    took_down = down(root)
                print(
                    f"{n:<4} {label:<10} {t['prefect_ui']:>10.1f}s {t['mlflow_ui']:>9.1f}s {t['both_uis']:>8.1f}s "
                    f"{t['up_returned']:>11.1f}s {took_down:>5.1f}s",
                    flush=True,
                )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
