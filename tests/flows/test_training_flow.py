"""The training flow end to end on small real data: real DVC repo, real MLflow store, Prefect test API."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_first_run_registers_a_challenger_and_a_rerun_does_nothing(flights_project):
    first = flights_project.train()
    assert all(first["stages"].values())
    assert first["decision"]["verdict"] == "passed"
    assert first["registered"] == {"name": "flights-delay", "version": "1", "new": True}

    second = flights_project.train()
    assert not any(second["stages"].values())
    assert second["candidate"]["run_id"] == first["candidate"]["run_id"]
    assert second["registered"]["new"] is False
    assert [v.version for v in flights_project.tracker().versions("flights-delay")] == ["1"]
