"""MLflow's scoring protocol on /invocations: a client written for `mlflow models serve` works unchanged, and its
records are validated, scored, guarded and logged as /predict's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowship.serving.bundle import ModelBundle
from flowship.serving.inference_log import read_inference_log
from flowship.serving.mlflow_protocol import ProtocolError, mlflow_records
from tests.serving.conftest import MakeClient, TestClient, record
from tests.serving.test_app import sample

RECORDS = [record(), record(carrier="UA", temp=None), record(distance=2500.0, hour=6)]
COLUMNS = list(RECORDS[0])


def bodies() -> dict[str, dict[str, Any]]:
    return {
        "dataframe_split": {
            "dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in RECORDS]}
        },
        "dataframe_split with index": {
            "dataframe_split": {
                "index": [7, 8, 9],
                "columns": COLUMNS,
                "data": [[r[c] for c in COLUMNS] for r in RECORDS],
            }
        },
        "dataframe_records": {"dataframe_records": RECORDS},
        "instances": {"instances": RECORDS},
        "inputs as records": {"inputs": RECORDS},
        "inputs as columns": {"inputs": {c: [r[c] for r in RECORDS] for c in COLUMNS}},
    }


@pytest.mark.parametrize("form", list(bodies()))
def test_each_mlflow_form_is_answered_as_predict_answers_the_same_records(client: TestClient, form: str) -> None:
    expected = client.post("/predict", json=RECORDS).json()
    response = client.post("/invocations", json=bodies()[form])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == expected["predictions"]  # what an MLflow client reads
    assert body["probabilities"] == expected["probabilities"]
    assert body["model"] == {"name": "flights-delay", "version": "3"}


def test_invocations_are_logged_counted_and_guarded_like_predict(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path
) -> None:
    client = make_client(guarded_classifier)
    response = client.post(
        "/invocations", json={"dataframe_records": [record(), record(carrier="ZZ")]}, headers={"X-Request-ID": "mlf"}
    )
    assert response.status_code == 200
    assert [[w["guardrail"] for w in ws] for ws in response.json()["warnings"]] == [[], ["unseen_category"]]
    metrics = client.get("/metrics").text
    assert sample(metrics, "flowship_requests_total", endpoint="/invocations", status="200") == 1.0
    client.__exit__(None, None, None)
    logged, _ = read_inference_log(tmp_path / "logs")
    assert logged["request_id"].tolist() == ["mlf", "mlf"] and logged["row"].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([RECORDS[0]], "expected a JSON object with exactly one of dataframe_split, dataframe_records, instances"),
        (
            {"dataframe_records": RECORDS, "instances": RECORDS},
            "send exactly one of dataframe_split, dataframe_records",
        ),
        ({"records": RECORDS}, "unknown field(s) ['records']"),
        ({}, "send exactly one of dataframe_split"),
        ({"dataframe_records": RECORDS, "params": {"k": 1}}, "params: this model takes no inference parameters"),
        (
            {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]]}},
            "dataframe_split.data[0]: expected a list of 4",
        ),
        ({"dataframe_split": {"columns": ["a", "a"], "data": []}}, "dataframe_split.columns: a column is named twice"),
        ({"dataframe_split": [[1, 2]]}, 'dataframe_split: expected {"columns": [...], "data": [[...], ...]}'),
        ({"instances": {"distance": 1.0}}, "instances: expected a list of records"),
        ({"inputs": {"distance": [1.0, 2.0], "temp": [3.0]}}, "inputs: the columns differ in length"),
        ({"inputs": {"distance": 1.0}}, "inputs: expected a list of values for each column; not a list: ['distance']"),
    ],
)
def test_a_body_in_no_mlflow_form_is_a_422_naming_what_is_wrong(client: TestClient, body: Any, message: str) -> None:
    response = client.post("/invocations", json=body, headers={"X-Request-ID": "bad"})
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"] == "invalid_input" and answer["request_id"] == "bad"
    assert message in answer["message"]
    assert answer["fields"][0]["field"] == "body"


def test_a_bad_record_is_named_as_predict_names_it(client: TestClient) -> None:
    bad = [record(), {k: v for k, v in record(temp="warm").items() if k != "hour"}]
    for path, body in (("/predict", bad), ("/invocations", {"dataframe_records": bad})):
        answer = client.post(path, json=body).json()
        assert sorted((f["record"], f["field"], f["type"]) for f in answer["fields"]) == [
            (1, "hour", "missing"),
            (1, "temp", "float_type"),
        ], path


def test_numbers_only_the_standard_librarys_json_reads_are_named_not_a_500(client: TestClient) -> None:
    # NaN and a 400-digit integer: orjson reads neither, so the body goes through `json`; the huge integer sits
    # beside a missing value in its column, and the NaN in another record
    records = [
        json.dumps(record(distance=None)),
        json.dumps(record()).replace('"distance": 1200.0', '"distance": ' + "9" * 400),
        json.dumps(record()).replace('"temp": 55.5', '"temp": NaN'),
    ]
    body = ('{"dataframe_records": [' + ", ".join(records) + "]}").encode()
    answer = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert sorted((f["record"], f["field"]) for f in answer.json()["fields"]) == [(1, "distance"), (2, "temp")]


def test_body_size_type_and_json_errors_are_said_as_for_predict(make_client: MakeClient) -> None:
    client = make_client(max_batch=2)
    too_many = client.post("/invocations", json={"dataframe_records": RECORDS})
    assert too_many.status_code == 413 and "at most 2 records" in too_many.json()["message"]
    assert client.post("/invocations", json={"dataframe_records": []}).status_code == 422
    not_json = client.post("/invocations", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["message"]
    csv = client.post("/invocations", content=b"distance\n1", headers={"Content-Type": "text/csv"})
    assert csv.status_code == 415 and "Content-Type: application/json" in csv.json()["message"]


def test_the_openapi_document_shows_the_mlflow_body(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"dataframe_split", "dataframe_records", "instances", "inputs"}
    assert {"200", "413", "415", "422"} <= set(operation["responses"])


def test_the_reader_keeps_values_as_sent() -> None:
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, None], [2, "x"]]}}
    assert mlflow_records(split) == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
    assert mlflow_records({"inputs": {"a": [], "b": []}}) == []
    with pytest.raises(ProtocolError):
        mlflow_records(json.loads('"text"'))
