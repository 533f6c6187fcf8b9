"""The request schema, generated from the bundle's input schema, and records -> the frame the model expects."""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Sequence
from types import GenericAlias
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from flowship.serving.bundle import BundleMetadata, ModelBundle

Row = tuple[Any, ...]


# The largest finite float: a record's numbers are checked to lie within it, which refuses infinities and NaN.
FLOAT_MAX = sys.float_info.max
_FINITE = Annotated[float, msgspec.Meta(ge=-FLOAT_MAX, le=FLOAT_MAX)]  # NaN fails both bounds


class ReadRecords(NamedTuple):
    """Records read straight from JSON: their rows, and the records themselves (typed structs, one field per column
    in column order: the inference log writes them as each record's features, as `features_of(rows)` would)."""

    rows: list[Row]
    records: list[msgspec.Struct]


def record_model(metadata: BundleMetadata, example: dict[str, Any] | None = None) -> type[BaseModel]:
    """One record: every input field required, `null` meaning missing, numbers finite, nothing else allowed."""
    fields: dict[str, Any] = {}
    for i, spec in enumerate(metadata.input_schema):
        # Python names are positional, the JSON names are aliases: any column name works (spaces, keywords...).
        if spec.type == "double":
            annotation: Any = Annotated[
                float | None,
                Field(alias=spec.name, strict=True, allow_inf_nan=False, description="number (null: missing)"),
            ]
        else:
            annotation = Annotated[
                str | None,
                Field(alias=spec.name, strict=True, description="string (null: missing)"),
                AfterValidator(_encodable),
            ]
        fields[f"f{i}"] = (annotation, ...)
    config = ConfigDict(
        extra="forbid",
        populate_by_name=False,
        title=f"{_identifier(metadata.name)}Record",
        json_schema_extra={"examples": [example]} if example else None,
    )
    model: type[BaseModel] = create_model(f"{_identifier(metadata.name)}Record", __config__=config, **fields)
    return model


def record_struct(metadata: BundleMetadata, columns: Sequence[str]) -> type[msgspec.Struct] | None:
    """What `record_model` takes, as a msgspec struct with one field per column, in `columns`' order (so a record's
    fields are its row): numbers finite floats (an integer becomes its float, as the schema gives it), text valid
    Unicode (msgspec's JSON parser refuses lone surrogates), `null` missing, no field more or less. None when the
    input schema does not name exactly these columns."""
    kinds = {spec.name: spec.type for spec in metadata.input_schema}
    if sorted(kinds) != sorted(columns) or len(kinds) != len(metadata.input_schema):
        return None
    fields: list[tuple[str, Any]] = [
        (f"f{i}", _FINITE | None if kinds[column] == "double" else str | None) for i, column in enumerate(columns)
    ]
    return msgspec.defstruct(
        f"{_identifier(metadata.name)}Fields",
        fields,
        rename={f"f{i}": column for i, column in enumerate(columns)},
        forbid_unknown_fields=True,
        gc=False,  # floats, text and None only: never part of a cycle, and left out of the collector's passes
    )


def _encodable(value: str | None) -> str | None:
    # JSON escapes can carry lone surrogates, which no model or file can take as text
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid Unicode text (a lone surrogate escape)") from None
    return value


def _identifier(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", name)
    title = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return title if title[:1].isalpha() else f"Model{title}"


class RecordCodec:
    """Validated records -> rows in the model's column order -> a frame typed as at training time."""

    def __init__(self, bundle: ModelBundle, record_type: type[BaseModel]) -> None:
        features = bundle.metadata.features
        fitted = getattr(bundle.pipeline, "feature_names_in_", None)
        self.columns: list[str] = [str(c) for c in fitted] if fitted is not None else features.all
        self._numeric = set(features.numeric)
        by_alias = {info.alias: name for name, info in record_type.model_fields.items()}
        self._attributes = [by_alias[column] for column in self.columns]
        # one C call per record (attrgetter of several names gives a tuple; of one name, the bare value)
        self._get = operator.attrgetter(*self._attributes)
        self._single = len(self._attributes) == 1
        # the quick readers' record type (None: the input schema and the columns differ, and only the schema reads)
        self._struct = record_struct(bundle.metadata, self.columns)
        if self._struct is not None:
            self._many = GenericAlias(list, (self._struct,))
            self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self._struct | self._many)

    def row(self, record: BaseModel) -> Row:
        value = self._get(record)
        return (value,) if self._single else value

    def rows(self, records: Sequence[BaseModel]) -> list[Row]:
        if self._single:
            return [(value,) for value in map(self._get, records)]
        return list(map(self._get, records))

    def read_body(self, body: bytes, max_records: int) -> ReadRecords | None:
        """The rows of a JSON body (one record object or a list of 1 to `max_records` of them) when every record is
        exactly what the schema takes, with the values the schema would give (numbers as floats); None otherwise,
        and the schema's own validation then says what is wrong, in its words.

        Parsed and checked in one pass of compiled code (msgspec), into structs that are the log's features too:
        for a 1,000-record request about a quarter of the time of parsing it and then checking it column by column
        in Python."""
        if self._struct is None:
            return None
        try:
            value = self._decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
            return None
        return self._read(value if type(value) is list else [value], max_records)

    def read_json(self, value: Any, max_records: int) -> ReadRecords | None:
        """As `read_body`, for JSON already parsed (by orjson: no NaN, infinity or lone surrogate in it)."""
        if self._struct is None:
            return None
        records = [value] if type(value) is dict else value
        if type(records) is not list:
            return None
        try:
            return self._read(msgspec.convert(records, self._many), max_records)
        except msgspec.ValidationError:
            return None

    def _read(self, records: list[msgspec.Struct], max_records: int) -> ReadRecords | None:
        if not 0 < len(records) <= max_records:
            return None
        return ReadRecords(list(map(msgspec.structs.astuple, records)), records)

    def row_from_dict(self, features: dict[str, Any]) -> Row:
        return tuple(features.get(column) for column in self.columns)

    def features(self, row: Row) -> dict[str, Any]:
        return dict(zip(self.columns, row, strict=True))

    def features_of(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        columns = self.columns
        # a row of the codec has a value per column (and `strict=` would cost per call: its keyword is parsed each time)
        return [dict(zip(columns, row)) for row in rows]  # noqa: B905

    def frame(self, rows: Sequence[Row]) -> pd.DataFrame:
        """The rows typed as `flowship.pipeline.training.coerce_features` types training data: numeric features
        float64, categorical ones strings, a missing value NaN in both (built from arrays: this is per call)."""
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self.columns]
        data: dict[str, np.ndarray] = {}
        for name, values in zip(self.columns, columns, strict=True):
            if name in self._numeric:
                data[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            else:
                strings = np.empty(len(values), dtype=object)
                strings[:] = [np.nan if v is None else str(v) for v in values]
                data[name] = strings
        return pd.DataFrame(data, columns=self.columns)
