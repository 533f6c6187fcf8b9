"""Sensitive feature columns kept out of the logs (params.yaml `privacy:`).

The model still scores the values it is sent; only what is written down changes. `hash` writes a keyed hash
(HMAC-SHA256 under a secret key) in place of each value, so the logs keep "same value or not" (how many distinct
values, how often each comes back, a hashed category's distribution for drift) and nothing else: without the key
a value cannot be found back by hashing guesses. `drop` leaves the column out of the logs altogether. A missing
value stays missing (null) either way, so missing shares are still measured.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from flowship.serving.errors import SettingsError

KEY_VAR = "FLOWSHIP_PRIVACY_KEY"
# the shortest key accepted: 32 characters (the generated key is 64 hex digits, 256 bits)
MIN_KEY_CHARS = 32
# hex digits of the HMAC kept in the log: 64 bits, so two distinct values of one column share a hash with a
# chance of about n^2 / 2^65 (one in 37 million for a million distinct values), and each line stays short
HASH_CHARS = 16


class PrivacyPolicy(BaseModel):
    """params.yaml `privacy:`, as the serving app receives it (FLOWSHIP_PRIVACY, JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: list[str] = []  # the sensitive feature columns
    mode: Literal["hash", "drop"] = "hash"

    @field_validator("columns")
    @classmethod
    def _distinct(cls, columns: list[str]) -> list[str]:
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {repeated}")
        return columns

    @property
    def needs_key(self) -> bool:
        return self.mode == "hash" and bool(self.columns)

    def unmonitored(self, numeric: Sequence[str]) -> list[str]:
        """The sensitive columns monitoring leaves out: dropped ones (never logged), and hashed numbers (a hash keeps
        equality only, not order or distance). Hashed categories are compared hashed, with a reference hashed alike."""
        if self.mode == "drop":
            return list(self.columns)
        return [c for c in self.columns if c in numeric]


def check_key(key: str) -> str:
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"the privacy key must be at least {MIN_KEY_CHARS} characters (it has {len(key)})")
    return key


def keyed_hash(value: Any, key: bytes) -> str | None:
    """The value's HMAC-SHA256 under `key` (its first HASH_CHARS hex digits); None stays None. A category is hashed
    as its text, a number as its float's repr, so the same value always gives the same hash."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(float(value))
    digest = hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return digest[:HASH_CHARS]


@dataclass(frozen=True)
class LogPrivacy:
    """What the logs keep of each record's features, by the policy."""

    policy: PrivacyPolicy
    key: bytes | None = None

    @property
    def keeps_all(self) -> bool:
        """The logs keep every feature as it was sent."""
        return not self.policy.columns

    def apply(self, features: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records as they may be written down (new dicts: the model's own are left as they are)."""
        if self.keeps_all:
            return list(features)
        columns = self.policy.columns
        if self.policy.mode == "drop":
            return [{k: v for k, v in f.items() if k not in columns} for f in features]
        assert self.key is not None  # `log_privacy` refuses hash without a key
        key = self.key
        return [{k: keyed_hash(v, key) if k in columns else v for k, v in f.items()} for f in features]


def log_privacy(policy: PrivacyPolicy, key: SecretStr | None, columns: Sequence[str]) -> LogPrivacy:
    """The policy for a model with input `columns`; a sensitive column the model does not take, or hashing without
    a key, is refused before the service starts."""
    unknown = [c for c in policy.columns if c not in columns]
    if unknown:
        raise SettingsError(
            [f"FLOWSHIP_PRIVACY: columns: {unknown} are not inputs of this model (its inputs: {list(columns)})"]
        )
    if policy.needs_key and key is None:
        raise SettingsError([missing_key_message(policy)])
    return LogPrivacy(policy, key.get_secret_value().encode() if key is not None and policy.needs_key else None)


def missing_key_message(policy: PrivacyPolicy) -> str:
    return (
        f"{KEY_VAR} is not set, and FLOWSHIP_PRIVACY hashes {policy.columns}: give the service the project's "
        "privacy key (a release passes it on), or set privacy.mode to drop"
    )


def project_key(key_file: Path, environ: Mapping[str, str] | None = None) -> str:
    """The project's privacy key: FLOWSHIP_PRIVACY_KEY when set, else the key file, made (random, readable by its
    owner only) the first time. Releases and monitoring both ask here, so the logs and the reference the checks
    compare them with are hashed under the same key."""
    env = os.environ if environ is None else environ
    given = env.get(KEY_VAR, "").strip()
    if given:
        try:
            return check_key(given)
        except ValueError as exc:
            raise SettingsError([f"{KEY_VAR}: {exc}"]) from None
    if key_file.exists():
        return _read_key(key_file)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # written whole beside it, then linked to its name: a concurrent reader sees no key file or a whole one, and
    # of two processes making one at once, the second reads the first's
    tmp = key_file.with_name(f".{key_file.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            pass
    finally:
        tmp.unlink()
    return _read_key(key_file)


def _read_key(key_file: Path) -> str:
    try:
        return check_key(key_file.read_text().strip())
    except ValueError as exc:
        raise SettingsError([f"{key_file}: {exc}; delete it to make a new one, or set {KEY_VAR}"]) from None
