"""The pre-release safety checklist `flowship deploy` goes through: each item's verdict and its words."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flowship.release.checklist import refusals, safety_checklist
from tests.unit.conftest import make_params


def items(tmp_path: Path, environ: dict[str, str] | None = None, **overrides: object) -> dict[str, tuple[str, str]]:
    found = safety_checklist(make_params(**overrides), tmp_path, environ or {})
    return {item.name: (item.status, item.detail) for item in found}


def test_the_defaults_pass_but_warn_that_anyone_can_call() -> None:
    found = items(Path("/nonexistent"))
    assert found["guardrails"] == ("ok", "out_of_range: flag, unseen_category: flag, missing: flag")
    assert found["access"][0] == "warn" and "anyone who reaches 127.0.0.1:8000 can predict" in found["access"][1]
    assert found["floods"] == ("ok", "500/s per client (burst 1000), bodies up to 8 MB, answers within 30 s")
    assert "secrets" not in found  # no key file configured: nothing to check


def test_a_token_or_a_key_file_closes_access(tmp_path: Path) -> None:
    assert items(tmp_path, {"FLOWSHIP_API_TOKEN": "t"})["access"][0] == "ok"
    (tmp_path / "keys.txt").write_text("k\n")
    (tmp_path / "keys.txt").chmod(0o600)
    found = items(tmp_path, gateway={"api_keys_file": "keys.txt"})
    assert found["access"] == ("ok", "the gateway asks for an API key (keys.txt)")
    assert found["secrets"] == ("ok", "keys.txt is out of git and readable by its owner only")


def test_guardrails_or_gateway_turned_off_are_warned_about(tmp_path: Path) -> None:
    found = items(tmp_path, guardrails={"enabled": False}, gateway={"enabled": False})
    assert found["guardrails"][0] == "warn"
    assert found["floods"] == (
        "warn",
        "gateway.enabled is false: no rate limit, body limit or timeout before the model",
    )
    assert items(tmp_path, gateway={"rate_limit": None})["floods"][0] == "warn"


def test_a_key_file_in_git_is_refused_and_one_others_can_read_is_warned_about(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("k\n")
    keys.chmod(0o644)
    assert items(tmp_path, gateway={"api_keys_file": "keys.txt"})["secrets"] == (
        "warn",
        "keys.txt can be read by other users: chmod 600 keys.txt",
    )
    for args in (["init", "-q"], ["add", "keys.txt"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    found = safety_checklist(make_params(gateway={"api_keys_file": "keys.txt"}), tmp_path, {})
    (refused,) = refusals(found)
    assert refused.name == "secrets"
    assert refused.detail.startswith("gateway.api_keys_file keys.txt is committed to git: remove it")
