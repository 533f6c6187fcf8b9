"""The iteration loop: one hyperparameter changed, `flowship train` beside `dvc repro` of the same change; the
no-op re-runs; the evaluate stage's cost per part.

What is measured, in one run:

* (a) one change: in a scratch clone of this repository (committed files, the default data as `make data` exports
  it, its own DVC cache, MLflow store and Prefect home), after one cold `flowship train` (timed, for context),
  `train.params.learning_rate` is set to a new value and `dvc repro` runs it; the clone is then put back as it was
  before the change (params.yaml and dvc.lock restored, `dvc checkout`), the same change made again, and
  `flowship train` runs it, on the temporary Prefect API the command before it left running (as a user's next
  command finds it); the clone is put back again and `flowship train` runs a change of the same size with
  FLOWSHIP_PREFECT_API_IDLE=0: an API of its own, started beside its imports (as every command did before the API
  outlived its command). All run the train and evaluate stages (dvc repro first: its run cache never holds the new
  value; flowship's stages don't use it). Each run takes a new value, so MLflow logs a new run each time. At the end
  `flowship down` stops the API left running.
* (b) no-op: `flowship train` in the clone with nothing changed; then, in the project of --project (default: this
  repository, after its own `make run`), `make run` with nothing changed, each of the commands it runs
  (`make --dry-run run`) on its own, and beside them the steps of `flowship run` as three commands (`train`,
  `deploy`, `replay --once --batch-size 20`: what `make run` ran before `flowship run`).
* (c) the evaluate stage's parts: its reports/evaluation-timings.json after each run of (a), when it writes one;
  and in this process, on the clone's model and holdout: metrics, golden set, plots, and permutation importance
  with the settings of params.yaml beside 5000 rows x 3 repeats (the fixed cost before `evaluate.importance_*`).

Figures are printed and written to bench/results/iteration_loop.json; nothing is asserted.

    .venv/bin/python bench/iteration_loop.py [--repeat N] [--rev REV] [--no-bytecode] [--project PATH] [--keep]
                                                                                     (make bench-iteration)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import training_overhead as to  # bench/ is the script's folder: its clone, environment and timed runs
import yaml

REPO, RESULTS, PYTHON, FLOWSHIP = to.REPO, to.RESULTS, to.PYTHON, to.FLOWSHIP
DVC = PYTHON.parent / "dvc"
OUT_JSON = RESULTS / "iteration_loop.json"
PARAM = ("train", "params", "learning_rate")
# Permutation importance as the evaluate stage ran it before its settings were in params.yaml.
FIXED_IMPORTANCE = {"rows": 5000, "repeats": 3}


def set_param(project: Path, value: float) -> None:
    """`train.params.learning_rate: value` in params.yaml, the rest of the file (comments included) untouched."""
    path = project / "params.yaml"
    lines = path.read_text().splitlines(keepends=True)
    section, done = None, False
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.strip().rstrip(":")
        if section == PARAM[0] and line.strip().startswith(f"{PARAM[2]}:"):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{PARAM[2]}: {value}\n"
            done = True
            break
    if not done:
        raise SystemExit(f"{path}: no {'.'.join(PARAM)} to change")
    path.write_text("".join(lines))
    assert yaml.safe_load(path.read_text())[PARAM[0]][PARAM[1]][PARAM[2]] == value


# where the evaluate stage writes its seconds: beside its DVC outputs, or, at older revisions, in them
TIMINGS = ("reports/evaluation-timings.json", "reports/evaluation/timings.json")


def stage_timings(project: Path) -> dict[str, Any] | None:
    found = [project / relative for relative in TIMINGS if (project / relative).exists()]
    return json.loads(found[0].read_text()) if found else None


def run(name: str, command: list[str], project: Path, env: dict[str, str], logs: Path) -> dict[str, Any]:
    wall, cpu = to.timed(command, project, env, logs / f"{name}.log")
    print(f"  {name}: {wall:.2f} s", flush=True)
    return {"wall": wall, "cpu": cpu, "command": shlex.join(command)}


def one_change(project: Path, env: dict[str, str], logs: Path, rounds: int) -> list[dict[str, Any]]:
    """Each round: the change by `dvc repro`, the clone put back, the same change by `flowship train`."""
    base = yaml.safe_load((project / "params.yaml").read_text())[PARAM[0]][PARAM[1]][PARAM[2]]
    results = []
    for i in range(rounds):
        value = round(base + 0.01 * (i + 1), 4)
        saved = {f: (project / f).read_text() for f in ("params.yaml", "dvc.lock")}
        set_param(project, value)
        repro = run(f"dvc_repro_{i + 1}", [str(DVC), "repro"], project, env, logs)
        repro["evaluate_parts"] = stage_timings(project)
        for f, text in saved.items():
            (project / f).write_text(text)
        subprocess.run([str(DVC), "checkout", "--quiet"], cwd=project, env=env, check=True)
        set_param(project, value)
        train = run(f"flowship_train_{i + 1}", [str(FLOWSHIP), "train"], project, env, logs)
        train["evaluate_parts"] = stage_timings(project)
        train["stages_line"] = to.stages_line(logs / f"flowship_train_{i + 1}.log")
        for f, text in saved.items():
            (project / f).write_text(text)
        subprocess.run([str(DVC), "checkout", "--quiet"], cwd=project, env=env, check=True)
        # another value of the same size: the same one would find its MLflow run logged already, and log nothing
        set_param(project, round(value + 0.005, 4))
        own_env = {**env, "FLOWSHIP_PREFECT_API_IDLE": "0"}
        own = run(f"flowship_train_own_api_{i + 1}", [str(FLOWSHIP), "train"], project, own_env, logs)
        results.append({"value": value, "dvc_repro": repro, "flowship_train": train, "flowship_train_own_api": own})
    return results


# What `flowship run` does, as separate commands.
SEPARATE_STEPS = ("train", "deploy", "replay --once --batch-size 20")
VENV_FLOWSHIP = Path(".venv/bin/flowship")  # the project's own, as its `make run` uses


def make_run_commands(project: Path) -> list[str]:
    """The commands `make run` runs, as make prints them (nothing to set up: the virtualenv is installed)."""
    done = subprocess.run(["make", "--dry-run", "run"], cwd=project, capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("make")]


def noop_make_run(project: Path, logs: Path) -> dict[str, Any]:
    """`make run` with nothing changed, then each of its commands on its own, in the project's environment."""
    env = dict(os.environ)
    whole = run("noop_make_run", ["make", "run"], project, env, logs)
    whole["said"] = [
        line
        for line in (logs / "noop_make_run.log").read_text().splitlines()
        if line.startswith(("stages:", "production:", "               nothing", "last report:")) or "skipped" in line
    ]
    parts = {}
    for i, command in enumerate(make_run_commands(project)):
        parts[command] = run(f"noop_make_run_part{i + 1}", ["bash", "-c", command], project, env, logs)["wall"]
    # the alternative: the steps of `flowship run` as three commands, each its own process (as `make run` was)
    apart = {}
    for i, step in enumerate(SEPARATE_STEPS):
        command = f"{project / VENV_FLOWSHIP} {step}"
        apart[command] = run(f"noop_step{i + 1}", ["bash", "-c", command], project, env, logs)["wall"]
    return {"make_run": whole, "commands": parts, "steps_apart": apart}


def evaluate_in_process(project: Path) -> dict[str, Any]:
    """The evaluate stage's parts timed in this process, on the clone's candidate model and holdout."""
    import pandas as pd

    from flowship.config import load_params
    from flowship.paths import Layout
    from flowship.pipeline import evaluation, stages

    layout = Layout(project)
    params = load_params(project / "params.yaml", check_serving=False)
    model = stages.load_candidate(layout)
    holdout = pd.read_parquet(layout.holdout_split)
    seconds: dict[str, float] = {}

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        result = call()
        seconds[name] = time.perf_counter() - started
        return result

    timed("metrics", lambda: evaluation.compute_metrics(model, holdout, params))
    timed("golden_set", lambda: evaluation.golden_set(model, holdout, params))
    importance = timed("importance", lambda: evaluation.feature_importance(model, holdout, params))
    fixed = params.model_copy(
        update={
            "evaluate": params.evaluate.model_copy(
                update={"importance_rows": FIXED_IMPORTANCE["rows"], "importance_repeats": FIXED_IMPORTANCE["repeats"]}
            )
        }
    )
    timed("importance_5000x3", lambda: evaluation.feature_importance(model, holdout, fixed))
    out = Path(tempfile.mkdtemp(prefix="flowship-plots-"))
    try:
        timed("plots", lambda: evaluation.write_plots(model, holdout, params, out, importance))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    settings = params.evaluate
    return {
        "seconds": seconds,
        "holdout_rows": len(holdout),
        "importance": {"rows": min(settings.importance_rows, len(holdout)), "repeats": settings.importance_repeats},
        "features": len(params.data.features.all),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(result: dict[str, Any]) -> str:
    rounds = result["one_change"]
    repro = median([r["dvc_repro"]["wall"] for r in rounds])
    train = median([r["flowship_train"]["wall"] for r in rounds])
    lines = [f"flowship iteration loop ({len(rounds)} round{'s' if len(rounds) > 1 else ''} of one change)", ""]
    lines.append("(a) one hyperparameter changed ({}), wall median:".format(".".join(PARAM)))
    lines.append(f"  dvc repro               {repro:8.2f} s")
    lines.append(f"  flowship train          {train:8.2f} s   ratio flowship / dvc repro {train / repro:.2f}x")
    lines.append("    (on the temporary Prefect API the command before it left running)")
    own = [r["flowship_train_own_api"]["wall"] for r in rounds if "flowship_train_own_api" in r]
    if own:
        lines.append(
            f"  flowship train          {median(own):8.2f} s   ratio flowship / dvc repro {median(own) / repro:.2f}x"
        )
        lines.append("    (FLOWSHIP_PREFECT_API_IDLE=0: an API of its own, started beside its imports)")
    lines.append(
        "  rounds (flowship / dvc repro): "
        + ", ".join(f"{r['flowship_train']['wall'] / r['dvc_repro']['wall']:.2f}x" for r in rounds)
    )
    lines.append(f"  (cold flowship train, for context: {result['cold']['wall']:.2f} s)")
    lines.append(f"  flowship said: {rounds[-1]['flowship_train']['stages_line']}")
    lines += ["", "(b) nothing changed, wall:"]
    lines.append(f"  flowship train (clone)  {result['noop_train']['wall']:8.2f} s")
    noop = result["noop_make_run"]
    if noop is not None:
        lines.append(f"  make run ({noop['project']}) {noop['make_run']['wall']:8.2f} s")
        for command, seconds in noop["commands"].items():
            lines.append(f"    {seconds:8.2f} s  {command}")
        apart = noop.get("steps_apart", {})
        if apart:
            total = sum(apart.values())
            run_wall = next((v for c, v in noop["commands"].items() if c.endswith("flowship run")), None)
            ratio = f"; ratio apart / flowship run {total / run_wall:.2f}x" if run_wall else ""
            lines.append(f"  the same steps as three commands: {total:.2f} s{ratio}")
            lines += [f"    {seconds:8.2f} s  {command}" for command, seconds in apart.items()]
        lines += [f"    said: {line.strip()}" for line in noop["make_run"]["said"]]
    lines += ["", "(c) the evaluate stage, seconds per part:"]
    parts = [r[k]["evaluate_parts"] for r in rounds for k in ("dvc_repro", "flowship_train") if r[k]["evaluate_parts"]]
    if parts:
        names = list(dict.fromkeys(n for p in parts for n in p["seconds"]))
        shown = ", ".join(f"{n} {median([p['seconds'][n] for p in parts if n in p['seconds']]):.2f}" for n in names)
        lines.append(f"  stage ({TIMINGS[0]}, median of {len(parts)} runs): {shown}")
        lines.append(
            f"    total {median([p['total_seconds'] for p in parts]):.2f} s; importance {parts[-1]['importance']}"
        )
    else:
        lines.append(f"  stage: this code writes none of {', '.join(TIMINGS)}")
    inproc = result["evaluate_in_process"]
    if inproc is not None:
        s = inproc["seconds"]
        shown = ", ".join(f"{k} {v:.2f}" for k, v in s.items())
        lines.append(
            f"  in this process ({inproc['holdout_rows']} holdout rows, {inproc['features']} features): {shown}"
        )
        lines.append(
            f"    importance {inproc['importance']['rows']} rows x {inproc['importance']['repeats']} repeats beside "
            f"5000 x 3: {s['importance'] / s['importance_5000x3']:.2f}x the time"
        )
    m = result["machine"]
    lines += [
        "",
        "commands:",
        f"  cd {result['project']} && PYTHONPATH={result['project']}",
        f"    cold:  {result['cold']['command']}",
        *(f"    {r['dvc_repro']['command']}   # {'.'.join(PARAM)}: {r['value']}" for r in rounds[-1:]),
        f"    {rounds[-1]['flowship_train']['command']}   # after params.yaml, dvc.lock put back and `dvc checkout`",
        f"    FLOWSHIP_PREFECT_API_IDLE=0 {rounds[-1]['flowship_train']['command']}   # the same, another value",
        f"    no-op: {result['noop_train']['command']}",
        *([f"  cd {noop['project']} && make run"] if noop is not None else []),
        "",
        f"code: {result['rev']} ({result['commit']}) of {REPO}, cloned into {result['workdir']}; "
        f"bytecode: {result['bytecode']}",
        "machine: {cpu_count} CPUs ({cpus_usable} usable), Python {python}".format(**m),
        "         " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "         1-min load average at start {:.2f}, at end {:.2f}".format(*result["load_average_1min"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the one-change comparison")
    parser.add_argument("--rev", default="HEAD", help="the revision of this repository to clone (default: HEAD)")
    parser.add_argument(
        "--project", type=Path, default=REPO, help="where to time a no-op `make run` (after its own `make run`)"
    )
    parser.add_argument("--no-make-run", action="store_true", help="leave out the no-op `make run`")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="the commands find no compiled bytecode (an empty PYTHONPYCACHEPREFIX; with PYTHONDONTWRITEBYTECODE "
        "set, every module is compiled from source in every process, as in a virtualenv installed without it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (clone, run logs)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="flowship-iteration-"))
    logs = tmp / "logs"
    logs.mkdir()
    try:
        project = to.make_project(tmp)
        if args.rev != "HEAD":
            subprocess.run(["git", "checkout", "--quiet", args.rev], cwd=project, check=True)
        env = to.child_env(project, None)
        if args.no_bytecode:
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "no-bytecode")
        print(f"clone {to.git_commit(project)} in {project}", flush=True)
        cold = run("flowship_train_cold", [str(FLOWSHIP), "train"], project, env, logs)
        rounds = one_change(project, env, logs, args.repeat)
        noop_train = run("flowship_train_noop", [str(FLOWSHIP), "train"], project, env, logs)
        noop_train["stages_line"] = to.stages_line(logs / "flowship_train_noop.log")
        # the temporary Prefect API the clone's commands left running (it would stop on its own once idle)
        subprocess.run([str(FLOWSHIP), "down"], cwd=project, env=env, capture_output=True, check=False)
        inproc = None
        try:
            inproc = evaluate_in_process(project)
        except (ImportError, AttributeError, TypeError) as exc:  # code before the importance settings
            print(f"evaluate in process: not with this code ({exc})", flush=True)
        noop = None
        if not args.no_make_run:
            noop = {"project": str(args.project.resolve()), **noop_make_run(args.project.resolve(), logs)}
        result = {
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rev": args.rev,
            "bytecode": "none (empty PYTHONPYCACHEPREFIX)" if args.no_bytecode else "the virtualenv's",
            "commit": to.git_commit(project),
            "project": str(project),
            "workdir": str(tmp) if args.keep else f"{tmp} (removed)",
            "cold": cold,
            "one_change": rounds,
            "noop_train": noop_train,
            "noop_make_run": noop,
            "evaluate_in_process": inproc,
            "machine": to.machine(),
            "load_average_1min": [load_start, os.getloadavg()[0]],
        }
    except to.RunFailed as exc:
        sys.exit(f"{exc} (logs in {logs}; the folder is kept)")
    else:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(result))
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {OUT_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
