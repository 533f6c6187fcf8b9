"""A sensitive feature (params.yaml `privacy:`) is scored as sent, and written hashed or not at all: never its value
in the inference log, nor in the access log even when that one carries features."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle
from flowship.serving.errors import SettingsError
from flowship.serving.inference_log import read_inference_log
from flowship.serving.logs import ACCESS_LOGGER
from flowship.serving.privacy import PrivacyPolicy, keyed_hash
from tests.serving.conftest import MakeClient, record, settings_for
from tests.serving.test_app import access_lines

KEY = "0123456789abcdef" * 4


def logged_lines(folder: Path) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob("inference-*.jsonl")))


def test_a_hashed_feature_is_logged_as_its_keyed_hash_only(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(privacy=PrivacyPolicy(columns=["carrier"]), privacy_key=SecretStr(KEY), log_features=True)
    records = [record(carrier="UA"), record(carrier=None)]
    plain = make_client(log_dir=tmp_path / "plain").post("/predict", json=records).json()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        answer = client.post("/predict", json=records, headers={"X-Request-ID": "p"})
    client.__exit__(None, None, None)  # shutdown flushes the log
    assert answer.status_code == 200
    assert answer.json()["probabilities"] == plain["probabilities"]  # the model was given the value itself

    logged, _ = read_inference_log(tmp_path / "logs")
    mine = logged[logged["request_id"] == "p"]
    hashed = keyed_hash("UA", KEY.encode())
    assert [f["carrier"] for f in mine["features"]] == [hashed, None]  # a missing value stays missing
    assert mine["features"].iloc[0]["distance"] == 1200.0  # the other features as sent
    (line,) = [a for a in access_lines(caplog) if a["request_id"] == "p"]
    assert [f["carrier"] for f in line["features"]] == [hashed, None]
    assert '"UA"' not in logged_lines(tmp_path / "logs")
    assert '"UA"' not in json.dumps(line)


def test_a_dropped_feature_is_not_logged_at_all(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(privacy=PrivacyPolicy(columns=["carrier"], mode="drop"), log_features=True)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        assert client.post("/predict", json=record(carrier="B6")).status_code == 200
    client.__exit__(None, None, None)
    records, _ = read_inference_log(tmp_path / "logs")
    (features,) = records["features"]
    assert features == {"distance": 1200.0, "temp": 55.5, "hour": 17.0}
    (line,) = access_lines(caplog)
    assert line["features"] == [features]
    assert "B6" not in logged_lines(tmp_path / "logs") and "B6" not in json.dumps(line)


def test_a_sensitive_column_the_model_does_not_take_stops_the_app(tmp_path: Path, classifier: ModelBundle) -> None:
    with pytest.raises(SettingsError, match=r"FLOWSHIP_PRIVACY: columns: \['email'\] are not inputs of this model"):
        create_app(classifier, settings_for(tmp_path, privacy=PrivacyPolicy(columns=["email"], mode="drop")))
