"""MLflow's scoring protocol (`POST /invocations` of `mlflow models serve`), read into records: a client written for
MLflow's server sends the same JSON to flowship, and its records are then validated, scored and logged as
`POST /predict`'s are.

The four JSON forms MLflow accepts for a tabular model, exactly one per request:
`{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` (pandas' split orient; `index` allowed and
ignored), `{"dataframe_records": [{...}, ...]}`, `{"instances": [{...}, ...]}` and `{"inputs": ...}` (records,
or columns: `{"col": [v, ...], ...}`). `params` (MLflow's inference parameters) is refused: these models take none.
"""

from __future__ import annotations

from typing import Any

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class ProtocolError(ValueError):
    """The body is JSON but not one of MLflow's forms; the message says which part and what is expected."""


def mlflow_records(payload: Any) -> list[Any]:
    """The records of an MLflow scoring request (each still to be validated as a record)."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"expected a JSON object with exactly one of {', '.join(FORMATS)}")
    if "params" in payload:
        raise ProtocolError("params: this model takes no inference parameters")
    given = [key for key in FORMATS if key in payload]
    unknown = sorted(set(payload) - set(FORMATS))
    if unknown:
        raise ProtocolError(f"unknown field(s) {unknown}: send exactly one of {', '.join(FORMATS)}")
    if len(given) != 1:
        found = f" (got {', '.join(given)})" if given else ""
        raise ProtocolError(f"send exactly one of {', '.join(FORMATS)}{found}")
    key = given[0]
    value = payload[key]
    if key == "dataframe_split":
        return _split(value)
    if key == "inputs" and isinstance(value, dict):
        return _columns(value)
    if not isinstance(value, list):
        raise ProtocolError(f"{key}: expected a list of records")
    return value


def _split(value: Any) -> list[Any]:
    if not isinstance(value, dict):
        raise ProtocolError('dataframe_split: expected {"columns": [...], "data": [[...], ...]}')
    extra = sorted(set(value) - {"columns", "data", "index"})
    if extra:
        raise ProtocolError(f"dataframe_split: unknown field(s) {extra}")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ProtocolError("dataframe_split.columns: expected a list of column names")
    if len(set(columns)) != len(columns):
        raise ProtocolError("dataframe_split.columns: a column is named twice")
    if not isinstance(data, list):
        raise ProtocolError("dataframe_split.data: expected a list of rows")
    records = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ProtocolError(f"dataframe_split.data[{i}]: expected a list of {len(columns)} values, one per column")
        records.append(dict(zip(columns, row)))  # noqa: B905 - the length is checked above (strict= costs per call)
    return records


def _columns(value: dict[str, Any]) -> list[Any]:
    lengths = {name: len(column) if isinstance(column, list) else None for name, column in value.items()}
    not_lists = sorted(name for name, n in lengths.items() if n is None)
    if not_lists:
        raise ProtocolError(f"inputs: expected a list of values for each column; not a list: {not_lists}")
    if len(set(lengths.values())) > 1:
        raise ProtocolError(f"inputs: the columns differ in length: {lengths}")
    n = next(iter(lengths.values()), 0) or 0
    return [{name: column[i] for name, column in value.items()} for i in range(n)]
