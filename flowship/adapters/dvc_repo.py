"""DVC: data versions, stage status and the lock file. The only module that imports dvc."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from flowship.errors import RemoteUnavailable, StageError

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# DVC holds a repository lock while it works; calls from the threads of one process take turns.
_LOCK = threading.RLock()


class DvcProject:
    """A DVC repository at `root`; calls are serialised (DVC holds a repo lock while it works)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _stage(self, name: str) -> str:
        # Absolute, so DVC resolves it whatever the working directory is.
        return f"{self.root / 'dvc.yaml'}:{name}"

    @contextlib.contextmanager
    def _repo(self) -> Iterator[Any]:
        """An open Repo, with the working directory at its root: some DVC commands resolve paths from it."""
        from dvc.repo import Repo

        # DVC's own INFO lines ("Updating lock file", git hints) repeat what the caller reports.
        logging.getLogger("dvc").setLevel(logging.WARNING)
        with _LOCK:
            self._reset_unreadable_stage_locks()
            with contextlib.chdir(self.root), Repo(str(self.root)) as repo:
                yield repo

    def _reset_unreadable_stage_locks(self) -> None:
        """DVC rewrites its file of stage locks (`.dvc/tmp/rwlock`) in place: a process killed meanwhile (a worker
        that died mid-run) leaves it unreadable, and every later DVC command fails on it. Its entries only name
        the processes holding stage locks, and DVC already drops those of processes that are gone: a file that
        names none readably is reset, under DVC's own guard of that file (so a write in progress is never seen)."""
        from dvc.lock import make_lock
        from dvc.rwlock import RWLOCK_FILE, RWLOCK_LOCK

        tmp = self.root / ".dvc" / "tmp"
        path = tmp / RWLOCK_FILE
        if not path.exists():
            return
        with make_lock(str(tmp / RWLOCK_LOCK), tmp_dir=str(tmp), wait=True):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except ValueError:  # not JSON, or not text
                logging.getLogger(__name__).warning("%s was unreadable (a DVC process died writing it): reset", path)
                path.unlink(missing_ok=True)

    def version_data(self, path: str) -> str:
        """Track `path` with DVC and return its content hash. Unchanged since its `.dvc` file (as `dvc status` sees
        it: DVC's state of file sizes and times, and the cache holding it), nothing is added: `dvc add` would rewrite
        the same file (a tenth of a second or more at each training run)."""
        from dvc.exceptions import DvcException

        target = self.root / path
        if not target.exists():
            raise StageError(f"{target}: nothing to version (the data folder does not exist)")
        tracked = self.root / f"{path}.dvc"
        try:
            with self._repo() as repo:
                if tracked.exists() and not repo.status(targets=[str(tracked)]):
                    return self.tracked_hash(path)
                repo.add(str(target))
        except DvcException as exc:
            raise StageError(f"dvc add {path} failed: {exc}") from exc
        return self.tracked_hash(path)

    def tracked_hash(self, path: str) -> str:
        meta = yaml.safe_load((self.root / f"{path}.dvc").read_text())
        return str(meta["outs"][0]["md5"])

    def stage_changes(self, stage: str) -> dict[str, Any]:
        """What changed since the stage last ran ({} when it is up to date)."""
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                status: dict[str, Any] = repo.status(targets=[self._stage(stage)])
        except DvcException as exc:
            raise StageError(f"dvc status {stage} failed: {exc}") from exc
        return status

    def remove_outputs(self, stage: str) -> None:
        """Remove the stage's outputs, as `dvc repro` does before it runs a stage: its outputs then hold what this
        run writes and nothing an earlier run left (a plot a setting has turned off, a file an older version wrote)."""
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo, repo.lock:  # held as `dvc repro` holds it
                for found in repo.stage.collect(self._stage(stage)):
                    found.remove_outs(ignore_remove=False, force=False)
        except DvcException as exc:
            raise StageError(f"removing the outputs of {stage} failed: {exc}") from exc

    def commit(self, stage: str) -> None:
        """Record the stage's current deps, params and outputs in dvc.lock and the cache."""
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                repo.commit(self._stage(stage), force=True)
        except DvcException as exc:
            raise StageError(f"dvc commit {stage} failed: {exc}") from exc

    def default_remote(self) -> str | None:
        """The name of the default DVC remote, or None when none is configured."""
        with self._repo() as repo:
            name = repo.config["core"].get("remote")
        return str(name) if name else None

    def push(self) -> int:
        """Send every cached version the pipeline tracks to the default remote; returns the files sent."""
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                return int(repo.push())
        except DvcException as exc:
            raise RemoteUnavailable(f"dvc push to remote {self._remote_label()} failed: {exc}") from exc

    def pull(self, targets: list[str] | None = None) -> None:
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                repo.pull(targets=targets)
        except DvcException as exc:
            raise RemoteUnavailable(f"dvc pull from remote {self._remote_label()} failed: {exc}") from exc

    def object_path(self, md5: str, what: str) -> Path:
        """The cached file DVC tracked with this md5: from the local cache, else pulled from the default remote.

        `what` names the file in errors. Raises RemoteUnavailable when the remote cannot be reached and
        StageError when the version is neither in the cache nor on the remote.
        """
        from dvc.exceptions import DvcException
        from dvc_data.hashfile.hash_info import HashInfo

        with self._repo() as repo:
            odb = repo.cache.local
            if not odb.exists(md5):
                remote = repo.config["core"].get("remote")
                if not remote:
                    raise StageError(f"{what} (md5 {md5}) is not in the DVC cache and no DVC remote is configured")
                try:
                    repo.cloud.pull([HashInfo("md5", md5)])
                except DvcException as exc:
                    raise RemoteUnavailable(
                        f"could not pull {what} (md5 {md5}) from DVC remote {remote!r}: {exc}"
                    ) from exc
                if not odb.exists(md5):
                    raise StageError(f"{what} (md5 {md5}) is neither in the DVC cache nor on DVC remote {remote!r}")
            return Path(odb.oid_to_path(md5))

    def _remote_label(self) -> str:
        try:
            return repr(self.default_remote())
        except Exception:  # noqa: BLE001 - only used to word an error message
            return "(unknown)"

    def pipeline_changes(self) -> dict[str, Any]:
        """Everything `dvc status` reports for the whole project: stages and tracked data ({} when clean)."""
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                status: dict[str, Any] = repo.status()
        except DvcException as exc:
            raise StageError(f"dvc status failed: {exc}") from exc
        return status

    def lock_hashes(self) -> dict[str, str]:
        """Output path -> md5 from dvc.lock: the data and artifact versions used for lineage."""
        lock_file = self.root / "dvc.lock"
        if not lock_file.exists():
            return {}
        lock = yaml.safe_load(lock_file.read_text()) or {}
        hashes = {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs", []):
                hashes[out["path"]] = out["md5"]
        return hashes


def describe_changes(status: dict[str, Any]) -> str:
    """dvc status output in one line: 'changed deps: data/raw; changed params: train'."""
    parts = []
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, str):
                parts.append(entry)
                continue
            for kind, changes in entry.items():
                if isinstance(changes, dict):
                    items = ", ".join(f"{k} ({v})" for k, v in changes.items())
                else:
                    items = str(changes)
                parts.append(f"{kind}: {items}")
    return "; ".join(parts) or "up to date"
