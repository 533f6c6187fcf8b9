"""`flowship score`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flowship.cli.common import ParamsOption, check_params, environment, fail
from flowship.errors import FlowshipError

SCORABLE = (".csv", ".tsv", ".parquet", ".pq")


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
    path = check_params(params, check_estimator=False)
    source, destination = input_file.resolve(), output.resolve()
    if not source.is_file():
        fail(f"INPUT {source}: no such file")
    if not any(s.lower() in SCORABLE for s in source.suffixes):
        fail(f"INPUT {source}: expected a CSV or Parquet file (.csv, .tsv, .parquet or .pq, maybe compressed)")
    if destination == source:
        fail(f"OUTPUT {destination} is the INPUT file: write the scored records elsewhere")
    if destination.is_dir():
        fail(f"OUTPUT {destination} is a directory: name the Parquet file to write")
    if version is not None and not version.isdigit():
        fail(f"--version {version!r}: expected a registered version number such as 3")
    environment(path.parent)
    from flowship.config import load_params
    from flowship.flows.compute import describe, require_server

    compute = load_params(path, check_estimator=False).compute
    try:
        # Before Prefect starts: on Dask without a server, each worker would start its own temporary API.
        require_server(compute)
    except FlowshipError as exc:
        fail(str(exc))
    os.chdir(path.parent)
    from flowship.flows.scoring import batch_scoring

    try:
        summary: dict[str, Any] = batch_scoring(
            params_path=str(path), input=str(source), output=str(destination), version=version, chunk_rows=chunk_rows
        )
    except FlowshipError as exc:
        fail(str(exc))
    model = summary["model"]
    ran_on = sorted({c["where"] for c in summary["chunks"]})
    typer.echo(f"model:         {model['name']} v{model['version']}")
    typer.echo(f"scored:        {summary['rows']} records in {len(summary['chunks'])} chunk(s), {describe(compute)}")
    typer.echo(f"ran on:        {', '.join(ran_on)}")
    typer.echo(f"output:        {summary['output']}")
