"""Ingest: read the source table (CSV or Parquet), join, derive the target, keep the used columns."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from flowship.config import DataConfig
from flowship.errors import DataLoadError

log = logging.getLogger(__name__)


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".csv" in suffixes or ".tsv" in suffixes:
        return "csv"
    raise DataLoadError(f"{path}: cannot tell the format from the file name; set data.format to 'csv' or 'parquet'")


def read_table(path: Path, declared_format: str = "auto") -> pd.DataFrame:
    if not path.exists():
        raise DataLoadError(f"data file not found: {path}")
    if path.is_dir():
        raise DataLoadError(f"data source is a directory, expected a file: {path}")
    fmt = _format_of(path, declared_format)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            tsv = ".tsv" in [s.lower() for s in path.suffixes]
            frame = pd.read_csv(path, sep="\t" if tsv else ",", low_memory=False)
    except PermissionError as exc:
        raise DataLoadError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # noqa: BLE001 - each reader has its own error types; name the file
        raise DataLoadError(f"{path}: not a readable {fmt} file ({type(exc).__name__}: {exc})") from None
    if frame.empty:
        raise DataLoadError(f"{path}: the file holds no rows")
    return frame


def _require(frame: pd.DataFrame, columns: list[str], what: str, path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataLoadError(
            f"{path}: {what} column(s) not found: {missing}; available: {sorted(map(str, frame.columns))}"
        )


def parse_times(values: pd.Series) -> pd.Series:
    """UTC timestamps: ISO 8601 at any precision; other layouts are inferred value by value. NaT where unreadable."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return parsed


def ingest(cfg: DataConfig, root: Path) -> pd.DataFrame:
    """The modelling table: time column (if any), features and target, one row per example."""
    source = root / cfg.source
    frame = read_table(source, cfg.format)
    if cfg.join is not None:
        other_path = root / cfg.join.source
        other = read_table(other_path)
        _require(frame, cfg.join.by, "join key", source)
        _require(other, cfg.join.by, "join key", other_path)
        other = other.drop_duplicates(subset=cfg.join.by)
        overlap = (set(frame.columns) & set(other.columns)) - set(cfg.join.by)
        frame = frame.merge(other.drop(columns=list(overlap)), on=cfg.join.by, how=cfg.join.how)

    target = cfg.target
    if target.derive_from is not None:
        _require(frame, [target.derive_from], "target source", source)
        values = pd.to_numeric(frame[target.derive_from], errors="coerce")
        known = values.notna()
        dropped = int((~known).sum())
        if dropped:
            log.info("dropped %d row(s) without %s", dropped, target.derive_from)
        frame = frame.loc[known].copy()
        frame[target.column] = (values[known] > target.above).astype("int64")

    keep = [*([cfg.time_column] if cfg.time_column else []), *cfg.features.all, target.column]
    _require(frame, [target.column], "target", source)
    _require(frame, cfg.features.all, "feature", source)
    if cfg.time_column:
        _require(frame, [cfg.time_column], "time", source)
    frame = frame[keep].copy()

    unlabeled = frame[target.column].isna()
    if unlabeled.all():
        raise DataLoadError(f"{source}: target column {target.column!r} is empty in every row")
    frame = frame.loc[~unlabeled]

    if cfg.time_column:
        parsed = parse_times(frame[cfg.time_column])
        bad = frame.loc[parsed.isna(), cfg.time_column]
        if len(bad):
            raise DataLoadError(
                f"{source}: time column {cfg.time_column!r} has {len(bad)} value(s) that are not "
                f"timestamps, e.g. {bad.head(3).tolist()}"
            )
        frame[cfg.time_column] = parsed
        frame = frame.sort_values(cfg.time_column, kind="stable")
    for column in cfg.features.categorical:
        frame[column] = frame[column].astype("string")
    return frame.reset_index(drop=True)
