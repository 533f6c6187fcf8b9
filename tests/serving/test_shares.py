"""A classifier's probabilities as the answer and the log carry them: per record, {class: probability} in the
model's class order, for two classes (the dict display) and for more (zip)."""

from __future__ import annotations

from flowship.serving.predictor import _shares


def test_two_classes() -> None:
    shares = _shares(["True", "False"], [[0.25, 0.75], [1.0, 0.0]])
    assert shares == [{"True": 0.25, "False": 0.75}, {"True": 1.0, "False": 0.0}]
    assert [list(s) for s in shares] == [["True", "False"]] * 2  # the model's order, not sorted


def test_more_classes() -> None:
    shares = _shares(["late", "early", "on time"], [[0.1, 0.2, 0.7]])
    assert shares == [{"late": 0.1, "early": 0.2, "on time": 0.7}]
    assert list(shares[0]) == ["late", "early", "on time"]


def test_no_rows() -> None:
    assert _shares(["a", "b"], []) == [] and _shares(["a", "b", "c"], []) == []
