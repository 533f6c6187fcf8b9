"""Ingest: reading CSV/Parquet files, the optional join, the derived target and the kept columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowship.errors import DataLoadError
from flowship.pipeline.ingest import ingest, read_table
from tests.unit.conftest import make_params

SMALL = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def data_config(**data):
    return make_params(data={"source": "raw/table.csv", **data}).data


def write_csv(root, frame, name="raw/table.csv"):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def raw_table(n=8):
    return pd.DataFrame(
        {
            "id": range(n),
            "ts": [f"2024-01-0{1 + (n - 1 - i) % 9} 10:00:00" for i in range(n)],  # newest first
            "x1": np.linspace(0.0, 7.0, n),
            "x2": np.arange(n) * 10.0,
            "color": ["red", "green", "blue", "red", "green", "blue", "red", "green"][:n],
            "y": [0, 1] * (n // 2),
            "unused": "drop me",
        }
    )


# --- read_table -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.CSV", "t.csv.gz", "t.parquet", "t.pq"])
def test_read_table_round_trips_by_extension(tmp_path, name):
    path = tmp_path / name
    if ".csv" in name.lower():
        SMALL.to_csv(path, index=False)
    else:
        SMALL.to_parquet(path, index=False)
    frame = read_table(path)
    assert frame["a"].tolist() == [1, 2, 3]
    assert frame["b"].tolist() == ["x", "y", "z"]


def test_read_table_tsv_uses_tabs(tmp_path):
    path = tmp_path / "t.tsv"
    SMALL.to_csv(path, sep="\t", index=False)
    assert list(read_table(path).columns) == ["a", "b"]


def test_read_table_upper_case_tsv_uses_tabs(tmp_path):
    path = tmp_path / "t.TSV"
    SMALL.to_csv(path, sep="\t", index=False)
    assert list(read_table(path).columns) == ["a", "b"]


def test_declared_format_overrides_the_file_name(tmp_path):
    path = tmp_path / "export.dat"
    SMALL.to_parquet(path, index=False)
    assert read_table(path, "parquet")["a"].tolist() == [1, 2, 3]
    with pytest.raises(DataLoadError, match="not a readable csv file"):
        read_table(path, "csv")


def test_missing_file(tmp_path):
    with pytest.raises(DataLoadError, match="not found") as caught:
        read_table(tmp_path / "absent.csv")
    assert "absent.csv" in str(caught.value)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataLoadError, match="directory"):
        read_table(tmp_path / "dir.csv")


def test_unknown_extension_says_how_to_fix_it(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataLoadError, match="data.format"):
        read_table(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataLoadError, match="not a readable parquet file") as caught:
        read_table(path)
    assert "broken.parquet" in str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataLoadError, match="empty.csv"):
        read_table(path)


def test_header_without_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataLoadError, match="no rows"):
        read_table(path)


# --- ingest ---------------------------------------------------------------------------------------------------


def test_ingest_keeps_time_features_and_target_sorted_by_time(tmp_path):
    write_csv(tmp_path, raw_table())
    frame = ingest(data_config(time_column="ts"), tmp_path).frame
    assert list(frame.columns) == ["ts", "x1", "x2", "color", "y"]
    assert isinstance(frame["ts"].dtype, pd.DatetimeTZDtype) and str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].is_monotonic_increasing
    assert list(frame.index) == list(range(len(frame)))
    # Rows travel whole when sorted: x1 was written in the opposite order to the time stamps.
    assert frame["x1"].is_monotonic_decreasing
    assert pd.api.types.is_string_dtype(frame["color"])


def test_ingest_without_time_column_keeps_file_order(tmp_path):
    write_csv(tmp_path, raw_table())
    frame = ingest(data_config(), tmp_path).frame
    assert list(frame.columns) == ["x1", "x2", "color", "y"]
    assert frame["x1"].is_monotonic_increasing


def test_ingest_leaves_out_unlabeled_rows_and_counts_them(tmp_path):
    table = raw_table().astype({"y": "float64"})
    table.loc[[1, 4], "y"] = np.nan
    write_csv(tmp_path, table)
    ingested = ingest(data_config(), tmp_path)
    assert len(ingested.frame) == len(table) - 2
    assert ingested.frame["y"].notna().all()
    assert ingested.report() == {"rows": len(table) - 2, "target_missing": 2}
    write_csv(tmp_path, raw_table())
    assert ingest(data_config(), tmp_path).target_missing == 0


def test_ingest_target_empty_everywhere(tmp_path):
    write_csv(tmp_path, raw_table().assign(y=np.nan))
    with pytest.raises(DataLoadError, match="'y' is empty in every row"):
        ingest(data_config(), tmp_path)


def test_missing_target_column_is_named(tmp_path):
    write_csv(tmp_path, raw_table().drop(columns=["y"]))
    with pytest.raises(DataLoadError) as caught:
        ingest(data_config(), tmp_path)
    message = str(caught.value)
    assert "target" in message and "['y']" in message
    assert "available" in message and "x1" in message


def test_missing_feature_columns_are_named(tmp_path):
    write_csv(tmp_path, raw_table().drop(columns=["x2", "color"]))
    with pytest.raises(DataLoadError, match="feature") as caught:
        ingest(data_config(), tmp_path)
    assert "x2" in str(caught.value) and "color" in str(caught.value)


def test_missing_time_column_is_named(tmp_path):
    write_csv(tmp_path, raw_table().drop(columns=["ts"]))
    with pytest.raises(DataLoadError, match="time column"):
        ingest(data_config(time_column="ts"), tmp_path)


def test_bad_timestamps_are_counted_and_shown(tmp_path):
    table = raw_table()
    table.loc[2, "ts"] = "yesterday"
    table.loc[5, "ts"] = "2024-13-45 99:00:00"
    write_csv(tmp_path, table)
    with pytest.raises(DataLoadError) as caught:
        ingest(data_config(time_column="ts"), tmp_path)
    message = str(caught.value)
    assert "'ts'" in message and "2 value(s)" in message
    assert "yesterday" in message


def test_timestamps_with_offsets_become_utc(tmp_path):
    table = raw_table(n=2)
    table["ts"] = ["2024-01-01T12:00:00+02:00", "2024-01-01T09:00:00Z"]
    write_csv(tmp_path, table)
    frame = ingest(data_config(time_column="ts"), tmp_path).frame
    assert frame["ts"].tolist() == [
        pd.Timestamp("2024-01-01 09:00", tz="UTC"),
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
    ]


def test_iso_timestamps_of_mixed_precision_are_accepted(tmp_path):
    table = raw_table(n=2)
    table["ts"] = ["2024-01-01 10:00", "2024-01-02"]
    write_csv(tmp_path, table)
    frame = ingest(data_config(time_column="ts"), tmp_path).frame
    assert frame["ts"].tolist() == [pd.Timestamp("2024-01-01 10:00", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")]


def test_one_other_layout_is_inferred_for_the_whole_column(tmp_path):
    table = raw_table(n=4)
    table["ts"] = ["2013/01/31", "2013/02/01", "2013/12/05", "2013/12/06"]
    write_csv(tmp_path, table)
    frame = ingest(data_config(time_column="ts"), tmp_path).frame
    assert frame["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2013-01-31", "2013-02-01", "2013-12-05", "2013-12-06"]


def test_two_layouts_in_one_time_column_are_refused_naming_what_is_accepted(tmp_path):
    table = raw_table(n=4)
    table["ts"] = ["2013/01/31", "05-02-2013", "2013/02/07", "2013/02/08"]
    write_csv(tmp_path, table)
    with pytest.raises(DataLoadError) as caught:
        ingest(data_config(time_column="ts"), tmp_path)
    message = str(caught.value)
    assert "time column 'ts' has 1 value(s) that are not timestamps, e.g. ['05-02-2013']" in message
    assert "accepted: ISO 8601" in message and "data.time_format" in message and "'%d/%m/%Y'" in message


def test_day_first_dates_need_their_layout_declared(tmp_path):
    table = raw_table(n=4)
    table["ts"] = ["05/01/2013", "31/01/2013", "01/02/2013", "02/02/2013"]
    write_csv(tmp_path, table)
    with pytest.raises(DataLoadError, match=r"1 value\(s\) that are not timestamps, e.g. \['31/01/2013'\]"):
        ingest(data_config(time_column="ts"), tmp_path)  # inferred month-first from 05/01: 31/01 does not fit
    frame = ingest(data_config(time_column="ts", time_format="%d/%m/%Y"), tmp_path).frame
    assert frame["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2013-01-05", "2013-01-31", "2013-02-01", "2013-02-02"]
    with pytest.raises(DataLoadError, match=r"accepted: the layout '%Y-%m-%d' \(data.time_format\)"):
        ingest(data_config(time_column="ts", time_format="%Y-%m-%d"), tmp_path)


def test_derived_target_thresholds_the_source_and_drops_rows_without_it(tmp_path):
    table = raw_table().drop(columns=["y"])
    table["delay"] = ["3", "20", "15", "", "16", "n/a", "-5", "100"]
    write_csv(tmp_path, table)
    cfg = data_config(target={"column": "late", "derive_from": "delay", "above": 15})
    ingested = ingest(cfg, tmp_path)
    frame = ingested.frame
    assert ingested.target_missing == 2
    assert list(frame.columns) == ["x1", "x2", "color", "late"]
    # Rows 3 ("") and 5 ("n/a") have no delay; 15 is not above 15.
    expected = {0: 0, 1: 1, 2: 0, 4: 1, 6: 0, 7: 1}
    kept_x1 = table.loc[list(expected), "x1"].tolist()
    assert frame["x1"].tolist() == kept_x1
    assert frame["late"].tolist() == list(expected.values())
    assert frame["late"].dtype == "int64"


def test_derived_target_source_column_must_exist(tmp_path):
    write_csv(tmp_path, raw_table())
    cfg = data_config(target={"column": "late", "derive_from": "delay", "above": 15})
    with pytest.raises(DataLoadError, match="target source") as caught:
        ingest(cfg, tmp_path)
    assert "delay" in str(caught.value)


def join_tables(tmp_path):
    flights = raw_table().drop(columns=["x2"])
    flights["origin"] = ["A", "B", "A", "C", "B", "A", "Z", "C"]
    weather = pd.DataFrame(
        {
            "origin": ["A", "B", "C", "A"],  # a duplicate key: the first row wins
            "x2": [1.0, 2.0, 3.0, 99.0],
            "color": ["never", "used", "here", "!"],  # also in the main table: the main table's column wins
        }
    )
    write_csv(tmp_path, flights)
    write_csv(tmp_path, weather, "raw/weather.csv")
    return flights


def test_left_join_adds_columns_keeps_every_row_and_the_main_tables_columns(tmp_path):
    flights = join_tables(tmp_path)
    frame = ingest(data_config(join={"source": "raw/weather.csv", "by": ["origin"]}), tmp_path).frame
    assert len(frame) == len(flights)
    by_origin = dict(zip(flights["origin"], frame["x2"], strict=True))
    assert by_origin["A"] == 1.0 and by_origin["B"] == 2.0 and by_origin["C"] == 3.0
    assert np.isnan(by_origin["Z"])
    assert frame["color"].tolist() == flights["color"].tolist()


def test_inner_join_drops_unmatched_rows(tmp_path):
    flights = join_tables(tmp_path)
    frame = ingest(data_config(join={"source": "raw/weather.csv", "by": ["origin"], "how": "inner"}), tmp_path).frame
    assert len(frame) == int((flights["origin"] != "Z").sum())
    assert frame["x2"].notna().all()


def test_join_key_missing_from_the_other_table_is_named(tmp_path):
    join_tables(tmp_path)
    cfg = data_config(join={"source": "raw/weather.csv", "by": ["origin", "hour"]})
    with pytest.raises(DataLoadError, match="join key") as caught:
        ingest(cfg, tmp_path)
    assert "hour" in str(caught.value)


def test_join_source_missing(tmp_path):
    write_csv(tmp_path, raw_table())
    with pytest.raises(DataLoadError, match="not found"):
        ingest(data_config(join={"source": "raw/absent.csv", "by": ["id"]}), tmp_path)
