"""Lineage: params hash, run key and the git state of the code."""

from __future__ import annotations

import subprocess

import pytest

from flowship.config import parse_params
from flowship.pipeline.lineage import git_state, params_hash, run_key
from tests.unit.conftest import make_params, raw_params

# --- params_hash ----------------------------------------------------------------------------------------------


def test_params_hash_is_stable_and_short_hex():
    first, again = params_hash(make_params()), params_hash(make_params())
    assert first == again
    assert len(first) == 16
    int(first, 16)


def test_params_hash_ignores_key_order_and_spelled_out_defaults():
    raw = raw_params()
    reordered = dict(reversed(list(raw.items())))
    reordered["data"] = dict(reversed(list(raw["data"].items())))
    assert params_hash(parse_params(reordered)) == params_hash(parse_params(raw))
    explicit = raw_params(data={"format": "auto"}, train={"search": {"enabled": False}})
    assert params_hash(parse_params(explicit)) == params_hash(parse_params(raw))


@pytest.mark.parametrize(
    "overrides",
    [
        {"project": {"seed": 8}},
        {"train": {"params": {"max_iter": 16}}},
        {"data": {"features": {"numeric": ["x1"]}}},
        {"split": {"holdout_fraction": 0.3}},
        {"validate": {"min_rows": 51}},
        {"gate": {"thresholds": {"roc_auc": 0.6}}},
        {"evaluate": {"golden_size": 11}},
    ],
)
def test_params_hash_changes_with_any_param(overrides):
    assert params_hash(make_params(**overrides)) != params_hash(make_params())


# --- run_key --------------------------------------------------------------------------------------------------


def test_run_key_is_stable_and_independent_of_key_order():
    parts = {"model": "abc123", "holdout": "def456"}
    key = run_key(parts)
    assert key == run_key({"holdout": "def456", "model": "abc123"})
    assert len(key) == 24
    int(key, 16)


@pytest.mark.parametrize(
    "other",
    [{"model": "abc124", "holdout": "def456"}, {"model": "abc123", "holdout": "def457"}, {"model": "abc123"}],
)
def test_run_key_changes_with_any_part(other):
    assert run_key(other) != run_key({"model": "abc123", "holdout": "def456"})


def test_run_key_does_not_confuse_swapped_values():
    assert run_key({"model": "a", "holdout": "b"}) != run_key({"model": "b", "holdout": "a"})


# --- git_state ------------------------------------------------------------------------------------------------


def git(root, *args):
    return subprocess.run(
        ["git", "-c", "user.name=unit", "-c", "user.email=unit@flowship.invalid", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    # Never find an enclosing repository above the temp folder.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "train.py").write_text("print('train')\n")
    (root / "data").mkdir()
    (root / "data" / "raw.csv.dvc").write_text("outs: []\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / "metrics").mkdir()
    (root / "metrics" / "holdout.json").write_text("{}\n")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "first")
    return root


def test_clean_repository(repo):
    state = git_state(repo)
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert len(state.commit) == 40
    assert state.dirty is False


def test_changed_code_is_dirty(repo):
    (repo / "train.py").write_text("print('changed')\n")
    state = git_state(repo)
    assert state.dirty is True
    assert state.commit == git(repo, "rev-parse", "HEAD")


def test_staged_change_is_dirty(repo):
    (repo / "new_module.py").write_text("x = 1\n")
    git(repo, "add", "new_module.py")
    assert git_state(repo).dirty is True


def test_untracked_files_do_not_make_it_dirty(repo):
    (repo / "scratch.txt").write_text("notes\n")
    assert git_state(repo).dirty is False


@pytest.mark.parametrize("path", ["dvc.lock", "metrics/holdout.json", "data/raw.csv.dvc"])
def test_files_written_by_a_run_do_not_make_it_dirty(repo, path):
    (repo / path).write_text("changed by a pipeline run\n")
    assert git_state(repo).dirty is False


def test_new_commit_is_seen(repo):
    before = git_state(repo).commit
    (repo / "train.py").write_text("print('v2')\n")
    git(repo, "commit", "--quiet", "-am", "second")
    after = git_state(repo)
    assert after.commit != before and after.dirty is False


def test_outside_a_repository_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    outside = tmp_path / "plain"
    outside.mkdir()
    state = git_state(outside)
    assert state.commit == "unknown"
    assert state.dirty is True  # unknown code cannot be claimed clean


def test_repository_without_commits_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git(tmp_path, "init", "--quiet")
    assert git_state(tmp_path).commit == "unknown"


def test_without_git_installed_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable here
    assert git_state(tmp_path).commit == "unknown"
