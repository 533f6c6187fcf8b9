"""JSON on the serving path: orjson (several times the standard library's speed on a 1,000-record request), with
the standard library's answer wherever orjson refuses, so nothing a client can send makes a body or a log line
fail to encode or parse differently.

* `dumps`: UTF-8 JSON bytes. orjson refuses a string that is not valid Unicode (a lone surrogate escape in a field
  name a client sent, echoed in an error): those are written as ASCII escapes by `json` instead. NaN and
  infinity, which nothing here should hold, are written as null by orjson.
* `loads`: the parsed value, or None when orjson cannot read the bytes; the caller then parses them with `json`,
  which accepts what orjson does not (NaN tokens, lone surrogates: the schema then refuses them in its own words)
  and words the syntax errors as they have always been worded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# int keys (answers by record position) as strings, as `json` writes them; numpy scalars and arrays as numbers
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_LINE = _OPTIONS | orjson.OPT_APPEND_NEWLINE


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=default).encode("ascii")


def json_line(record: dict[str, Any]) -> bytes:
    """One line of a JSON-lines log; a value JSON has no type for is written as its text (a log write never fails
    on a value)."""
    try:
        return orjson.dumps(record, default=str, option=_LINE)
    except (orjson.JSONEncodeError, TypeError):
        return dumps(record, default=str) + b"\n"


def loads(body: bytes) -> Any | None:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
