"""What changed between a base git ref and the working tree, as the model report says it: the params, the raw data's
version, and for each pipeline stage the code, data and params its dvc.lock entry records.

Everything is read from git (`git show REF:path`) and from the files in the working tree: no DVC or MLflow call, so
a base that was never trained or whose data is not in the cache is still described. The base's holdout metrics are
the `metrics/holdout.json` committed at that ref (None when it has none: a first run).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowship.errors import BaseRefError, ConfigError
from flowship.paths import RAW_DATA, STAGES, Layout

# The files compared, relative to the repository's root.
_RELATIVE = Layout(Path())
PARAMS = _RELATIVE.params.as_posix()
METRICS = _RELATIVE.metrics_file.as_posix()
LOCK = "dvc.lock"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)  # noqa: S607 - git from PATH, as lineage uses it
    except FileNotFoundError as exc:
        raise BaseRefError(f"git is needed to compare with a base ref and was not found on PATH: {exc}") from exc


def resolve_ref(root: Path, ref: str) -> str:
    """The commit a ref names; BaseRefError naming the ref (and what git said) when there is none."""
    done = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        said = done.stderr.strip() or "no such branch, tag or commit"
        raise BaseRefError(f"base ref {ref!r} not found in the git repository at {root}: {said}")
    return done.stdout.strip()


def uncommitted(root: Path, paths: list[str]) -> list[str]:
    """Those of `paths` whose working-tree file differs from the last commit (or is not in it)."""
    done = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *paths)
    return sorted({line[3:].strip() for line in done.stdout.splitlines() if line.strip()})


def file_at(root: Path, commit: str, path: str) -> str | None:
    """A file's text at a commit (None when the commit has no such file)."""
    done = _git(root, "show", f"{commit}:{path}")
    return done.stdout if done.returncode == 0 else None


def _yaml(text: str | None, what: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{what} is not valid YAML: {exc}"]) from exc
    return loaded if isinstance(loaded, dict) else {}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`train.params.learning_rate`); lists and scalars are leaf values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


@dataclass(frozen=True)
class ValueChange:
    """One dotted key whose value differs (None on a side where the key is absent)."""

    key: str
    old: Any
    new: Any


def value_changes(old: dict[str, Any], new: dict[str, Any]) -> list[ValueChange]:
    """Every dotted key added, removed or changed between two nested mappings, in sorted key order."""
    before, after = flatten(old), flatten(new)
    return [
        ValueChange(key, before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key) or (key in before) != (key in after)
    ]


@dataclass(frozen=True)
class DataVersion:
    """The raw data as its `.dvc` file records it."""

    md5: str
    size: int | None
    files: int | None

    @classmethod
    def parse(cls, text: str | None) -> DataVersion | None:
        outs = _yaml(text, f"{RAW_DATA}.dvc").get("outs") or []
        if not outs or "md5" not in outs[0]:
            return None
        out = outs[0]
        return cls(str(out["md5"]), out.get("size"), out.get("nfiles"))


@dataclass(frozen=True)
class StageChange:
    """What a stage's dvc.lock entry records differently: code files, other deps and outputs, params."""

    stage: str
    code: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    new: bool = False  # the base has no lock entry for this stage (never run there)


def _hashes(entries: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(e["path"]): str(e.get("md5", "")) for e in entries or []}


def _differ(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))


def _param_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys that differ, per params file (keys of params.yaml bare, of any other file prefixed `file:`)."""
    keys = []
    for file in sorted(old.keys() | new.keys()):
        for change in value_changes(old.get(file) or {}, new.get(file) or {}):
            keys.append(change.key if file == PARAMS else f"{file}:{change.key}")
    return keys


def stage_changes(old_lock: dict[str, Any], new_lock: dict[str, Any]) -> list[StageChange]:
    """The stages (in pipeline order) whose lock entries differ: a `.py` dep is code, any other dep is data."""
    old_stages, new_stages = old_lock.get("stages") or {}, new_lock.get("stages") or {}
    order = [s for s in STAGES if s in new_stages] + sorted(set(new_stages) - set(STAGES))
    changed = []
    for stage in order:
        before, after = old_stages.get(stage) or {}, new_stages[stage]
        deps = _differ(_hashes(before.get("deps")), _hashes(after.get("deps")))
        params = _param_changes(before.get("params") or {}, after.get("params") or {})
        outs = _differ(_hashes(before.get("outs")), _hashes(after.get("outs")))
        change = StageChange(
            stage,
            code=[d for d in deps if d.endswith(".py")],
            data=[d for d in deps if not d.endswith(".py")],
            params=params,
            outs=outs,
            new=not before,
        )
        if change.new or deps or params or outs:
            changed.append(change)
    return changed


def _metrics(text: str | None, where: str) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{METRICS} at {where} is not valid JSON: {exc}"]) from exc
    if not isinstance(loaded, dict):
        raise ConfigError([f"{METRICS} at {where} holds {type(loaded).__name__}, not an object of metric names"])
    return {str(k): float(v) for k, v in loaded.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@dataclass(frozen=True)
class Changes:
    """The working tree against a base commit."""

    base_ref: str
    base_commit: str
    params: list[ValueChange]
    data_before: DataVersion | None
    data_after: DataVersion | None
    stages: list[StageChange]
    base_metrics: dict[str, float] | None  # None: the base has no committed holdout metrics

    @property
    def data_changed(self) -> bool:
        return self.data_before != self.data_after


def compare(root: Path, base_ref: str) -> Changes:
    """The working tree of the repository at `root` against `base_ref`."""
    commit = resolve_ref(root, base_ref)

    def now(path: str) -> str | None:
        file = root / path
        return file.read_text() if file.exists() else None

    where = f"{base_ref} ({commit[:12]})"
    return Changes(
        base_ref=base_ref,
        base_commit=commit,
        params=value_changes(_yaml(file_at(root, commit, PARAMS), f"{PARAMS} at {where}"), _yaml(now(PARAMS), PARAMS)),
        data_before=DataVersion.parse(file_at(root, commit, f"{RAW_DATA}.dvc")),
        data_after=DataVersion.parse(now(f"{RAW_DATA}.dvc")),
        stages=stage_changes(_yaml(file_at(root, commit, LOCK), f"{LOCK} at {where}"), _yaml(now(LOCK), LOCK)),
        base_metrics=_metrics(file_at(root, commit, METRICS), where),
    )
