"""The batch scoring flow: registered version → model bundle → input checked and cut into chunks → chunks scored
in parallel (threads, or a Dask cluster, as `compute` says) → one Parquet output, renamed into place when whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flowship.errors import ConfigError
from flowship.flows import compute
from flowship.flows.training import context
from flowship.pipeline import scoring as library
from flowship.tasks import release, scoring
from flowship.tasks.common import Context


@flow(name="score-chunks", description="Score the chunk files in parallel, on the engine of `compute`.")
def score_chunks(bundle: str, parts: list[str]) -> list[dict[str, Any]]:
    return scoring.score_chunk.map(range(len(parts)), bundle, parts).result()


def run_chunks(ctx: Context, bundle: str, parts: list[str]) -> list[dict[str, Any]]:
    """The chunks as a subflow whose task runner comes from the params (a flow's own runner is fixed at import)."""
    runner = compute.task_runner(ctx.params.compute, max_threads=os.cpu_count() or 1)
    return score_chunks.with_options(task_runner=runner)(bundle, parts)


@flow(name="batch-scoring", description="Score a CSV or Parquet file with a registered version; write Parquet.")
def batch_scoring(
    params_path: str = "params.yaml",
    input: str = "",
    output: str = "",
    version: str | None = None,
    chunk_rows: int = 50_000,
) -> dict[str, Any]:
    ctx = context(params_path)
    compute.require_server(ctx.params.compute)
    source, destination = resolve_paths(ctx, input, output, chunk_rows)
    ref = scoring.resolve_model(ctx, version)
    bundle = release.export_bundle(ctx, ref)
    folder = library.work_folder(destination)
    try:
        split = scoring.split_input(str(source), bundle, chunk_rows, str(folder))
        chunks = run_chunks(ctx, bundle, split["parts"])
        rows = scoring.write_output(split["parts"], [c["outputs"] for c in chunks], str(destination))
    finally:
        library.remove_work_folder(folder)
    summary = {
        "model": {"name": ref.name, "version": ref.version, "uri": ref.uri},
        "input": str(source),
        "output": str(destination),
        "rows": rows,
        "chunk_rows": chunk_rows,
        "chunks": [{k: c[k] for k in ("index", "rows", "seconds", "where")} for c in chunks],
        "engine": compute.describe(ctx.params.compute),
    }
    create_markdown_artifact(key="batch-scoring", markdown=summary_markdown(summary), description="what was scored")
    return summary


def resolve_paths(ctx: Context, input: str, output: str, chunk_rows: int) -> tuple[Path, Path]:
    """Input and output, relative to the project root; refused at once when they cannot work."""
    problems = []
    if not input:
        problems.append("input: the file of records to score is required")
    if not output:
        problems.append("output: the Parquet file to write is required")
    if chunk_rows < 1:
        problems.append(f"chunk_rows: must be at least 1 (got {chunk_rows})")
    if problems:
        raise ConfigError(problems)
    source, destination = (ctx.root / input).resolve(), (ctx.root / output).resolve()
    if source == destination:
        raise ConfigError([f"output: {destination} is the input file; write the scored records elsewhere"])
    return source, destination


def summary_markdown(summary: dict[str, Any]) -> str:
    model = summary["model"]
    lines = [
        "# Batch scoring\n",
        f"- model: {model['name']} v{model['version']} (`{model['uri']}`)",
        f"- input: `{summary['input']}`",
        f"- output: `{summary['output']}`",
        f"- rows: {summary['rows']} in {len(summary['chunks'])} chunk(s) of at most {summary['chunk_rows']}",
        f"- engine: {summary['engine']}",
        "",
        "| chunk | rows | seconds | ran on |",
        "| --- | --- | --- | --- |",
        *(f"| {c['index']} | {c['rows']} | {c['seconds']:.2f} | {c['where']} |" for c in summary["chunks"]),
    ]
    return "\n".join(lines) + "\n"
