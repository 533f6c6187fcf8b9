"""The batch scoring flow: registered version → model bundle → input checked and cut into chunks → chunks scored
in parallel (threads, or a Dask cluster, as `compute` says) → one Parquet output, renamed into place when whole."""

from __future__ import annotations

import os

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flowship.config import Params  # at run time: Prefect reads the flow's annotations
from flowship.flows import compute
from flowship.flows.training import context
from flowship.pipeline import scoring as library
from flowship.tasks import release, scoring
from flowship.tasks.common import Context


@flow(name="score-chunks", description="Score the chunk files in parallel, on the engine of `compute`.")
def score_chunks(bundle: str, parts: list[str]) -> list[library.ChunkRun]:
    return scoring.score_chunk.map(range(len(parts)), bundle, parts).result()


def run_chunks(ctx: Context, bundle: str, parts: list[str]) -> list[library.ChunkRun]:
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
    params: Params | None = None,
) -> library.ScoringSummary:
    """The CLI, which has read and checked params.yaml, hands `params` over: the file is read once per command."""
    ctx = context(params_path, params=params)
    compute.require_server(ctx.params.compute)
    # The same checks as `flowship score` makes before Prefect starts: deployment runs and direct calls get them too.
    source, destination = library.check_request(ctx.root, input, output, version, chunk_rows)
    ref = scoring.resolve_model(ctx, version)
    bundle = release.export_bundle(ctx, ref)
    folder = library.work_folder(destination)
    try:
        split = scoring.split_input(str(source), bundle, chunk_rows, str(folder))
        chunks = run_chunks(ctx, bundle, list(split.parts))
        rows = scoring.write_output(list(split.parts), [c.outputs for c in chunks], str(destination))
    finally:
        library.remove_work_folder(folder)
    summary = library.ScoringSummary(
        model=library.ScoredModel(ref.name, ref.version, ref.uri),
        input=str(source),
        output=str(destination),
        rows=rows,
        chunk_rows=chunk_rows,
        chunks=tuple(chunks),
        engine=compute.describe(ctx.params.compute),
    )
    create_markdown_artifact(key="batch-scoring", markdown=summary.markdown(), description="what was scored")
    return summary
