"""POST /feedback: what is accepted and answered 202, each bad input a 4xx naming the field, the label log on disk
before the answer, duplicates kept, the metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowship.serving.bundle import ModelBundle, load_bundle, write_bundle
from flowship.serving.feedback import MAX_COMMENT
from flowship.serving.labels import read_labels
from tests.serving.conftest import MakeClient, TestClient, fit_classifier, metadata, record
from tests.serving.test_app import sample


@pytest.fixture(scope="module")
def named_classes(tmp_path_factory: pytest.TempPathFactory, training_frame: pd.DataFrame) -> ModelBundle:
    """The classifier trained on classes named by strings ("late", "on_time")."""
    frame = training_frame.assign(late=np.where(training_frame["late"], "late", "on_time"))
    pipeline = fit_classifier(frame)
    meta = metadata("classification", "flights-delay", pipeline.classes_.tolist())
    return load_bundle(write_bundle(tmp_path_factory.mktemp("named"), pipeline, meta))


def lines(folder: Path, prefix: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for path in sorted(folder.glob(f"{prefix}*.jsonl")) for line in path.read_text().splitlines()
    ]


def fields(response: Any) -> list[tuple[str, str]]:
    return [(f["field"], f["type"]) for f in response.json()["fields"]]


# --- accepted ---


def test_a_label_for_an_answer_is_kept_and_on_disk_when_the_202_arrives(client: TestClient, tmp_path: Path) -> None:
    answer = client.post("/predict", json=[record(), record(carrier="AA")], headers={"X-Request-ID": "req-1"})
    assert answer.status_code == 200
    response = client.post(
        "/feedback", json={"request_id": "req-1", "row": 1, "label": True}, headers={"X-Request-ID": "fb-1"}
    )
    assert response.status_code == 202
    assert response.json() == {
        "status": "accepted",
        "feedback_for": {"request_id": "req-1", "row": 1},
        "kept": ["label"],
        "request_id": "fb-1",
    }
    assert response.headers["X-Request-ID"] == "fb-1"
    # read while the app still runs: nothing waits for a flush or a shutdown
    (line,) = lines(tmp_path / "logs", "labels-")
    assert (line["request_id"], line["row"], line["label"], line["event_time"]) == ("req-1", 1, True, None)
    assert "rating" not in line
    labels, skipped = read_labels(tmp_path / "logs")
    assert skipped == 0 and labels[["request_id", "row", "label"]].values.tolist() == [["req-1", 1, True]]


def test_a_rating_and_a_comment_row_defaulting_to_0(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/feedback", json={"request_id": "req-2", "rating": -1, "comment": "way off"})
    assert response.status_code == 202
    assert response.json()["feedback_for"] == {"request_id": "req-2", "row": 0}
    assert response.json()["kept"] == ["rating", "comment"]
    (line,) = lines(tmp_path / "logs", "labels-")
    assert (line["request_id"], line["row"], line["rating"]) == ("req-2", 0, -1) and "label" not in line
    assert "comment" not in json.dumps(line)  # free text stays out of the label log
    (comment,) = lines(tmp_path / "logs", "comments-")
    assert comment["request_id"] == "req-2" and comment["row"] == 0 and comment["comment"] == "way off"
    assert comment["feedback_id"] == response.json()["request_id"]


def test_an_unknown_request_id_is_accepted_as_late(client: TestClient, tmp_path: Path) -> None:
    # it may be another replica's, or in a line of the inference log not written yet
    response = client.post("/feedback", json={"request_id": "never-seen", "row": 7, "label": False, "rating": 1})
    assert response.status_code == 202 and response.json()["kept"] == ["label", "rating"]
    assert len(lines(tmp_path / "logs", "labels-")) == 1


def test_duplicates_are_appended_and_the_last_label_and_rating_win(client: TestClient, tmp_path: Path) -> None:
    for body in (
        {"request_id": "r", "label": False, "rating": 1},
        {"request_id": "r", "label": True},
        {"request_id": "r", "rating": -1},
        {"request_id": "r", "rating": -1},
    ):
        assert client.post("/feedback", json=body).status_code == 202
    assert len(lines(tmp_path / "logs", "labels-")) == 4
    labels, _ = read_labels(tmp_path / "logs")
    assert labels[["request_id", "label", "rating"]].astype(object).values.tolist() == [["r", True, -1]]


def test_each_replica_writes_its_own_file(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(log_writer="stable-1")
    assert client.post("/feedback", json={"request_id": "r", "rating": 1, "comment": "ok"}).status_code == 202
    names = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "logs").glob("*-*.stable-1.jsonl"))
    assert names == ["stable-1.jsonl"] * 3
    # the usage log is the replica's own too (its samples from the start)
    kinds = {p.name.split("-")[0] for p in (tmp_path / "logs").glob("*.stable-1.jsonl")}
    assert kinds == {"labels", "comments", "usage"}


def test_a_regressor_takes_a_finite_number(make_client: MakeClient, regressor: ModelBundle, tmp_path: Path) -> None:
    client = make_client(regressor)
    assert client.post("/feedback", json={"request_id": "r", "label": 12}).status_code == 202
    assert client.post("/feedback", json={"request_id": "r", "label": -3.5}).status_code == 202
    for label in ("12", True, [1.0]):
        response = client.post("/feedback", json={"request_id": "r", "label": label})
        assert response.status_code == 422 and fields(response) == [("label", "finite_number")]
    for literal in ("NaN", "Infinity", "1" + "0" * 400):
        raw = f'{{"request_id": "r", "label": {literal}}}'
        response = client.post("/feedback", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and fields(response) == [("label", "finite_number")]
    assert [line["label"] for line in lines(tmp_path / "logs", "labels-")] == [12, -3.5]


def test_the_metrics_count_each_kind(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert [sample(text, "flowship_feedback_total", kind=k) for k in ("label", "rating", "comment")] == [0, 0, 0]
    client.post("/feedback", json={"request_id": "a", "label": True, "rating": 1, "comment": "thanks"})
    client.post("/feedback", json={"request_id": "b", "rating": -1})
    client.post("/feedback", json={"request_id": "c"})  # refused: counts nothing
    text = client.get("/metrics").text
    assert [sample(text, "flowship_feedback_total", kind=k) for k in ("label", "rating", "comment")] == [1, 2, 1]
    assert sample(text, "flowship_requests_total", endpoint="/feedback", status="202") == 2
    assert sample(text, "flowship_requests_total", endpoint="/feedback", status="422") == 1


# --- refused, naming the field; nothing written ---


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"row": 0, "label": True}, [("request_id", "missing")]),
        ({"request_id": "has space", "label": True}, [("request_id", "string_pattern_mismatch")]),
        ({"request_id": "x" * 129, "label": True}, [("request_id", "string_pattern_mismatch")]),
        ({"request_id": 17, "label": True}, [("request_id", "string_type")]),
        ({"request_id": "r", "row": -1, "label": True}, [("row", "greater_than_equal")]),
        ({"request_id": "r", "row": "0", "label": True}, [("row", "int_type")]),
        ({"request_id": "r", "row": 1.5, "label": True}, [("row", "int_type")]),
        ({"request_id": "r", "row": True, "label": True}, [("row", "int_type")]),
        ({"request_id": "r", "row": 1000, "label": True}, [("row", "less_than")]),  # past FLOWSHIP_MAX_BATCH
        ({"request_id": "r"}, [("label", "missing_feedback"), ("rating", "missing_feedback")]),
        (
            {"request_id": "r", "label": None, "rating": None, "comment": "hi"},
            [("label", "missing_feedback"), ("rating", "missing_feedback")],
        ),
        ({"request_id": "r", "label": 1}, [("label", "unknown_class")]),  # classes are booleans
        ({"request_id": "r", "label": "True"}, [("label", "unknown_class")]),
        ({"request_id": "r", "rating": 0}, [("rating", "rating")]),
        ({"request_id": "r", "rating": 5}, [("rating", "rating")]),
        ({"request_id": "r", "rating": True}, [("rating", "int_type")]),
        ({"request_id": "r", "rating": "up"}, [("rating", "int_type")]),
        ({"request_id": "r", "rating": 1, "comment": "x" * (MAX_COMMENT + 1)}, [("comment", "string_too_long")]),
        ({"request_id": "r", "rating": 1, "comment": 3}, [("comment", "string_type")]),
        ({"request_id": "r", "rating": 1, "stars": 5}, [("stars", "extra_forbidden")]),
    ],
)
def test_bad_feedback_is_a_422_naming_the_field(
    client: TestClient, tmp_path: Path, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    response = client.post("/feedback", json=body, headers={"X-Request-ID": "fb-bad"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input" and response.json()["request_id"] == "fb-bad"
    assert fields(response) == expected
    assert expected[0][0] in response.json()["message"]
    assert not list((tmp_path / "logs").glob("labels-*")) and not list((tmp_path / "logs").glob("comments-*"))


def test_a_label_must_be_one_of_the_classes_with_their_type(
    make_client: MakeClient, named_classes: ModelBundle
) -> None:
    client = make_client(named_classes)
    assert client.post("/feedback", json={"request_id": "r", "label": "late"}).status_code == 202
    for label in ("on time", "LATE", 1, True):
        response = client.post("/feedback", json={"request_id": "r", "label": label})
        assert response.status_code == 422 and fields(response) == [("label", "unknown_class")]
        assert "['late', 'on_time']" in response.json()["fields"][0]["problem"]
        assert "string" in response.json()["fields"][0]["problem"]


@pytest.mark.parametrize("payload", [[], [{"request_id": "r", "rating": 1}], "r", 3])
def test_a_body_of_the_wrong_shape(client: TestClient, payload: Any) -> None:
    response = client.post("/feedback", json=payload)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"
    assert '{"request_id": ...' in response.json()["fields"][0]["problem"]


@pytest.mark.parametrize("raw", [b'{"request_id": "r",', b"not json", b"\xff\xfe\x00"])
def test_a_body_that_is_not_json(client: TestClient, raw: bytes) -> None:
    response = client.post("/feedback", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/feedback", content=b'{"request_id": "r", "rating": 1}', headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["message"]


def test_the_token_is_asked_as_for_predict(make_client: MakeClient) -> None:
    client = make_client(api_token="s3cret-token")
    body = {"request_id": "r", "rating": 1}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/feedback", json={}, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer s3cret-token"}).status_code == 202


def test_a_disk_that_refuses_the_feedback_is_a_503_to_send_again(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    # the day's label file cannot be opened for writing (a folder in its place)
    (tmp_path / "logs" / f"labels-{datetime.now(UTC):%Y%m%d}.jsonl").mkdir()
    response = client.post("/feedback", json={"request_id": "r", "rating": 1})
    assert response.status_code == 503
    assert response.json()["error"] == "not_kept" and "send it again" in response.json()["message"]
    assert sample(client.get("/metrics").text, "flowship_feedback_total", kind="rating") == 0


def test_openapi_documents_the_feedback(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/feedback"]["post"]
    assert {"202", "400", "415", "422", "503"} <= set(operation["responses"])
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Feedback"]
    assert schema["required"] == ["request_id"] and schema["additionalProperties"] is False
    assert schema["properties"]["label"]["anyOf"] == [{"enum": [False, True]}, {"type": "null"}]
    assert schema["properties"]["rating"]["anyOf"] == [{"enum": [1, -1]}, {"type": "null"}]
