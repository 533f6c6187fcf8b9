"""Versioning the raw data: `dvc add` only when the data changed since its `.dvc` file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowship.adapters.dvc_repo import DvcProject

DVC = str(Path(sys.executable).parent / "dvc")

# A real (git-less) DVC repository in a temp folder.
pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "rows.csv").write_text("a,b\n1,2\n")
    return tmp_path


def test_unchanged_data_keeps_its_hash_and_its_dvc_file_untouched(project: Path) -> None:
    dvc = DvcProject(project)
    first = dvc.version_data("data/raw")
    tracked = project / "data" / "raw.dvc"
    old = 1_000_000_000_000_000_000  # 2001: a rewrite would give the file today's time
    os.utime(tracked, ns=(old, old))
    assert dvc.version_data("data/raw") == first
    assert tracked.stat().st_mtime_ns == old


def test_changed_data_gets_a_new_hash_and_its_dvc_file_says_so(project: Path) -> None:
    dvc = DvcProject(project)
    first = dvc.version_data("data/raw")
    (project / "data" / "raw" / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    second = dvc.version_data("data/raw")
    assert second != first and second.endswith(".dir")
    assert second in (project / "data" / "raw.dvc").read_text()


def test_data_missing_from_the_cache_is_added_again(project: Path) -> None:
    dvc = DvcProject(project)
    first = dvc.version_data("data/raw")
    shutil.rmtree(project / ".dvc" / "cache")
    assert dvc.version_data("data/raw") == first
    # the cache holds the data again: `dvc status` has nothing to say
    status = subprocess.run([DVC, "status", "data/raw.dvc"], cwd=project, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower()
