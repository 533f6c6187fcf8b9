"""Talk to a serving endpoint over real HTTP: health, the golden set, a bad record, the guardrails, latency."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from flowship.config import ReleaseConfig
from flowship.release.checks import Check, golden_check, guardrail_trips, guardrails_check, latency_check, status_check
from flowship.serving.guardrails import PROFILE_FILE, GuardrailPolicy, TrainingProfile


def verify_staging(
    url: str,
    bundle: Path,
    cfg: ReleaseConfig,
    token: str | None,
    full: bool = True,
    policy: GuardrailPolicy | None = None,
) -> list[Check]:
    """Health, then (when `full`) the golden set, a bad record, a record built to trip each input guardrail the
    policy turns on, and p95 latency: every check runs and is reported."""
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
        guardrails(url, bundle, example, policy or GuardrailPolicy(), token),
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
    """The golden records' answers against the training-time ones. A record a guardrail refuses or answers for the
    model (a fallback, a clipped value) has no model answer to compare: it is left out and counted."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    records = [g["features"] for g in golden]
    kept = list(range(len(golden)))
    try:
        response = httpx.post(f"{base_url}/predict", json=records, headers=headers, timeout=30.0)
        if response.status_code == 422 and response.json().get("error") == "refused_by_guardrails":
            refused = {r["record"] for r in response.json()["guardrails"]}
            kept = [i for i in kept if i not in refused]
            if kept:
                shown = [records[i] for i in kept]
                response = httpx.post(f"{base_url}/predict", json=shown, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        return Check("golden_set", False, f"request failed: {exc}")
    if not kept:
        return Check("golden_set", False, "the guardrails refuse every golden record: nothing to compare")
    if response.status_code != 200:
        return Check("golden_set", False, f"HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    probabilities = body.get("probabilities") or [None] * len(body["predictions"])
    warnings = body.get("warnings") or [[] for _ in body["predictions"]]
    answers = [{"prediction": p, "probabilities": q} for p, q in zip(body["predictions"], probabilities, strict=False)]
    replaced = {j for j, w in enumerate(warnings) if any(e["action"] in ("fallback", "clip") for e in w)}
    compared = [(kept[j], a) for j, a in enumerate(answers) if j not in replaced]
    check = golden_check(
        [golden[i] for i, _ in compared], [a for _, a in compared], tolerance, [i for i, _ in compared]
    )
    left_out = len(golden) - len(compared)
    if not compared or not left_out:
        return check
    note = f" ({left_out} of {len(golden)} left out: a guardrail refused or answered them)"
    return Check(check.name, check.passed, check.detail + note, {**check.measured, "left_out": left_out})


def guardrails(
    base_url: str, bundle: Path, example: dict[str, Any], policy: GuardrailPolicy, token: str | None = None
) -> Check:
    """A record built to trip each input guardrail the policy turns on must be refused (422 naming it), or answered
    with its warning and, for a fallback, the fallback's answer, as the policy says."""
    profile_file = bundle / PROFILE_FILE
    if not policy.enabled:
        return Check("guardrails", True, "off (guardrails.enabled is false)")
    if not profile_file.exists():
        return Check("guardrails", True, "off: this version carries no training profile")
    profile = TrainingProfile.model_validate_json(profile_file.read_text())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    trips = guardrail_trips(policy, profile, example)
    results = {}
    for trip in trips:
        try:
            response = httpx.post(f"{base_url}/predict", json=trip.record, headers=headers, timeout=10.0)
            results[trip.guardrail] = (response.status_code, response.json())
        except (httpx.HTTPError, ValueError) as exc:
            results[trip.guardrail] = (0, {"error": f"request failed: {exc}"})
    return guardrails_check(trips, results)


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
