"""The `flowship` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flowship.errors import FlowshipError
from flowship.runtime import ROLES
from flowship.services import CRASH_AFTER_S, HEARTBEAT_S, MLFLOW_PORT, PREFECT_PORT, ZOMBIE_AUTOMATION

app = typer.Typer(
    help="flowship: train, gate, register, deploy and monitor a tabular model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params.yaml to use; its folder is the project root.")
]


def _environment(root: Path, use_services: bool = True) -> None:
    """Project-local state, unless the user points elsewhere: no surprises in ~/.prefect. While `flowship up`'s
    servers run, runs go to them (shown in both UIs), unless PREFECT_API_URL / MLFLOW_TRACKING_URI say otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    # The temporary local API gets 20 s to start by default: too few on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    if use_services:
        from flowship.services import live_services

        running = live_services(root)
        if running is not None:
            os.environ.setdefault("PREFECT_API_URL", running.api_url)
            os.environ.setdefault("MLFLOW_TRACKING_URI", running.mlflow_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _fail(message: str) -> None:
    typer.secho(f"flowship: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _check_params(params: Path, check_estimator: bool = True) -> Path:
    from flowship.config import load_params

    path = params.resolve()
    try:
        load_params(path, check_estimator)
    except FlowshipError as exc:
        _fail(str(exc))
    return path


@app.command()
def train(
    params: ParamsOption = Path("params.yaml"),
    full: bool = typer.Option(
        False, "--full", help="Run the Prefect flow even when nothing changed (every stage is then shown as skipped)."
    ),
) -> None:
    """Run the training flow: data → validation → training → gate → registry.

    With nothing changed since the last run (data, params and code as recorded in dvc.lock, the gate's
    settings and the champion as when it last decided), it says so and does not start the flow.
    """
    # The estimator check imports scikit-learn: it waits until there is work to do.
    path = _check_params(params, check_estimator=False)
    _environment(path.parent)
    os.chdir(path.parent)
    from flowship.config import load_params

    summary: dict[str, Any] | None = None
    try:
        compute = load_params(path, check_estimator=False).compute
        if compute.engine == "dask":  # (imports Prefect, which makes its home folder: only when needed)
            from flows.compute import require_server

            # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
            require_server(compute)
        if not full:
            from flowship.rerun import last_outcome_if_unchanged

            summary = last_outcome_if_unchanged(load_params(path, check_estimator=False), path.parent)
        if summary is None:
            _check_params(path)
            from flows.training import training

            summary = training(params_path=str(path))
    except FlowshipError as exc:
        _fail(str(exc))
    assert summary is not None
    _print_training(summary)
    if summary["decision"]["verdict"] != "passed":
        _fail("quality gate failed, unchanged since the last run: " + "; ".join(summary["decision"]["reasons"]))


def _print_training(summary: dict[str, Any]) -> None:
    stages_line = ", ".join(f"{n} {'ran' if did else 'unchanged'}" for n, did in summary["stages"].items())
    typer.echo(f"stages:        {stages_line}")
    if not any(summary["stages"].values()):
        typer.echo("               nothing changed since the last run (dvc.lock matches): no training was done")
    typer.echo(f"data version:  data/raw {summary['data_version']}")
    typer.echo(f"MLflow run:    {summary['candidate']['run_id']}")
    typer.echo(f"               {summary['candidate']['url']}")
    typer.echo(f"gate:          {summary['decision']['verdict']} ({'; '.join(summary['decision']['reasons'])})")
    version = summary["registered"]
    if version is not None:
        state = "new, alias challenger" if version["new"] else "already registered"
        typer.echo(f"registered:    {version['name']} v{version['version']} ({state})")


@app.command()
def status(
    params: ParamsOption = Path("params.yaml"), runs: int = typer.Option(5, min=1, help="How many recent runs to list.")
) -> None:
    """The champion, the challenger and the last runs with their verdicts."""
    path = _check_params(params)
    _environment(path.parent)
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker
    from flowship.config import load_params

    cfg = load_params(path)
    tracker = Tracker(path.parent)
    try:
        tracker.check_available()
    except FlowshipError as exc:
        _fail(str(exc))
    name = cfg.project.name
    typer.echo(f"model {name}  (tracking: {tracker.uri})")
    for alias in (CHAMPION, CHALLENGER):
        ref = tracker.version_by_alias(name, alias)
        if ref is None:
            typer.echo(f"  {alias:<11} none")
        else:
            typer.echo(
                f"  {alias:<11} v{ref.version}  run {ref.run_id}  data {ref.tags.get('flowship.data.raw_md5', '?')}"
            )
    for runtime in _runtimes(path):
        for role in reversed(ROLES):
            deployed = runtime.deployed(role)
            if deployed is not None:
                where = f"image {deployed.image}" if deployed.image else f"pid {deployed.ref}"
                state = f"{deployed.status}  ({deployed.kind}, {where})"
                typer.echo(f"  {role:<11} v{deployed.version}  {deployed.url}  {state}")
    typer.echo("recent runs:")
    recent = tracker.recent_runs(name, runs)
    if not recent:
        typer.echo("  none yet: run `flowship train`")
    for r in recent:
        metric = cfg.gate.primary_metric
        value = r["metrics"].get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else ""
        typer.echo(f"  {r['started']}  {r['run_id']}  {r['status']:<8}  gate {r['verdict']:<7} {shown}")


@app.command()
def replay(
    params: ParamsOption = Path("params.yaml"),
    from_: str | None = typer.Option(
        None, "--from", help="The first month to replay (YYYY-MM; default: the first month of the production data)."
    ),
    to: str | None = typer.Option(None, "--to", help="The last month to replay (YYYY-MM; default: --from)."),
    url: str | None = typer.Option(None, "--url", help="The endpoint to send to (default: what serves production)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Records per request (at most release.max_batch)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight."),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Run the monitoring check after each month."),
    once: bool = typer.Option(
        False, "--once", help="Skip months already replayed to this project (see .flowship/replayed.json)."
    ),
) -> None:
    """Send the production window of the data to the endpoint as real traffic, month by month in time order;
    each month's true labels are written after its traffic (logs/labels/), as they would arrive later."""
    path = _check_params(params, check_estimator=False)
    import pandas as pd

    from flowship.config import load_params
    from flowship.paths import Layout
    from flowship.replay import Columns, Replay, months

    cfg = load_params(path, check_estimator=False)
    layout = Layout(path.parent)
    if batch_size > cfg.release.max_batch:
        _fail(f"--batch-size {batch_size} is more than release.max_batch ({cfg.release.max_batch}) allows per request")
    try:
        columns = Columns.of(cfg)
        if from_ is None:
            if not layout.production_split.exists():
                _fail("no production data: run `flowship train` first")
            times = pd.read_parquet(layout.production_split, columns=[columns.time])[columns.time]
            if times.dropna().empty:
                _fail(f"the production data has no {columns.time!r} values to replay")
            from_ = f"{pd.Timestamp(times.min()):%Y-%m}"
        wanted = months(from_, to or from_)
    except FlowshipError as exc:
        _fail(str(exc))
    if not layout.production_split.exists():
        _fail("no production data: run `flowship train` first")
    done_file = path.parent / ".flowship" / "replayed.json"
    replayed: dict[str, Any] = json.loads(done_file.read_text()) if done_file.exists() else {}
    if once:
        skipped = [m for m in wanted if str(m) in replayed]
        for month in skipped:
            typer.echo(f"{month}  already replayed ({replayed[str(month)]['time']}): skipped")
        wanted = [m for m in wanted if str(m) not in replayed]
        if not wanted:
            reports = sorted((layout.monitoring_reports).glob("*/summary.json"))
            if reports:
                typer.echo(f"last report:   {reports[-1].parent}")
            return
    if url is None:
        serving = [d for r in _runtimes(path) if (d := r.deployed("production")) is not None and d.status == "running"]
        if not serving:
            _fail("nothing serves production: run `flowship deploy` first")
        url = serving[0].url
    if monitor:
        _environment(path.parent)
        os.chdir(path.parent)
    frame = pd.read_parquet(layout.production_split)
    run = Replay(
        url, columns, layout.labels_dir, batch_size, concurrency, token=os.environ.get("FLOWSHIP_API_TOKEN") or None
    )
    typer.echo(f"replay {run.id}: {wanted[0]} to {wanted[-1]} → {url}/predict, labels to {layout.labels_dir}")
    for month in wanted:
        try:
            done = run.month(frame, month)
        except FlowshipError as exc:
            _fail(str(exc))
        typer.echo(
            f"{done.month}  sent {done.sent:>7} of {done.records:<7} rejected {done.rejected:<6}"
            f"{done.requests_per_second:7.0f} req/s  labels written {done.sent}"
        )
        for error in done.errors:
            typer.echo(f"         rejected: {error}")
        replayed[str(month)] = {
            "replay": run.id,
            "url": url,
            "sent": done.sent,
            "time": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ}",
        }
        done_file.parent.mkdir(parents=True, exist_ok=True)
        done_file.write_text(json.dumps(replayed, indent=2))
        if monitor:
            import time

            from flowship.monitoring import SETTLE

            # the check's window ends SETTLE before now (log lines still on their way): wait for this month's last
            time.sleep(SETTLE.total_seconds() + 0.5)
            from flows.monitoring import monitoring

            try:
                summary: dict[str, Any] = monitoring(params_path=str(path))
            except FlowshipError as exc:
                _fail(str(exc))
            print_monitoring(summary)


def _runtimes(path: Path) -> list[Any]:
    """Every runtime that may hold a deployment of this project: Docker (when a daemon answers) and processes."""
    from flowship.config import load_params
    from flowship.runtime import ProcessRuntime

    cfg = load_params(path, check_estimator=False)
    wanted = os.environ.get("FLOWSHIP_RUNTIME", "auto")
    runtimes: list[Any] = [] if wanted == "docker" else [ProcessRuntime(path.parent, cfg.project.name)]
    from flowship.adapters.docker_engine import DockerEngine

    if wanted != "process" and DockerEngine().available():
        from flowship.docker_runtime import DockerRuntime

        runtimes.insert(0, DockerRuntime(path.parent, cfg.project.name, {}))
    return runtimes


def _example_request(path: Path, url: str, version: str) -> str:
    import json

    from flowship.config import load_params

    cfg = load_params(path, check_estimator=False)
    golden = path.parent / "build" / f"{cfg.project.name}-v{version}" / "model" / "golden.json"
    record = json.loads(golden.read_text())[0]["features"] if golden.exists() else {}
    return f"curl -s {url}/predict -H 'Content-Type: application/json' -d '{json.dumps(record)}'"


@app.command()
def deploy(
    params: ParamsOption = Path("params.yaml"),
    version: str | None = typer.Option(None, "--version", help="Release this version instead of the challenger."),
    full: bool = typer.Option(False, "--full", help="Run the release flow even when the challenger already serves."),
) -> None:
    """Release the challenger: image → staging → checks (health, golden set, bad input, latency) → production."""
    path = _check_params(params, check_estimator=False)
    _environment(path.parent)
    os.chdir(path.parent)
    if not full and version is None:
        serving = _challenger_already_serving(path)
        if serving is not None:
            typer.echo(f"production:    v{serving.version} (champion and challenger) already serves at {serving.url}")
            typer.echo("               nothing to release")
            typer.echo(f"try:           {_example_request(path, serving.url, serving.version)}")
            return
    _check_params(path)
    from flows.release import release_flow

    try:
        result: dict[str, Any] = release_flow(params_path=str(path), version=version)
    except FlowshipError as exc:
        _fail(str(exc))
    production = result["production"]
    if result["runtime"] == "process":
        typer.echo("runtime:       no Docker daemon answers: serving as a local process (no image built)")
    if not result["released"]:
        typer.echo(f"production:    v{result['version']} already serves at {production['url']}: nothing to release")
    else:
        for c in result["checks"]:
            typer.echo(f"check:         {c['name']:<11} {'passed' if c['passed'] else 'FAILED'}  {c['detail']}")
        was = _was(production["from_version"])
        typer.echo(f"production:    v{result['version']} at {production['url']} (was {was})")
        if production.get("image"):
            typer.echo(f"image:         {production['image']}")
    typer.echo(f"try:           {_example_request(path, production['url'], result['version'])}")


def _was(version: str | None) -> str:
    return f"v{version}" if version else "nothing served before"


def _challenger_already_serving(path: Path) -> Any:
    """The production deployment when it runs the version that is both champion and challenger, else None."""
    from flowship.adapters.tracking import CHALLENGER, CHAMPION, Tracker
    from flowship.config import load_params

    cfg = load_params(path, check_estimator=False)
    tracker = Tracker(path.parent)
    try:
        tracker.check_available()
    except FlowshipError:
        return None
    challenger = tracker.version_by_alias(cfg.project.name, CHALLENGER)
    champion = tracker.version_by_alias(cfg.project.name, CHAMPION)
    if challenger is None or champion is None or challenger.version != champion.version:
        return None
    for runtime in _runtimes(path):
        deployed = runtime.deployed("production")
        if deployed is not None and deployed.version == champion.version and deployed.status == "running":
            return deployed
    return None


@app.command()
def rollback(
    params: ParamsOption = Path("params.yaml"),
    to: str | None = typer.Option(None, "--to", help="The version to serve again (default: the previous champion)."),
) -> None:
    """Serve the previous champion (or --to VERSION) again; it is health-checked before the alias moves back."""
    path = _check_params(params)
    _environment(path.parent)
    os.chdir(path.parent)
    from flows.release import rollback_flow

    try:
        result: dict[str, Any] = rollback_flow(params_path=str(path), to_version=to)
    except FlowshipError as exc:
        _fail(str(exc))
    production = result["production"]
    was = _was(production["from_version"])
    typer.echo(f"production:    v{result['version']} at {production['url']} (was {was})")


@app.command()
def history(params: ParamsOption = Path("params.yaml")) -> None:
    """Every promotion and rollback: when, from which version to which, image, check results."""
    path = _check_params(params, check_estimator=False)
    from flowship import history as release_history

    events = release_history.read(path.parent)
    if not events:
        typer.echo("no releases yet: run `flowship deploy`")
    for e in events:
        checks = ", ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}" for c in e.get("checks", []))
        typer.echo(
            f"{e['time']}  {e['action']:<8} {e['outcome']:<6} v{e.get('from_version') or '-'} → v{e['to_version']}"
            f"  {e.get('image') or e.get('runtime', '')}  [{checks}]"
        )


@app.command()
def stop(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop what serves this project (production and staging); the champion alias stays."""
    path = _check_params(params, check_estimator=False)
    _environment(path.parent)
    stopped = 0
    for runtime in _runtimes(path):
        for role in ROLES:
            deployed = runtime.deployed(role)
            if deployed is not None:
                runtime.stop(role)
                stopped += 1
                typer.echo(f"stopped {role}: v{deployed.version} ({deployed.kind} {deployed.ref})")
    if not stopped:
        typer.echo("nothing is serving")


@app.command()
def monitor(
    params: ParamsOption = Path("params.yaml"),
    start: str | None = typer.Option(
        None, "--from", help="Window start (date or ISO time, UTC); default: where the last check ended."
    ),
    end: str | None = typer.Option(None, "--to", help="Window end (exclusive); default: now."),
) -> None:
    """Check production's inference log for drift and model quality; write the reports; alert past a threshold."""
    path = _check_params(params)
    _environment(path.parent)
    os.chdir(path.parent)
    from flowship.monitoring import parse_time

    try:
        for value, what in ((start, "start"), (end, "end")):
            if value is not None:
                parse_time(value, what)
        summary = run_monitoring(path, start, end)
    except FlowshipError as exc:
        _fail(str(exc))
    print_monitoring(summary)


def run_monitoring(path: Path, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    from flows.monitoring import monitoring

    summary: dict[str, Any] = monitoring(params_path=str(path), start=start, end=end)
    return summary


def print_monitoring(summary: dict[str, Any]) -> None:
    typer.echo(f"window:        {summary['window']}")
    typer.echo(f"records:       {summary['records']}  (unreadable lines skipped: {summary['skipped_lines']})")
    typer.echo(f"verdict:       {summary['verdict']}")
    for check in summary["versions"]:
        typer.echo(f"  v{check['version']:<5} {check['verdict']:<17} {check['records']} records")
        for reason in check["reasons"]:
            typer.echo(f"          {reason}")
    if summary["report"]:
        typer.echo(f"report:        {summary['report']}")
    for version, url in summary["mlflow_runs"].items():
        typer.echo(f"mlflow:        v{version}: {url}")
    for alert in summary["alerts"]:
        typer.echo(f"alert:         v{alert['version']} {', '.join(alert['kinds'])}: {alert['delivery']}")
    if summary.get("retraining"):
        typer.echo(f"retraining:    {summary['retraining']}")


SCORABLE = (".csv", ".tsv", ".parquet", ".pq")


@app.command()
def score(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="CSV or Parquet file of records: the model's features as columns (others are kept)."
        ),
    ],
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="The Parquet file to write: every input column plus prediction (and probability)."
        ),
    ],
    params: ParamsOption = Path("params.yaml"),
    version: str | None = typer.Option(
        None, "--version", help="Score with this registered version (default: the champion)."
    ),
    chunk_rows: int = typer.Option(50_000, "--chunk-rows", min=1, help="Records per chunk; each chunk is one task."),
) -> None:
    """Score a file of records with a registered version, chunk by chunk on threads or a Dask cluster (params.yaml
    `compute`), into one Parquet file that appears only when complete."""
    path = _check_params(params, check_estimator=False)
    source, destination = input_file.resolve(), output.resolve()
    if not source.is_file():
        _fail(f"INPUT {source}: no such file")
    if not any(s.lower() in SCORABLE for s in source.suffixes):
        _fail(f"INPUT {source}: expected a CSV or Parquet file (.csv, .tsv, .parquet or .pq, maybe compressed)")
    if destination == source:
        _fail(f"OUTPUT {destination} is the INPUT file: write the scored records elsewhere")
    if destination.is_dir():
        _fail(f"OUTPUT {destination} is a directory: name the Parquet file to write")
    if version is not None and not version.isdigit():
        _fail(f"--version {version!r}: expected a registered version number such as 3")
    _environment(path.parent)
    from flows.compute import describe, require_server
    from flowship.config import load_params

    compute = load_params(path, check_estimator=False).compute
    try:
        # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
        require_server(compute)
    except FlowshipError as exc:
        _fail(str(exc))
    os.chdir(path.parent)
    from flows.scoring import batch_scoring

    try:
        summary: dict[str, Any] = batch_scoring(
            params_path=str(path), input=str(source), output=str(destination), version=version, chunk_rows=chunk_rows
        )
    except FlowshipError as exc:
        _fail(str(exc))
    model = summary["model"]
    ran_on = sorted({c["where"] for c in summary["chunks"]})
    typer.echo(f"model:         {model['name']} v{model['version']}")
    typer.echo(f"scored:        {summary['rows']} records in {len(summary['chunks'])} chunk(s), {describe(compute)}")
    typer.echo(f"ran on:        {', '.join(ran_on)}")
    typer.echo(f"output:        {summary['output']}")


EnvOption = Annotated[
    str, typer.Option("--env", "-e", help="The environment whose deployments to register (dev, staging, production).")
]
IntervalOption = Annotated[
    int | None,
    typer.Option(
        "--interval",
        min=1,
        metavar="SECONDS",
        help="Run the monitoring check every SECONDS instead of its cron schedule (to try the schedule out).",
    ),
]


@app.command()
def schedule(
    params: ParamsOption = Path("params.yaml"), env: EnvOption = "dev", interval: IntervalOption = None
) -> None:
    """Register one environment's deployments of deployments/prefect.yaml (monitoring daily at 06:00 UTC;
    training, release and retraining to start from the UI) on the Prefect server named by PREFECT_API_URL,
    creating their work pool if missing. `flowship up` does this too, on servers it starts itself."""
    path = _check_params(params, check_estimator=False)
    root = path.parent
    _environment(root)
    import httpx

    from flows import deploy

    try:
        chosen = deploy.declared(root, env)
    except FlowshipError as exc:
        _fail(str(exc))
    api_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    start_server = (
        "start one with `flowship up` (or `prefect server start` and PREFECT_API_URL=http://127.0.0.1:4200/api)"
    )
    if not api_url:
        _fail(f"PREFECT_API_URL is not set: schedules need a Prefect server; {start_server}")
    try:
        httpx.get(f"{api_url}/health", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        _fail(f"no Prefect server answers at PREFECT_API_URL={api_url} ({exc}); {start_server}")
    pools = sorted({d["work_pool"]["name"] for d in chosen})
    try:
        for pool in pools:
            typer.echo(f"work pool:     {pool} ({deploy.ensure_process_pool(pool)})")
        automation = deploy.ensure_zombie_automation(ZOMBIE_AUTOMATION, CRASH_AFTER_S)
        typer.echo(f"automation:    runs without a heartbeat for {CRASH_AFTER_S} s are marked Crashed ({automation})")
        typer.echo(f"registering:   {deploy.PREFECT_FILE}, environment {env!r}, on {api_url}")
        lines = deploy.register(root, env, interval)
    except FlowshipError as exc:
        _fail(str(exc))
    for name, text in lines:
        typer.echo(f"deployment:    {name:<20} {text}")
    typer.echo(f"worker:        PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_S} prefect worker start --pool {pools[0]}")
    typer.echo(f"               (from this virtualenv, with PREFECT_API_URL={api_url}; runs start in {root})")


@app.command()
def up(
    params: ParamsOption = Path("params.yaml"),
    env: EnvOption = "dev",
    interval: IntervalOption = None,
    prefect_port: int = typer.Option(PREFECT_PORT, min=1024, max=65535, help="Prefect server port."),
    mlflow_port: int = typer.Option(MLFLOW_PORT, min=1024, max=65535, help="MLflow server port."),
    timeout: float = typer.Option(120.0, min=1.0, help="Seconds to wait for each service to answer."),
) -> None:
    """Start, in the background on 127.0.0.1, a Prefect server with its UI, an MLflow tracking server with its
    UI and a Prefect worker; register the environment's deployments; print the URLs. Their logs go to
    logs/services/; `flowship down` stops them. While they run, flowship's commands in this project use them."""
    path = _check_params(params, check_estimator=False)
    root = path.parent
    _environment(root, use_services=False)
    from flows import deploy
    from flowship import services as svc

    running: Any = None
    started_here: set[str] = set()
    try:
        chosen = deploy.declared(root, env)
        started = time.monotonic()
        running, waiting = _start_servers(root, env, prefect_port, mlflow_port)
        started_here = set(waiting)
        _wait_for(running, waiting, "prefect-server", timeout)
        os.environ["PREFECT_API_URL"] = running.api_url
        os.environ["MLFLOW_TRACKING_URI"] = running.mlflow_url
        pools = sorted({d["work_pool"]["name"] for d in chosen})
        for pool in pools:
            typer.echo(f"work pool:     {pool} ({deploy.ensure_process_pool(pool)})")
        # The worker starts (and imports) while the rest is set up; it needs only the pool.
        worker = running.processes.get("worker")
        new_worker = worker is None or not worker.alive()
        if new_worker:
            worker = svc.spawn("worker", svc.worker_argv(pools[0]), root, svc.worker_environment(root, running))
            running.processes["worker"] = worker
            svc.write_services(root, running)
            started_here.add("worker")
        _wait_for(running, waiting, "mlflow-server", timeout)
        automation = deploy.ensure_zombie_automation(svc.ZOMBIE_AUTOMATION, svc.CRASH_AFTER_S)
        typer.echo(
            f"automation:    runs without a heartbeat for {svc.CRASH_AFTER_S} s are marked Crashed ({automation})"
        )
        lines = deploy.register(root, env, interval)
        for name, text in lines:
            typer.echo(f"deployment:    {name:<20} {text}")
        assert worker is not None
        if new_worker:
            svc.wait_until("the Prefect worker", lambda: deploy.online_workers(pools[0]) > 0, worker, timeout, 0.5)
            typer.echo(f"worker:        started (pid {worker.pid}), pool {pools[0]}")
        else:
            typer.echo(f"worker:        running (pid {worker.pid}), pool {pools[0]}")
    except FlowshipError as exc:
        _fail(f"{exc}\n{_undo_start(root, running, started_here)}")
    except BaseException:  # an unexpected error, or Ctrl-C: nothing is left half-started either
        typer.echo(_undo_start(root, running, started_here), err=True)
        raise
    typer.echo(f"ready in:      {time.monotonic() - started:.1f} s")
    typer.echo(f"Prefect UI:    {running.prefect_url}")
    typer.echo(f"MLflow UI:     {running.mlflow_url}")
    typer.echo(f"logs:          {svc.log_dir(root)}/")
    typer.echo(f"in this shell: export PREFECT_API_URL={running.api_url} MLFLOW_TRACKING_URI={running.mlflow_url}")
    typer.echo("               (flowship's own commands in this project use the servers without it)")


def _undo_start(root: Path, running: Any, started_here: set[str]) -> str:
    """What this `flowship up` started is stopped again when it fails: nothing is left half-started. What an
    earlier `flowship up` started stays (and stays recorded)."""
    from flowship import services as svc

    if running is None or not started_here:
        return "nothing was started"
    lines = []
    for name in ("worker", "mlflow-server", "prefect-server"):
        if name in started_here and name in running.processes:
            lines.append(f"{name}: {svc.stop_process(running.processes.pop(name))}")
    if running.processes:
        svc.write_services(root, running)
    else:
        svc.state_file(root).unlink(missing_ok=True)
    return "what this command started was stopped again (" + "; ".join(lines) + ")"


def _start_servers(root: Path, env: str, prefect_port: int, mlflow_port: int) -> tuple[Any, dict[str, float]]:
    """The servers started here before, or new ones, recorded before anyone waits for them (so that
    `flowship down` finds them even if they never answer); returns them and when each new one was started."""
    from flowship import services as svc

    existing = svc.read_services(root)
    if existing is not None and {"prefect-server", "mlflow-server"} <= set(existing.running()):
        typer.echo(f"servers:       running since {existing.processes['prefect-server'].started}")
        asked = (f"http://{svc.HOST}:{prefect_port}", f"http://{svc.HOST}:{mlflow_port}")
        if asked != (existing.prefect_url, existing.mlflow_url):
            typer.echo(f"               at {existing.prefect_url} and {existing.mlflow_url}, not the ports asked for: "
                       "`flowship down` first to move them")  # fmt: skip
        if existing.env != env:
            existing.env = env
            svc.write_services(root, existing)
        return existing, {}
    if existing is not None and existing.running():
        raise svc.ServiceError(
            f"only part of what `flowship up` started still runs ({', '.join(existing.running())}); "
            "run `flowship down`, then `flowship up`"
        )
    for what, port, option in (("Prefect", prefect_port, "--prefect-port"), ("MLflow", mlflow_port, "--mlflow-port")):
        if svc.port_taken(port):
            raise svc.ServiceError(
                f"port {port} on {svc.HOST} is in use by another program, not by a {what} server flowship started "
                f"here; stop it, or choose another port with {option}"
            )
    prefect_url = f"http://{svc.HOST}:{prefect_port}"
    mlflow_url = f"http://{svc.HOST}:{mlflow_port}"
    env_vars = svc.child_environment(root)
    env_vars.pop("PREFECT_API_URL", None)
    # The UI asks its API at this address; without it Prefect assumes port 4200 whatever --port says.
    env_vars["PREFECT_UI_API_URL"] = f"{prefect_url}/api"
    running = svc.Services(str(root), env, prefect_url, mlflow_url, {})
    spawned = time.monotonic()
    running.processes["prefect-server"] = svc.spawn(
        "prefect-server", svc.prefect_server_argv(prefect_port), root, env_vars, prefect_url
    )
    running.processes["mlflow-server"] = svc.spawn(
        "mlflow-server", svc.mlflow_server_argv(root, mlflow_port, env_vars), root, env_vars, mlflow_url
    )
    svc.write_services(root, running)
    return running, {"prefect-server": spawned, "mlflow-server": spawned}


def _wait_for(running: Any, waiting: dict[str, float], name: str, timeout: float) -> None:
    from flowship import services as svc

    if name not in waiting:
        return
    process = running.processes[name]
    health = f"{process.url}/api/health" if name == "prefect-server" else f"{process.url}/health"
    svc.wait_until(name, lambda: svc.answers(health), process, timeout)
    took = time.monotonic() - waiting[name]
    typer.echo(f"{name + ':':<16}started (pid {process.pid}), answering after {took:.1f} s")


@app.command()
def down(params: ParamsOption = Path("params.yaml")) -> None:
    """Stop what `flowship up` started in this project (worker, MLflow server, Prefect server), and nothing else.
    Runs still going are cancelled first; the servers' state stays (`flowship up` finds it again)."""
    path = _check_params(params, check_estimator=False)
    root = path.parent
    _environment(root, use_services=False)
    from flowship import services as svc

    try:
        running = svc.read_services(root)
    except FlowshipError as exc:
        _fail(str(exc))
    if running is None:
        typer.echo("nothing to stop: `flowship up` started nothing here")
        return
    alive = running.running()
    if "prefect-server" in alive and "worker" in alive:
        from flows import deploy

        os.environ["PREFECT_API_URL"] = running.api_url
        try:
            for name in deploy.cancel_running():
                typer.echo(f"cancelled:     flow run {name}")
        except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the API says
            typer.echo(f"could not cancel the running flow runs ({exc}); stopping anyway")
    for name in ("worker", "mlflow-server", "prefect-server"):
        process = running.processes.get(name)
        if process is not None:
            began = time.monotonic()
            outcome = svc.stop_process(process)
            took = time.monotonic() - began
            typer.echo(f"{name + ':':<16}{outcome} in {took:.1f} s (pid {process.pid}; log {process.log})")
    svc.state_file(root).unlink(missing_ok=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
