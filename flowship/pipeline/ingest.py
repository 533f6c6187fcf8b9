"""Ingest: read the source table (CSV or Parquet), join, derive the target, keep the used columns."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
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


TIME_LAYOUTS = (
    "ISO 8601 (2013-01-31, 2013-01-31 05:00, 2013-01-31T05:00:00Z), one other layout throughout the column "
    "(inferred from its first value, e.g. 2013/01/31), or the layout named by data.time_format (strftime, "
    "e.g. '%d/%m/%Y' for day-first dates)"
)


def parse_times(values: pd.Series, layout: str | None = None) -> pd.Series:
    """UTC timestamps in `layout` (strftime), else ISO 8601 at any precision, else the one layout pandas infers from
    the first value for the whole column. NaT where a value does not fit: two layouts in one column are not guessed
    apart (is 01/02 January or February?)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    text = values.astype("string")
    if layout is not None:
        return pd.to_datetime(text, utc=True, errors="coerce", format=layout)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        with warnings.catch_warnings():  # "could not infer format": then every value is NaT, and said so below
            warnings.simplefilter("ignore", UserWarning)
            inferred = pd.to_datetime(text, utc=True, errors="coerce")
        if inferred.notna().sum() > parsed.notna().sum():
            parsed = inferred
    return parsed


@dataclass(frozen=True)
class Ingested:
    """The modelling table, and how many rows of the source it leaves out for want of a target value."""

    frame: pd.DataFrame
    target_missing: int

    def report(self) -> dict[str, int]:
        return {"rows": len(self.frame), "target_missing": self.target_missing}


def ingest(cfg: DataConfig, root: Path) -> Ingested:
    """The modelling table: time column (if any), features and target, one row per example with a target value."""
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
    unknown = 0
    if target.derive_from is not None:
        _require(frame, [target.derive_from], "target source", source)
        values = pd.to_numeric(frame[target.derive_from], errors="coerce")
        known = values.notna()
        unknown = int((~known).sum())
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
    unknown += int(unlabeled.sum())
    if unknown:
        log.info("left out %d row(s) without a value of the target %r", unknown, target.derive_from or target.column)

    if cfg.time_column:
        parsed = parse_times(frame[cfg.time_column], cfg.time_format)
        bad = frame.loc[parsed.isna(), cfg.time_column]
        if len(bad):
            accepted = f"the layout {cfg.time_format!r} (data.time_format)" if cfg.time_format else TIME_LAYOUTS
            raise DataLoadError(
                f"{source}: time column {cfg.time_column!r} has {len(bad)} value(s) that are not "
                f"timestamps, e.g. {bad.head(3).tolist()}; accepted: {accepted}"
            )
        frame[cfg.time_column] = parsed
        frame = frame.sort_values(cfg.time_column, kind="stable")
    for column in cfg.features.categorical:
        frame[column] = frame[column].astype("string")
    return Ingested(frame.reset_index(drop=True), unknown)
