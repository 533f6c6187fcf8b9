"""JSON on the serving path: orjson (and msgspec for many log lines), and the standard library wherever they
refuse."""

from __future__ import annotations

import json
from datetime import date

import msgspec
import numpy as np
import pytest

from flowship.serving.encoding import dumps, json_line, json_lines, loads


def test_dumps_writes_compact_utf8_json_with_numpy_values_and_int_keys() -> None:
    body = dumps({"p": np.float64(0.25), "n": np.int64(3), "a": np.arange(2), 1: "é"})
    assert body == '{"p":0.25,"n":3,"a":[0,1],"1":"é"}'.encode()


def test_a_string_that_is_not_unicode_is_escaped_not_refused() -> None:
    # a lone surrogate escape in a field name a client sent, echoed in an error: orjson refuses it
    body = dumps({"field": "bad\ud800", "ok": "é"})
    assert body == b'{"field":"bad\\ud800","ok":"\\u00e9"}'
    assert json.loads(body) == {"field": "bad\ud800", "ok": "é"}


def test_a_log_line_never_fails_on_a_value() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert json_line({"v": Odd(), "d": date(2026, 12, 3)}) == b'{"v":"odd","d":"2026-12-03"}\n'
    assert json_line({"v": Odd(), "s": "\udfff"}) == b'{"v":"odd","s":"\\udfff"}\n'


def test_loads_gives_none_for_what_orjson_cannot_read() -> None:
    assert loads(b'[{"a": 1.5, "b": null}]') == [{"a": 1.5, "b": None}]
    for body in (b'{"a": NaN}', b'{"a": Infinity}', b'"\\ud800"', b"{", b"\xff", b"1e400"):
        assert loads(body) is None


class Fields(msgspec.Struct, gc=False):
    """A record as `schema.read_body` reads it: its fields renamed to the columns."""

    a: float | None
    b: str | None


def test_many_lines_at_once_read_as_json_line_writes_each() -> None:
    items = [
        {"row": 0, "features": Fields(1.5, "x"), "p": np.float64(0.25), "n": np.int64(2)},
        {"row": 1, "features": {"a": None, "b": "é"}, "when": date(2026, 12, 4)},
    ]
    lines = json_lines(items).splitlines(keepends=True)
    assert [json.loads(line) for line in lines] == [
        {"row": 0, "features": {"a": 1.5, "b": "x"}, "p": 0.25, "n": 2},
        {"row": 1, "features": {"a": None, "b": "é"}, "when": "2026-12-04"},
    ]
    assert all(line.endswith(b"\n") for line in lines) and json_lines([]) == b""


def test_many_lines_with_text_that_is_not_unicode_are_all_written() -> None:
    # msgspec refuses the lone surrogate: every line is then written as json_line writes it
    items = [{"row": 0, "features": Fields(1.0, "ok")}, {"row": 1, "features": Fields(2.0, "bad\ud800")}]
    assert json_lines(items) == (
        b'{"row":0,"features":{"a":1.0,"b":"ok"}}\n{"row":1,"features":{"a":2.0,"b":"bad\\ud800"}}\n'
    )


def test_a_struct_is_written_as_the_object_it_stands_for() -> None:
    assert dumps({"features": [Fields(0.5, None)]}) == b'{"features":[{"a":0.5,"b":null}]}'
    assert json_line({"features": Fields(0.5, "x")}) == b'{"features":{"a":0.5,"b":"x"}}\n'
    with pytest.raises(TypeError):
        dumps({"v": object()})
