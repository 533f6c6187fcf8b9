"""dvc.yaml lists the code each stage runs: what a stage's process imports of flowship is exactly its code
deps, and editing a stage's code (in a copy of the project) makes `dvc status` name that stage and no other."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowship.paths import STAGES
from tests.conftest import Project, build_project, default_params, flights_data, run

# Every dvc.yaml stage runs `python -m flowship.pipeline.stages NAME`: this `sitecustomize` (on PYTHONPATH for
# `dvc repro` only) records which flowship files such a process imported by the time it exits.
RECORDER = textwrap.dedent(
    """
    import atexit, json, os, sys

    def _record():
        if not sys.argv[0].endswith(os.path.join("flowship", "pipeline", "stages.py")):
            return
        # `python -m` runs stages.py itself as __main__
        files = sorted(
            {m.__file__ for name, m in list(sys.modules.items())
             if name.split(".")[0] in ("flowship", "__main__") and getattr(m, "__file__", None)}
        )
        with open(os.path.join(os.environ["FLOWSHIP_IMPORTS_DIR"], sys.argv[-1] + ".json"), "w") as out:
            json.dump(files, out)

    atexit.register(_record)
    """
)


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory, flights_sample: Path) -> tuple[Project, dict[str, set[str]]]:
    """A project after a clean `dvc repro`, and the flowship files each stage's process imported."""
    base = tmp_path_factory.mktemp("stage-deps")
    project = build_project(base / "project", flights_data(flights_sample), default_params(), base / "remote")
    recorder, imports = base / "recorder", base / "imports"
    recorder.mkdir()
    imports.mkdir()
    (recorder / "sitecustomize.py").write_text(RECORDER)
    run(["dvc", "repro"], project.root, env={"PYTHONPATH": str(recorder), "FLOWSHIP_IMPORTS_DIR": str(imports)})
    assert status(project) == {}, "dvc status right after dvc repro"
    imported = {}
    for stage in STAGES:
        files = {Path(f).resolve() for f in json.loads((imports / f"{stage}.json").read_text())}
        # the project's own copy of the package ran (python -m puts the project root first on sys.path)
        assert all(f.is_relative_to(project.root.resolve()) for f in files), files
        imported[stage] = {f.relative_to(project.root.resolve()).as_posix() for f in files}
    return project, imported


def status(project: Project) -> dict[str, Any]:
    done = run(["dvc", "status", "--json"], project.root)
    result: dict[str, Any] = json.loads(done.stdout or "{}")
    return {name.rsplit(":", 1)[-1]: changes for name, changes in result.items()}


def code_deps(project: Project, stage: str) -> set[str]:
    deps = yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return {d for d in deps if d.startswith("flowship/")}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_lists_exactly_the_flowship_code_its_process_imports(
    repro: tuple[Project, dict[str, set[str]]], stage: str
) -> None:
    project, imported = repro
    # package __init__ files hold docstrings only: they are not listed
    ran = {f for f in imported[stage] if not f.endswith("__init__.py")}
    assert code_deps(project, stage) == ran


@pytest.mark.parametrize(
    ("edited", "stages"),
    [
        ("flowship/pipeline/ingest.py", {"ingest"}),
        ("flowship/pipeline/prepare.py", {"prepare"}),
        ("flowship/pipeline/search.py", {"train"}),
        ("flowship/pipeline/training.py", {"train", "evaluate"}),
        ("flowship/config.py", set(STAGES)),
    ],
)
def test_editing_a_stages_code_makes_dvc_status_name_that_stage_only(
    repro: tuple[Project, dict[str, set[str]]], edited: str, stages: set[str]
) -> None:
    project, _ = repro
    path = project.root / edited
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        changed = status(project)
    finally:
        path.write_text(original)
    assert set(changed) == stages
    for stage in stages:
        assert changed[stage] == [{"changed deps": {edited: "modified"}}]
