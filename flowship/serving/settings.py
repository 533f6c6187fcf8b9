"""The serving settings: one typed object, read from FLOWSHIP_* environment variables at the entry point."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from flowship.files import WRITER_PATTERN
from flowship.serving.errors import SettingsError
from flowship.serving.guardrails import GuardrailPolicy
from flowship.serving.privacy import KEY_VAR, PrivacyPolicy, check_key, missing_key_message

# field -> environment variable
ENV_VARS: dict[str, str] = {
    "model_dir": "FLOWSHIP_MODEL_DIR",
    "log_dir": "FLOWSHIP_LOG_DIR",
    "log_writer": "FLOWSHIP_LOG_WRITER",
    "max_batch": "FLOWSHIP_MAX_BATCH",
    "api_token": "FLOWSHIP_API_TOKEN",
    "log_flush_seconds": "FLOWSHIP_LOG_FLUSH_SECONDS",
    "log_wait_seconds": "FLOWSHIP_LOG_WAIT_SECONDS",
    "usage_seconds": "FLOWSHIP_USAGE_SECONDS",
    "batch_window_ms": "FLOWSHIP_BATCH_WINDOW_MS",
    "model_threads": "FLOWSHIP_MODEL_THREADS",
    "log_features": "FLOWSHIP_LOG_FEATURES",
    "host": "FLOWSHIP_HOST",
    "fault_delay_ms": "FLOWSHIP_FAULT_DELAY_MS",
    "port": "FLOWSHIP_PORT",
    "guardrails": "FLOWSHIP_GUARDRAILS",
    "privacy": "FLOWSHIP_PRIVACY",
    "privacy_key": KEY_VAR,
}
# values never shown in an error message
SECRETS = frozenset({"api_token", "privacy_key"})
# JSON documents: an error names the key at fault inside, not the whole value
DOCUMENTS = frozenset({"guardrails", "privacy"})


class ServingSettings(BaseModel):
    """Everything the service can be told; `from_env()` is the only place the environment is read."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_dir: Path = Path("/app/model")
    # the inference log folder (one JSON-lines file per UTC day)
    log_dir: Path = Path("/var/log/flowship")
    # this process's own inference log file in `log_dir` when several replicas share it (`inference-<day>.<writer>`)
    log_writer: str | None = Field(default=None, pattern=rf"^{WRITER_PATTERN}$")
    # records per /predict request; more gets a 413
    max_batch: int = Field(default=1000, ge=1, le=1_000_000)
    # when set, every endpoint but /health, /ready and the docs wants `Authorization: Bearer <token>`
    api_token: SecretStr | None = None
    # how often the inference log is fsync'ed (a power loss can lose what was written since)
    log_flush_seconds: float = Field(default=0.5, gt=0, le=3600, allow_inf_nan=False)
    # how long an answer waits for its records to be written to the inference log before it becomes a 503
    # (log_unavailable): no prediction leaves unlogged
    log_wait_seconds: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)
    # how often the process samples its CPU time and resident memory into the usage log (monitoring's cost)
    usage_seconds: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    # how long the micro-batcher may wait for more concurrent requests; 0 turns batching off
    batch_window_ms: float = Field(default=2.0, ge=0, le=1000, allow_inf_nan=False)
    # threads that walk the trees of one big request (the fast numeric path, SPLIT_ROWS rows or more, alone in the
    # process, idle cores), the model thread included; unset: see `tree_threads`; 1 turns it off
    model_threads: int | None = Field(default=None, ge=1, le=64)
    # put feature values in the JSON access log, as the inference log keeps them (sensitive columns hashed or
    # dropped)
    log_features: bool = False
    host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104 - a container must listen on all interfaces
    port: int = Field(default=8000, ge=0, le=65535)
    # a drill, never for production: every /predict waits this long before it is scored (to try timeouts)
    fault_delay_ms: float = Field(default=0.0, ge=0, le=600_000, allow_inf_nan=False)
    # the guardrails' policy (params.yaml `guardrails:` as JSON); unset: the defaults
    guardrails: GuardrailPolicy = GuardrailPolicy()
    # the sensitive columns and what the logs keep of them (params.yaml `privacy:` as JSON); unset: none
    privacy: PrivacyPolicy = PrivacyPolicy()
    # the key of the privacy hash (the project's: see `flowship.serving.privacy.project_key`)
    privacy_key: SecretStr | None = None

    @field_validator("guardrails", "privacy", mode="before")
    @classmethod
    def _json_policy(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        return value

    @field_validator("api_token")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not all(33 <= ord(ch) <= 126 for ch in value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces (it is sent in an HTTP header)")
        return value

    @field_validator("privacy_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _key_when_hashing(self) -> ServingSettings:
        if self.privacy.needs_key and self.privacy_key is None:
            raise ValueError(missing_key_message(self.privacy))
        return self

    @property
    def batch_window_seconds(self) -> float:
        return self.batch_window_ms / 1000.0

    @property
    def tree_threads(self) -> int:
        """`model_threads`, or by default 2 where the process may run on 2 cores or more: a lone big request then
        uses a core that would wait idle (`fastpath.Helpers` shares a walk only then)."""
        if self.model_threads is not None:
            return self.model_threads
        return 2 if len(os.sched_getaffinity(0)) > 1 else 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from FLOWSHIP_* variables (unset or empty means the default); a bad value names its variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if raw:
                values[field] = raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                if not error["loc"]:  # across settings: the message names the variables
                    problems.append(str(error["msg"]).removeprefix("Value error, "))
                    continue
                field = str(error["loc"][0])
                var = ENV_VARS.get(field, field)
                if field in DOCUMENTS:
                    key = ".".join(str(part) for part in error["loc"][1:]) or "(the document)"
                    problems.append(f"{var}: {key}: {error['msg']}")
                    continue
                shown = "<hidden>" if field in SECRETS else repr(values.get(field))
                problems.append(f"{var}={shown}: {error['msg']}")
            raise SettingsError(problems) from None
