"""`flowship init`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from flowship.cli.common import fail
from flowship.errors import FlowshipError

DataArgument = Annotated[
    Path, typer.Argument(help="The data: a CSV or Parquet file (copied under data/raw/ if it is elsewhere).")
]
WrittenParams = Annotated[Path, typer.Option("--params", help="The params file to write.")]


def init(
    data: DataArgument,
    target: str = typer.Option(..., "--target", help="The column to predict."),
    time_column: str | None = typer.Option(
        None, "--time-column", help="A timestamp column: the split then goes by time (default: a random split)."
    ),
    time_format: str | None = typer.Option(
        None, "--time-format", help="The time column's layout when not ISO 8601 (strftime, e.g. '%d/%m/%Y')."
    ),
    task: str | None = typer.Option(
        None, "--task", help="classification | regression (default: inferred from the target, and said)."
    ),
    params: WrittenParams = Path("params.yaml"),
    force: bool = typer.Option(False, "--force", help="Replace an existing params file."),
) -> None:
    """Profile DATA and write a complete, commented params.yaml for it: features, validation rules, split, gate,
    monitoring; then `make run` trains, releases and monitors it."""
    from flowship.onboarding.draft import init_project

    if task not in (None, "classification", "regression"):
        fail(f"--task {task!r}: expected classification or regression")
    chosen = cast(Literal["classification", "regression"] | None, task)
    if not data.exists():
        fail(f"DATA {data}: no such file")
    root = params.resolve().parent
    try:
        draft = init_project(data, target, root, time_column, chosen, force, time_format)
    except FlowshipError as exc:
        fail(str(exc))
    prof, raw = draft.profile, draft.raw
    copied = f"; copied from {draft.copied_from}" if draft.copied_from else ""
    typer.echo(f"data:          {draft.source} ({prof.rows} rows with a target value{copied})")
    if prof.target_missing:
        typer.echo(f"               {prof.target_missing} rows without a target value: left out of training")
    typer.echo(f"task:          {prof.task} ({prof.task_reason}; --task to change)")
    features = raw["data"]["features"]
    typer.echo(f"features:      {len(features['numeric'])} numeric, {len(features['categorical'])} categorical")
    for gone in prof.left_out:
        typer.echo(f"left out:      {gone.name}: {gone.reason}")
    if draft.associated:
        typer.echo(f"check:         most associated with the target: {draft.associated_text}")
        typer.echo("               (a column known only after the target leaks the answer: remove it from params.yaml)")
    split = raw["split"]
    if split["method"] == "time":
        typer.echo(
            f"split:         by {prof.time_column}: train {split['train_start']} to {split['train_end']}, "
            f"production {split['production_start']} to {split['production_end']}"
        )
    else:
        typer.echo(f"split:         random: {split['holdout_fraction']:.0%} holdout, "
                   f"{split['production_fraction']:.0%} production share")  # fmt: skip
    primary = draft.primary
    typer.echo(
        f"gate:          {primary} {raw['gate']['thresholds'][primary]} "
        f"(a quick baseline scored {draft.baseline[primary]:.4f} on the holdout)"
    )
    typer.echo(f"monitoring:    key features {', '.join(draft.key_features)}")
    release = raw["release"]
    typer.echo(f"ports:         {release['production_port']} production, {release['staging_port']} staging")
    typer.echo(f"wrote:         {draft.params_path}; next: `make run` (train, release, replay, monitor)")
