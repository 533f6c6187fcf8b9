"""The pre-release safety checklist `flowship deploy` goes through before a release: what it can verify from the
params, the environment and the repository (the staging checks verify the rest over HTTP)."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flowship.config import Params
from flowship.serving.guardrails import INPUT_GUARDRAILS

Status = Literal["ok", "warn", "refused"]


@dataclass(frozen=True)
class Item:
    name: str
    status: Status
    detail: str


def safety_checklist(params: Params, root: Path, environ: Mapping[str, str]) -> list[Item]:
    """Guardrails on, who may call production, secrets kept out of git, protection against floods. Only a secret
    committed to the repository is `refused`: the rest are choices a user may make knowingly (`warn`)."""
    items = [_guardrails(params), _access(params, environ)]
    secret = _api_keys_file(params, root)
    if secret is not None:
        items.append(secret)
    items.append(_floods(params))
    return items


def refusals(items: list[Item]) -> list[Item]:
    return [item for item in items if item.status == "refused"]


def _guardrails(params: Params) -> Item:
    policy = params.guardrails
    acting = [
        f"{name}: {getattr(policy, name).action}" for name in INPUT_GUARDRAILS if getattr(policy, name).action != "off"
    ]
    if not policy.enabled or not acting:
        return Item("guardrails", "warn", "no input guardrail is on: out-of-distribution records are answered silently")
    return Item("guardrails", "ok", ", ".join(acting))


def _access(params: Params, environ: Mapping[str, str]) -> Item:
    if params.gateway.enabled and params.gateway.api_keys_file is not None:
        return Item("access", "ok", f"the gateway asks for an API key ({params.gateway.api_keys_file})")
    if environ.get("FLOWSHIP_API_TOKEN"):
        return Item("access", "ok", "the app asks for a bearer token (FLOWSHIP_API_TOKEN)")
    port = params.release.production_port
    return Item(
        "access",
        "warn",
        f"no API key or token: anyone who reaches 127.0.0.1:{port} can predict "
        "(gateway.api_keys_file, or FLOWSHIP_API_TOKEN)",
    )


def _api_keys_file(params: Params, root: Path) -> Item | None:
    configured = params.gateway.api_keys_file
    if configured is None:
        return None
    path = configured if configured.is_absolute() else root / configured
    if _tracked_by_git(root, path):
        return Item(
            "secrets",
            "refused",
            f"gateway.api_keys_file {configured} is committed to git: remove it from the repository "
            f"(`git rm --cached {configured}`, add it to .gitignore) and issue new keys",
        )
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # a missing file is the gateway's error, said when it reads the keys
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return Item("secrets", "warn", f"{configured} can be read by other users: chmod 600 {configured}")
    return Item("secrets", "ok", f"{configured} is out of git and readable by its owner only")


def _tracked_by_git(root: Path, path: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "--", str(path)],  # noqa: S607 - git from PATH, as lineage uses it
            cwd=root,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _floods(params: Params) -> Item:
    gateway = params.gateway
    if not gateway.enabled:
        return Item("floods", "warn", "gateway.enabled is false: no rate limit, body limit or timeout before the model")
    limits = f"bodies up to {gateway.max_body_mb:g} MB, answers within {gateway.timeout_s:g} s"
    rate = gateway.rate_limit
    if rate is None:
        return Item("floods", "warn", f"gateway.rate_limit is null: no client is slowed down ({limits})")
    return Item("floods", "ok", f"{rate.per_second:g}/s per client (burst {rate.burst}), {limits}")
