"""The UIs as a person sees them: headless Chromium (Debian's, driven by Playwright) opens the Prefect UI, the MLflow
UI and the Evidently UI of `flowship up` and finds the deployments, a completed training run with its tasks and
artifacts, the scheduled monitoring run's verdict, the registered model with its aliases and lineage, the monitoring
dashboard's panels with two versions over the checks, and the not-found pages. A full-page screenshot of every page
is kept in test-output/screenshots/."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from flowship.monitoring.dashboard import panel_specs
from tests.conftest import REPO
from tests.helpers import wait_until
from tests.services.conftest import INTERVAL_S, Up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# As root, without a sandbox; no background networking: on a closed network Chromium's own connections fail.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "test-output" / "screenshots"
VIEWPORT = {"width": 1600, "height": 1000}
# The single-page apps render after their API calls answer: every expectation waits up to this long.
TIMEOUT_MS = 20_000
# The training tasks every run of the training flow has (stages DVC finds unchanged finish as Skipped).
TRAINING_TASKS = ["version_data", "ingest", "validate", "prepare", "train", "evaluate", "gate", "register"]
LINEAGE_TAGS = [
    "flowship.data.raw_md5",
    "flowship.data.holdout_md5",
    "flowship.model.md5",
    "flowship.git.commit",
    "flowship.params_hash",
    "flowship.prefect.flow_run_id",
    "flowship.gate.verdict",
    "flowship.mlflow.run_id",
]
PREFECT_API_UNREACHABLE = "Can't connect to Server API"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile."""
    if not CHROMIUM.exists():
        message = f"no {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI") or os.environ.get("FLOWSHIP_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            timezone_id="UTC",  # the Evidently UI shows the runs' times in the browser's zone
        )
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    opened = browser.new_page()
    try:
        yield opened
    finally:
        opened.close()


def screenshot(page: Page, name: str) -> Path:
    """The whole page as PNG. Both UIs scroll inside their own layout, not the document, so the viewport is
    first made as tall as the tallest scrolling element."""
    height = page.evaluate("() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 6000)})
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    return path


def open_prefect(page: Page, up: Up, path: str, ready: Locator) -> None:
    """A Prefect UI page, once `ready` shows; fails at once, saying why, if the UI calls an API other than its
    own server's (its banner then replaces every page's content)."""
    page.goto(f"{up.prefect}{path}")
    unreachable = page.get_by_text(PREFECT_API_UNREACHABLE).first
    expect(ready.or_(unreachable).first).to_be_visible()
    if unreachable.is_visible():
        api_url = page.request.get(f"{up.prefect}/ui-settings").json()["api_url"]
        pytest.fail(
            f"the Prefect UI at {up.prefect} shows {unreachable.inner_text()!r}: its /ui-settings name "
            f"api_url={api_url!r}, not this server's API {up.api}"
        )


def state_badge(scope: Locator) -> Locator:
    return scope.locator(".state-badge").first


def task_runs(up: Up, run_id: str) -> dict[str, dict[str, Any]]:
    """The flow run's task runs by task name (version_data-457 -> version_data)."""
    return {t["name"].rsplit("-", 1)[0]: t for t in up.task_runs(run_id)}


def version_row(page: Page, model: str, version: str) -> Locator:
    link = page.locator(f'a[href$="#/models/{model}/versions/{version}"]')
    return page.locator("tr", has=link).or_(page.get_by_role("row").filter(has=link)).first


# --- Prefect UI ---


def test_prefect_ui_calls_its_own_servers_api(up: Up, page: Page) -> None:
    # The dashboard shows its "Flow Runs" panel only once a run exists: the shared manual run makes sure of it,
    # whichever tests ran before (or none).
    up.training_run()
    page.goto(f"{up.prefect}/dashboard")
    api_url = page.request.get(f"{up.prefect}/ui-settings").json()["api_url"]
    assert urljoin(f"{up.prefect}/", api_url).rstrip("/") == up.api, (
        f"the Prefect UI served at {up.prefect} calls {api_url}"
    )
    expect(page.get_by_role("heading", name="Flow Runs")).to_be_visible()
    expect(page.get_by_text(PREFECT_API_UNREACHABLE)).to_have_count(0)


def test_deployments_page_lists_the_environments_deployments_and_the_monitoring_schedule(up: Up, page: Page) -> None:
    rows = {}
    for name in ("training/dev", "release/dev", "monitoring/dev", "retraining/dev"):
        deployment = up.deployment(name)
        link = page.locator(f'a[href="/deployments/deployment/{deployment["id"]}"]')
        rows[name] = page.locator("tr", has=link)
    open_prefect(page, up, "/deployments", rows["monitoring/dev"])
    for name, row in rows.items():
        flow, env = name.split("/")
        expect(row.locator(".deployment-list__deployment-column")).to_contain_text(env)
        expect(row.locator(".deployment-list__deployment-column")).to_contain_text(flow)
        expect(row.locator(".deployment-list__status-column")).to_have_text("Ready")
    expect(rows["monitoring/dev"].locator(".deployment-schedule-tags__tag")).to_have_text(f"Every {INTERVAL_S} seconds")
    # training/dev declares its weekly schedule switched off: no active schedule is shown by name.
    expect(rows["training/dev"].locator(".deployment-list__schedules-column")).not_to_contain_text("Every")
    screenshot(page, "prefect-deployments")


def test_training_run_page_shows_completed_with_its_tasks(up: Up, page: Page) -> None:
    run = up.training_run()
    assert run["state"]["name"] == "Completed", run["state"]
    heading = page.locator(".page-heading-flow-run__meta")
    open_prefect(page, up, f"/runs/flow-run/{run['id']}", heading)
    expect(page.get_by_text(run["name"], exact=True).first).to_be_visible()
    expect(state_badge(heading)).to_have_text("Completed")
    expect(heading).to_contain_text(f"{len(up.task_runs(run['id']))} Task runs")

    page.locator("li.p-tab", has_text="Task Runs").click()
    tasks = task_runs(up, run["id"])
    assert set(TRAINING_TASKS) <= set(tasks), sorted(tasks)
    skipped = []
    for name in TRAINING_TASKS:
        task = tasks[name]
        item = page.locator(".task-run-list-item", has=page.locator(f'a[href="/runs/task-run/{task["id"]}"]'))
        expect(item).to_contain_text(task["name"])
        expect(state_badge(item)).to_have_text(task["state"]["name"])
        if task["state"]["name"] == "Skipped":
            skipped.append(name)
    # The fixture's project was trained before `flowship up`: DVC finds every stage unchanged.
    assert skipped == ["ingest", "validate", "prepare", "train", "evaluate"], skipped
    for name in ("version_data", "gate", "register"):
        assert tasks[name]["state"]["name"] == "Completed", tasks[name]["state"]
    screenshot(page, "prefect-training-run-task-runs")


def test_training_run_artifacts_tab_lists_the_summary_and_the_gate(up: Up, page: Page) -> None:
    run = up.training_run()
    artifacts = up.artifacts(run["id"])
    assert {"training-summary", "training-gate"} <= set(artifacts), sorted(artifacts)
    open_prefect(page, up, f"/runs/flow-run/{run['id']}", page.locator("li.p-tab", has_text="Artifacts"))
    page.locator("li.p-tab", has_text="Artifacts").click()
    for key, description in (("training-summary", "where to look"), ("training-gate", "evaluation gate: passed")):
        card = page.locator(f'a[href="/artifacts/artifact/{artifacts[key]["id"]}"]')
        expect(card.locator(".artifact-card__title")).to_have_text(key)
        expect(card).to_contain_text(description)
    # The summary is the run's own artifact, the gate's belongs to its task run.
    expect(page.locator(".flow-run-artifacts__subheading", has_text="Task runs")).to_be_visible()
    screenshot(page, "prefect-training-run-artifacts")


def test_training_summary_links_to_the_mlflow_run_and_its_artifacts(up: Up, page: Page) -> None:
    run = up.training_run()
    summary = up.artifacts(run["id"])["training-summary"]
    version = up.versions()[-1]
    open_prefect(page, up, f"/artifacts/artifact/{summary['id']}", page.locator(".artifact-data-markdown"))
    markdown = page.locator(".artifact-data-markdown")
    expect(markdown.get_by_role("heading", name="Training run")).to_be_visible()
    expect(markdown).to_contain_text("stages: ingest: skipped (unchanged)")
    expect(markdown).to_contain_text("gate: passed")
    expect(markdown).to_contain_text(f"registered: {up.model} v{version['version']}")
    link = markdown.get_by_role("link", name=version["run_id"])
    href = link.get_attribute("href") or ""
    assert re.fullmatch(rf"{re.escape(up.mlflow)}/#/experiments/\d+/runs/{version['run_id']}", href), href
    screenshot(page, "prefect-training-summary-artifact")

    # The link opens the MLflow run: finished, with its metrics and its logged files.
    mlflow_run = mlflow_get("/runs/get", up, run_id=version["run_id"])["run"]
    page.goto(href)
    expect(page.get_by_text(mlflow_run["info"]["run_name"]).first).to_be_visible()
    expect(page.get_by_text("Finished", exact=True).first).to_be_visible()
    expect(page.get_by_text("roc_auc", exact=True).first).to_be_visible()
    screenshot(page, "mlflow-training-run")
    page.goto(f"{href}/artifacts")
    logged = mlflow_get("/artifacts/list", up, run_id=version["run_id"]).get("files", [])
    assert logged, "the MLflow run has no artifacts"
    for entry in logged:
        expect(page.get_by_text(entry["path"], exact=True).first).to_be_visible()
    screenshot(page, "mlflow-training-run-artifacts")


def test_scheduled_monitoring_run_page_shows_drift_detected(up: Up, page: Page) -> None:
    run = up.scheduled_monitoring_run()
    assert run["auto_scheduled"], run
    assert run["state"]["name"] == "Drift detected", run["state"]
    heading = page.locator(".page-heading-flow-run__meta")
    open_prefect(page, up, f"/runs/flow-run/{run['id']}", heading)
    expect(page.get_by_text(run["name"], exact=True).first).to_be_visible()
    expect(state_badge(heading)).to_have_text("Drift detected")
    # The badge shows before the rest of the heading: wait for the flow, deployment and task runs too.
    expect(page.locator(".page-heading-flow-run__flow-details")).to_contain_text("monitoring")
    expect(heading).to_contain_text(f"{len(up.task_runs(run['id']))} Task runs")
    screenshot(page, "prefect-monitoring-run-drift-detected")


def test_a_flow_run_that_does_not_exist_shows_the_not_found_page(up: Up, page: Page) -> None:
    missing = uuid.uuid4()
    page.goto(f"{up.prefect}/runs/flow-run/{missing}")
    # The UI's own 404 page, not an empty run page.
    expect(page.get_by_text("Page not found", exact=True)).to_be_visible()
    expect(page).to_have_title(re.compile("^Page Not Found"))
    expect(page.locator(".page-heading-flow-run__meta")).to_have_count(0)
    screenshot(page, "prefect-flow-run-not-found")


# --- MLflow UI ---


def mlflow_get(path: str, up: Up, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{up.mlflow}/api/2.0/mlflow{path}", params=params, timeout=15.0)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def test_registered_model_page_shows_its_versions_and_aliases(up: Up, page: Page) -> None:
    aliases = {a["alias"]: a["version"] for a in up.registered_model().get("aliases", [])}
    assert {"champion", "challenger"} <= set(aliases), aliases
    versions = [v["version"] for v in up.versions()]
    page.goto(f"{up.mlflow}/#/models/{up.model}")
    expect(page.get_by_role("heading", name=up.model).first).to_be_visible()
    for version in versions:
        row = version_row(page, up.model, version)
        expect(row).to_contain_text(f"Version {version}")
        for alias, aliased in aliases.items():
            if aliased == version:
                expect(row).to_contain_text(f"@ {alias}")
    screenshot(page, "mlflow-registered-model")


def test_model_version_page_shows_the_lineage_tags(up: Up, page: Page) -> None:
    version = up.versions()[-1]
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert set(LINEAGE_TAGS) <= set(tags), sorted(tags)
    page.goto(f"{up.mlflow}/#/models/{up.model}/versions/{version['version']}")
    expect(page.get_by_text(f"Version {version['version']}", exact=True).first).to_be_visible()
    for key in LINEAGE_TAGS:
        row = page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
        expect(row).to_contain_text(tags[key])
    screenshot(page, "mlflow-model-version-lineage")


def test_experiments_list_shows_the_training_and_monitoring_experiments(up: Up, page: Page) -> None:
    page.goto(f"{up.mlflow}/#/experiments")
    for name in (up.model, f"{up.model}-monitoring"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    screenshot(page, "mlflow-experiments")


def test_a_model_that_does_not_exist_shows_mlflows_not_found_page(up: Up, page: Page) -> None:
    page.goto(f"{up.mlflow}/#/models/no-such-model")
    expect(page.get_by_text("Page Not Found")).to_be_visible()
    expect(page.get_by_text("Model no-such-model does not exist")).to_be_visible()
    screenshot(page, "mlflow-model-not-found")


# --- Evidently UI: the monitoring dashboard ---


def evidently_get(up: Up, path: str) -> Any:
    response = httpx.get(f"{up.evidently}/api{path}", timeout=15.0)
    response.raise_for_status()
    return response.json()


def test_the_monitoring_dashboard_shows_each_panel_with_two_versions_over_the_checks(up: Up, page: Page) -> None:
    # Two checks (v1, then v1 and v2) were written before `flowship up` started the UI; the scheduled check's run
    # (v1's July) is added while it runs, and shows without a restart.
    up.scheduled_monitoring_run()
    (project,) = evidently_get(up, "/projects")

    def three_runs() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = evidently_get(up, f"/projects/{project['id']}/snapshots")
        return found if len(found) >= 3 else None

    runs = wait_until(three_runs, 60, "the scheduled check's run in the Evidently UI", 1.0, up.logs)
    assert sorted({tuple(r["tags"]) for r in runs}) == [("v1",), ("v1", "v2")]
    params = up.project.params()
    specs = panel_specs(params["monitoring"]["drift"]["key_features"], "roc_auc")
    page.goto(f"{up.evidently}/projects/{project['id']}")
    for spec in specs:
        card = page.locator(".MuiCard-root").filter(has=page.get_by_text(spec.title, exact=True))
        expect(card).to_be_visible()
        drawn = card.locator(".MuiMarkElement-root, .MuiBarElement-root")
        if spec.title == "Cost per 1,000 predictions":
            expect(drawn).to_have_count(0)  # no cost figures in these checks: the panel waits for them
            continue
        legend = card.locator(".MuiChartsLegend-root")
        for version in ("v1", "v2"):
            expect(legend).to_contain_text(version)
        # v1 in the two earlier checks, v2 in the second: three points (or bars) at the least (the scheduled check
        # adds v1's where it has the figure: no gateway, no rating there)
        expect(drawn.nth(2)).to_be_attached()
    screenshot(page, "evidently-dashboard")
