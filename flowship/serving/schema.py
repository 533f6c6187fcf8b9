"""The request schema, generated from the bundle's input schema, and records -> the frame the model expects."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from flowship.serving.bundle import BundleMetadata, ModelBundle

Row = tuple[Any, ...]
_NONE = type(None)
_NUMBER_KINDS = frozenset({float, int, _NONE})  # not bool: the schema's strict numbers refuse it
_TEXT_KINDS = frozenset({str, _NONE})


class ReadRecords(NamedTuple):
    """Records read from parsed JSON: their rows, and the records themselves as their features (what
    `RecordCodec.features_of(rows)` would give) when they hold exactly the rows' values, keys in column order (else
    None, and the features are made from the rows)."""

    rows: list[Row]
    features: list[dict[str, Any]] | None


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
        # for `read_json`: the records' values in column order, and which columns the schema wants numbers in
        self._item = operator.itemgetter(*self.columns)
        self._key_order = tuple(self.columns)
        doubles = {spec.name for spec in bundle.metadata.input_schema if spec.type == "double"}
        self._number_columns = [i for i, column in enumerate(self.columns) if column in doubles]
        self._text_columns = [i for i, column in enumerate(self.columns) if column not in doubles]

    def row(self, record: BaseModel) -> Row:
        value = self._get(record)
        return (value,) if self._single else value

    def rows(self, records: Sequence[BaseModel]) -> list[Row]:
        if self._single:
            return [(value,) for value in map(self._get, records)]
        return list(map(self._get, records))

    def read_json(self, value: Any, max_records: int) -> ReadRecords | None:
        """The rows of parsed JSON (one record object or a list of 1 to `max_records` of them) when every record is
        exactly what the schema takes, with the values the schema would give (numbers as floats); None otherwise,
        and the schema's own validation then says what is wrong, in its words.

        Column by column, a few C-level passes each: for a 1,000-record request about half the time of validating it
        record by record with the schema model (and no model objects to unpack after)."""
        records = [value] if type(value) is dict else value
        if type(records) is not list or not 0 < len(records) <= max_records:
            return None
        # objects of as many keys as there are columns, each of which they hold: exactly the schema's fields
        if set(map(type, records)) != {dict} or set(map(len, records)) != {len(self.columns)}:
            return None
        try:
            rows = list(map(self._item, records)) if not self._single else [(r[self.columns[0]],) for r in records]
        except KeyError:
            return None
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        changed = False
        for i in self._number_columns:
            values = columns[i]
            kinds = set(map(type, values))
            if not kinds <= _NUMBER_KINDS:
                return None
            if _NONE in kinds:
                present = [v for v in values if v is not None]
                try:
                    if not math.isfinite(sum(present)):  # an infinity or NaN anywhere makes the sum one
                        return None
                    if int in kinds:
                        columns[i] = [float(v) if type(v) is int else v for v in values]
                        changed = True
                except OverflowError:  # an integer beyond any float
                    return None
                continue
            try:
                numbers = np.array(values, dtype=np.float64)
            except OverflowError:  # an integer beyond any float
                return None
            if not np.isfinite(numbers).all():
                return None
            if int in kinds:
                columns[i] = numbers.tolist()
                changed = True
        for i in self._text_columns:
            kinds = set(map(type, columns[i]))
            if not kinds <= _TEXT_KINDS:
                return None
            try:
                "".join(v for v in columns[i] if v is not None).encode("utf-8")
            except UnicodeEncodeError:
                return None
        if changed:
            return ReadRecords(list(zip(*columns, strict=True)), None)
        # the records as the log's features: the same values, and keys in column order (so the log reads the same)
        return ReadRecords(rows, records if set(map(tuple, records)) == {self._key_order} else None)

    def row_from_dict(self, features: dict[str, Any]) -> Row:
        return tuple(features.get(column) for column in self.columns)

    def features(self, row: Row) -> dict[str, Any]:
        return dict(zip(self.columns, row, strict=True))

    def features_of(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        columns = self.columns
        return [dict(zip(columns, row, strict=True)) for row in rows]

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
