"""RecordCodec: validated records -> rows in the model's column order."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from flowship.serving import encoding
from flowship.serving.bundle import BundleMetadata, ModelBundle
from flowship.serving.schema import ReadRecords, RecordCodec, record_model


def metadata_for(numeric: list[str], categorical: list[str]) -> BundleMetadata:
    return BundleMetadata.model_validate(
        {
            "name": "m",
            "version": "1",
            "task": "regression",
            "features": {"numeric": numeric, "categorical": categorical},
            "input_schema": [{"name": n, "type": "double"} for n in numeric]
            + [{"name": n, "type": "string"} for n in categorical],
        }
    )


def codec_for(numeric: list[str], categorical: list[str]) -> tuple[RecordCodec, Any]:
    meta = metadata_for(numeric, categorical)
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


def quick_reads(codec: RecordCodec, value: Any, max_records: int) -> list[Any]:
    """What the quick readers make of `value`: `read_body` of its JSON text, and `read_json` of it as orjson
    would have parsed it (when orjson can: no NaN, infinity or lone surrogate)."""
    reads = [codec.read_body(json.dumps(value).encode(), max_records)]
    try:
        parsed = orjson.loads(json.dumps(value))
    except orjson.JSONDecodeError:
        return reads
    return [*reads, codec.read_json(parsed, max_records)]


def logged(read: ReadRecords) -> list[list[tuple[str, Any]]]:
    """The records as the log writes their features: keys and values, in order."""
    return [list(json.loads(encoding.json_lines([record])).items()) for record in read.records]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=RECORD | st.lists(RECORD | JSON_VALUES, min_size=0, max_size=4) | JSON_VALUES)
def test_the_quick_readers_give_the_schemas_rows_or_none(value: Any) -> None:
    codec, record = codec_for(["a", "b"], ["c"])
    expected = schema_rows(codec, record, value, max_records=3)
    for read in quick_reads(codec, value, max_records=3):
        if read is None:
            # a valid request is left to the schema only when it has more records than allowed
            assert expected is None or len(value if isinstance(value, list) else [value]) > 3
            continue
        # what it takes, the schema takes, with the same values of the same types (numbers as floats)
        assert expected is not None and same_values(read.rows, expected)
        assert all(type(v) is float for row in read.rows for v in row[:2] if v is not None)
        # the records, as the log writes them, are the rows' features: keys in column order, the model's values
        assert logged(read) == [list(codec.features(row).items()) for row in read.rows]


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
        ({"a": 1.0, "b": 1.0, "c": "\ud800"}, "a lone surrogate"),
        ([], "no records"),
        ([{"a": 1.0, "b": 1.0, "c": "x"}] * 4, "more records than allowed"),
        ([{"a": 1.0, "b": 1.0, "c": "x"}, 3], "a record that is not an object"),
        ("records", "not records at all"),
    ],
)
def test_the_quick_readers_leave_what_the_schema_must_judge_to_it(value: Any, why: str) -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    assert codec.read_body(json.dumps(value).encode(), max_records=3) is None, why


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"a": 1.0, "b": 1e400, "c": "x"}', "a number beyond any float"),
        (b'{"a": NaN, "b": 1.0, "c": "x"}', "a NaN token"),
        (b'{"a": 1.0, "b": 1.0, "c": "\xff"}', "text that is not UTF-8"),
        (b'{"a": 1.0, "b": 1.0, "c": "x"} {}', "more than one value"),
        (b'{"a": 1.0, "b": 1.0, "c": "x"', "a truncated body"),
        (b"", "no body"),
    ],
)
def test_read_body_leaves_what_is_not_plain_json_to_the_schema(body: bytes, why: str) -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    assert codec.read_body(body, max_records=3) is None, why


def test_the_quick_readers_of_one_record_or_several() -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    for read in quick_reads(codec, {"c": None, "b": 2, "a": -0.5}, max_records=3):
        assert read is not None and same_values(read.rows, [(-0.5, 2.0, None)])
    value = [{"a": 1, "b": None, "c": "é"}, {"c": "y", "a": 2.5, "b": 0}]
    for read in quick_reads(codec, value, max_records=3):
        assert read is not None and same_values(read.rows, [(1.0, None, "é"), (2.5, 0.0, "y")])
    # finite numbers whose sum is not: each is a number the model can take
    value = [{"a": None, "b": 1.0, "c": "x"}, {"a": 1.5e308, "b": 1.0, "c": "x"}, {"a": 1.7e308, "b": 1.0, "c": "x"}]
    for read in quick_reads(codec, value, max_records=3):
        assert read is not None and [row[0] for row in read.rows] == [None, 1.5e308, 1.7e308]
    single, _ = codec_for(["only"], [])
    for read in quick_reads(single, [{"only": 3}, {"only": None}], max_records=3):
        assert read is not None and same_values(read.rows, [(3.0,), (None,)])


def test_the_records_are_logged_as_the_model_gets_them() -> None:
    codec, _ = codec_for(["a", "b"], ["c"])
    # keys in another order than the columns, an integer for a number: logged in column order, as the float
    for read in quick_reads(codec, [{"c": "x", "b": None, "a": 1}], max_records=3):
        assert read is not None
        ((a, b, c),) = logged(read)
        assert [a, b, c] == [("a", 1.0), ("b", None), ("c", "x")] and type(a[1]) is float


class Fitted:
    """A fitted model's stand-in: only the columns it was fitted on."""

    def __init__(self, columns: list[str]) -> None:
        self.feature_names_in_ = columns


def test_when_the_input_schema_has_more_fields_than_the_model_columns_only_the_schema_reads() -> None:
    codec, record = codec_for(["a", "b"], ["c"])
    fewer = RecordCodec(ModelBundle(pipeline=Fitted(["b", "a"]), metadata=metadata_for(["a", "b"], ["c"])), record)
    assert fewer.columns == ["b", "a"]
    assert fewer.read_body(b'{"a": 1.0, "b": 2.0, "c": "x"}', max_records=3) is None
    assert fewer.read_json({"a": 1.0, "b": 2.0, "c": "x"}, max_records=3) is None
    assert codec.read_body(b'{"a": 1.0, "b": 2.0, "c": "x"}', max_records=3) is not None
