"""What Linux's /proc says about a process flowship started: whether it still runs, and its command line.

One home for both, used by the local services (`flowship up`), the serving replicas and the host's nginx. Two
windows make a live process look gone to a naive check of its command line, which reads empty in both: right after
it is started (the kernel still loading its program) and while it exits (its memory released, its files, so its
port, not yet). A process counts as gone only once it is a zombie or has left /proc.
"""

from __future__ import annotations

from pathlib import Path

# /proc/<pid>/stat's flag of a kernel thread (its command line reads empty too; never one of ours)
_PF_KTHREAD = 0x00200000


def running(pid: int) -> bool:
    """`pid` is a process (not a kernel thread) that has not exited: neither a zombie nor gone from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return False
    return state not in ("Z", "X") and not flags & _PF_KTHREAD


def command_line(pid: int) -> list[str] | None:
    """The arguments `pid` runs with; [] while it is being started or exiting (see the module's docstring), None
    when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
