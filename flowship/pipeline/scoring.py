"""Batch scoring: a CSV or Parquet file of records in, the same records with the model's outputs out (Parquet).

The input is checked against the model's features and cut into chunk files before anything is scored; each chunk
is scored on its own (in a thread or on a Dask worker) into a small file of outputs; the output is then written
in one pass to a temporary file beside it and renamed into place, so a failure never leaves a partial output.

pandas, NumPy and pyarrow are imported by the functions that use them: `flowship score` checks its arguments
with `check_request` before anything heavy loads, so a wrong argument is refused in about a second.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowship.errors import ConfigError, DataLoadError
from flowship.files import atomic_path

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "prediction"
# classifiers: the probability the model gives its own prediction (the serving app's probability of that class)
PROBABILITY = "probability"
EXAMPLES = 3
# The files batch scoring reads, maybe compressed (records.csv.gz).
SCORABLE = (".csv", ".tsv", ".parquet", ".pq")


@dataclass(frozen=True)
class RequestNames:
    """How the caller names the parts of a scoring request in its errors: the flow's parameters by default; the
    command line names its arguments and options."""

    input: str = "input"
    output: str = "output"
    version: str = "version"
    chunk_rows: str = "chunk_rows"


FLOW_NAMES = RequestNames()


def check_request(
    root: Path, input: str, output: str, version: str | None, chunk_rows: int, names: RequestNames = FLOW_NAMES
) -> tuple[Path, Path]:
    """The input and output files (relative to `root`), refused at once when they cannot work: a `ConfigError`
    with every problem, each naming the argument at fault as `names` says."""
    problems = []
    if not input:
        problems.append(f"{names.input}: the file of records to score is required")
    if not output:
        problems.append(f"{names.output}: the Parquet file to write is required")
    if chunk_rows < 1:
        problems.append(f"{names.chunk_rows}: must be at least 1 (got {chunk_rows})")
    if problems:
        raise ConfigError(problems)
    source, destination = (root / input).resolve(), (root / output).resolve()
    if not source.is_file():
        problems.append(f"{names.input} {source}: no such file")
    elif not any(s.lower() in SCORABLE for s in source.suffixes):
        problems.append(
            f"{names.input} {source}: expected a CSV or Parquet file (.csv, .tsv, .parquet or .pq, maybe compressed)"
        )
    if destination == source:
        problems.append(f"{names.output} {destination} is the {names.input} file: write the scored records elsewhere")
    elif destination.is_dir():
        problems.append(f"{names.output} {destination} is a directory: name the Parquet file to write")
    if version is not None and not version.isdigit():
        problems.append(f"{names.version} {version!r}: expected a registered version number such as 3")
    if problems:
        raise ConfigError(problems)
    return source, destination


@dataclass(frozen=True)
class ModelInputs:
    """What the model expects: its features by kind (from the registered version's signature) and its task."""

    numeric: list[str]
    categorical: list[str]
    classification: bool

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def outputs(self) -> list[str]:
        return [PREDICTION, PROBABILITY] if self.classification else [PREDICTION]


def read_records(path: Path) -> pd.DataFrame:
    """The records to score; a missing, unreadable or empty file raises `DataLoadError` naming it."""
    from flowship.pipeline.ingest import read_table

    return read_table(path)


def check_features(frame: pd.DataFrame, inputs: ModelInputs, source: Path | str) -> None:
    """Every feature the model needs is there, numeric features hold numbers (or nothing), and no input column
    would be overwritten by an output; otherwise `DataLoadError` naming each column at fault."""
    import pandas as pd

    missing = [c for c in inputs.features if c not in frame.columns]
    if missing:
        raise DataLoadError(
            f"{source}: feature column(s) the model needs are missing: {missing}; "
            f"available: {sorted(map(str, frame.columns))}"
        )
    problems = []
    for column in inputs.numeric:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        if bad.any():
            examples = [str(v) for v in values[bad].unique()[:EXAMPLES]]
            problems.append(
                f"numeric feature {column!r} has {int(bad.sum())} value(s) that are not numbers, e.g. {examples}"
            )
    taken = [c for c in inputs.outputs if c in frame.columns]
    if taken:
        problems.append(f"column(s) {taken} would be overwritten by the model's outputs: rename them")
    if problems:
        raise DataLoadError(f"{source}: " + "; ".join(problems))


def chunk_bounds(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk: all of `chunk_rows` rows but the last."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return [(start, min(start + chunk_rows, rows)) for start in range(0, rows, chunk_rows)]


def work_folder(output: Path) -> Path:
    """A fresh folder beside the output for the chunk files (same filesystem: the final rename stays atomic)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.chunks-", dir=output.parent))


def remove_work_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def split_into_chunks(frame: pd.DataFrame, chunk_rows: int, folder: Path) -> list[Path]:
    """One Parquet file per chunk, all with the same Arrow schema (so they are written out again as one file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    parts = []
    for index, (start, stop) in enumerate(chunk_bounds(table.num_rows, chunk_rows)):
        part = folder / f"chunk-{index:05d}.parquet"
        pq.write_table(table.slice(start, stop - start), part)
        parts.append(part)
    return parts


def score_frame(pipeline: Any, frame: pd.DataFrame, inputs: ModelInputs) -> pd.DataFrame:
    """The model's outputs for each record: `prediction` (and `probability` for a classifier)."""
    import numpy as np
    import pandas as pd

    x = frame[inputs.features]
    if not inputs.classification:
        return pd.DataFrame({PREDICTION: np.asarray(pipeline.predict(x), dtype="float64")})
    probabilities = np.asarray(pipeline.predict_proba(x))
    best = probabilities.argmax(axis=1)  # as the classifiers' own predict() decides
    return pd.DataFrame(
        {
            PREDICTION: np.asarray(pipeline.classes_)[best],
            PROBABILITY: probabilities[np.arange(len(best)), best].astype("float64"),
        }
    )


@dataclass(frozen=True)
class ChunkScored:
    """One chunk file scored: its outputs, in a file beside it."""

    part: str
    outputs: str
    rows: int
    seconds: float


def score_chunk(pipeline: Any, part: Path, inputs: ModelInputs) -> ChunkScored:
    """Score one chunk file into `<chunk>.out.parquet` beside it."""
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_parquet(part, columns=inputs.features)
    outputs = score_frame(pipeline, frame, inputs)
    target = part.with_suffix(".out.parquet")
    outputs.to_parquet(target, index=False)
    return ChunkScored(str(part), str(target), len(outputs), time.perf_counter() - started)


def write_scored(parts: list[Path], outputs: list[Path], destination: Path) -> int:
    """The chunks' records with their outputs, in order, as one Parquet file: written to a temporary file beside
    `destination` and renamed into place. Returns the number of rows."""
    import pyarrow.parquet as pq

    if not parts or len(parts) != len(outputs):
        raise ValueError(f"{len(parts)} chunk(s) and {len(outputs)} scored output(s): nothing to write")
    rows = 0
    with atomic_path(destination) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for part, scored in zip(parts, outputs, strict=True):
                records, result = pq.read_table(part), pq.read_table(scored)
                if records.num_rows != result.num_rows:
                    raise ValueError(f"{scored}: {result.num_rows} outputs for {records.num_rows} records of {part}")
                table = records.replace_schema_metadata(None)
                for field in result.schema:
                    table = table.append_column(field, result.column(field.name))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


@dataclass(frozen=True)
class InputSplit:
    """The records to score, checked and cut into chunk files."""

    rows: int
    columns: tuple[str, ...]
    parts: tuple[str, ...]


@dataclass(frozen=True)
class ChunkRun:
    """Where and how fast one chunk was scored, and the file of its outputs (removed with the work folder)."""

    index: int
    rows: int
    seconds: float
    where: str
    outputs: str


@dataclass(frozen=True)
class ScoredModel:
    """The registered version that scored the records."""

    name: str
    version: str
    uri: str


@dataclass(frozen=True)
class ScoringSummary:
    """What a batch scoring run did: the model, the files, and each chunk."""

    model: ScoredModel
    input: str
    output: str
    rows: int
    chunk_rows: int
    chunks: tuple[ChunkRun, ...]
    engine: str

    @property
    def ran_on(self) -> list[str]:
        """The Dask workers or threads that scored the chunks, each once."""
        return sorted({c.where for c in self.chunks})

    def markdown(self) -> str:
        lines = [
            "# Batch scoring\n",
            f"- model: {self.model.name} v{self.model.version} (`{self.model.uri}`)",
            f"- input: `{self.input}`",
            f"- output: `{self.output}`",
            f"- rows: {self.rows} in {len(self.chunks)} chunk(s) of at most {self.chunk_rows}",
            f"- engine: {self.engine}",
            "",
            "| chunk | rows | seconds | ran on |",
            "| --- | --- | --- | --- |",
            *(f"| {c.index} | {c.rows} | {c.seconds:.2f} | {c.where} |" for c in self.chunks),
        ]
        return "\n".join(lines) + "\n"
