"""JSON on the serving path: orjson (several times the standard library's speed on a 1,000-record request), with
the standard library's answer wherever orjson refuses, so nothing a client can send makes a body or a log line
fail to encode or parse differently; and msgspec where a request's records are typed structs (`schema.read_body`
parses and checks them in one pass) and where many log lines are written at once.

* `dumps`: UTF-8 JSON bytes. orjson refuses a string that is not valid Unicode (a lone surrogate escape in a field
  name a client sent, echoed in an error): those are written as ASCII escapes by `json` instead. NaN and
  infinity, which nothing here should hold, are written as null by orjson.
* `json_lines`: many JSON lines in one call (msgspec), each item a dict or a struct; where msgspec refuses (text
  that is not valid Unicode), each line is written by `json_line` instead.
* `loads`: the parsed value, or None when orjson cannot read the bytes; the caller then parses them with `json`,
  which accepts what orjson does not (NaN tokens, lone surrogates: the schema then refuses them in its own words)
  and words the syntax errors as they have always been worded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import orjson

# int keys (answers by record position) as strings, as `json` writes them; numpy scalars and arrays as numbers
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_LINE = _OPTIONS | orjson.OPT_APPEND_NEWLINE


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """`value` as JSON; a struct as the object it stands for, anything else JSON has no type for given to
    `default` (None: a TypeError)."""
    plain = _plain if default is None else _as_text if default is str else _structs_then(default)
    try:
        return orjson.dumps(value, default=plain, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=plain).encode("ascii")


def json_line(record: dict[str, Any] | msgspec.Struct) -> bytes:
    """One line of a JSON-lines log; a value JSON has no type for is written as its text (a log write never fails
    on a value)."""
    try:
        return orjson.dumps(record, default=_as_text, option=_LINE)
    except (orjson.JSONEncodeError, TypeError):
        return dumps(record, default=str) + b"\n"


def json_lines(items: Sequence[Any]) -> bytes:
    """One JSON line per item (a dict or a struct), as `json_line` writes each, in one call."""
    try:
        return _LINES.encode_lines(items)
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError):  # ValueError: text that is not Unicode
        return b"".join(json_line(item) for item in items)


def _structs_then(default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A `default` for orjson and json: a struct as the object it stands for, anything else to `default`."""

    def plain(value: Any) -> Any:
        return msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else default(value)

    return plain


def _unserializable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_plain = _structs_then(_unserializable)
_as_text = _structs_then(str)


def _number_or_text(value: Any) -> Any:
    # msgspec hands over what it has no type for, float and int subclasses (numpy's scalars) included
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


_LINES = msgspec.json.Encoder(enc_hook=_number_or_text)


def loads(body: bytes) -> Any | None:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
