"""The retention flow under a Prefect test API: the expired files go, the run is recorded, a dry run keeps all."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowship import audit
from flowship.config import parse_params
from flowship.flows.retention import retention
from flowship.paths import Layout
from tests.unit.conftest import raw_params

pytestmark = pytest.mark.integration


def dated(folder: Path, prefix: str, days_ago: int) -> Path:
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    path = folder / f"{prefix}{day:%Y%m%d}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"time":"t"}\n')
    stamp = time.time() - max(days_ago - 1, 0) * 86_400 - 7200  # last written at its day's end, hours ago
    os.utime(path, (stamp, stamp))
    return path


def test_the_flow_deletes_expired_files_and_records_the_run(tmp_path: Path, prefect_harness: None) -> None:
    layout = Layout(tmp_path)
    params = parse_params(raw_params(retention={"inference": 2, "labels": 2, "access": 2, "safety": None}))
    old = [dated(layout.inference_log_dir, "inference-", 3), dated(layout.labels_dir, "labels-", 5)]
    kept = [
        dated(layout.inference_log_dir, "inference-", 2),
        dated(layout.inference_log_dir, "safety-", 30),
        dated(layout.gateway_log_dir, "access-", 1),
    ]

    listed = retention(params_path=str(tmp_path / "params.yaml"), dry_run=True, params=params)
    assert {f.path for f in listed.removed} == set(old) and all(p.exists() for p in old)
    assert audit.read(tmp_path) == []

    run = retention(params_path=str(tmp_path / "params.yaml"), params=params)
    assert {f.path for f in run.removed} == set(old)
    assert not any(p.exists() for p in old) and all(p.exists() for p in kept)
    (event,) = audit.read(tmp_path)
    assert event["change"] == "retention" and event["removed"]["inference"]["files"] == 1
    assert event["removed"]["labels"]["files"] == 1
