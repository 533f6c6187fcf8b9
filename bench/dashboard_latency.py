"""The time from a monitoring check's end to its run showing in the dashboard (the Evidently UI).

Run in a project whose production serves (after `make run`). The script starts the Evidently UI on the project's
workspace (`monitoring.dashboard.workspace`) on a free port, opens the model's dashboard in headless Chromium, and
then, each round:

* replays one month to production with `flowship replay` (real HTTP traffic, then the monitoring check that
  `replay` runs after the month);
* takes the check's end as the moment the command prints the check's `dashboard:` line (the flow has returned);
* measures until the run is listed by the UI's API (`/api/projects/<id>/snapshots`, polled every 20 ms), and until
  a reload of the dashboard's page draws it (one more point in the traffic panel).

Each round adds a run to the project's dashboard (a month sent again). With `--screenshot PATH`, the dashboard is
saved as a PNG before the first round (`--rounds 0`: the screenshot alone). Printed and written to
bench/results/dashboard_latency.json; nothing is asserted.

    .venv/bin/python bench/dashboard_latency.py [--project .] [--month 2013-07] [--rounds 3] [--screenshot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "bench" / "results" / "dashboard_latency.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1600, "height": 1000}
TRAFFIC = "Traffic"  # the panel whose points are counted
POINTS = ".MuiMarkElement-root, .MuiBarElement-root"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ui(project: Path, workspace: Path, port: int) -> subprocess.Popen[bytes]:
    """The Evidently UI as `flowship up` starts it (its command line and its health URL), on a port of its own."""
    from flowship.services.processes import answers, evidently_ui_argv

    argv = evidently_ui_argv(workspace, port)
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    ui = subprocess.Popen(argv, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if answers(f"http://127.0.0.1:{port}/api/version"):
            return ui
        if ui.poll() is not None:
            raise SystemExit(f"the Evidently UI exited ({ui.returncode}): {' '.join(argv)}")
        time.sleep(0.2)
    ui.kill()
    raise SystemExit("the Evidently UI did not answer within 60 s")


def runs(base: str, project_id: str) -> set[str]:
    found = httpx.get(f"{base}/api/projects/{project_id}/snapshots", timeout=10).json()
    return {str(r["id"]) for r in found}


def traffic_points(page: Page) -> int:
    card = page.locator(".MuiCard-root").filter(has=page.get_by_text(TRAFFIC, exact=True))
    card.wait_for()
    return int(card.locator(POINTS).count())


def open_dashboard(page: Page, url: str, at_least: int) -> tuple[int, float]:
    """Load the dashboard until its traffic panel draws `at_least` points: their count and the seconds it took."""
    began = time.monotonic()
    while True:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        count = traffic_points(page)
        if count >= at_least:
            return count, time.monotonic() - began
        if time.monotonic() - began > 60:
            raise SystemExit(f"{url}: the traffic panel drew {count} points after 60 s, not {at_least}")


def screenshot(page: Page, path: Path) -> None:
    height = page.evaluate("() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 6000)})
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]


def one_round(project: Path, month: str, base: str, project_id: str, page: Page, url: str) -> dict[str, Any]:
    before = runs(base, project_id)
    points = traffic_points(page)
    argv = [str(project / ".venv/bin/flowship"), "replay", "--from", month, "--batch-size", "20"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line as it is printed
    replay = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert replay.stdout is not None
    ended = None
    for line in replay.stdout:
        if line.startswith("dashboard:"):
            ended = time.monotonic()
            break
    if ended is None:
        raise SystemExit(f"`{shlex.join(argv)}` printed no `dashboard:` line (exit {replay.wait()})")
    while not runs(base, project_id) - before:
        time.sleep(0.02)
    listed = time.monotonic() - ended
    drawn_points, _ = open_dashboard(page, url, points + 1)
    drawn = time.monotonic() - ended
    replay.wait()
    return {"api_s": round(listed, 3), "page_s": round(drawn, 3), "points": [points, drawn_points]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--month", default="2013-07", help="the month each round sends again")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, help="save the dashboard before the first round")
    args = parser.parse_args()
    project = args.project.resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    workspace = project / params["monitoring"].get("dashboard", {}).get("workspace", "reports/evidently")
    from flowship.adapters.drift import project_id as id_of

    project_id = id_of(params["project"]["name"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/projects/{project_id}"
    ui = start_ui(project, workspace, port)
    rounds: list[dict[str, Any]] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport=VIEWPORT, timezone_id="UTC")  # type: ignore[arg-type]
            page.set_default_timeout(30_000)
            shown, _ = open_dashboard(page, url, 1)
            print(f"dashboard {url}: {len(runs(base, project_id))} runs, {shown} traffic points")
            if args.screenshot is not None:
                screenshot(page, args.screenshot)
                print(f"screenshot: {args.screenshot}")
            for i in range(args.rounds):
                done = one_round(project, args.month, base, project_id, page, url)
                rounds.append(done)
                print(
                    f"round {i + 1}: listed by the UI's API {done['api_s']:.3f} s after the check's end, drawn on a "
                    f"page loaded after it {done['page_s']:.2f} s after (traffic points {done['points'][0]} → "
                    f"{done['points'][1]})"
                )
            browser.close()
    finally:
        ui.terminate()
        ui.wait(10)
    command = shlex.join([".venv/bin/python", "bench/dashboard_latency.py", *sys.argv[1:]])
    if rounds:
        result = {
            "command": command,
            "rounds": rounds,
            "api_s_median": statistics.median(r["api_s"] for r in rounds),
            "page_s_median": statistics.median(r["page_s"] for r in rounds),
        }
        OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
        OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
        print(f"median: API {result['api_s_median']:.3f} s, page {result['page_s_median']:.2f} s  ({command})")


if __name__ == "__main__":
    main()
