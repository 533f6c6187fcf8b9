"""Every endpoint and field, every class of bad input (a 4xx naming the field), auth, metrics and the access log."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from flowship.serving.bundle import ModelBundle
from flowship.serving.inference_log import read_inference_log
from flowship.serving.logs import ACCESS_LOGGER, JsonFormatter
from tests.serving.conftest import MakeClient, TestClient, record


def test_health_is_alive(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_once_the_model_passed_its_warm_up(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reason": None, "model": {"name": "flights-delay", "version": "3"}}


def test_ready_is_503_without_the_lifespan(tmp_path: Path, classifier: ModelBundle) -> None:
    from flowship.serving.app import create_app
    from tests.serving.conftest import settings_for

    app = create_app(classifier, settings_for(tmp_path))
    client = TestClient(app)  # not entered: the lifespan never ran, nothing is loaded
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert response.json()["reason"] == "starting"
    assert client.post("/predict", json=record()).status_code == 503


def test_a_wrong_golden_set_keeps_the_service_unready(make_client: MakeClient, classifier: ModelBundle) -> None:
    assert classifier.golden is not None
    wrong = [g.model_copy(update={"prediction": not g.prediction}) for g in classifier.golden]
    client = make_client(ModelBundle(classifier.pipeline, classifier.metadata, wrong))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("golden check failed: record 0: prediction")
    assert client.post("/predict", json=record()).status_code == 503


def test_predict_one_record(client: TestClient, classifier: ModelBundle) -> None:
    response = client.post("/predict", json=record())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"predictions", "probabilities", "model", "request_id"}
    assert body["model"] == {"name": "flights-delay", "version": "3"}
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert len(body["request_id"]) == 32
    (prediction,) = body["predictions"]
    (probabilities,) = body["probabilities"]
    assert isinstance(prediction, bool)
    assert set(probabilities) == {"False", "True"}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert prediction == (probabilities["True"] > probabilities["False"])


def test_predict_a_list_keeps_the_order_and_null_means_missing(client: TestClient, classifier: ModelBundle) -> None:
    assert classifier.golden is not None
    records = [g.features for g in classifier.golden] + [record(temp=None, carrier=None)]
    response = client.post("/predict", json=records)
    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"]) == len(records)
    for golden, prediction, probabilities in zip(
        classifier.golden, body["predictions"], body["probabilities"], strict=False
    ):
        assert prediction == golden.prediction
        assert probabilities == pytest.approx(golden.probabilities)


def test_an_unknown_category_is_scored(client: TestClient) -> None:
    assert client.post("/predict", json=record(carrier="ZZ")).status_code == 200


def test_regression_answers_values_without_probabilities(make_client: MakeClient, regressor: ModelBundle) -> None:
    client = make_client(regressor)
    response = client.post("/predict", json=[record(), record(hour=None)])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"predictions", "model", "request_id"}
    assert all(isinstance(p, float) for p in body["predictions"])
    assert body["model"] == {"name": "arrival-delay", "version": "3"}


def test_an_incoming_request_id_is_honoured(client: TestClient) -> None:
    response = client.post("/predict", json=record(), headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"
    # an id unfit for headers and logs is replaced
    response = client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert len(response.headers["X-Request-ID"]) == 32


def test_metadata(client: TestClient) -> None:
    response = client.get("/metadata")
    assert response.status_code == 200
    assert response.json() == {
        "name": "flights-delay",
        "version": "3",
        "task": "classification",
        "classes": [False, True],
        "features": {"numeric": ["distance", "temp", "hour"], "categorical": ["carrier"]},
        "lineage": {"data_hash": "abc123", "git_commit": "deadbeef", "mlflow_run": "r1"},
        "input_schema": [
            {"name": "distance", "type": "double"},
            {"name": "temp", "type": "double"},
            {"name": "hour", "type": "double"},
            {"name": "carrier", "type": "string"},
        ],
        "guardrails": {
            "active": False,
            "status": "off: this model version carries no training profile (registered before guardrails existed)",
            "policy": None,
        },
    }


def test_openapi_documents_the_request_shape(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one, many = body["oneOf"]
    assert many["type"] == "array" and many["minItems"] == 1 and many["maxItems"] == 1000
    record_schema = schema["components"]["schemas"][one["$ref"].split("/")[-1]]
    assert record_schema["additionalProperties"] is False
    assert record_schema["required"] == ["distance", "temp", "hour", "carrier"]
    assert record_schema["properties"]["carrier"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert {"413", "422", "400", "415"} <= set(schema["paths"]["/predict"]["post"]["responses"])


# --- bad input: a 4xx whose body names the field and the problem ---


def fields(response: Any) -> list[tuple[str, int | None, str]]:
    return [(f["field"], f["record"], f["type"]) for f in response.json()["fields"]]


def test_a_missing_field(client: TestClient) -> None:
    body = record()
    del body["temp"]
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert fields(response) == [("temp", None, "missing")]
    assert "temp" in response.json()["message"]
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


def test_an_unknown_field(client: TestClient) -> None:
    response = client.post("/predict", json=record(dep_delay=3.0))
    assert response.status_code == 422
    assert fields(response) == [("dep_delay", None, "extra_forbidden")]
    assert "unknown field" in response.json()["fields"][0]["problem"]


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"distance": "far"}, "distance", "float_type"),
        ({"distance": "12.5"}, "distance", "float_type"),  # strict: a number in a string is still a string
        ({"hour": True}, "hour", "float_type"),
        ({"carrier": 7}, "carrier", "string_type"),
        ({"carrier": ["AA"]}, "carrier", "string_type"),
    ],
)
def test_a_mistyped_field(client: TestClient, change: dict[str, Any], field: str, kind: str) -> None:
    response = client.post("/predict", json=record(**change))
    assert response.status_code == 422
    assert fields(response) == [(field, None, kind)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(client: TestClient, literal: str) -> None:
    raw = f'{{"distance": {literal}, "temp": 1, "hour": 2, "carrier": "AA"}}'
    response = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert fields(response) == [("distance", None, "finite_number")]
    assert "finite" in response.json()["message"]


def test_a_bad_record_in_a_list_is_named_by_position(client: TestClient) -> None:
    response = client.post("/predict", json=[record(), record(temp="warm")])
    assert response.status_code == 422
    assert fields(response) == [("temp", 1, "float_type")]
    assert "record 1: temp" in response.json()["message"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [([], "empty"), ([1], "must be a JSON object"), ("AA", "expected one record"), (3, "expected one record")],
)
def test_a_body_of_the_wrong_shape(client: TestClient, payload: Any, problem: str) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"
    assert problem in response.json()["fields"][0]["problem"]


def test_no_body(client: TestClient) -> None:
    response = client.post("/predict", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "a JSON body is required" in response.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"distance": 1,',
        b"not json",
        b"\xff\xfe\x00",
        b'{"a": 1} trailing',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"distance": ' + b"9" * 5000 + b"}",
    ],
)
def test_a_body_that_is_not_json(client: TestClient, raw: bytes) -> None:
    response = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert "JSON" in response.json()["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", content=json.dumps(record()).encode(), headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["message"]


def test_a_batch_above_the_limit(make_client: MakeClient) -> None:
    client = make_client(max_batch=5)
    assert client.post("/predict", json=[record()] * 5).status_code == 200
    response = client.post("/predict", json=[record()] * 6)
    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert "at most 5 records" in response.json()["message"]
    assert "FLOWSHIP_MAX_BATCH" in response.json()["message"]


def test_values_far_outside_the_training_range_are_a_4xx(make_client: MakeClient, regressor: ModelBundle) -> None:
    client = make_client(regressor)
    response = client.post("/predict", json=[record(), record(distance=1e308, temp=-1e308, hour=1e308)])
    assert response.status_code == 422
    assert response.json()["records"] == [1]
    assert "non-finite" in response.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"distance": 1, "temp": 2, "hour": 3, "carrier": "\\ud800"}',
        '{"distance": 1, "temp": 2, "hour": 3, "carrier": "AA", "\\udfff": 1}',
    ],
)
def test_lone_surrogates_are_a_4xx(client: TestClient, raw: str) -> None:
    response = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not valid Unicode" in response.json()["message"]


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json()["error"] == "not_found"
    response = client.put("/predict", json=record())
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_an_internal_error_is_a_500_with_the_request_id(
    make_client: MakeClient, classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    predictor = client.app.state.serving.predictor  # type: ignore[attr-defined]

    def broken(rows: Any) -> Any:
        raise RuntimeError("the model file was fine, the code is not")

    monkeypatch.setattr(predictor, "_estimate", broken)
    monkeypatch.setattr(predictor, "fast", None)  # the plain pipeline's path (the fast path falls back to it)
    response = client.post("/predict", json=record(), headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "internal error; quote the request id when reporting it",
        "request_id": "req-500",
    }
    assert response.headers["X-Request-ID"] == "req-500"


# --- auth ---


@pytest.fixture
def secured(make_client: MakeClient) -> TestClient:
    return make_client(api_token="s3cret-token")


@pytest.mark.parametrize("path", ["/health", "/ready", "/docs", "/openapi.json"])
def test_open_endpoints_need_no_token(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


@pytest.mark.parametrize("header", [None, "s3cret-token", "Basic czNjcmV0", "Bearer"])
def test_a_missing_or_malformed_header_is_401(secured: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for response in (
        secured.post("/predict", json=record(), headers=headers),
        secured.get("/metadata", headers=headers),
        secured.get("/metrics", headers=headers),
        secured.post("/predict", content=b"{", headers={**headers, "Content-Type": "application/json"}),
    ):
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_wrong_token_is_403(secured: TestClient) -> None:
    headers = {"Authorization": "Bearer not-the-token"}
    response = secured.post("/predict", json=record(), headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert secured.post("/predict", json={"bad": 1}, headers=headers).status_code == 403


def test_the_right_token_is_let_in(secured: TestClient) -> None:
    headers = {"Authorization": "Bearer s3cret-token"}
    assert secured.post("/predict", json=record(), headers=headers).status_code == 200
    assert secured.get("/metadata", headers=headers).status_code == 200
    assert secured.get("/metrics", headers=headers).status_code == 200
    assert secured.post("/predict", json={"bad": 1}, headers=headers).status_code == 422


# --- metrics ---


def sample(text: str, metric: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"{metric}{labels} not in /metrics")


def test_metrics_count_requests_errors_latency_and_classes(client: TestClient) -> None:
    client.post("/predict", json=[record(), record(distance=3000.0, hour=22, temp=10.0)])
    client.post("/predict", json=record())
    client.post("/predict", json={"nope": 1})
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "flowship_requests_total", endpoint="/predict", status="200") == 2
    assert sample(text, "flowship_requests_total", endpoint="/predict", status="422") == 1
    assert sample(text, "flowship_request_errors_total", endpoint="/predict", status="422") == 1
    assert sample(text, "flowship_request_latency_seconds_count", endpoint="/predict") == 3
    assert sample(text, "flowship_predicted_records_total") == 3
    by_class = sample(text, "flowship_predictions_total", predicted_class="True") + sample(
        text, "flowship_predictions_total", predicted_class="False"
    )
    assert by_class == 3
    assert sample(text, "flowship_model_info", name="flights-delay", version="3", task="classification") == 1


def test_metrics_of_a_regressor_are_a_histogram(make_client: MakeClient, regressor: ModelBundle) -> None:
    client = make_client(regressor)
    client.post("/predict", json=[record()] * 4)
    text = client.get("/metrics").text
    assert sample(text, "flowship_prediction_value_count") == 4
    assert "flowship_predictions_total" not in text


def test_two_apps_keep_their_own_metrics(make_client: MakeClient, regressor: ModelBundle) -> None:
    first, second = make_client(), make_client(regressor)
    first.post("/predict", json=record())
    assert sample(second.get("/metrics").text, "flowship_predicted_records_total") == 0


# --- logs ---


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == ACCESS_LOGGER]


def test_one_json_access_line_per_request_without_features(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        started = time.perf_counter()
        client.post("/predict", json=[record(carrier="SECRET")] * 2, headers={"X-Request-ID": "r-1"})
        took_ms = (time.perf_counter() - started) * 1000
        client.get("/health")
    predict, health = access_lines(caplog)
    assert {"time", "level", "request_id", "path", "status", "latency_ms", "n_records", "model_version"} <= set(predict)
    assert predict["request_id"] == "r-1"
    assert (predict["path"], predict["status"], predict["n_records"], predict["model_version"]) == (
        "/predict",
        200,
        2,
        "3",
    )
    assert 0 < predict["latency_ms"] <= took_ms  # the request's own time, in milliseconds
    assert "SECRET" not in json.dumps(predict)
    assert (health["path"], health["n_records"]) == ("/health", None)


def test_features_are_in_the_access_log_only_when_asked(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(log_features=True)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.post("/predict", json=record(carrier="UA"))
    (line,) = access_lines(caplog)
    assert line["features"] == [{"distance": 1200.0, "temp": 55.5, "hour": 17.0, "carrier": "UA"}]


def test_every_prediction_is_in_the_inference_log(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    client.post("/predict", json=[record(), record(carrier=None)], headers={"X-Request-ID": "batch"})
    client.post("/predict", json=record(), headers={"X-Request-ID": "single"})
    client.post("/predict", json={"bad": 1})
    client.__exit__(None, None, None)  # shutdown flushes the log
    records, skipped = read_inference_log(tmp_path / "logs")
    assert skipped == 0
    assert records["request_id"].tolist() == ["batch", "batch", "single"]
    first = records.iloc[1]
    assert first["features"] == {"distance": 1200.0, "temp": 55.5, "hour": 17.0, "carrier": None}
    assert (first["model_name"], first["model_version"]) == ("flights-delay", "3")
    assert first["prediction"] in (True, False)
    assert set(first["probabilities"]) == {"False", "True"}


def test_the_quick_and_the_validating_way_answer_and_log_alike(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same records, once the quick way (msgspec's typed parse) and once the validating way (FastAPI's parsing
    # and the schema model, which the app takes whenever the quick reader gives up: here it is told to).
    records = [record(distance=1.5e308, hour=3), record(distance=1.7e308, carrier=None), record(distance=None)]
    client = make_client()
    codec = client.app.state.serving.predictor.codec  # type: ignore[attr-defined]
    quick = client.post("/predict", json=records, headers={"X-Request-ID": "quick"})
    with monkeypatch.context() as patched:
        patched.setattr(codec, "read_body", lambda body, max_records: None)
        validated = client.post("/predict", json=records, headers={"X-Request-ID": "validated"})
    assert codec.read_body(json.dumps(records).encode(), 100) is not None
    assert quick.status_code == validated.status_code == 200
    assert {k: v for k, v in quick.json().items() if k != "request_id"} == {
        k: v for k, v in validated.json().items() if k != "request_id"
    }
    client.__exit__(None, None, None)  # shutdown flushes the log
    logged, skipped = read_inference_log(tmp_path / "logs")
    assert skipped == 0 and logged["request_id"].tolist() == ["quick"] * 3 + ["validated"] * 3
    by_request = logged.set_index(["request_id", "row"])
    for i in range(3):
        assert by_request.loc[("quick", i), "features"] == by_request.loc[("validated", i), "features"]
        assert list(by_request.loc[("quick", i), "features"]) == list(by_request.loc[("validated", i), "features"])
    hours = [by_request.loc[(request, 0), "features"]["hour"] for request in ("quick", "validated")]
    assert [(type(h), h) for h in hours] == [(float, 3.0)] * 2  # sent as 3, logged as the number it is to the model


def test_a_token_is_checked_on_the_quick_way_too(make_client: MakeClient) -> None:
    client = make_client(api_token="s3cret-token")
    wrong = client.post("/predict", json=record(), headers={"Authorization": "Bearer s3cret-tokeN"})
    assert wrong.status_code == 403 and "predictions" not in wrong.json()
    right = client.post("/predict", json=[record()] * 3, headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200 and len(right.json()["predictions"]) == 3
