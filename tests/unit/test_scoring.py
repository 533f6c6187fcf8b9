"""Batch scoring's library part: chunking, feature checks, scoring a chunk, the atomic Parquet write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowship.errors import ConfigError, DataLoadError
from flowship.pipeline import scoring, training
from flowship.pipeline.scoring import ModelInputs
from tests.unit.conftest import CATEGORICAL, NUMERIC, make_frame, make_params

INPUTS = ModelInputs(numeric=list(NUMERIC), categorical=list(CATEGORICAL), classification=True)


@pytest.mark.parametrize(
    ("rows", "chunk_rows", "expected"),
    [
        (10, 3, [(0, 3), (3, 6), (6, 9), (9, 10)]),
        (6, 3, [(0, 3), (3, 6)]),
        (2, 50_000, [(0, 2)]),
        (0, 5, []),
    ],
)
def test_chunk_bounds_cover_every_row_once(rows: int, chunk_rows: int, expected: list[tuple[int, int]]) -> None:
    assert scoring.chunk_bounds(rows, chunk_rows) == expected


def test_chunk_rows_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_rows must be at least 1, got 0"):
        scoring.chunk_bounds(10, 0)


def test_features_present_pass_and_extra_columns_are_fine(classifier) -> None:
    numbers = make_frame(n=40, seed=3)
    frame = numbers.assign(comment="kept")
    frame["x2"] = frame["x2"].astype(str)  # numbers written as text (CSV) are numbers
    before = frame.copy()
    scoring.check_features(frame, INPUTS, "records.csv")  # raises nothing
    pd.testing.assert_frame_equal(frame, before)  # and changes nothing
    # ... and the model scores such a frame exactly as the one holding numbers
    pd.testing.assert_frame_equal(
        scoring.score_frame(classifier, frame, INPUTS), scoring.score_frame(classifier, numbers, INPUTS)
    )


def test_a_missing_feature_is_named_with_the_columns_available() -> None:
    frame = make_frame().drop(columns=["x2", "color"])
    with pytest.raises(DataLoadError) as failure:
        scoring.check_features(frame, INPUTS, "records.csv")
    message = str(failure.value)
    assert "records.csv: feature column(s) the model needs are missing: ['x2', 'color']" in message
    assert "available: ['ts', 'x1', 'y']" in message


def test_text_in_a_numeric_feature_is_named_with_examples() -> None:
    frame = make_frame(n=20)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[[3, 7], "x1"] = ["n/a", "twelve"]
    frame.loc[9, "x1"] = None  # missing is allowed: the model handles it
    with pytest.raises(
        DataLoadError, match=r"numeric feature 'x1' has 2 value\(s\) that are not numbers, e.g. \['n/a', 'twelve'\]"
    ):
        scoring.check_features(frame, INPUTS, "records.csv")


def test_an_input_column_named_like_an_output_is_refused() -> None:
    frame = make_frame().assign(prediction=1)
    with pytest.raises(DataLoadError, match=r"column\(s\) \['prediction'\] would be overwritten"):
        scoring.check_features(frame, INPUTS, "records.csv")


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="data file not found: .*nothing.csv"):
        scoring.read_records(tmp_path / "nothing.csv")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataLoadError, match="broken.parquet: not a readable parquet file"):
        scoring.read_records(broken)


@pytest.fixture(scope="module")
def classifier() -> object:
    params = make_params()
    return training.fit(make_frame(n=300, seed=1), params, dict(params.train.params))


def score_in_chunks(model: object, frame: pd.DataFrame, chunk_rows: int, tmp_path: Path, inputs: ModelInputs) -> Path:
    folder = scoring.work_folder(tmp_path / "out" / "scored.parquet")
    parts = scoring.split_into_chunks(frame, chunk_rows, folder)
    outputs = [Path(scoring.score_chunk(model, part, inputs).outputs) for part in parts]
    destination = tmp_path / "out" / "scored.parquet"
    assert scoring.write_scored(parts, outputs, destination) == len(frame)
    scoring.remove_work_folder(folder)
    return destination


def test_chunks_scored_and_written_equal_the_model_on_the_whole_frame(classifier, tmp_path: Path) -> None:
    frame = make_frame(n=103, seed=2)
    destination = score_in_chunks(classifier, frame, 25, tmp_path, INPUTS)
    written = pd.read_parquet(destination)
    assert list(written.columns) == [*frame.columns, "prediction", "probability"]
    pd.testing.assert_frame_equal(written[frame.columns], frame, check_dtype=False)
    x = frame[INPUTS.features]
    assert np.array_equal(written["prediction"].to_numpy(), classifier.predict(x))
    assert np.allclose(written["probability"], classifier.predict_proba(x).max(axis=1), rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scored.parquet"]  # no chunk or temp file left


def test_a_regressor_gets_a_prediction_only(tmp_path: Path) -> None:
    params = make_params(task="regression")
    frame = make_frame(task="regression", n=120)
    model = training.fit(frame, params, dict(params.train.params))
    inputs = ModelInputs(list(NUMERIC), list(CATEGORICAL), classification=False)
    written = pd.read_parquet(score_in_chunks(model, frame, 50, tmp_path, inputs))
    assert list(written.columns) == [*frame.columns, "prediction"]
    assert np.array_equal(written["prediction"].to_numpy(), model.predict(frame[inputs.features]))


def test_a_failed_write_leaves_no_output_and_an_earlier_one_untouched(classifier, tmp_path: Path) -> None:
    frame = make_frame(n=60, seed=3)
    folder = scoring.work_folder(tmp_path / "scored.parquet")
    parts = scoring.split_into_chunks(frame, 20, folder)
    outputs = [Path(scoring.score_chunk(classifier, part, INPUTS).outputs) for part in parts]
    destination = tmp_path / "scored.parquet"
    destination.write_bytes(b"the previous output")
    # the last chunk's outputs are for other records: caught while writing, after two chunks went out
    pd.DataFrame({"prediction": [0], "probability": [0.5]}).to_parquet(outputs[-1], index=False)
    with pytest.raises(ValueError, match=r"1 outputs for 20 records of .*chunk-00002.parquet"):
        scoring.write_scored(parts, outputs, destination)
    assert destination.read_bytes() == b"the previous output"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="3 chunk\\(s\\) and 2 scored output\\(s\\): nothing to write"):
        scoring.write_scored(parts, outputs[:2], destination)


def test_the_work_folder_sits_beside_the_output_and_goes_away(tmp_path: Path) -> None:
    folder = scoring.work_folder(tmp_path / "new" / "scored.parquet")
    assert folder.parent == tmp_path / "new" and folder.name.startswith(".scored.parquet.chunks-")
    (folder / "chunk-00000.parquet").write_bytes(b"x")
    scoring.remove_work_folder(folder)
    assert not folder.exists()


CLI_NAMES = scoring.RequestNames(input="INPUT", output="OUTPUT", version="--version", chunk_rows="--chunk-rows")


def test_a_scoring_request_resolves_its_files_against_the_root(tmp_path: Path) -> None:
    (tmp_path / "records.csv.gz").write_bytes(b"")
    source, destination = scoring.check_request(tmp_path, "records.csv.gz", "out/scored.parquet", "3", 10)
    assert (source, destination) == (tmp_path / "records.csv.gz", tmp_path / "out" / "scored.parquet")
    assert scoring.check_request(tmp_path, str(source), str(destination), None, 1) == (source, destination)


@pytest.mark.parametrize(
    ("files", "input", "output", "version", "names", "problems"),
    [
        ([], "nothing.csv", "out.parquet", None, CLI_NAMES, ["INPUT {root}/nothing.csv: no such file"]),
        (
            ["records.json"],
            "records.json",
            "out.parquet",
            None,
            CLI_NAMES,
            [
                "INPUT {root}/records.json: expected a CSV or Parquet file (.csv, .tsv, .parquet or .pq, maybe "
                "compressed)"
            ],
        ),
        (
            ["records.csv"],
            "records.csv",
            "./records.csv",
            None,
            CLI_NAMES,
            ["OUTPUT {root}/records.csv is the INPUT file: write the scored records elsewhere"],
        ),
        (
            ["records.csv", "out/"],
            "records.csv",
            "out",
            "v3",
            CLI_NAMES,
            [
                "OUTPUT {root}/out is a directory: name the Parquet file to write",
                "--version 'v3': expected a registered version number such as 3",
            ],
        ),
        (
            ["records.csv"],
            "records.csv",
            "records.csv",
            "latest",
            scoring.FLOW_NAMES,
            [
                "output {root}/records.csv is the input file: write the scored records elsewhere",
                "version 'latest': expected a registered version number such as 3",
            ],
        ),
    ],
)
def test_a_scoring_request_that_cannot_work_is_refused_naming_each_argument(
    tmp_path: Path,
    files: list[str],
    input: str,
    output: str,
    version: str | None,
    names: scoring.RequestNames,
    problems: list[str],
) -> None:
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError) as refused:
        scoring.check_request(tmp_path, input, output, version, 10, names)
    assert refused.value.problems == [p.format(root=tmp_path) for p in problems]


def test_a_scoring_request_without_files_or_with_empty_chunks_is_refused_before_any_look_at_the_disk() -> None:
    with pytest.raises(ConfigError) as refused:
        scoring.check_request(Path("/nonexistent"), "", "", None, 0)
    assert refused.value.problems == [
        "input: the file of records to score is required",
        "output: the Parquet file to write is required",
        "chunk_rows: must be at least 1 (got 0)",
    ]


def test_the_summary_reads_as_the_artifact_shows_it() -> None:
    chunks = (
        scoring.ChunkRun(0, 2000, 1.234, "dask worker tcp://127.0.0.1:1", "a.out.parquet"),
        scoring.ChunkRun(1, 5, 0.1, "thread t (pid 7)", "b.out.parquet"),
        scoring.ChunkRun(2, 1, 0.05, "dask worker tcp://127.0.0.1:1", "c.out.parquet"),
    )
    model = scoring.ScoredModel("flights-delay", "3", "models:/flights-delay/3")
    summary = scoring.ScoringSummary(model, "/in.csv", "/out.parquet", 2006, 2000, chunks, "threads on this machine")
    assert summary.ran_on == ["dask worker tcp://127.0.0.1:1", "thread t (pid 7)"]
    assert summary.markdown() == (
        "# Batch scoring\n\n"
        "- model: flights-delay v3 (`models:/flights-delay/3`)\n"
        "- input: `/in.csv`\n"
        "- output: `/out.parquet`\n"
        "- rows: 2006 in 3 chunk(s) of at most 2000\n"
        "- engine: threads on this machine\n"
        "\n"
        "| chunk | rows | seconds | ran on |\n"
        "| --- | --- | --- | --- |\n"
        "| 0 | 2000 | 1.23 | dask worker tcp://127.0.0.1:1 |\n"
        "| 1 | 5 | 0.10 | thread t (pid 7) |\n"
        "| 2 | 1 | 0.05 | dask worker tcp://127.0.0.1:1 |\n"
    )
