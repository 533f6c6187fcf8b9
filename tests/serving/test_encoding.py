"""JSON on the serving path: orjson, and the standard library wherever orjson refuses."""

from __future__ import annotations

import json
from datetime import date

import numpy as np

from flowship.serving.encoding import dumps, json_line, loads


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
