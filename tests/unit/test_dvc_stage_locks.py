"""A DVC process killed while rewriting its stage-lock file leaves it unreadable: the adapter resets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowship.adapters.dvc_repo import DvcProject
from flowship.errors import StageError

DVC = str(Path(sys.executable).parent / "dvc")

# A real (git-less) DVC repository in a temp folder, and real `dvc` processes.
pytestmark = pytest.mark.integration


def dvc_repo(root: Path) -> Path:
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=root, check=True, capture_output=True)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "rows.csv").write_text("a,b\n1,2\n")
    return root / ".dvc" / "tmp" / "rwlock"


def test_an_unreadable_stage_lock_file_is_reset_and_the_data_versioned(tmp_path: Path) -> None:
    rwlock = dvc_repo(tmp_path)
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    rwlock.write_text('{"write": {"data/raw": {"pid": 4')  # cut off mid-write
    # DVC itself stops on it, as the next run after a killed worker did:
    plain = subprocess.run([DVC, "add", "data/raw"], cwd=tmp_path, capture_output=True, text=True)
    assert plain.returncode != 0 and "Unable to read RWLock-file" in plain.stderr + plain.stdout

    digest = DvcProject(tmp_path).version_data("data/raw")
    assert len(digest) == 36 and digest.endswith(".dir")  # the folder's content hash
    assert (tmp_path / "data" / "raw.dvc").exists()


def test_a_readable_lock_held_by_a_live_process_is_never_reset(tmp_path: Path) -> None:
    rwlock = dvc_repo(tmp_path)
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    # this test's own process "holds" the folder's write lock: a real holder, which DVC must respect
    held = f'{{"write": {{"{tmp_path / "data" / "raw"}": {{"pid": {os.getpid()}, "cmd": "dvc repro"}}}}, "read": {{}}}}'
    rwlock.write_text(held)
    with pytest.raises(StageError, match="dvc add data/raw failed: .*busy"):
        DvcProject(tmp_path).version_data("data/raw")
    assert rwlock.read_text() == held


def test_outputs_are_not_removed_while_another_dvc_process_holds_the_repository(tmp_path: Path) -> None:
    dvc_repo(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  copy:\n    cmd: cp data/raw/rows.csv out.csv\n    outs:\n      - out.csv\n"
    )
    (tmp_path / "out.csv").write_text("a,b\n1,2\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dvc.repo import Repo; Repo('.').lock.lock(); print('held', flush=True); sys.stdin.read()",
        ],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StageError, match="removing the outputs of copy failed"):
            DvcProject(tmp_path).remove_outputs("copy")
        assert (tmp_path / "out.csv").read_text() == "a,b\n1,2\n"
    finally:
        holder.communicate("")
    DvcProject(tmp_path).remove_outputs("copy")  # the lock released: removed, as `dvc repro` would
    assert not (tmp_path / "out.csv").exists()
