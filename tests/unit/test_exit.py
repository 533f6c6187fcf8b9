"""`flowship` and the pipeline's stage processes leave their objects to the process's end: by the last exit handler,
what is alive is frozen (out of the interpreter's shutdown collections, which took 1.5 s at the end of a training
command). Each probe registers its own handler first, so that it runs last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
from {module} import main  # noqa
sys.argv = {argv!r}
{call}
"""


def frozen_at_exit(module: str, argv: list[str], call: str, cwd: Path) -> tuple[int, int]:
    code = PROBE.format(module=module, argv=argv, call=call)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("frozen at exit:")]
    assert lines, done.stdout + done.stderr
    return done.returncode, int(lines[-1].split(":")[1])


def test_the_command_line_leaves_its_objects_to_the_process_end(tmp_path: Path) -> None:
    code, frozen = frozen_at_exit("flowship.cli.main", ["flowship", "status", "--help"], "main()", tmp_path)
    assert code == 0
    assert frozen > 10_000  # the libraries' objects at least


def test_a_stage_process_leaves_its_objects_even_when_it_fails(tmp_path: Path) -> None:
    # no params.yaml here: the stage fails, named, and exits 1
    argv = ["stages", "validate", "--params", str(tmp_path / "params.yaml")]
    code, frozen = frozen_at_exit("flowship.pipeline.stages", argv, "sys.exit(main())", tmp_path)
    assert code == 1
    assert frozen > 10_000


def test_the_probe_sees_objects_not_frozen(tmp_path: Path) -> None:
    """The probe itself: a process that freezes nothing reports nothing frozen."""
    code, frozen = frozen_at_exit("json.tool", ["python"], "pass", tmp_path)
    assert code == 0 and frozen == 0
