"""RecordCodec: validated records -> rows in the model's column order."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from flowship.serving.bundle import BundleMetadata, ModelBundle
from flowship.serving.schema import RecordCodec, record_model


def codec_for(numeric: list[str], categorical: list[str]) -> tuple[RecordCodec, Any]:
    meta = BundleMetadata.model_validate(
        {
            "name": "m",
            "version": "1",
            "task": "regression",
            "features": {"numeric": numeric, "categorical": categorical},
            "input_schema": [{"name": n, "type": "double"} for n in numeric]
            + [{"name": n, "type": "string"} for n in categorical],
        }
    )
    record = record_model(meta)
    return RecordCodec(ModelBundle(pipeline=object(), metadata=meta), record), record


def test_rows_follow_the_model_columns_whatever_the_field_order() -> None:
    codec, record = codec_for(["a", "b"], ["c"])
    records = [
        record.model_validate({"c": "x", "b": 2.5, "a": None}),
        record.model_validate({"a": 1, "b": 0.0, "c": None}),
    ]
    assert codec.rows(records) == [codec.row(r) for r in records] == [(None, 2.5, "x"), (1, 0.0, None)]
    assert codec.features_of(codec.rows(records)) == [codec.features(row) for row in codec.rows(records)]
    assert codec.features_of(codec.rows(records))[0] == {"a": None, "b": 2.5, "c": "x"}


def test_a_single_feature_still_gives_tuples() -> None:
    codec, record = codec_for(["only"], [])
    records = [record.model_validate({"only": 3.0}), record.model_validate({"only": None})]
    assert codec.rows(records) == [(3.0,), (None,)]
    assert codec.row(records[0]) == (3.0,)
    assert codec.features_of(codec.rows(records)) == [{"only": 3.0}, {"only": None}]


# --- rows straight from parsed JSON: the schema's rows, or None and the schema words the error ---

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**308, max_value=10**309),  # beyond any float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.sampled_from(["\ud800", "x\udfff"]),  # lone surrogates
    st.lists(st.integers(), max_size=1),
)
NUMBER = st.none() | st.integers(min_value=-(2**60), max_value=2**60) | st.floats(allow_nan=False, allow_infinity=False)
# valid records half the time, so that the interesting cases are one value or key off
RECORD = (
    st.fixed_dictionaries({"a": NUMBER, "b": NUMBER, "c": st.none() | st.text(max_size=3)})
    | st.fixed_dictionaries({"a": JSON_VALUES, "b": JSON_VALUES, "c": JSON_VALUES})
    | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), JSON_VALUES, max_size=4)
)


def schema_rows(codec: RecordCodec, record: Any, value: Any, max_records: int) -> list[tuple[Any, ...]] | None:
    """The rows the app takes: 1 to `max_records` records that the schema validates."""
    records = value if isinstance(value, list) else [value]
    if not 0 < len(records) <= max_records:
        return None
    try:
        return codec.rows(TypeAdapter(list[record]).validate_python(records))
    except ValidationError:
        return None


def same_values(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    return [[(type(v), v) for v in row] for row in a] == [[(type(v), v) for v in row] for row in b]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=RECORD | st.lists(RECORD | JSON_VALUES, min_size=0, max_size=4) | JSON_VALUES)
def test_read_json_gives_the_schemas_rows_or_none(value: Any) -> None:
    codec, record = codec_for(["a", "b"], ["c"])
    read = codec.read_json(value, max_records=3)
    expected = schema_rows(codec, record, value, max_records=3)
    if read is not None:
        fast = read.rows
        # what it takes, the schema takes, with the same values of the same types (numbers as floats)
        assert expected is not None and same_values(fast, expected)
        assert all(type(v) is float for row in fast for v in row[:2] if v is not None)
        # records given as their own features are exactly what the features of the rows would be, keys in order
        if read.features is not None:
            made = codec.features_of(fast)
            assert read.features == made and [list(f) for f in read.features] == [list(f) for f in made]
    elif expected is not None:
        # it leaves a valid request to the schema only where it must: more records than allowed, or a number it
        # cannot check cheaply (finite ones whose sum is not)
        records = value if isinstance(value, list) else [value]
        assert len(records) > 3 or not math.isfinite(
            sum(float(r[k]) for r in records for k in "ab" if r[k] is not None)
        )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": True, "b": 1.0, "c": "x"}, "a boolean for a number"),
        ({"a": "1", "b": 1.0, "c": "x"}, "a numeric string for a number"),
        ({"a": 1.0, "b": 1.0, "c": 3}, "a number for a string"),
        ({"a": 1.0, "b": 1.0}, "a field missing"),
        ({"a": 1.0, "b": 1.0, "c": "x", "d": 1}, "a field too many"),
        ({"a": 1.0, "b": 1.0, "d": "x"}, "a field misnamed"),
        ({"a": math.inf, "b": 1.0, "c": "x"}, "an infinite number"),
        ({"a": math.nan, "b": None, "c": "x"}, "NaN beside a missing value"),
        ({"a": 10**400, "b": 1.0, "c": "x"}, "an integer beyond any float"),
        ([{"a": None, "b": 1.0, "c": "x"}, {"a": 10**400, "b": 1.0, "c": "x"}], "the same beside a missing value"),
        (
            [{"a": None, "b": 1.0, "c": "x"}, {"a": 1.5e308, "b": 1.0, "c": "x"}, {"a": 1.7e308, "b": 1.0, "c": "x"}],
            "finite numbers beside a missing value, whose sum is not",
        ),
        ({"a": 1.0, "b": 1.0, "c": "\ud800"}, "a lone surrogate"),
        ([], "no records"),
        ([{"a": 1.0, "b": 1.0, "c": "x"}] * 4, "more records than allowed"),
        ([{"a": 1.0, "b": 1.0, "c": "x"}, 3], "a record that is not an object"),
        ("records", "not records at all"),
    ],
)
def test_read_json_leaves_what_the_schema_must_judge_to_it(value: Any, why: str) -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    assert codec.read_json(value, max_records=3) is None, why


def test_read_json_of_one_record_or_several() -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    assert codec.read_json({"c": None, "b": 2, "a": -0.5}, max_records=3) == ([(-0.5, 2.0, None)], None)
    read = codec.read_json([{"a": 1, "b": None, "c": "é"}, {"c": "y", "a": 2.5, "b": 0}], max_records=3)
    assert read is not None and same_values(read.rows, [(1.0, None, "é"), (2.5, 0.0, "y")])
    single, _ = codec_for(["only"], [])
    assert single.read_json([{"only": 3}, {"only": None}], max_records=3) == ([(3.0,), (None,)], None)


def test_read_json_gives_the_records_as_their_features_only_when_they_are_exactly_that() -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    records = [{"a": 1.5, "b": None, "c": "x"}, {"a": -0.0, "b": 2.0, "c": None}]
    read = codec.read_json(records, max_records=3)
    assert read is not None and read.features is records  # no second set of dicts
    assert read.features == codec.features_of(read.rows)
    # an integer becomes the float the model sees: the features are made from the rows, with that float
    read = codec.read_json([{"a": 1, "b": None, "c": "x"}], max_records=3)
    assert read is not None and read.features is None
    assert codec.features_of(read.rows) == [{"a": 1.0, "b": None, "c": "x"}]
    # keys in another order than the columns: made from the rows, so the log's features keep the column order
    read = codec.read_json([{"c": "x", "b": None, "a": 1.5}], max_records=3)
    assert read is not None and read.features is None
