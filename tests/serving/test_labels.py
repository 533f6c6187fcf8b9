"""The label store: one JSON line per label in a file per arrival day; read back keyed by (request_id, row)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowship.serving.labels import COLUMNS, Comment, Label, read_labels, write_comments, write_labels

ARRIVED = datetime(2024, 3, 5, 10, 30, tzinfo=UTC)
EVENT = datetime(2013, 7, 1, 14, tzinfo=UTC)


def test_labels_are_written_one_line_each_to_the_file_of_their_arrival_day(tmp_path: Path) -> None:
    folder = tmp_path / "labels"  # created on first write
    path = write_labels(
        folder,
        [
            Label("r-1", 0, np.int64(1), pd.Timestamp(EVENT)),
            Label("r-1", np.int64(1), np.bool_(True)),  # type: ignore[arg-type]
            Label("r-2", 0, np.float64(2.5), EVENT.replace(tzinfo=None)),
            Label("r-3", 0, "cancelled", EVENT.astimezone(timezone(timedelta(hours=-4)))),
        ],
        arrived=ARRIVED,
    )
    assert path == folder / "labels-20240305.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {
            "time": "2024-03-05T10:30:00.000000+00:00",
            "request_id": "r-1",
            "row": 0,
            "label": 1,
            "event_time": "2013-07-01T14:00:00+00:00",
        },
        {"time": "2024-03-05T10:30:00.000000+00:00", "request_id": "r-1", "row": 1, "label": True, "event_time": None},
        {
            "time": "2024-03-05T10:30:00.000000+00:00",
            "request_id": "r-2",
            "row": 0,
            "label": 2.5,
            "event_time": "2013-07-01T14:00:00+00:00",  # naive means UTC
        },
        {
            "time": "2024-03-05T10:30:00.000000+00:00",
            "request_id": "r-3",
            "row": 0,
            "label": "cancelled",
            "event_time": "2013-07-01T14:00:00+00:00",  # converted to UTC
        },
    ]

    frame, skipped = read_labels(folder)
    assert skipped == 0
    assert list(frame.columns) == COLUMNS
    assert frame["request_id"].tolist() == ["r-1", "r-1", "r-2", "r-3"]
    assert frame["row"].tolist() == [0, 1, 0, 0]
    assert frame["label"].tolist() == [1, True, 2.5, "cancelled"]
    assert (frame["time"] == pd.Timestamp(ARRIVED)).all()
    assert frame["event_time"].isna().tolist() == [False, True, False, False]
    assert frame["event_time"].iloc[0] == pd.Timestamp(EVENT)
    assert str(frame["time"].dt.tz) == "UTC" and str(frame["event_time"].dt.tz) == "UTC"


def test_the_arrival_day_is_the_utc_day(tmp_path: Path) -> None:
    late_evening_new_york = datetime(2024, 3, 5, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert write_labels(tmp_path, [Label("a", 0, 1)], late_evening_new_york).name == "labels-20240306.jsonl"
    assert write_labels(tmp_path, [Label("b", 0, 1)], datetime(2024, 3, 7, 23, 59)).name == "labels-20240307.jsonl"
    before = datetime.now(UTC)
    path = write_labels(tmp_path, [Label("c", 0, 1)])  # arrival: now
    assert path.name == f"labels-{datetime.now(UTC):%Y%m%d}.jsonl"
    frame, _ = read_labels(tmp_path)
    assert frame.set_index("request_id").loc["c", "time"] >= pd.Timestamp(before)


def test_a_label_that_is_not_a_plain_value_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="a label must be a bool, int, float or str"):
        write_labels(tmp_path, [Label("a", 0, 1), Label("b", 0, {"late": True})], ARRIVED)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_label_value_is_written_as_null(tmp_path: Path) -> None:
    path = write_labels(tmp_path, [Label("a", 0, np.nan), Label("b", 0, pd.NA)], ARRIVED)
    assert [json.loads(line)["label"] for line in path.read_text().splitlines()] == [None, None]


def test_a_missing_or_empty_folder_gives_an_empty_frame_with_the_columns(tmp_path: Path) -> None:
    for folder in (tmp_path / "nowhere", tmp_path):
        frame, skipped = read_labels(folder)
        assert frame.empty and skipped == 0
        assert list(frame.columns) == COLUMNS
        assert str(frame["time"].dt.tz) == "UTC"


def test_unreadable_lines_are_skipped_and_counted_and_the_next_write_starts_a_fresh_line(tmp_path: Path) -> None:
    path = write_labels(tmp_path, [Label("a", 0, 1), Label("a", 1, 0)], ARRIVED)
    good = path.read_bytes()
    bad = [
        b"{not json}\n",
        b'{"time": "2024-03-05T10:30:00+00:00", "request_id": "no-row", "label": 1}\n',  # a key missing
        b'{"time": "yesterday", "request_id": "x", "row": 0, "label": 1}\n',  # not a time
        b'{"time": "2024-03-05T10:30:00+00:00", "request_id": "x", "row": "0", "label": 1}\n',  # row not an int
        b'["a", "list"]\n',
        b"\xff\xfe\n",  # not UTF-8
        b"\n",  # blank: not a label, not counted
    ]
    first = good.splitlines(keepends=True)[0]
    path.write_bytes(good + b"".join(bad) + first[: len(first) // 2])  # a crash cut the last line
    frame, skipped = read_labels(tmp_path)
    assert skipped == 7  # six bad lines and the truncated one
    assert frame[["request_id", "row"]].values.tolist() == [["a", 0], ["a", 1]]

    write_labels(tmp_path, [Label("b", 0, 1)], ARRIVED)
    frame, skipped = read_labels(tmp_path)
    assert skipped == 7  # only the cut line is lost: the new label is on a line of its own
    assert frame["request_id"].tolist() == ["a", "a", "b"]


def test_a_label_sent_again_counts_once_the_last_to_arrive_wins(tmp_path: Path) -> None:
    write_labels(tmp_path, [Label("a", 0, 0), Label("a", 1, 0)], ARRIVED)
    write_labels(tmp_path, [Label("a", 0, 1)], ARRIVED + timedelta(days=1))  # a correction, a day later
    write_labels(tmp_path, [Label("a", 1, 1), Label("a", 1, 2)], ARRIVED)  # same arrival time: file order decides
    frame, _ = read_labels(tmp_path)
    assert len(frame) == 2
    assert frame.set_index(["request_id", "row"])["label"].to_dict() == {("a", 0): 1, ("a", 1): 2}
    assert frame["time"].is_monotonic_increasing

    # before the correction arrived, the first answer stands
    frame, _ = read_labels(tmp_path, until=ARRIVED + timedelta(hours=1))
    assert frame.set_index(["request_id", "row"])["label"].to_dict() == {("a", 0): 0, ("a", 1): 2}


def test_until_keeps_what_arrived_strictly_before_it_naive_meaning_utc(tmp_path: Path) -> None:
    for day in range(3):
        write_labels(tmp_path, [Label(f"d{day}", 0, day)], ARRIVED + timedelta(days=day))
    assert len(list(tmp_path.iterdir())) == 3

    def ids(until: datetime | str | None) -> list[str]:
        return read_labels(tmp_path, until)[0]["request_id"].tolist()

    assert ids(None) == ["d0", "d1", "d2"]
    assert ids(ARRIVED) == []  # strictly before
    assert ids(ARRIVED + timedelta(microseconds=1)) == ["d0"]
    assert ids(datetime(2024, 3, 6, 10, 30, 0, 1)) == ["d0", "d1"]  # naive: UTC
    assert ids("2024-03-06T06:30:01-04:00") == ["d0", "d1"]  # 10:30:01 UTC
    assert ids("2024-03-08") == ["d0", "d1", "d2"]


def test_until_does_not_count_bad_lines_in_files_it_never_reads(tmp_path: Path) -> None:
    write_labels(tmp_path, [Label("a", 0, 1)], ARRIVED)
    later = write_labels(tmp_path, [Label("b", 0, 1)], ARRIVED + timedelta(days=2))
    with later.open("ab") as handle:
        handle.write(b"{broken\n")
    assert read_labels(tmp_path, until=ARRIVED + timedelta(days=1))[1] == 0
    assert read_labels(tmp_path)[1] == 1


def test_the_last_label_and_the_last_rating_win_each_on_its_own(tmp_path: Path) -> None:
    write_labels(tmp_path, [Label("a", 0, 0), Label("a", 0, rating=-1)], ARRIVED)
    write_labels(tmp_path, [Label("a", 0, rating=1)], ARRIVED + timedelta(hours=1))  # a rating alone: the label stays
    write_labels(tmp_path, [Label("a", 0, 1, rating=-1)], ARRIVED + timedelta(hours=2))
    write_labels(tmp_path, [Label("a", 0, 0)], ARRIVED + timedelta(hours=3))  # a label alone: the rating stays
    write_labels(tmp_path, [Label("b", 0, rating=1)], ARRIVED)  # rated, never labelled
    frame, skipped = read_labels(tmp_path)
    assert skipped == 0 and list(frame.columns) == COLUMNS
    rows = frame.set_index(["request_id", "row"])
    assert rows.loc[("a", 0), "label"] == 0 and rows.loc[("a", 0), "rating"] == -1
    assert rows.loc[("a", 0), "time"] == ARRIVED + timedelta(hours=3)
    assert rows.loc[("b", 0), "label"] is None and rows.loc[("b", 0), "rating"] == 1
    assert json.loads((tmp_path / "labels-20240305.jsonl").read_text().splitlines()[1]) == {
        "time": "2024-03-05T10:30:00.000000+00:00",
        "request_id": "a",
        "row": 0,
        "rating": -1,
        "event_time": None,
    }


def test_a_rating_is_thumbs_up_or_down_and_a_line_says_something(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a rating is 1"):
        write_labels(tmp_path, [Label("a", 0, rating=5)], ARRIVED)
    with pytest.raises(ValueError, match="neither a label nor a rating"):
        write_labels(tmp_path, [Label("a", 0)], ARRIVED)
    path = tmp_path / "labels-20240305.jsonl"
    path.write_text(
        '{"time":"2024-03-05T10:30:00+00:00","request_id":"a","row":0,"rating":2}\n'  # not a rating
        '{"time":"2024-03-05T10:30:00+00:00","request_id":"a","row":0,"rating":true}\n'
        '{"time":"2024-03-05T10:30:00+00:00","request_id":"a","row":0}\n'  # nothing said
    )
    assert read_labels(tmp_path)[1] == 3


def test_labels_are_read_from_every_folder_and_every_writer(tmp_path: Path) -> None:
    batch, served = tmp_path / "labels", tmp_path / "inference"
    write_labels(batch, [Label("a", 0, 1)], ARRIVED)
    one = write_labels(served, [Label("b", 0, 0)], ARRIVED + timedelta(minutes=1), writer="stable-0")
    two = write_labels(served, [Label("b", 0, rating=1)], ARRIVED + timedelta(minutes=2), writer="stable-1")
    assert (one.name, two.name) == ("labels-20240305.stable-0.jsonl", "labels-20240305.stable-1.jsonl")
    frame, _ = read_labels([batch, served])
    assert frame[["request_id", "label", "rating"]].astype(object).values.tolist() == [["a", 1, pd.NA], ["b", 0, 1]]
    assert read_labels(batch)[0]["request_id"].tolist() == ["a"]


def test_comments_go_to_their_own_file(tmp_path: Path) -> None:
    path = write_comments(tmp_path, [Comment("a", 2, "late again \u2014 \ud800", "fb-1")], ARRIVED, writer="stable-0")
    assert path.name == "comments-20240305.stable-0.jsonl"
    line = json.loads(path.read_text())
    assert line == {
        "time": "2024-03-05T10:30:00.000000+00:00",
        "request_id": "a",
        "row": 2,
        "comment": "late again \u2014 \ud800",
        "feedback_id": "fb-1",
    }
    assert read_labels(tmp_path)[0].empty  # never read as labels
