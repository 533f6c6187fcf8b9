"""What flowship gives a user's repository for CI: the GitHub Actions workflows (linted by actionlint and zizmor
through `make lint-workflows`, here and on broken copies), the `make` targets they call, and `make audit` (against
a local OSV-compatible service: the real ones are not reachable from every machine, and an unreachable one must
fail the audit)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from flowship.adapters.docker_engine import serving_requirements
from flowship.security import audit
from tests.conftest import REPO, run
from tests.helpers import QuietHandler, free_port

pytestmark = pytest.mark.integration

WORKFLOWS = REPO / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def make(*args: str) -> Any:
    return run(["make", "--no-print-directory", "-C", str(REPO), *args], cwd=REPO, check=False)


def workflows() -> dict[str, dict[Any, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, copy)
    return copy


def test_the_shipped_workflows_pass_actionlint_and_zizmor() -> None:
    done = make("lint-workflows")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {len(workflows())} workflow file(s)" in done.stdout
    assert "All workflow files passed lint checks" in done.stdout
    assert "No findings to report" in done.stdout + done.stderr


def test_a_workflow_with_a_syntax_error_fails_the_lint_naming_file_and_line(workflow_copy: Path) -> None:
    broken = workflow_copy / "checks.yml"
    text = broken.read_text()
    # a job's `steps:` indented one level too deep: YAML, but no longer a workflow
    broken.write_text(text.replace("    steps:\n", "      steps:\n", 1))
    done = make("lint-workflows", f"WORKFLOWS={workflow_copy}")
    assert done.returncode != 0
    assert re.search(r"checks\.yml:\d+:\d+ .*(syntax|steps|runs-on)", done.stdout), done.stdout
    broken.write_text(text + "  oops: [unclosed\n")  # not YAML at all
    done = make("lint-workflows", f"WORKFLOWS={workflow_copy}")
    assert done.returncode != 0
    assert re.search(r"checks\.yml:\d+:\d+ .*(could not parse|yaml|flow sequence)", done.stdout, re.I), done.stdout


def test_an_unpinned_action_and_an_injected_expression_fail_the_security_lint(workflow_copy: Path) -> None:
    wf = workflow_copy / "checks.yml"
    pinned = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"
    wf.write_text(wf.read_text().replace(pinned, "actions/checkout@v4", 1))
    done = make("lint-workflows", f"WORKFLOWS={workflow_copy}")
    assert done.returncode != 0
    assert "All workflow files passed lint checks" in done.stdout  # actionlint accepts it: zizmor is what fails
    assert "unpinned-uses" in done.stdout + done.stderr

    shutil.rmtree(workflow_copy)
    shutil.copytree(WORKFLOWS, workflow_copy)
    report = workflow_copy / "model-report.yml"
    report.write_text(
        report.read_text().replace('--base "$BASE_REF"', '--base "origin/${{ github.event.pull_request.head.ref }}"')
    )
    done = make("lint-workflows", f"WORKFLOWS={workflow_copy}")
    assert done.returncode != 0
    assert "template-injection" in done.stdout + done.stderr
    assert "potentially untrusted" in done.stdout  # actionlint's own finding too


def test_a_folder_without_workflows_is_an_error_not_a_pass(tmp_path: Path) -> None:
    done = make("lint-workflows", f"WORKFLOWS={tmp_path}")
    assert done.returncode == 2
    assert f"no workflow file (*.yml, *.yaml) in {tmp_path}" in done.stderr


def test_every_job_has_least_privilege_pinned_actions_and_a_concurrency_group() -> None:
    for name, wf in workflows().items():
        assert wf.get("permissions") == {}, f"{name}: the workflow grants nothing; each job asks for its own"
        assert "group" in wf.get("concurrency", {}), f"{name}: no concurrency group"
        for job_name, job in wf["jobs"].items():
            assert "permissions" in job, f"{name}/{job_name}: no permissions of its own"
            assert "write-all" not in str(job["permissions"]) and "read-all" not in str(job["permissions"])
            assert job.get("timeout-minutes"), f"{name}/{job_name}: no timeout"
            for step in job["steps"]:
                if "uses" in step:
                    assert PINNED.match(step["uses"]), f"{name}/{job_name}: {step['uses']} is not pinned to a commit"
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{name}/{job_name}: token left in .git"
                assert "${{ secrets." not in step.get("run", ""), f"{name}/{job_name}: a secret inlined in a script"


def _make_targets_called() -> set[str]:
    targets: set[str] = set()
    for wf in workflows().values():
        for job in wf["jobs"].values():
            for step in job["steps"]:
                targets |= set(re.findall(r"^\s*make ([\w-]+)", step.get("run", ""), re.M))
    return targets


# The make targets the workflows call, and what exercises each in this suite: `lint-workflows` and `audit` here;
# `setup` and `data` by every `make run`-like test (tests/test_cli.py) and by `make test` itself; `test-fast` and
# `test-serving` select modules this suite runs itself; `lint` runs ruff, mypy and lint-imports (lint-imports by
# tests/unit/test_architecture.py).
EXERCISED = {"lint", "test-fast", "test-serving", "audit", "lint-workflows", "data", "setup"}


def test_every_make_target_the_workflows_call_exists_and_is_exercised() -> None:
    called = _make_targets_called()
    assert {"lint", "test-fast", "test-serving", "audit", "lint-workflows"} <= called
    assert called <= EXERCISED, f"called by a workflow, not exercised by a test: {called - EXERCISED}"
    for target in sorted(called):
        done = make("--dry-run", target)
        assert done.returncode == 0, f"make {target}: {done.stderr}"
    # the test targets select modules that exist and that `make test` collects
    for target, folders in {"test-fast": ["tests/unit", "tests/serving"], "test-serving": ["tests/serving"]}.items():
        recipe = make("--dry-run", target).stdout
        for folder in folders:
            assert folder in recipe and any((REPO / folder).glob("test_*.py"))


def test_every_flowship_command_the_workflows_run_exists_with_the_options_they_give() -> None:
    from typer.testing import CliRunner

    from flowship.cli.main import app

    called: dict[str, set[str]] = {}
    for wf in workflows().values():
        for job in wf["jobs"].values():
            for step in job["steps"]:
                for command, args in re.findall(r"\.venv/bin/flowship (\w+)([^\n]*)", step.get("run", "")):
                    called.setdefault(command, set()).update(re.findall(r"(--[a-z][\w-]*)", args))
    assert {"train", "report", "stage", "deploy", "rollback"} <= set(called)
    for command, options in called.items():
        help_text = CliRunner().invoke(app, [command, "--help"], prog_name="flowship", terminal_width=200).stdout
        assert f"Usage: flowship {command}" in help_text
        for option in options:
            assert option in help_text, f"flowship {command} has no {option}"
    # promote.yml passes its strategy as --canary, --shadow or --direct
    choices = workflows()["promote.yml"][True]["workflow_dispatch"]["inputs"]["strategy"]["options"]
    deploy_help = CliRunner().invoke(app, ["deploy", "--help"], prog_name="flowship").stdout
    assert all(f"--{choice}" in deploy_help for choice in choices)


class _Advisories(QuietHandler):
    """OSV's query API (POST /v1/query) for a list of advisories by package name."""

    advisories: dict[str, list[dict[str, Any]]] = {}
    asked: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        type(self).asked.append(f"{name}=={query['version']}")
        vulns = self.advisories.get(name, [])
        self.answer(200, json.dumps({"vulns": vulns} if vulns else {}).encode())


@pytest.fixture
def advisories() -> Iterator[tuple[str, type[_Advisories]]]:
    handler = type("Advisories", (_Advisories,), {"advisories": {}, "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", handler
    server.shutdown()


def _advisory(package: str, version: str) -> dict[str, Any]:
    return {
        "id": "GHSA-test-0000-0001",
        "aliases": ["CVE-2026-0001"],
        "summary": f"a flaw in {package} {version}",
        "affected": [
            {
                "package": {"name": package, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}],
            }
        ],
    }


def _project(tmp_path: Path, ignore: str = "") -> Path:
    """The audit's inputs from the repository: uv.lock, pyproject.toml, the code bandit reads, the ignore list."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "flowship", root / "flowship", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("uv.lock", "pyproject.toml", "audit.toml"):
        shutil.copyfile(REPO / name, root / name)
    if ignore:
        (root / "audit.toml").write_text((REPO / "audit.toml").read_text() + "\n" + ignore)
    return root


def test_the_project_as_shipped_passes_the_audit_with_its_sbom(
    tmp_path: Path, advisories: tuple[str, type[_Advisories]]
) -> None:
    url, service = advisories
    # the one advisory PyPI lists for a locked version on 2026-12-03 (no fixed release), which audit.toml explains
    service.advisories["diskcache"] = [
        {
            "id": "GHSA-w8v5-vhqr-4h9v",
            "aliases": ["CVE-2025-69872", "PYSEC-2026-2447"],
            "summary": "DiskCache (python-diskcache) through 5.6.3 uses Python pickle for serialization by default.",
            "affected": [{"package": {"name": "diskcache", "ecosystem": "PyPI"}, "ranges": []}],
        }
    ]
    root = _project(tmp_path)
    outcome = audit(root, serving_requirements(), "osv", url)
    assert outcome.passed, "\n".join(outcome.lines())
    assert [f.where for f, w in outcome.waived if w.kind == "vulnerability"] == ["diskcache==5.6.3"]
    # every locked package that this platform installs was asked about (pywin32 is not), the project itself not
    lines = (root / "reports/audit/locked-requirements.txt").read_text().splitlines()
    locked = [Requirement(line) for line in lines]
    applies = {f"{r.name}=={next(iter(r.specifier)).version}" for r in locked if not r.marker or r.marker.evaluate()}
    assert set(service.asked) == applies and len(applies) > 100
    assert "pywin32" in {r.name for r in locked} and not any(a.startswith("pywin32==") for a in service.asked)
    assert "numpy" in {a.split("==")[0] for a in service.asked}
    # and every static finding bandit made is one that audit.toml explains
    assert any(w.kind == "static" for _, w in outcome.waived)
    sbom = json.loads((root / "reports/audit/serving-image.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    purls = {c["purl"] for c in sbom["components"]}
    for pin in serving_requirements():
        name, version = pin.split("==")
        assert f"pkg:pypi/{name}@{version}" in purls


def test_a_vulnerable_locked_package_fails_until_waived_and_again_once_the_waiver_expires(
    tmp_path: Path, advisories: tuple[str, type[_Advisories]]
) -> None:
    url, service = advisories
    pin = next(p for p in serving_requirements() if p.startswith("numpy=="))
    service.advisories["numpy"] = [_advisory("numpy", pin.split("==")[1])]
    root = _project(tmp_path)
    outcome = audit(root, serving_requirements(), "osv", url)
    assert not outcome.passed
    (finding,) = outcome.open["dependencies (uv.lock)"]
    assert finding.where == pin and "fixed in: 99.0" in str(finding)
    assert {finding.key, *finding.aliases} == {"GHSA-test-0000-0001", "CVE-2026-0001"}

    waiver = '[[vulnerability]]\nid = "CVE-2026-0001"\npackage = "numpy"\nreason = "unused"\nexpires = 2027-01-31\n'
    root = _project(tmp_path / "waived", waiver)
    outcome = audit(root, serving_requirements(), "osv", url, today=dt.date(2027, 1, 31))
    assert outcome.passed, "\n".join(outcome.lines())
    assert [f.where for f, w in outcome.waived if w.kind == "vulnerability"] == [pin]
    outcome = audit(root, serving_requirements(), "osv", url, today=dt.date(2027, 2, 1))
    assert not outcome.passed
    assert any("CVE-2026-0001 (numpy) expired on 2027-01-31: review it again" in line for line in outcome.lines())


def test_new_code_with_a_finding_fails_the_static_part(
    tmp_path: Path, advisories: tuple[str, type[_Advisories]]
) -> None:
    url, _ = advisories
    root = _project(tmp_path)
    (root / "flowship" / "plugins.py").write_text("def load(text: str) -> object:\n    return eval(text)\n")
    outcome = audit(root, serving_requirements(), "osv", url)
    assert not outcome.passed
    (finding,) = outcome.open["static checks (flowship)"]
    assert finding.where == "flowship/plugins.py:2" and finding.key == "B307"


def test_make_audit_with_the_service_unreachable_fails_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/query"
    done = make("audit", f"AUDIT_ARGS=--osv-url {url} --timeout 5")
    assert done.returncode != 0 and "audit] Error 1" in done.stderr  # the audit's own exit code: 1, findings
    assert f"dependencies (uv.lock): NOT CHECKED: the vulnerability service (osv at {url}) could not be reached" in (
        done.stdout
    )
    assert "static checks (flowship): no open finding" in done.stdout
    assert done.stdout.rstrip().endswith("audit: FAILED")
    report = json.loads((REPO / "reports/audit/audit.json").read_text())
    assert report["passed"] is False and "could not be reached" in report["errors"]["dependencies (uv.lock)"]
