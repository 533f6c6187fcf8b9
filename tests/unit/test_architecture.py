"""The layers and adapters of the package, as the import-linter contracts in pyproject.toml state them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the flowship package found under `root`, with root's pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "flowship", tmp_path / "flowship", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_every_contract_is_kept():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("flowship/config.py", "import prefect", "The library never imports Prefect BROKEN"),
        ("flowship/pipeline/gate.py", "from flowship.tasks import common", "tasks on the library BROKEN"),
        ("flowship/serving/app.py", "import flowship.config", "of flowship only what the image holds"),
        ("flowship/release/runtime.py", "import docker", "The Docker SDK is imported by its adapter only BROKEN"),
        ("flowship/tasks/registry.py", "import mlflow", "MLflow is imported by its adapter only BROKEN"),
        ("flowship/errors.py", "from flowship import config", "No import cycles between the sub-packages"),
    ],
)
def test_an_import_across_a_boundary_breaks_its_contract(tmp_path, module, line, contract):
    root = copy_of_package(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(root)
    assert done.returncode == 1, done.stdout
    assert contract in " ".join(done.stdout.split()), done.stdout
