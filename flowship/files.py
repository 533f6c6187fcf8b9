"""Durable files: whole files replaced atomically, append-only logs, and JSON-lines logs read back.

A replaced file is written to a temporary file in the same folder, flushed and fsync'ed, renamed onto its
name, and the folder is fsync'ed: a reader (or a restart after a crash) sees the old file or the new one,
never a part of either. Appends go to the end of the file in one write and are fsync'ed before returning.

Standard library only: the serving image carries this module (`SERVING_CODE` in
`flowship.adapters.docker_engine`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")
Line = TypeVar("Line", str, bytes)

JSONL_SUFFIX = ".jsonl"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` for a writer that wants a file name (Parquet, pickle, a copy).

    When the block ends, the file written there replaces `target` durably; when it raises, the temporary
    file is removed and `target` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent)


def atomic_write(target: Path, data: bytes | str) -> None:
    """Replace `target` with `data` (text is written as UTF-8), durably: see the module's docstring."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            _write_all(fd, payload)
        finally:
            os.close(fd)


def append_durably(path: Path, data: bytes) -> None:
    """Append `data` (whole lines) to `path` and fsync it; a last line cut by a crash is ended first, so only
    that line is lost. The folder is fsync'ed too when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if ends_mid_line(path, size):
            data = b"\n" + data
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not size:
        _fsync(path.parent)


def digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ends_mid_line(path: Path, size: int) -> bool:
    """Whether the first `size` bytes of `path` end inside a line (a writer stopped mid-line)."""
    if not size:
        return False
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) != b"\n"


def parse_lines(lines: Iterable[Line], parse: Callable[[Line], R | None]) -> tuple[list[R], int]:
    """Each non-blank line of a JSON-lines log, parsed; a line `parse` cannot read (None: cut by a crash,
    corrupt) is counted, not kept."""
    records: list[R] = []
    skipped = 0
    for raw in lines:
        if not raw.strip():
            continue
        record = parse(raw)
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return records, skipped


WRITER_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_DAILY_NAME = re.compile(rf"(\d{{8}})(?:\.({WRITER_PATTERN}))?")


def daily_path(folder: Path, prefix: str, day: date, writer: str | None = None) -> Path:
    """A log's file for one UTC day: `<prefix><YYYYMMDD>.jsonl`, or `<prefix><YYYYMMDD>.<writer>.jsonl` for one of
    several processes writing the same log (replicas of a service: each appends to its own file)."""
    middle = f"{day:%Y%m%d}" if writer is None else f"{day:%Y%m%d}.{writer}"
    return folder / f"{prefix}{middle}{JSONL_SUFFIX}"


def daily_paths(folder: Path, prefix: str, first: date | None = None, last: date | None = None) -> list[Path]:
    """A log's daily files (every writer's) from day `first` to day `last` (both included; None: no bound), oldest
    day first. Files whose name `daily_path` would not give are passed over."""
    paths = []
    for path in sorted(folder.glob(f"{prefix}*{JSONL_SUFFIX}")):
        match = _DAILY_NAME.fullmatch(path.name[len(prefix) : -len(JSONL_SUFFIX)])
        if match is None:
            continue
        try:
            day = datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        if (first is None or day >= first) and (last is None or day <= last):
            paths.append(path)
    return paths


def _reserve(target: Path) -> Path:
    # O_EXCL: a name no other writer holds; the mode follows the umask, as for a file written in place.
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def _write_all(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):  # one write for a regular file; the loop only guards a short write
        done += os.write(fd, data[done:])


def _fsync(path: Path) -> None:
    """fsync a file, or a folder: a rename (or a new file's entry) is durable only once its folder is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
