"""The usage log: a serving process samples its CPU time and resident memory at its start, on an interval and at a
clean shutdown, through the inference log's writer, into its own `usage-<day>[.<writer>].jsonl`; a reader keeps
what it can read and counts the rest."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle
from flowship.serving.inference_log import InferenceLog
from flowship.serving.usage import (
    USAGE_PREFIX,
    UsageEntry,
    UsageSampler,
    cpu_seconds,
    parse_usage_line,
    resident_bytes,
)
from tests.helpers import wait_until
from tests.serving.conftest import TestClient, record, settings_for

T0 = datetime(2026, 12, 1, 23, 59, 59, 500000, tzinfo=UTC)


def samples(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(folder.glob(f"{USAGE_PREFIX}*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_a_sample_is_one_json_line_in_its_day_file() -> None:
    entry = UsageEntry(T0, "sample", "m", "7", "stable-1", "a1b2", 42, 1.2345678, 123_456_789)
    day, line = entry.encode()
    assert day == T0.date() and line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "time": "2026-12-01T23:59:59.500000+00:00",
        "event": "sample",
        "model_name": "m",
        "model_version": "7",
        "writer": "stable-1",
        "process": "a1b2",
        "pid": 42,
        "cpu_seconds": 1.234568,
        "rss_bytes": 123_456_789,
    }
    assert parse_usage_line(line) == {**json.loads(line), "time": T0, "cpu_seconds": 1.234568}


def test_this_process_measures_its_cpu_time_and_resident_memory() -> None:
    before = cpu_seconds()
    sum(i * i for i in range(200_000))  # some CPU work
    assert cpu_seconds() > before
    rss = resident_bytes()
    assert rss is not None and rss > 10 * 2**20  # a Python process with pandas loaded holds well over 10 MiB


def test_the_sampler_samples_at_start_on_its_interval_and_at_close(tmp_path: Path) -> None:
    with InferenceLog(tmp_path, flush_seconds=0.05, writer="w-1", prefix=USAGE_PREFIX) as log:
        sampler = UsageSampler(log, "m", "7", interval=0.02, writer="w-1").start()
        wait_until(lambda: len(samples(tmp_path)) >= 4, 10, "samples on the interval")
        sampler.close()
        sampler.close()  # a second close takes no second last sample
    found = samples(tmp_path)
    assert all(re.fullmatch(r"usage-\d{8}\.w-1\.jsonl", p.name) for p in tmp_path.iterdir())
    assert found[0]["event"] == "start" and found[-1]["event"] == "stop"
    assert {s["event"] for s in found[1:-1]} == {"sample"}
    who = {(s["model_name"], s["model_version"], s["writer"], s["pid"]) for s in found}
    assert who == {("m", "7", "w-1", os.getpid())}
    assert len({s["process"] for s in found}) == 1
    cpu = [s["cpu_seconds"] for s in found]
    assert cpu == sorted(cpu) and cpu[0] > 0  # cumulative from the process's start
    assert all(s["rss_bytes"] > 0 for s in found)


def test_a_new_sampler_is_a_new_process_to_the_reader(tmp_path: Path) -> None:
    """A restarted replica (same writer, maybe the same pid in a new container) starts a new counter: a new name."""
    with InferenceLog(tmp_path, flush_seconds=0.05, prefix=USAGE_PREFIX) as log:
        for _ in range(2):
            UsageSampler(log, "m", "7", interval=60).start().close()
    found = samples(tmp_path)
    assert [s["event"] for s in found] == ["start", "stop", "start", "stop"]
    assert found[0]["process"] == found[1]["process"] != found[2]["process"] == found[3]["process"]


def test_where_the_system_does_not_say_the_memory_is_null(tmp_path: Path) -> None:
    with InferenceLog(tmp_path, flush_seconds=0.05, prefix=USAGE_PREFIX) as log:
        UsageSampler(log, "m", "7", interval=60, measure=lambda: (0.5, None)).start().close()
    assert [(s["cpu_seconds"], s["rss_bytes"]) for s in samples(tmp_path)] == [(0.5, None), (0.5, None)]


def test_a_log_closed_first_ends_the_sampling_without_a_last_sample(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = InferenceLog(tmp_path, flush_seconds=0.05, prefix=USAGE_PREFIX).start()
    sampler = UsageSampler(log, "m", "7", interval=0.01).start()
    log.close()
    sampler.close()  # its thread has ended on the closed log; no stop sample, nothing raised
    assert samples(tmp_path)[0]["event"] == "start"
    assert "stop" not in {s["event"] for s in samples(tmp_path)}
    assert "usage log closed before the last sample" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'["a list"]',
        b'{"time": "2026-12-01T00:00:00+00:00", "model_version": "1", "cpu_seconds": 1.0}',  # no process
        b'{"time": "yesterday", "process": "p", "model_version": "1", "cpu_seconds": 1.0}',
        b'{"process": "p", "model_version": "1", "cpu_seconds": 1.0}',  # no time
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "cpu_seconds": 1.0}',  # no version
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "model_version": "1", "cpu_seconds": "1.0"}',
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "model_version": "1", "cpu_seconds": -1}',
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "model_version": "1", "cpu_seconds": true}',
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "model_version": "1", "cpu_seconds": 1, '
        b'"rss_bytes": 1.5}',
        b'{"time": "2026-12-01T00:00:00+00:00", "process": "p", "model_version": "1", "cpu_seconds": 1, '
        b'"rss_bytes": -4096}',
        b'{"time":"2026-12-01T00:00:00+00:00","process":"p","model_ver',  # cut by a crash
    ],
)
def test_a_line_that_cannot_be_read_is_none(raw: bytes) -> None:
    assert parse_usage_line(raw) is None


def test_the_app_samples_from_its_start_to_its_clean_shutdown(tmp_path: Path, classifier: ModelBundle) -> None:
    app = create_app(classifier, settings_for(tmp_path, log_writer="stable-2", usage_seconds=0.05))
    logs = tmp_path / "logs"
    with TestClient(app) as client:
        assert client.post("/predict", json=record()).status_code == 200
        wait_until(lambda: len(samples(logs)) >= 3, 10, "the app's samples on its interval")
    found = samples(logs)
    assert found[0]["event"] == "start" and found[-1]["event"] == "stop"
    assert {(s["model_name"], s["model_version"], s["writer"]) for s in found} == {("flights-delay", "3", "stable-2")}
    assert all(p.name.endswith(".stable-2.jsonl") for p in logs.glob(f"{USAGE_PREFIX}*"))
