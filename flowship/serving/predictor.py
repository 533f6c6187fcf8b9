"""Scoring: one model call for many requests' rows, split back per request, non-finite outputs refused."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowship.serving.bundle import ModelBundle
from flowship.serving.errors import ModelInputError
from flowship.serving.schema import RecordCodec, Row

log = logging.getLogger(__name__)

# A failing request of at most this many records is re-scored row by row to name the records at fault.
LOCATE_LIMIT = 20


@dataclass(frozen=True)
class Scored:
    """One request's outputs, as plain JSON values."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None


class Predictor:
    """Wraps the pipeline; every method runs in the model thread, never on the event loop."""

    def __init__(self, bundle: ModelBundle, codec: RecordCodec) -> None:
        self.pipeline = bundle.pipeline
        self.codec = codec
        self.classification = bundle.metadata.task == "classification"
        self.classes = np.asarray(self.pipeline.classes_) if self.classification else None
        self.class_keys = [str(c) for c in self.classes] if self.classes is not None else []

    def score_many(self, items: Sequence[Sequence[Row]]) -> list[Scored | BaseException]:
        """Score several requests in one model call; if that call fails, each request alone, so only the
        request at fault gets the error."""
        if len(items) > 1:
            rows = [row for item in items for row in item]
            try:
                predictions, probabilities = self._arrays(rows)
            except Exception:  # noqa: BLE001 - any failure is retried per request below, where it is reported
                return [self.score_one(item) for item in items]
            out: list[Scored | BaseException] = []
            start = 0
            for item in items:
                stop = start + len(item)
                out.append(self._slice(predictions, probabilities, start, stop))
                start = stop
            return out
        return [self.score_one(items[0])] if items else []

    def score_one(self, rows: Sequence[Row]) -> Scored | BaseException:
        try:
            predictions, probabilities = self._arrays(rows)
        except (ValueError, TypeError, ArithmeticError) as exc:
            # Records that passed the schema yet break the model: the input is at fault, so the client hears why.
            return ModelInputError(f"the model cannot score this input: {exc}", self._locate(rows))
        except Exception as exc:  # noqa: BLE001 - handed to the request, which answers 500 with its request id
            return exc
        return self._slice(predictions, probabilities, 0, len(rows))

    def _arrays(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray | None]:
        frame = self.codec.frame(rows)
        with np.errstate(all="ignore"):
            if self.classes is not None:
                probabilities = np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)
                return self.classes[np.argmax(probabilities, axis=1)], probabilities
            return np.asarray(self.pipeline.predict(frame)), None

    def _slice(
        self, predictions: np.ndarray, probabilities: np.ndarray | None, start: int, stop: int
    ) -> Scored | BaseException:
        if probabilities is not None:
            part = probabilities[start:stop]
            bad = ~np.isfinite(part).all(axis=1)
        else:
            part = None
            values = predictions[start:stop]
            bad = (
                ~np.isfinite(values.astype(np.float64)) if values.dtype.kind in "fiub" else np.zeros(len(values), bool)
            )
        if bad.any():
            return ModelInputError(
                "the model gave a non-finite output; the values are probably far outside the range it was trained on",
                [int(i) for i in np.flatnonzero(bad)],
            )
        scored_probabilities = None
        if part is not None:
            scored_probabilities = [dict(zip(self.class_keys, row, strict=True)) for row in part.tolist()]
        return Scored(predictions[start:stop].tolist(), scored_probabilities)

    def _locate(self, rows: Sequence[Row]) -> list[int] | None:
        if len(rows) == 1:
            return [0]
        if len(rows) > LOCATE_LIMIT:
            return None
        failing = []
        for i, row in enumerate(rows):
            try:
                self._arrays([row])
            except Exception:  # noqa: BLE001 - only asking which rows fail
                failing.append(i)
        return failing or None
