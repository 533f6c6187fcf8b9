"""params.yaml `privacy:` (checked when the params load, naming the column or key), the keyed hash, the project's key,
what the serving settings refuse before serving starts, and the monitoring reference hashed like the log."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from flowship.config import load_params, parse_params
from flowship.errors import ConfigError, MonitoringError
from flowship.monitoring.checks import current_frame
from flowship.monitoring.privacy import protect_reference
from flowship.monitoring.reference import ModelSpec, Reference
from flowship.monitoring.window import Window, window_data
from flowship.serving.errors import SettingsError
from flowship.serving.inference_log import InferenceEntry, InferenceLog
from flowship.serving.privacy import (
    HASH_CHARS,
    KEY_VAR,
    LogPrivacy,
    PrivacyPolicy,
    keyed_hash,
    log_privacy,
    project_key,
)
from flowship.serving.settings import ServingSettings
from tests.unit.conftest import raw_params

REPO = Path(__file__).resolve().parents[2]
KEY = "k" * 32
OTHER_KEY = "o" * 32


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    return caught.value.problems


# --- params.yaml ---


def test_the_repository_params_name_no_sensitive_column_and_hash_by_default() -> None:
    policy = load_params(REPO / "params.yaml").privacy
    assert policy == PrivacyPolicy(columns=[], mode="hash")
    assert not policy.needs_key


def test_a_sensitive_column_that_is_not_a_feature_is_refused_naming_it() -> None:
    found = problems(raw_params(privacy={"columns": ["color", "email"]}))
    assert found == ["privacy.columns: 'email' is not a feature (data.features: x1, x2, color)"]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"mode": "encrypt"}, "privacy.mode: Input should be 'hash' or 'drop' (got 'encrypt')"),
        (
            {"columns": ["color", "color"]},
            "privacy.columns: Value error, listed more than once: ['color'] (got ['color', 'color'])",
        ),
        ({"key": "abc"}, "privacy.key: unknown key (value 'abc')"),
    ],
)
def test_a_bad_privacy_section_is_refused_naming_the_key(section: dict[str, Any], problem: str) -> None:
    assert problems(raw_params(privacy=section)) == [problem]


@pytest.mark.parametrize(
    ("privacy", "why"),
    [
        ({"columns": ["x1"], "mode": "drop"}, "(mode drop)"),
        ({"columns": ["x1"], "mode": "hash"}, "(mode hash, a hashed number has no distribution to compare)"),
    ],
)
def test_a_key_feature_that_monitoring_cannot_see_is_refused(privacy: dict[str, Any], why: str) -> None:
    raw = raw_params(privacy=privacy, monitoring={"drift": {"key_features": ["x1"]}})
    assert problems(raw) == [f"monitoring.drift.key_features: 'x1' is left out of monitoring by privacy {why}"]


def test_a_hashed_category_may_stay_a_key_feature() -> None:
    params = parse_params(raw_params(privacy={"columns": ["color"]}, monitoring={"drift": {"key_features": ["color"]}}))
    assert params.privacy.unmonitored(params.data.features.numeric) == []


# --- the hash ---


def test_the_same_value_gives_the_same_hash_under_one_key_and_another_under_another_key() -> None:
    first = keyed_hash("alice@example.com", KEY.encode())
    assert first == keyed_hash("alice@example.com", KEY.encode())
    assert first != keyed_hash("alice@example.com", OTHER_KEY.encode())
    assert first != keyed_hash("bob@example.com", KEY.encode())
    assert len(first or "") == HASH_CHARS and "alice" not in (first or "")


def test_a_missing_value_stays_missing_and_a_number_hashes_as_its_float() -> None:
    assert keyed_hash(None, KEY.encode()) is None
    assert keyed_hash(17, KEY.encode()) == keyed_hash(17.0, KEY.encode()) != keyed_hash("17", KEY.encode())


def test_the_logs_get_the_sensitive_columns_hashed_or_dropped_and_the_rest_as_sent() -> None:
    records = [{"x1": 1.5, "color": "red"}, {"x1": None, "color": None}]
    hashed = LogPrivacy(PrivacyPolicy(columns=["color"]), KEY.encode()).apply(records)
    assert hashed == [{"x1": 1.5, "color": keyed_hash("red", KEY.encode())}, {"x1": None, "color": None}]
    assert "red" not in json.dumps(hashed)
    dropped = LogPrivacy(PrivacyPolicy(columns=["color"], mode="drop")).apply(records)
    assert dropped == [{"x1": 1.5}, {"x1": None}]
    assert records[0] == {"x1": 1.5, "color": "red"}  # the model's own records are left as they are


def test_a_sensitive_column_the_model_does_not_take_stops_the_service() -> None:
    with pytest.raises(SettingsError) as caught:
        log_privacy(PrivacyPolicy(columns=["email"]), SecretStr(KEY), ["x1", "color"])
    assert caught.value.problems == [
        "FLOWSHIP_PRIVACY: columns: ['email'] are not inputs of this model (its inputs: ['x1', 'color'])"
    ]


# --- the key ---


def test_the_key_comes_from_the_environment_first(tmp_path: Path) -> None:
    assert project_key(tmp_path / "privacy.key", {KEY_VAR: KEY}) == KEY
    assert not (tmp_path / "privacy.key").exists()


def test_without_the_variable_a_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".flowship" / "privacy.key"
    key = project_key(path, {})
    assert len(key) == 64 and project_key(path, {}) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["privacy.key"]  # no temporary file left beside it


@pytest.mark.parametrize("where", ["variable", "file"])
def test_a_short_key_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "privacy.key"
    env = {KEY_VAR: "short"} if where == "variable" else {}
    if where == "file":
        path.write_text("short\n")
    with pytest.raises(SettingsError, match="at least 32 characters"):
        project_key(path, env)


# --- the serving settings ---


def test_hashing_without_a_key_is_refused_before_serving_starts() -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({"FLOWSHIP_PRIVACY": json.dumps({"columns": ["carrier"], "mode": "hash"})})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{KEY_VAR} is not set, and FLOWSHIP_PRIVACY hashes ['carrier']")


def test_dropping_needs_no_key_and_a_key_is_never_shown() -> None:
    dropped = ServingSettings.from_env({"FLOWSHIP_PRIVACY": '{"columns": ["carrier"], "mode": "drop"}'})
    assert dropped.privacy == PrivacyPolicy(columns=["carrier"], mode="drop") and dropped.privacy_key is None
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({KEY_VAR: "tooshort-secret"})
    assert caught.value.problems == [
        f"{KEY_VAR}=<hidden>: Value error, the privacy key must be at least 32 characters (it has 15)"
    ]


def test_a_bad_privacy_document_names_the_key_at_fault() -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({"FLOWSHIP_PRIVACY": '{"mode": "blur"}'})
    assert caught.value.problems == ["FLOWSHIP_PRIVACY: mode: Input should be 'hash' or 'drop'"]


# --- monitoring ---


def reference() -> tuple[ModelSpec, Reference]:
    spec = ModelSpec("m", "1", "classification", "late", ["x1", "x2"], ["color"], "md5", {})
    frame = pd.DataFrame({"x1": [1.0, 2.0], "x2": [3.0, 4.0], "color": ["red", np.nan], "prediction": ["0", "1"]})
    ref = Reference(
        frame,
        {"x1": (1.0, 2.0), "x2": (3.0, 4.0)},
        {"color": ["blue", "red"]},
        ["0", "1"],
        {"x1": 0.0, "x2": 0.0, "color": 0.5},
    )
    return spec, ref


def test_the_reference_of_a_hashed_category_is_hashed_with_the_same_key() -> None:
    spec, ref = reference()
    kept_spec, kept = protect_reference(spec, ref, PrivacyPolicy(columns=["color"]), KEY.encode())
    red, blue = keyed_hash("red", KEY.encode()), keyed_hash("blue", KEY.encode())
    assert kept_spec == spec
    assert kept.frame["color"].iloc[0] == red and pd.isna(kept.frame["color"].iloc[1])
    assert kept.categories == {"color": sorted([red, blue])}  # unseen categories are still found
    assert kept.missing_share["color"] == 0.5


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_a_dropped_column_or_a_hashed_number_is_left_out_of_the_checks(mode: str) -> None:
    spec, ref = reference()
    kept_spec, kept = protect_reference(spec, ref, PrivacyPolicy(columns=["x1"], mode=mode), KEY.encode())  # type: ignore[arg-type]
    assert (kept_spec.numeric, kept_spec.categorical) == (["x2"], ["color"])
    assert "x1" not in kept.frame and "x1" not in kept.ranges and "x1" not in kept.missing_share
    assert kept.frame["color"].iloc[0] == "red"


def test_a_hashed_reference_without_the_key_is_refused() -> None:
    spec, ref = reference()
    with pytest.raises(MonitoringError, match="privacy key"):
        protect_reference(spec, ref, PrivacyPolicy(columns=["color"]), None)


# --- the release ---


def test_a_release_hands_the_serving_app_the_policy_and_the_project_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowship.tasks.common import Context
    from flowship.tasks.release import serving_env

    monkeypatch.delenv(KEY_VAR, raising=False)
    hashing = Context(parse_params(raw_params(privacy={"columns": ["color"]})), tmp_path)
    env = serving_env(hashing)
    assert json.loads(env["FLOWSHIP_PRIVACY"]) == {"columns": ["color"], "mode": "hash"}
    assert env[KEY_VAR] == (tmp_path / ".flowship" / "privacy.key").read_text().strip()
    settings = ServingSettings.from_env(env)
    assert settings.privacy_key is not None and settings.privacy_key.get_secret_value() == env[KEY_VAR]

    dropping = Context(parse_params(raw_params(privacy={"columns": ["color"], "mode": "drop"})), tmp_path / "d")
    assert KEY_VAR not in serving_env(dropping)
    assert not (tmp_path / "d" / ".flowship").exists()


def test_a_window_of_hashed_records_reads_and_matches_the_protected_spec(tmp_path: Path) -> None:
    policy = PrivacyPolicy(columns=["distance", "carrier"])
    logged = LogPrivacy(policy, KEY.encode()).apply(
        [{"distance": 812.0, "carrier": "AA"}, {"distance": 5.0, "carrier": None}]
    )
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with InferenceLog(tmp_path / "logs") as log:
        log.append(InferenceEntry(t0, "r", "m", "1", logged, [0, 1], [{"0": 0.6, "1": 0.4}] * 2))
    left_out = policy.unmonitored(["distance"])
    window = Window(None, t0 + timedelta(days=1), default=False)
    data = window_data(tmp_path / "logs", tmp_path / "labels", window, ["distance"], ["carrier"], left_out)
    assert data.skipped == 0 and "features.distance" not in data.records
    assert data.records["features.carrier"].tolist()[0] == keyed_hash("AA", KEY.encode())

    spec = ModelSpec("m", "1", "classification", "late", ["distance"], ["carrier"], "md5", {})
    ref = Reference(pd.DataFrame({"distance": [1.0], "carrier": ["AA"], "prediction": ["0"]}), {}, {}, ["0", "1"], {})
    kept_spec, kept = protect_reference(spec, ref, policy, KEY.encode())
    frame, absent, unexpected = current_frame(data.records, kept_spec)
    assert (absent, unexpected) == ([], [])  # neither reported as a schema problem
    assert frame["carrier"].iloc[0] == kept.frame["carrier"].iloc[0]  # like with like
