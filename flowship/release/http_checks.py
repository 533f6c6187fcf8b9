"""Talk to a serving endpoint over real HTTP: health, the golden set, a bad record, latency."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from flowship.config import ReleaseConfig
from flowship.release.checks import Check, golden_check, latency_check, status_check


def verify_staging(url: str, bundle: Path, cfg: ReleaseConfig, token: str | None, full: bool = True) -> list[Check]:
    """Health, then (when `full`) the golden set, a bad record and p95 latency: every check runs and is reported."""
    checks = [wait_ready(url, cfg.health_timeout_s)]
    if not checks[0].passed or not full:
        return checks
    golden_file = bundle / "golden.json"
    if not golden_file.exists():
        return [*checks, Check("golden_set", False, "this model version carries no golden set to replay")]
    golden = json.loads(golden_file.read_text())
    example = golden[0]["features"]
    return [
        *checks,
        replay_golden(url, golden, cfg.golden_tolerance, token),
        bad_record(url, example, token),
        measure_latency(url, example, cfg.latency_requests, cfg.latency_p95_ms, token),
    ]


def wait_ready(base_url: str, timeout_s: float) -> Check:
    """Poll /ready until it answers 200, or the time is up."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/ready", timeout=2.0)
            if response.status_code == 200:
                waited = time.monotonic() - started
                return Check("health", True, f"ready after {waited:.1f} s", {"seconds": round(waited, 2)})
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    return Check("health", False, f"not ready within {timeout_s:g} s (last: {last})", {"seconds": timeout_s})


def replay_golden(base_url: str, golden: list[dict[str, Any]], tolerance: float, token: str | None = None) -> Check:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    records = [g["features"] for g in golden]
    try:
        response = httpx.post(f"{base_url}/predict", json=records, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        return Check("golden_set", False, f"request failed: {exc}")
    if response.status_code != 200:
        return Check("golden_set", False, f"HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    probabilities = body.get("probabilities") or [None] * len(body["predictions"])
    answers = [{"prediction": p, "probabilities": q} for p, q in zip(body["predictions"], probabilities, strict=False)]
    return golden_check(golden, answers, tolerance)


def bad_record(base_url: str, example: dict[str, Any], token: str | None = None) -> Check:
    """A record with a feature of the wrong type must get a 4xx, never a 500."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    broken = dict(example)
    name = next(iter(broken))
    broken[name] = {"not": "a feature value"}
    try:
        response = httpx.post(f"{base_url}/predict", json=broken, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        return Check("bad_input", False, f"request failed: {exc}")
    return status_check("bad_input", response.status_code, range(400, 500), f"a wrong type in {name!r}")


def measure_latency(
    base_url: str, record: dict[str, Any], requests: int, budget_ms: float, token: str | None = None
) -> Check:
    """Sequential single-record requests over one keep-alive connection, as a client would send them."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies = []
    errors = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as client:
        client.post("/predict", json=record)  # warm-up: the first call pays for lazy imports
        for _ in range(requests):
            started = time.perf_counter()
            response = client.post("/predict", json=record)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
    check = latency_check(latencies, budget_ms)
    if errors:
        return Check("latency", False, f"{errors} of {requests} requests failed", check.measured)
    return check
