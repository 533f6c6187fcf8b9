"""What every task shares: the run context, who acts in the audit log, and the retry condition for transient
failures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import State, Task
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run

from flowship.audit import Actor
from flowship.config import Params
from flowship.errors import DockerUnavailable, RemoteUnavailable, TrackingUnavailable
from flowship.paths import Layout

TRANSIENT = (TrackingUnavailable, RemoteUnavailable, DockerUnavailable, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Context:
    """The typed params and the project root, handed to every task."""

    params: Params
    root: Path

    @property
    def layout(self) -> Layout:
        return Layout(self.root)


def run_actor() -> Actor:
    """Who changes production from a task: its Prefect flow run; the OS user when the task runs outside one."""
    run_id = flow_run.id
    return Actor.current_user() if not run_id else Actor.flow_run(str(run_id), flow_run.name)


def is_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what a network or a daemon may fix by itself; data and gate errors fail at once."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False
