"""Batch scoring tasks: find the registered version, cut the input into checked chunks, score one chunk, write."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prefect import get_run_logger, task

from flowship.adapters.tracking import CHAMPION, Tracker, VersionRef
from flowship.errors import RegistryError
from flowship.pipeline import scoring
from flowship.serving.bundle import BundleMetadata, load_bundle
from flowship.tasks.common import Context, is_transient


@task(name="resolve_model", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient)
def resolve_model(ctx: Context, version: str | None) -> VersionRef:
    """The registered version to score with: the champion unless one is named (as the release flow's ref)."""
    tracker = Tracker(ctx.root)
    tracker.check_available()
    name = ctx.params.project.name
    if version is None:
        ref = tracker.version_by_alias(name, CHAMPION)
        if ref is None:
            raise RegistryError(
                f"{name} has no {CHAMPION!r} version: release one with `flowship deploy`, or name one with --version"
            )
    else:
        ref = tracker.version(name, version)
    get_run_logger().info("scoring with %s v%s (%s)", name, ref.version, ref.uri)
    return ref


def model_inputs(metadata: BundleMetadata) -> scoring.ModelInputs:
    return scoring.ModelInputs(
        numeric=list(metadata.features.numeric),
        categorical=list(metadata.features.categorical),
        classification=metadata.task == "classification",
    )


@task(name="split_input")
def split_input(input_path: str, bundle: str, chunk_rows: int, folder: str) -> scoring.InputSplit:
    """Read the records, check them against the model's features, and cut them into chunk files in `folder`."""
    source = Path(input_path)
    frame = scoring.read_records(source)
    scoring.check_features(frame, model_inputs(load_bundle(bundle).metadata), source)
    parts = scoring.split_into_chunks(frame, chunk_rows, Path(folder))
    get_run_logger().info("%s: %d records, %d columns, %d chunk(s)", source, len(frame), len(frame.columns), len(parts))
    return scoring.InputSplit(len(frame), tuple(str(c) for c in frame.columns), tuple(str(p) for p in parts))


def _where() -> str:
    """The Dask worker (or the thread) this runs in."""
    try:
        from distributed import get_worker

        return f"dask worker {get_worker().address}"
    except (ImportError, ValueError):  # ValueError: not inside a Dask worker
        return f"thread {threading.current_thread().name} (pid {os.getpid()})"


@task(name="score_chunk", task_run_name="chunk-{index}")
def score_chunk(index: int, bundle: str, part: str) -> scoring.ChunkRun:
    """Score one chunk file with the bundle's model; the outputs go to a file beside it."""
    loaded = load_bundle(bundle)
    done = scoring.score_chunk(loaded.pipeline, Path(part), model_inputs(loaded.metadata))
    where = _where()
    get_run_logger().info("chunk %d: %d records in %.2f s on %s", index, done.rows, done.seconds, where)
    return scoring.ChunkRun(index, done.rows, done.seconds, where, done.outputs)


@task(name="write_output")
def write_output(parts: list[str], outputs: list[str], output: str) -> int:
    """The records and their outputs as one Parquet file, renamed into place only once it is complete."""
    rows = scoring.write_scored([Path(p) for p in parts], [Path(o) for o in outputs], Path(output))
    get_run_logger().info("wrote %d scored records to %s", rows, output)
    return rows
