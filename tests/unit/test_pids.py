"""flowship.pids: whether a process still runs and what it runs, from /proc, through its whole life."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowship import pids
from tests.helpers import wait_until


def test_a_process_runs_until_it_exits_and_is_gone_once_reaped() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert child.stdin is not None
    try:
        assert pids.running(child.pid)  # from the start, while its program loads (its command line still empty)
        assert wait_until(lambda: pids.command_line(child.pid), 30, "the child's program to load") == argv
        child.stdin.close()  # it exits; not reaped yet, it is a zombie: exited, with an empty command line
        wait_until(lambda: not pids.running(child.pid), 30, "the child to exit")
        assert pids.command_line(child.pid) == []
        assert Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        child.stdin.close()
        child.kill()  # (a failed assertion above leaves it reading)
        child.wait()
    assert not pids.running(child.pid) and pids.command_line(child.pid) is None


def test_this_process_runs_and_a_kernel_thread_is_never_taken_for_a_process() -> None:
    assert pids.running(os.getpid())
    assert Path("/proc/2/comm").read_text().strip() == "kthreadd"
    assert pids.command_line(2) == [] and not pids.running(2)  # its command line reads empty, like a starting one's
