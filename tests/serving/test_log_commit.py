"""The scoring routes answer only what the inference log holds: an answer leaves once its records are written,
and when the log cannot write them within FLOWSHIP_LOG_WAIT_SECONDS the request gets a 503 `log_unavailable`
in place of a prediction. The disk is made to refuse by a real obstacle: a folder where the day's file goes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import flowship.serving.inference_log as inference_log
from flowship.serving.bundle import ModelBundle
from flowship.serving.inference_log import SAFETY_PREFIX, log_path, read_inference_log, read_safety_log
from tests.helpers import wait_until
from tests.serving.conftest import MakeClient, record
from tests.serving.test_guardrails import TRIPS, only

MLFLOW_BODY = {"dataframe_records": [record(), record(hour=9)]}


def block_day_files(logs: Path, prefix: str = inference_log.FILE_PREFIX) -> list[Path]:
    """A folder where today's (and, near midnight, tomorrow's) log file would go: every write to it fails."""
    today = datetime.now(UTC).date()
    blocks = [log_path(logs, day, prefix=prefix) for day in (today, today + timedelta(days=1))]
    for block in blocks:
        block.mkdir(parents=True)
    return blocks


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference_log, "RETRY_SECONDS", 0.01)


def test_an_answer_is_in_the_log_when_it_arrives(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(log_flush_seconds=3600)  # no fsync, no close: written is enough
    for i in range(20):
        response = client.post(
            "/predict", json=[record(hour=i % 20 + 5)] * (1 + i % 3), headers={"X-Request-ID": f"a{i}"}
        )
        assert response.status_code == 200
        records, skipped = read_inference_log(tmp_path / "logs")  # read at once: no waiting, no polling
        assert skipped == 0
        assert records["request_id"].tolist().count(f"a{i}") == 1 + i % 3


@pytest.mark.parametrize(("path", "body"), [("/predict", [record(), record(hour=9)]), ("/invocations", MLFLOW_BODY)])
def test_a_log_that_cannot_write_answers_503_log_unavailable_and_no_prediction(
    make_client: MakeClient, tmp_path: Path, path: str, body: object
) -> None:
    blocks = block_day_files(tmp_path / "logs")
    client = make_client(log_wait_seconds=0.2)
    response = client.post(path, json=body, headers={"X-Request-ID": "refused-by-disk"})
    assert response.status_code == 503
    answer = response.json()
    assert set(answer) == {"error", "message", "request_id"}  # no predictions
    assert answer["error"] == "log_unavailable"
    assert answer["request_id"] == response.headers["X-Request-ID"] == "refused-by-disk"
    assert "could not record this request within 0.2 s" in answer["message"]
    assert "Is a directory" in answer["message"]  # what the disk said
    ready = client.get("/ready")
    assert ready.status_code == 503 and "Is a directory" in ready.json()["reason"]

    for block in blocks:  # the disk recovers: answers again, each one logged by the time it arrives
        shutil.rmtree(block)
    wait_until(lambda: client.get("/ready").status_code == 200, 30, "the log's recovery")
    response = client.post(path, json=body, headers={"X-Request-ID": "after"})
    assert response.status_code == 200
    records, _ = read_inference_log(tmp_path / "logs")
    assert records["request_id"].tolist().count("after") == 2


def test_a_safety_log_that_cannot_write_answers_503_for_a_refusal(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path
) -> None:
    """A refusal is an answer too: it leaves only once its safety event is written."""
    block_day_files(tmp_path / "logs", SAFETY_PREFIX)
    client = make_client(guarded_classifier, guardrails=only("unseen_category", "refuse"), log_wait_seconds=0.2)
    bad, _, _ = TRIPS["unseen_category"]
    response = client.post("/predict", json=bad)
    assert response.status_code == 503
    assert response.json()["error"] == "log_unavailable"
    assert client.post("/predict", json=record()).status_code == 200  # the inference log itself is fine


def test_flagged_answers_wait_for_their_safety_events(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path
) -> None:
    client = make_client(guarded_classifier, guardrails=only("unseen_category", "flag"), log_flush_seconds=3600)
    bad, _, _ = TRIPS["unseen_category"]
    response = client.post("/predict", json=[record(), bad], headers={"X-Request-ID": "flagged"})
    assert response.status_code == 200
    events, _ = read_safety_log(tmp_path / "logs")  # at once, with the answer
    assert events[["request_id", "row", "guardrail"]].values.tolist() == [["flagged", 1, "unseen_category"]]


def test_the_scoring_routes_document_log_unavailable(make_client: MakeClient) -> None:
    document = make_client().get("/openapi.json").json()
    for route in ("/predict", "/invocations"):
        unavailable = document["paths"][route]["post"]["responses"]["503"]
        assert "log_unavailable" in unavailable["description"]
        assert "not_ready" in unavailable["description"]
        assert unavailable["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
