"""Guardrails on the served model's inputs and outputs: each guardrail with each action, alone and in a batch
where only some records trip; what the client, /metrics, the inference log and the safety-event log see."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from flowship.errors import ConfigError
from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle, load_bundle, write_bundle
from flowship.serving.errors import BundleError, SettingsError
from flowship.serving.guardrails import GuardrailPolicy
from flowship.serving.inference_log import read_inference_log, read_safety_log
from flowship.serving.settings import ServingSettings
from tests.serving.conftest import MakeClient, TestClient, record, settings_for
from tests.serving.test_app import sample

# One record that trips each input guardrail (and no other) on the synthetic training data: distance 100..3000,
# temp ~60 with some missing, hour 5..22 never missing, carrier AA/DL/UA/B6.
TRIPS = {
    "out_of_range": (record(temp=-1e300), "temp", -1e300),
    "unseen_category": (record(carrier="ZZ"), "carrier", "ZZ"),
    "missing": (record(hour=None), "hour", None),
}


def policy(**rules: Any) -> GuardrailPolicy:
    return GuardrailPolicy.model_validate(rules)


def only(guardrail: str, action: str) -> GuardrailPolicy:
    """Every input guardrail off but one."""
    rules: dict[str, Any] = {name: {"action": "off"} for name in TRIPS}
    rules[guardrail] = {"action": action}
    return policy(**rules)


def logs(client: TestClient, tmp_path: Path) -> tuple[Any, Any]:
    client.__exit__(None, None, None)  # shutdown flushes both logs
    inference, skipped = read_inference_log(tmp_path / "logs")
    events, unreadable = read_safety_log(tmp_path / "logs")
    assert skipped == unreadable == 0
    return inference, events


@pytest.mark.parametrize("guardrail", sorted(TRIPS))
def test_a_flagged_record_is_answered_with_a_warning_counted_and_logged_without_its_value(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path, guardrail: str
) -> None:
    client = make_client(guarded_classifier, guardrails=only(guardrail, "flag"))
    bad, feature, value = TRIPS[guardrail]
    plain = client.post("/predict", json=[record(), record(distance=2000.0)]).json()
    response = client.post("/predict", json=[record(), bad, record(distance=2000.0)], headers={"X-Request-ID": "r1"})
    assert response.status_code == 200
    body = response.json()
    # the others are answered as without the flagged record, in order
    assert [body["predictions"][0], body["predictions"][2]] == plain["predictions"]
    assert [body["probabilities"][0], body["probabilities"][2]] == plain["probabilities"]
    assert body["predictions"][1] in (True, False)
    assert body["warnings"][0] == body["warnings"][2] == []
    (warning,) = body["warnings"][1]
    assert (warning["guardrail"], warning["action"], warning["feature"], warning["value"]) == (
        guardrail,
        "flag",
        feature,
        value,
    )
    assert warning["expected"]
    alone = client.post("/predict", json=bad).json()  # a single record: the same warning
    assert alone["predictions"] == [body["predictions"][1]] and alone["warnings"] == [body["warnings"][1]]
    metrics = client.get("/metrics").text
    assert sample(metrics, "flowship_guardrail_events_total", guardrail=guardrail, action="flag") == 2.0
    inference, events = logs(client, tmp_path)
    flagged = inference[inference["request_id"] == "r1"]
    assert len(flagged) == 3  # every answered record is in the inference log
    assert events[["request_id", "row", "guardrail", "action", "feature"]].values.tolist()[0] == [
        "r1",
        1,
        guardrail,
        "flag",
        feature,
    ]
    assert len(events) == 2
    raw = "".join(p.read_text() for p in (tmp_path / "logs").glob("safety-*.jsonl"))
    assert "1e+300" not in raw and "ZZ" not in raw and "value" not in raw  # no feature values in the safety log


@pytest.mark.parametrize("guardrail", sorted(TRIPS))
def test_a_refusing_guardrail_answers_422_naming_record_feature_value_and_range(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path, guardrail: str
) -> None:
    client = make_client(guarded_classifier, guardrails=only(guardrail, "refuse"))
    bad, feature, value = TRIPS[guardrail]
    for payload, position in ((bad, 0), ([record(), record(), bad], 2)):
        response = client.post("/predict", json=payload, headers={"X-Request-ID": f"refused-{position}"})
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "refused_by_guardrails"
        assert body["request_id"] == f"refused-{position}"
        (refused,) = body["guardrails"]
        assert (refused["record"], refused["guardrail"], refused["feature"], refused["value"]) == (
            position,
            guardrail,
            feature,
            value,
        )
        assert f"record {position}: {feature}" in body["message"]
        assert refused["expected"] in body["message"]
    assert client.post("/predict", json=[record(), record()]).status_code == 200
    inference, events = logs(client, tmp_path)
    assert not inference["request_id"].str.startswith("refused").any()  # nothing was scored for them
    assert events[["request_id", "row", "action"]].values.tolist() == [
        ["refused-0", 0, "refuse"],
        ["refused-2", 2, "refuse"],
    ]


def test_the_range_refusal_says_the_range_the_model_knows(
    make_client: MakeClient, guarded_classifier: ModelBundle
) -> None:
    assert guarded_classifier.profile is not None
    temp = guarded_classifier.profile.numeric["temp"]
    client = make_client(guarded_classifier, guardrails=policy(out_of_range={"action": "refuse", "margin": 0}))
    body = client.post("/predict", json=record(temp=temp.max + 1)).json()
    assert body["guardrails"][0]["expected"] == f"outside the training range [{temp.min:.6g}, {temp.max:.6g}]"
    assert client.post("/predict", json=record(temp=temp.max)).status_code == 200


@pytest.mark.parametrize("guardrail", sorted(TRIPS))
def test_a_fallback_answers_in_place_of_the_model_and_the_log_keeps_both(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path, guardrail: str
) -> None:
    client = make_client(guarded_classifier, guardrails=only(guardrail, "fallback"))
    bad, feature, _ = TRIPS[guardrail]
    body = client.post("/predict", json=[record(), bad], headers={"X-Request-ID": "fb"}).json()
    assert body["predictions"][0] in (True, False)
    assert body["probabilities"][0] is not None
    assert body["predictions"][1] is None  # abstain, the default fallback
    assert body["probabilities"][1] is None
    assert [(w["guardrail"], w["action"], w["feature"]) for w in body["warnings"][1]] == [
        (guardrail, "fallback", feature)
    ]
    alone = client.post("/predict", json=bad).json()
    assert (alone["predictions"], alone["probabilities"]) == ([None], [None])
    inference, events = logs(client, tmp_path)
    row = inference[inference["request_id"] == "fb"].iloc[1]
    assert row["prediction"] in (True, False)  # the model's own output stays what monitoring reads
    line = json.loads(
        (tmp_path / "logs")
        .joinpath(next(p.name for p in (tmp_path / "logs").glob("inference-*")))
        .read_text()
        .splitlines()[1]
    )
    assert line["answer"] is None
    assert line["guardrails"] == [{"guardrail": guardrail, "action": "fallback", "feature": feature}]
    assert events["action"].tolist() == ["fallback", "fallback"]


def test_a_prior_or_constant_fallback_answers_with_the_class_itself(
    make_client: MakeClient, guarded_classifier: ModelBundle
) -> None:
    assert guarded_classifier.profile is not None and guarded_classifier.profile.target.prior is not None
    prior = guarded_classifier.profile.target.prior
    common = max(prior, key=prior.__getitem__)
    client = make_client(
        guarded_classifier,
        guardrails=only("unseen_category", "fallback").model_copy(
            update={"fallback": policy(fallback={"kind": "prior"}).fallback}
        ),
    )
    body = client.post("/predict", json=record(carrier="ZZ")).json()
    assert body["predictions"] == [common == "True"]  # the class (a bool here), not its name
    assert body["probabilities"] == [prior]
    constant = only("unseen_category", "fallback").model_copy(
        update={"fallback": policy(fallback={"kind": "constant", "value": False}).fallback}
    )
    body = make_client(guarded_classifier, guardrails=constant).post("/predict", json=record(carrier="ZZ")).json()
    assert body["predictions"] == [False]
    assert body["probabilities"] == [None]


def test_too_many_missing_features_is_one_warning_for_the_record(
    make_client: MakeClient, guarded_classifier: ModelBundle
) -> None:
    client = make_client(guarded_classifier, guardrails=policy(missing={"action": "flag", "max_share": 0.5}))
    body = client.post("/predict", json=record(temp=None, carrier=None, distance=None)).json()
    warnings = body["warnings"][0]
    assert [(w["feature"], w["value"]) for w in warnings] == [("distance", None), (None, 3)]
    assert warnings[1]["expected"] == "3 of 4 features missing (at most a share of 0.5)"
    # temp and carrier were missing in training too, and two of four is not over half
    assert client.post("/predict", json=record(temp=None, carrier=None)).json()["warnings"] == [[]]


def test_low_confidence_is_flagged_or_abstained_on(make_client: MakeClient, guarded_classifier: ModelBundle) -> None:
    records = [record(distance=d) for d in (150.0, 900.0, 1500.0, 2900.0)]
    plain = make_client(guarded_classifier).post("/predict", json=records).json()
    confidences = [max(p.values()) for p in plain["probabilities"]]
    floor = sorted(confidences)[1] + 1e-9  # the two least confident records fall below it
    low = {i for i, c in enumerate(confidences) if c < floor}
    assert len(low) == 2
    flagged = make_client(
        guarded_classifier, guardrails=policy(low_confidence={"action": "flag", "min_confidence": floor})
    ).post("/predict", json=records)
    body = flagged.json()
    assert body["predictions"] == plain["predictions"]
    assert {i for i, w in enumerate(body["warnings"]) if w} == low
    assert all(w[0]["guardrail"] == "low_confidence" and w[0]["value"] < floor for w in body["warnings"] if w)
    abstained = (
        make_client(
            guarded_classifier, guardrails=policy(low_confidence={"action": "fallback", "min_confidence": floor})
        )
        .post("/predict", json=records)
        .json()
    )
    assert [i for i, p in enumerate(abstained["predictions"]) if p is None] == sorted(low)
    assert all(abstained["predictions"][i] == plain["predictions"][i] for i in range(4) if i not in low)


def test_a_regression_output_outside_the_target_range_is_flagged_or_clipped(
    make_client: MakeClient, guarded_regressor: ModelBundle
) -> None:
    assert guarded_regressor.profile is not None
    target = guarded_regressor.profile.target
    assert target.min is not None and target.max is not None
    # far beyond any training distance: the linear model answers far beyond the training target
    far = [record(), record(distance=200_000.0)]
    inputs_off = {"out_of_range": {"action": "off"}}
    flagged = make_client(guarded_regressor, guardrails=policy(**inputs_off)).post("/predict", json=far).json()
    span = target.max - target.min
    high = target.max + 0.1 * span
    assert flagged["predictions"][1] > high
    assert flagged["warnings"][0] == []
    (warning,) = flagged["warnings"][1]
    assert (warning["guardrail"], warning["action"], warning["value"]) == (
        "output_range",
        "flag",
        flagged["predictions"][1],
    )
    clipped = (
        make_client(guarded_regressor, guardrails=policy(**inputs_off, output_range={"action": "clip"}))
        .post("/predict", json=far)
        .json()
    )
    assert clipped["predictions"][0] == flagged["predictions"][0]
    assert clipped["predictions"][1] == pytest.approx(high)
    assert clipped["warnings"][1][0]["action"] == "clip"


def test_a_version_without_a_profile_is_served_without_guardrails(
    make_client: MakeClient, classifier: ModelBundle, caplog: pytest.LogCaptureFixture
) -> None:
    assert classifier.profile is None
    with caplog.at_level("WARNING", logger="flowship.serving.app"):
        client = make_client(classifier, guardrails=policy(out_of_range={"action": "refuse"}))
    assert any("carries no training profile" in r.getMessage() for r in caplog.records)
    body = client.post("/predict", json=record(temp=-1e300)).json()
    assert "warnings" not in body
    assert client.get("/metadata").json()["guardrails"]["active"] is False


def test_guardrails_can_be_turned_off(make_client: MakeClient, guarded_classifier: ModelBundle) -> None:
    client = make_client(guarded_classifier, guardrails=policy(enabled=False))
    body = client.post("/predict", json=record(temp=-1e300, carrier="ZZ")).json()
    assert "warnings" not in body
    assert client.get("/metadata").json()["guardrails"] == {
        "active": False,
        "status": "off (guardrails.enabled is false)",
        "policy": None,
    }


def test_metadata_and_openapi_show_the_guardrails(make_client: MakeClient, guarded_classifier: ModelBundle) -> None:
    client = make_client(guarded_classifier)
    info = client.get("/metadata").json()["guardrails"]
    assert info["active"] is True
    assert info["status"] == "on (out_of_range: flag, unseen_category: flag, missing: flag)"
    assert info["policy"] == GuardrailPolicy().model_dump(mode="json")
    document = client.get("/openapi.json").json()
    schema = document["components"]["schemas"]
    answer = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    warnings = schema[answer["$ref"].split("/")[-1]]["properties"]["warnings"]
    assert "GuardrailWarning" in json.dumps(warnings)
    assert set(schema["GuardrailWarning"]["properties"]) == {"guardrail", "action", "feature", "value", "expected"}
    assert "guardrails" in schema["ErrorBody"]["properties"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("maybe", "guardrails.fallback.value 'maybe' is not one of the model's classes ['False', 'True']"),
        (3.5, "guardrails.fallback.value 3.5 is not one of the model's classes ['False', 'True']"),
    ],
)
def test_a_constant_fallback_that_is_no_class_stops_the_app_at_start(
    tmp_path: Path, guarded_classifier: ModelBundle, value: Any, problem: str
) -> None:
    bad = policy(fallback={"kind": "constant", "value": value})
    with pytest.raises(ConfigError) as caught:
        create_app(guarded_classifier, settings_for(tmp_path, guardrails=bad))
    assert caught.value.problems == [problem]


def test_a_regressor_needs_a_number_as_its_constant_fallback(tmp_path: Path, guarded_regressor: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="'late' is not a number, and the model predicts numbers"):
        create_app(
            guarded_regressor, settings_for(tmp_path, guardrails=policy(fallback={"kind": "constant", "value": "late"}))
        )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "FLOWSHIP_GUARDRAILS: (the document): Value error, not JSON"),
        ('{"too_far": {"action": "flag"}}', "FLOWSHIP_GUARDRAILS: too_far: Extra inputs are not permitted"),
        ('{"out_of_range": {"action": "shout"}}', "FLOWSHIP_GUARDRAILS: out_of_range.action: Input should be"),
        ('{"fallback": {"kind": "constant"}}', "FLOWSHIP_GUARDRAILS: fallback: Value error, `value` is required"),
    ],
)
def test_a_bad_policy_in_the_environment_names_the_key(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({"FLOWSHIP_GUARDRAILS": raw})
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_the_policy_round_trips_through_the_environment() -> None:
    chosen = policy(out_of_range={"action": "refuse", "bounds": "robust"}, fallback={"kind": "prior"})
    settings = ServingSettings.from_env({"FLOWSHIP_GUARDRAILS": chosen.model_dump_json()})
    assert settings.guardrails == chosen


def test_a_profile_of_columns_that_are_not_features_is_refused(
    tmp_path: Path, guarded_classifier: ModelBundle, classifier_dir: Path
) -> None:
    assert guarded_classifier.profile is not None
    profile = guarded_classifier.profile.model_dump(mode="json")
    profile["numeric"]["wind"] = profile["numeric"]["temp"]
    meta = json.loads((classifier_dir / "metadata.json").read_text())
    with pytest.raises(
        BundleError, match=r"profile.json profiles columns that are not features of that kind: \['wind'\]"
    ):
        write_bundle(tmp_path / "b", guarded_classifier.pipeline, meta, None, profile)
    folder = write_bundle(tmp_path / "b", guarded_classifier.pipeline, meta)
    (folder / "profile.json").write_text(json.dumps(profile))
    with pytest.raises(BundleError, match="wind"):
        load_bundle(folder)


def test_missing_values_and_violations_mixed_in_one_column_of_a_batch(
    make_client: MakeClient, guarded_classifier: ModelBundle
) -> None:
    client = make_client(guarded_classifier)
    batch = [record(temp=None), record(temp=-1e300), record(), record(hour=None, temp=None), record(carrier=None)]
    warnings = client.post("/predict", json=batch).json()["warnings"]
    assert [[(w["guardrail"], w["feature"]) for w in record_warnings] for record_warnings in warnings] == [
        [],  # temp was missing in training too
        [("out_of_range", "temp")],
        [],
        [("missing", "hour")],
        [],  # so was carrier
    ]


def test_a_batch_repeating_its_faults_is_reported_logged_and_counted_per_record(
    make_client: MakeClient, guarded_classifier: ModelBundle, tmp_path: Path
) -> None:
    # Each record's own value and its events in the order the checks run, whichever records share a value: among
    # them 0.0 and -0.0 (equal numbers, both before the training hours), and one record tripping all three.
    hours = [-1e300, -1e300, 0.0, -0.0, 5e300, -1e300]
    batch = [record(hour=h) for h in hours] + [record(), record(hour=0.0, carrier="ZZ", temp=None), record(hour=-0.0)]
    client = make_client(guarded_classifier)
    response = client.post("/predict", json=batch, headers={"X-Request-ID": "many"})
    assert response.status_code == 200
    warnings = response.json()["warnings"]
    seen = [[(w["guardrail"], w["feature"], w["value"]) for w in record_warnings] for record_warnings in warnings]
    for i, hour in enumerate([*hours, None, 0.0, -0.0]):
        if hour is None:
            assert seen[i] == []
            continue
        assert seen[i][0] == ("out_of_range", "hour", hour)
        assert math.copysign(1.0, seen[i][0][2]) == math.copysign(1.0, hour)  # -0.0 stays -0.0
    assert seen[7] == [("out_of_range", "hour", 0.0), ("unseen_category", "carrier", "ZZ")]
    metrics = client.get("/metrics").text
    assert sample(metrics, "flowship_guardrail_events_total", guardrail="out_of_range", action="flag") == 8.0
    assert sample(metrics, "flowship_guardrail_events_total", guardrail="unseen_category", action="flag") == 1.0
    inference, events = logs(client, tmp_path)
    assert inference["row"].tolist() == list(range(9))
    lines = [json.loads(line) for p in (tmp_path / "logs").glob("inference-*.jsonl") for line in p.open()]
    logged = [[g["guardrail"] for g in line.get("guardrails", [])] for line in sorted(lines, key=lambda x: x["row"])]
    assert logged == [["out_of_range"]] * 6 + [[], ["out_of_range", "unseen_category"], ["out_of_range"]]
    assert events[["row", "guardrail"]].values.tolist() == [
        *[[i, "out_of_range"] for i in range(6)],
        [7, "out_of_range"],
        [7, "unseen_category"],
        [8, "out_of_range"],
    ]
