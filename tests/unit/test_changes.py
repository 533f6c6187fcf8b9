"""What changed between a base ref and the working tree (the model report's first section), in a real git repository:
params, the raw data's version, each stage's code, data and params as dvc.lock records them, the base's metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowship.errors import BaseRefError, ConfigError
from flowship.pipeline.changes import ValueChange, compare, flatten, stage_changes, uncommitted, value_changes

PARAMS: dict[str, Any] = {
    "project": {"name": "m", "seed": 7},
    "train": {"estimator": "hist_gradient_boosting", "params": {"learning_rate": 0.1, "max_iter": 200}},
    "gate": {"primary_metric": "roc_auc", "thresholds": {"roc_auc": 0.7}},
}


def dep(path: str, md5: str) -> dict[str, Any]:
    return {"path": path, "hash": "md5", "md5": md5}


def lock(
    raw: str = "aaa.dir", training_code: str = "c1", learning_rate: float = 0.1, model: str = "m1"
) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "stages": {
            "ingest": {
                "deps": [dep("data/raw", raw), dep("flowship/config.py", "k1")],
                "outs": [dep("data/i.parquet", raw)],
            },
            "train": {
                "deps": [dep("data/i.parquet", raw), dep("flowship/pipeline/training.py", training_code)],
                "params": {"params.yaml": {"train": {"params": {"learning_rate": learning_rate}}}},
                "outs": [dep("models/candidate", model)],
            },
        },
    }


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def write(
    root: Path, params: dict[str, Any], lock_file: dict[str, Any], raw: str, metrics: dict[str, float] | None
) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.lock").write_text(yaml.safe_dump(lock_file, sort_keys=False))
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "raw.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": raw, "size": 100, "nfiles": 2, "path": "raw"}]})
    )
    if metrics is not None:
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / "holdout.json").write_text(json.dumps(metrics))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Two commits: `first` (params, lock, data, no metrics yet) and `trained` (its metrics committed)."""
    git(tmp_path, "init", "--quiet", "-b", "main")
    git(tmp_path, "config", "user.email", "t@flowship.invalid")
    git(tmp_path, "config", "user.name", "t")
    write(tmp_path, PARAMS, lock(), "aaa.dir", None)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "--quiet", "-m", "first")
    git(tmp_path, "tag", "first")
    write(tmp_path, PARAMS, lock(), "aaa.dir", {"roc_auc": 0.74, "log_loss": 0.52})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "--quiet", "-m", "trained")
    return tmp_path


def test_an_unchanged_working_tree_has_no_changes_and_the_bases_metrics(repo: Path) -> None:
    changes = compare(repo, "HEAD")
    assert changes.params == [] and changes.stages == [] and not changes.data_changed
    assert changes.base_metrics == {"roc_auc": 0.74, "log_loss": 0.52}
    assert (
        changes.base_commit
        == subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    )


def test_a_changed_hyperparameter_names_the_key_and_the_stage_that_records_it(repo: Path) -> None:
    params = json.loads(json.dumps(PARAMS))
    params["train"]["params"]["learning_rate"] = 0.05
    write(repo, params, lock(learning_rate=0.05, model="m2"), "aaa.dir", {"roc_auc": 0.75, "log_loss": 0.5})
    changes = compare(repo, "main")
    assert changes.params == [ValueChange("train.params.learning_rate", 0.1, 0.05)]
    (train,) = changes.stages
    assert train.stage == "train" and train.params == ["train.params.learning_rate"]
    assert train.code == [] and train.data == [] and train.outs == ["models/candidate"] and not train.new
    assert changes.base_metrics == {"roc_auc": 0.74, "log_loss": 0.52}  # the base's, not the working tree's


def test_new_data_and_changed_code_name_their_stages_in_pipeline_order(repo: Path) -> None:
    write(repo, PARAMS, lock(raw="bbb.dir", training_code="c2", model="m2"), "bbb.dir", None)
    changes = compare(repo, "HEAD")
    assert changes.data_changed
    assert changes.data_before is not None and changes.data_before.md5 == "aaa.dir"
    assert changes.data_after is not None and changes.data_after.md5 == "bbb.dir" and changes.data_after.files == 2
    assert [s.stage for s in changes.stages] == ["ingest", "train"]
    ingest, train = changes.stages
    assert ingest.data == ["data/raw"] and ingest.code == [] and ingest.outs == ["data/i.parquet"]
    assert train.code == ["flowship/pipeline/training.py"] and train.data == ["data/i.parquet"]


def test_a_base_without_metrics_is_a_first_run(repo: Path) -> None:
    assert compare(repo, "first").base_metrics is None


def test_a_stage_the_base_never_ran_is_new() -> None:
    old = lock()
    del old["stages"]["train"]
    (train,) = stage_changes(old, lock())
    assert train.stage == "train" and train.new and train.outs == ["models/candidate"]


@pytest.mark.parametrize("ref", ["no-such-branch", "0123456789abcdef0123456789abcdef01234567", "HEAD~5", "--help"])
def test_a_base_ref_that_does_not_exist_is_named(repo: Path, ref: str) -> None:
    with pytest.raises(BaseRefError, match=f"base ref '{ref}' not found in the git repository at {repo}"):
        compare(repo, ref)


def test_outside_a_git_repository_the_ref_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseRefError, match="base ref 'main' not found"):
        compare(tmp_path, "main")


def test_a_base_whose_params_are_not_yaml_is_named(repo: Path) -> None:
    (repo / "params.yaml").write_text("train: [unclosed\n")
    git(repo, "commit", "--quiet", "-am", "broken params")
    write(repo, PARAMS, lock(), "aaa.dir", None)
    with pytest.raises(ConfigError, match=r"params\.yaml at HEAD \([0-9a-f]{12}\) is not valid YAML"):
        compare(repo, "HEAD")


@pytest.mark.parametrize(
    ("text", "said"), [("{roc_auc: 0.7", "is not valid JSON"), ("[0.7]", "holds list, not an object of metric names")]
)
def test_base_metrics_that_cannot_be_read_are_named(repo: Path, text: str, said: str) -> None:
    (repo / "metrics" / "holdout.json").write_text(text)
    git(repo, "commit", "--quiet", "-am", "broken metrics")
    with pytest.raises(ConfigError, match=rf"metrics/holdout\.json at main \([0-9a-f]{{12}}\) {re.escape(said)}"):
        compare(repo, "main")


def test_value_changes_see_added_removed_and_changed_keys() -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "gone": None}
    new = {"a": {"b": 2, "c": [1, 2], "d": {"e": "x"}}}
    assert value_changes(old, new) == [
        ValueChange("a.b", 1, 2),
        ValueChange("a.d.e", None, "x"),
        ValueChange("gone", None, None),  # present (as null) in the base only: still a change
    ]
    assert flatten({"a": {}, "b": {"c": 1}}) == {"a": {}, "b.c": 1}


def test_without_git_on_path_the_comparison_says_so(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-bin"))
    with pytest.raises(BaseRefError, match="git is needed to compare with a base ref and was not found on PATH"):
        compare(repo, "main")


def test_run_outputs_not_committed_are_named(repo: Path) -> None:
    assert uncommitted(repo, ["dvc.lock", "metrics/holdout.json"]) == []
    write(repo, PARAMS, lock(model="m2"), "aaa.dir", {"roc_auc": 0.75, "log_loss": 0.5})
    assert uncommitted(repo, ["dvc.lock", "metrics/holdout.json"]) == ["dvc.lock", "metrics/holdout.json"]
    git(repo, "add", "dvc.lock")
    git(repo, "commit", "--quiet", "-m", "the lock only")
    assert uncommitted(repo, ["dvc.lock", "metrics/holdout.json"]) == ["metrics/holdout.json"]
