from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowship.errors import ConfigError
from flowship.serving.errors import SettingsError
from flowship.serving.settings import ServingSettings


def test_defaults_when_nothing_is_set() -> None:
    settings = ServingSettings.from_env({})
    assert settings.model_dir == Path("/app/model")
    assert settings.log_dir == Path("/var/log/flowship")
    assert settings.max_batch == 1000
    assert settings.api_token is None
    assert settings.log_flush_seconds == 0.5
    assert settings.log_wait_seconds == 5.0
    assert settings.batch_window_ms == 2.0
    assert settings.batch_window_seconds == 0.002
    assert settings.log_features is False
    assert settings.usage_seconds == 10.0
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)


def test_every_variable_is_read() -> None:
    settings = ServingSettings.from_env(
        {
            "FLOWSHIP_MODEL_DIR": "/models/m",
            "FLOWSHIP_LOG_DIR": "/logs",
            "FLOWSHIP_MAX_BATCH": "50",
            "FLOWSHIP_API_TOKEN": "s3cret-token",
            "FLOWSHIP_LOG_FLUSH_SECONDS": "2",
            "FLOWSHIP_LOG_WAIT_SECONDS": "0.5",
            "FLOWSHIP_BATCH_WINDOW_MS": "0",
            "FLOWSHIP_MODEL_THREADS": "3",
            "FLOWSHIP_LOG_FEATURES": "true",
            "FLOWSHIP_USAGE_SECONDS": "2.5",
            "FLOWSHIP_HOST": "127.0.0.1",
            "FLOWSHIP_PORT": "9000",
            "UNRELATED": "x",
        }
    )
    assert settings.model_dir == Path("/models/m")
    assert settings.log_dir == Path("/logs")
    assert settings.max_batch == 50
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "s3cret-token"
    assert settings.log_flush_seconds == 2.0
    assert settings.log_wait_seconds == 0.5
    assert settings.batch_window_ms == 0.0
    assert settings.tree_threads == 3
    assert settings.log_features is True
    assert settings.usage_seconds == 2.5
    assert (settings.host, settings.port) == ("127.0.0.1", 9000)


@pytest.mark.parametrize(("cores", "threads"), [({0}, 1), ({0, 1}, 2), (set(range(8)), 2)])
def test_big_requests_are_walked_by_two_threads_where_the_process_has_two_cores(
    monkeypatch: pytest.MonkeyPatch, cores: set[int], threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores)
    assert ServingSettings.from_env({}).tree_threads == threads
    assert ServingSettings.from_env({"FLOWSHIP_MODEL_THREADS": "1"}).tree_threads == 1  # what the operator says


def test_empty_values_mean_the_default() -> None:
    settings = ServingSettings.from_env({"FLOWSHIP_API_TOKEN": "", "FLOWSHIP_MAX_BATCH": "  "})
    assert settings.api_token is None
    assert settings.max_batch == 1000


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("FLOWSHIP_MAX_BATCH", "many", "valid integer"),
        ("FLOWSHIP_MAX_BATCH", "0", "greater than or equal to 1"),
        ("FLOWSHIP_PORT", "70000", "less than or equal to 65535"),
        ("FLOWSHIP_LOG_FLUSH_SECONDS", "0", "greater than 0"),
        ("FLOWSHIP_LOG_FLUSH_SECONDS", "nan", "finite number"),
        ("FLOWSHIP_LOG_WAIT_SECONDS", "0", "greater than 0"),
        ("FLOWSHIP_LOG_WAIT_SECONDS", "soon", "valid number"),
        ("FLOWSHIP_LOG_WAIT_SECONDS", "inf", "finite number"),
        ("FLOWSHIP_BATCH_WINDOW_MS", "-1", "greater than or equal to 0"),
        ("FLOWSHIP_MODEL_THREADS", "0", "greater than or equal to 1"),
        ("FLOWSHIP_MODEL_THREADS", "two", "valid integer"),
        ("FLOWSHIP_LOG_FEATURES", "perhaps", "valid boolean"),
        ("FLOWSHIP_USAGE_SECONDS", "0", "greater than 0"),
        ("FLOWSHIP_USAGE_SECONDS", "often", "valid number"),
        ("FLOWSHIP_API_TOKEN", "has space", "printable ASCII"),
    ],
)
def test_a_bad_value_names_its_variable(var: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({var: value})
    assert isinstance(caught.value, ConfigError)
    assert var in str(caught.value)
    assert expected in str(caught.value)


def test_the_token_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_env({"FLOWSHIP_API_TOKEN": "top secret"})
    assert "top secret" not in str(caught.value)
    assert "top secret" not in repr(ServingSettings(api_token="topsecret"))  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = ServingSettings()
    with pytest.raises(ValidationError):
        settings.max_batch = 5  # type: ignore[misc]
