from __future__ import annotations

from pathlib import Path

import pytest

from flowship.adapters.tracking import Tracker, open_store_early


def test_a_store_opened_early_that_fails_is_left_to_the_flow_to_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    open_store_early(tmp_path)  # no error here: the command goes on to its flow
    with pytest.raises(Exception, match="unsupported URI 'bogus://nowhere'"):
        Tracker(tmp_path)  # which is where the flow's check_tracking says so


def test_a_local_store_opened_early_is_the_one_the_flow_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    open_store_early(tmp_path)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()  # made, its schema in place
    assert Tracker(tmp_path).uri.endswith(f"{tmp_path}/mlruns/mlflow.db")
