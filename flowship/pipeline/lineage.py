"""Lineage: the data hashes, code version and params behind a model."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowship.config import Params


@dataclass(frozen=True)
class GitState:
    commit: str
    dirty: bool


def git_state(root: Path) -> GitState:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return GitState(commit="unknown", dirty=True)
    # Files DVC tracks or writes are not code: they would always look dirty after a run.
    status = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!dvc.lock",
        ":!data",
        ":!*.dvc",
        ":!metrics",
        ":!reports",
        ":!models",
    )
    return GitState(commit=commit, dirty=bool(status))


def params_hash(params: Params) -> str:
    dumped = params.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def gate_hash(params: Params) -> str:
    """The gate's settings: a decision taken under other thresholds is taken again."""
    dumped = params.gate.model_dump(mode="json")
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def candidate_key(model_md5: str, holdout_md5: str) -> str:
    """The key of an MLflow run: this trained model, scored on this holdout version."""
    return run_key({"model": model_md5, "holdout": holdout_md5})


def run_key(parts: dict[str, Any]) -> str:
    """A stable key for 'this trained model on this holdout', so a re-run finds its own run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
