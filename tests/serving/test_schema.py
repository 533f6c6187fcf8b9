"""RecordCodec: validated records -> rows in the model's column order."""

from __future__ import annotations

from typing import Any

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
