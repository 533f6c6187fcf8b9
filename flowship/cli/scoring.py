"""`flowship score`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flowship.cli.common import ParamsOption, environment, fail, read_params
from flowship.errors import ConfigError, FlowshipError


def score(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="CSV or Parquet file of records: the model's features as columns (others are kept)."
        ),
    ],
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="The Parquet file to write: every input column plus prediction (and probability)."
        ),
    ],
    params: ParamsOption = Path("params.yaml"),
    version: str | None = typer.Option(
        None, "--version", help="Score with this registered version (default: the champion)."
    ),
    chunk_rows: int = typer.Option(50_000, "--chunk-rows", min=1, help="Records per chunk; each chunk is one task."),
) -> None:
    """Score a file of records with a registered version, chunk by chunk on threads or a Dask cluster (params.yaml
    `compute`), into one Parquet file that appears only when complete."""
    path = params.resolve()
    cfg = read_params(path, check_estimator=False)
    from flowship.pipeline.scoring import RequestNames, check_request

    names = RequestNames(input="INPUT", output="OUTPUT", version="--version", chunk_rows="--chunk-rows")
    try:
        source, destination = check_request(Path.cwd(), str(input_file), str(output), version, chunk_rows, names)
    except ConfigError as exc:
        fail("; ".join(exc.problems))
    environment(path.parent)
    from flowship.flows.compute import describe, require_server

    compute = cfg.compute
    try:
        # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
        require_server(compute)
    except FlowshipError as exc:
        fail(str(exc))
    os.chdir(path.parent)
    from flowship.flows.scoring import batch_scoring

    try:
        summary = batch_scoring(
            params_path=str(path),
            input=str(source),
            output=str(destination),
            version=version,
            chunk_rows=chunk_rows,
            params=cfg,
        )
    except FlowshipError as exc:
        fail(str(exc))
    typer.echo(f"model:         {summary.model.name} v{summary.model.version}")
    typer.echo(f"scored:        {summary.rows} records in {len(summary.chunks)} chunk(s), {describe(compute)}")
    typer.echo(f"ran on:        {', '.join(summary.ran_on)}")
    typer.echo(f"output:        {summary.output}")
