"""Team mode on a real PostgreSQL (Debian's package, a throwaway cluster on loopback): `flowship up` with the
Prefect server and the MLflow server on it, MLflow's artifacts served through its server; training through the
CLI and release through the worker; then what each database and the artifact store hold, and what stayed local."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowship.services.processes import read_services
from tests.conftest import REPO, Project, build_project, default_params, flights_data
from tests.helpers import flowship, free_port
from tests.monitoring.test_schedule import bare_project
from tests.services.conftest import QUICK_WORKER, Up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER, PASSWORD = "flowship", "flowship-test-pw"
DATABASES = ("prefect", "mlflow")


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server binaries (initdb, pg_ctl, psql)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found or not (found[-1] / "pg_ctl").exists():
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb and pg_ctl): "
            "install Debian's package, `apt-get install postgresql`"
        )
    return found[-1]


@dataclass
class Postgres:
    """A running throwaway cluster: the user USER (password PASSWORD) owns the databases DATABASES."""

    bin: Path
    base: Path
    port: int
    as_owner: list[str]

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str, driver: str = "postgresql", port: int | None = None) -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{port or self.port}/{database}"

    def pg(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.as_owner, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120, cwd=self.base
        )
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        """Rows over TCP with the password, as the servers connect."""
        import psycopg2

        with psycopg2.connect(self.url(database)) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        connection.close()
        return rows


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl start as an unprivileged user (the `postgres` system user when the tests run as root),
    listening on 127.0.0.1 only with its socket in the temp folder; pg_ctl stop -m fast at the end."""
    bin_dir = postgres_bin()
    # Not under pytest's temp root: that is private to the user running the tests, the server user must reach it.
    base = Path(tempfile.mkdtemp(prefix="flowship-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    pg = Postgres(bin_dir, base, free_port(), as_owner)
    (base / "pwfile").write_text(PASSWORD + "\n")
    if as_owner:
        os.chown(base / "pwfile", owner.pw_uid, owner.pw_gid)
    try:
        # The superuser is USER; local socket connections are trusted, TCP ones need the password.
        pg.pg("initdb", "-D", str(pg.data), "-U", USER, "--pwfile", str(base / "pwfile"),
              "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={pg.port} -c unix_socket_directories={base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        pg.pg("pg_ctl", "start", "-D", str(pg.data), "-l", str(base / "postgres.log"), "-w", "-t", "60", "-o", options)
        for database in DATABASES:
            pg.pg("createdb", "-h", str(base), "-p", str(pg.port), "-U", USER, "-O", USER, database)
        yield pg
    finally:
        if (pg.data / "postmaster.pid").exists():
            pg.pg("pg_ctl", "stop", "-D", str(pg.data), "-m", "fast", "-w")
        shutil.rmtree(base, ignore_errors=True)


def team_environment(pg: Postgres, artifacts: Path, port: int | None = None) -> dict[str, str]:
    """What a team sets for `flowship up`: both servers' databases, and where MLflow's server keeps artifacts."""
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "postgresql+asyncpg", port),
        "MLFLOW_BACKEND_STORE_URI": pg.url("mlflow", port=port),
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
    }


@dataclass
class Team:
    """`flowship up` on PostgreSQL in an untrained project, then one training (CLI) and one release (worker)."""

    services: Up
    artifacts: Path
    train: subprocess.CompletedProcess[str]
    release: dict[str, Any]
    production_port: int


def team_project(base: Path, flights_sample: Path) -> tuple[Project, int]:
    """A flights project never trained, holding the code the worker runs; the release ports free."""
    params = default_params()
    production_port, staging_port = free_port(), free_port()
    params["release"] = {"production_port": production_port, "staging_port": staging_port,
                         "latency_requests": 40, "latency_p95_ms": 500, "health_timeout_s": 120}  # fmt: skip
    project = build_project(base / "project", flights_data(flights_sample), params, base / "remote")
    # (the flowship package, flows and tasks included, is already in the project: dvc.yaml names its stage code)
    shutil.copytree(REPO / "deployments", project.root / "deployments")
    return project, production_port


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, flights_sample: Path, postgres: Postgres) -> Iterator[Team]:
    base = tmp_path_factory.mktemp("team")
    project, production_port = team_project(base, flights_sample)
    # Only the servers see this folder; clients send and fetch artifacts through the MLflow server.
    artifacts = base / "served-artifacts"
    services = Up(project, free_port(), free_port(), free_port())
    try:
        up = flowship(
            [
                "up",
                "--prefect-port",
                str(services.prefect_port),
                "--mlflow-port",
                str(services.mlflow_port),
                "--evidently-port",
                str(services.evidently_port),
            ],  # fmt: skip
            project.root,
            **QUICK_WORKER,
            FLOWSHIP_RUNTIME="process",
            **team_environment(postgres, artifacts),
        )
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{services.logs()}"
        # The CLI finds the servers by itself: no database URL, no tracking URI given.
        train = flowship(["train"], project.root)
        assert train.returncode == 0, f"{train.stdout}\n{train.stderr}"
        run = services.start_run("release/dev")
        release = services.wait_final(run["id"], timeout=300)
        assert release["state"]["type"] == "COMPLETED", f"{release['state']}\n{services.logs()}"
        yield Team(services, artifacts, train, release, production_port)
    finally:
        if (project.root / ".flowship" / "services.json").exists():
            services.down()
        flowship(["stop"], project.root, FLOWSHIP_RUNTIME="process")


def test_training_through_the_cli_uses_the_servers(team: Team) -> None:
    out = team.train.stdout
    assert "stages:        ingest ran, validate ran, prepare ran, train ran, evaluate ran" in out
    assert "gate:          passed" in out
    assert "registered:    flights-delay v1 (new, alias challenger)" in out
    # The run's link is the MLflow server's UI, not a local store.
    assert team.services.mlflow in out and "sqlite" not in out


def test_the_release_deployment_serves_the_challenger(team: Team) -> None:
    import httpx

    health = httpx.get(f"http://127.0.0.1:{team.production_port}/health", timeout=10.0)
    assert health.status_code == 200
    versions = {v["version"]: v for v in team.services.versions()}
    assert list(versions) == ["1"]
    aliases = {a["alias"]: a["version"] for a in team.services.registered_model().get("aliases", [])}
    assert aliases == {"challenger": "1", "champion": "1"}


def test_prefect_state_lives_in_postgres(team: Team, postgres: Postgres) -> None:
    deployments = postgres.query(
        "prefect",
        "select f.name, d.name, p.name from deployment d join flow f on f.id = d.flow_id "
        "join work_queue q on q.id = d.work_queue_id join work_pool p on p.id = q.work_pool_id",
    )
    assert {("training", "dev", "flowship"), ("release", "dev", "flowship")} <= set(deployments)
    runs = postgres.query(
        "prefect",
        "select r.id::text, f.name, r.state_type, r.deployment_id is not null "
        "from flow_run r join flow f on f.id = r.flow_id",
    )
    by_flow = {(flow, state, from_deployment) for _, flow, state, from_deployment in runs}
    # Training ran in the CLI's process, release on the worker: both recorded by the server, in PostgreSQL.
    assert ("training", "COMPLETED", False) in by_flow
    assert ("release", "COMPLETED", True) in by_flow
    assert team.release["id"] in {run_id for run_id, *_ in runs}
    artifacts = {key for (key,) in postgres.query("prefect", "select key from artifact where key is not null")}
    assert {"training-summary", "training-gate", "release-checks"} <= artifacts
    assert postgres.query("prefect", "select name, type from work_pool where name = 'flowship'") == [
        ("flowship", "process")
    ]


def test_mlflow_runs_registry_and_aliases_live_in_postgres(team: Team, postgres: Postgres) -> None:
    assert postgres.query("mlflow", "select name from registered_models") == [("flights-delay",)]
    assert postgres.query("mlflow", "select name, version, current_stage from model_versions") == [
        ("flights-delay", 1, "None")
    ]
    aliases = postgres.query("mlflow", "select name, alias, version from registered_model_aliases order by alias")
    assert aliases == [("flights-delay", "challenger", 1), ("flights-delay", "champion", 1)]
    runs = postgres.query("mlflow", "select run_uuid, status, artifact_uri from runs")
    assert runs and all(status == "FINISHED" for _, status, _ in runs)
    # Artifacts are addressed through the server, never by a path on the clients' disks.
    assert all(uri.startswith("mlflow-artifacts:/") for _, _, uri in runs), runs
    logged = postgres.query("mlflow", "select artifact_location from logged_models")
    assert logged and all(uri.startswith("mlflow-artifacts:/") for (uri,) in logged), logged


def test_model_artifacts_go_through_the_server_to_its_artifact_store(team: Team) -> None:
    models = list(team.artifacts.rglob("MLmodel"))
    assert len(models) == 1, models
    assert (models[0].parent / "model.pkl").is_file()
    # Uploaded by the training CLI and fetched by the release on the worker, both through the MLflow server.
    log = (team.services.root / "logs" / "services" / "mlflow-server.log").read_text()
    assert re.search(r'"PUT /api/2\.0/mlflow-artifacts/artifacts/\S+/model\.pkl HTTP/1\.1" 200', log)
    assert re.search(r'"GET /api/2\.0/mlflow-artifacts/artifacts/\S+/model\.pkl HTTP/1\.1" 200', log)


def test_nothing_is_written_to_the_projects_local_stores(team: Team) -> None:
    root = team.services.root
    assert not (root / "mlruns").exists(), sorted(p.name for p in (root / "mlruns").rglob("*"))
    assert not (root / ".prefect" / "prefect.db").exists()


def processes_in(root: Path) -> dict[int, str]:
    """Every process whose working directory is in `root` (the servers, the worker and the serving app all are)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = Path(os.readlink(proc / "cwd"))
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cwd.is_relative_to(root) and cmdline:
                found[int(proc.name)] = cmdline
    return found


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_down_stops_every_service(team: Team) -> None:
    root = team.services.root
    recorded = read_services(root)
    assert recorded is not None
    assert set(recorded.running()) == {"prefect-server", "mlflow-server", "evidently-ui", "worker"}
    done = team.services.down()
    assert done.returncode == 0, done.stderr
    for name in ("worker", "evidently-ui", "mlflow-server", "prefect-server"):
        # killed: SIGKILL after the grace period, which MLflow's job runners can outlast on a busy machine.
        assert re.search(rf"^{name}:\s+(stopped|killed)", done.stdout, re.MULTILINE), done.stdout
    assert recorded.running() == {}
    assert not (root / ".flowship" / "services.json").exists()
    # What is left in the project is production, which outlives the services by design: the model's replicas and
    # the host's nginx in front of them.
    replicas = {json.loads(f.read_text())["pid"] for f in (root / ".flowship/processes/replicas").glob("*.json")}
    left = processes_in(root)
    assert replicas and {pid for pid, cmd in left.items() if not cmd.startswith("nginx: ")} <= replicas, left


def test_up_with_postgres_unreachable_fails_naming_the_service_and_its_log(tmp_path: Path, postgres: Postgres) -> None:
    root = bare_project(tmp_path / "project")
    closed = free_port()
    args = ["up", "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()),
            "--evidently-port", str(free_port()), "--timeout", "60"]  # fmt: skip
    # `--timeout 60` bounds the wait for the servers; the subprocess deadline only guards against a hang.
    done = flowship(
        args, root, timeout=300, **QUICK_WORKER, **team_environment(postgres, tmp_path / "artifacts", port=closed)
    )
    assert done.returncode == 1
    log = root / "logs" / "services" / "prefect-server.log"
    assert f"prefect-server exited while starting; from {log}" in done.stderr, done.stderr
    assert "Connection refused" in done.stderr
    # What this `up` started is stopped again, the Evidently UI and the MLflow server too (it would retry its database
    # for a while): nothing runs in the project and nothing is recorded.
    assert (
        "what this command started was stopped again (evidently-ui: stopped; mlflow-server: stopped" in done.stderr
    ), done.stderr
    assert processes_in(root) == {}
    assert read_services(root) is None
    down = flowship(["down"], root)
    assert down.returncode == 0 and "nothing to stop" in down.stdout, down.stdout + down.stderr
