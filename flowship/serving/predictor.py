"""Scoring several requests in one go, with answers bit-identical to scoring each request on its own.

The preprocessing steps of a pipeline (coercion, imputers, scalers, encoders) work value by value, so running
them once over all the requests' rows changes nothing. The final estimator is different: a linear model's
matrix product may round differently for 1 row and for 40 (BLAS picks other kernels), so it is called once per
request, on that request's rows. Tree ensembles add up leaf values row by row and get one call for everything.
When the bundle has golden records, a startup probe checks this on them and falls back to a safer mode if any
bit differs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.pipeline import Pipeline

from flowship.serving.bundle import ModelBundle
from flowship.serving.errors import ModelInputError
from flowship.serving.fastpath import SPLIT_ROWS, FastPath, build_fast_path
from flowship.serving.schema import RecordCodec, Row

log = logging.getLogger(__name__)

# A failing request of at most this many records is re-scored row by row to name the records at fault.
LOCATE_LIMIT = 20
# Final estimators whose output for a row does not depend on the other rows of the call, to the bit.
ROW_EXACT_MODULES = (
    "sklearn.ensemble._hist_gradient_boosting.",
    "sklearn.ensemble._forest",
    "sklearn.ensemble._gb",
    "sklearn.tree.",
)

# whole: one call of everything; per_request: shared preprocessing, the estimator once per request;
# isolated: each request through the whole pipeline on its own (still one thread hop for the batch)
Mode = Literal["whole", "per_request", "isolated"]
Outputs = tuple[np.ndarray, np.ndarray | None]  # as fastpath.Outputs


@dataclass(frozen=True)
class Scored:
    """One request's outputs, as plain JSON values."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None


class Predictor:
    """Wraps the pipeline; every method runs in the model thread, never on the event loop."""

    def __init__(self, bundle: ModelBundle, codec: RecordCodec, threads: int = 1) -> None:
        self.pipeline = bundle.pipeline
        self.codec = codec
        self.classification = bundle.metadata.task == "classification"
        self.classes = np.asarray(self.pipeline.classes_) if self.classification else None
        self.class_keys = [str(c) for c in self.classes] if self.classes is not None else []
        if isinstance(self.pipeline, Pipeline) and len(self.pipeline.steps) > 1:
            self._prepare: Any = self.pipeline[:-1]
            self._final: Any = self.pipeline[-1]
        else:
            self._prepare, self._final = None, self.pipeline
        final_module = type(self._final).__module__ + "."
        self.mode: Mode = "whole" if final_module.startswith(ROW_EXACT_MODULES) else "per_request"
        self.numeric = list(bundle.metadata.features.numeric)
        # set by `try_fast_path` once it has reproduced the pipeline on the golden records, bit for bit
        self.fast: FastPath | None = None
        # threads that walk a big batch's trees (the fast path's), the model thread included
        self.threads = threads

    def try_fast_path(self, rows: Sequence[Row]) -> str:
        """Use the fast numeric path if this pipeline has its shape and it gives, on these rows (the golden set)
        and on probe rows, exactly the pipeline's outputs; returns what was decided and why."""
        self.close()
        if not rows:
            return "plain pipeline (no golden records to check a fast path on)"
        try:
            fast = build_fast_path(self.pipeline, self.codec, self.numeric, self.classes, self.threads)
        except Exception as exc:  # noqa: BLE001 - any other shape, or a surprise: keep the plain pipeline
            return f"plain pipeline ({exc})"
        problem = fast.verify(rows, self._pipeline_outputs)
        if problem is not None:
            fast.close()
            return f"plain pipeline (the fast path differs: {problem})"
        self.fast = fast
        walkers = (
            f"; a lone request of {SPLIT_ROWS} rows or more walked by {self.threads} threads on idle cores"
            if self.threads > 1
            else ""
        )
        return f"fast numeric path (bit-identical on the golden and probe rows{walkers})"

    def close(self) -> None:
        """Stop the fast path's helper threads, if any (after the last call)."""
        if self.fast is not None:
            self.fast.close()
            self.fast = None

    def score_many(self, items: Sequence[Sequence[Row]], alone: bool = False) -> list[Scored | BaseException]:
        """Each request's outputs, as if it had been scored alone; a request the model fails on gets its own
        error and the others their answers. `alone`: these requests are all the process has in flight, so a big
        batch may have its trees walked by helper threads too (where the machine has idle cores)."""
        if not items:
            return []
        if self.mode == "isolated" or len(items) == 1:
            return [self.score_one(item, alone) for item in items]
        sizes = [len(item) for item in items]
        try:
            rows = [row for item in items for row in item]
            if self.mode == "whole":
                outputs = self._outputs(rows, alone)
                return [self._result(outputs, start, stop) for start, stop in _bounds(sizes)]
            prepared = self._prepared(rows)
        except Exception:  # noqa: BLE001 - some request broke the shared call: score each alone to find it
            return [self.score_one(item) for item in items]
        results: list[Scored | BaseException] = []
        for item, (start, stop) in zip(items, _bounds(sizes), strict=True):
            try:
                outputs = self._estimate(_take_rows(prepared, start, stop))
            except Exception:  # noqa: BLE001 - reported by score_one, which repeats the call for this request
                results.append(self.score_one(item))
                continue
            results.append(self._result(outputs, 0, stop - start))
        return results

    def score_one(self, rows: Sequence[Row], alone: bool = False) -> Scored | BaseException:
        try:
            outputs = self._outputs(rows, alone)
        except (ValueError, TypeError, ArithmeticError) as exc:
            # Records that passed the schema yet break the model: the input is at fault, so the client hears why.
            return ModelInputError(f"the model cannot score this input: {exc}", self._locate(rows))
        except Exception as exc:  # noqa: BLE001 - handed to the request, which answers 500 with its request id
            return exc
        return self._result(outputs, 0, len(rows))

    def probe(self, rows: Sequence[Row]) -> Mode:
        """Check on these rows (the golden set) that batched answers equal per-request ones, bit for bit;
        settle for a safer mode when they do not. Returns the mode kept."""
        if len(rows) < 2:
            return self.mode
        alone = [self.score_one([row]) for row in rows]
        if any(isinstance(a, BaseException) for a in alone):
            return self.mode
        order: list[Mode] = ["whole", "per_request", "isolated"]
        for mode in order[order.index(self.mode) :]:
            self.mode = mode
            together = self.score_many([[row] for row in rows])
            if together == alone:
                break
            log.warning("batched answers differ from unbatched ones in mode %r; trying a safer mode", mode)
        return self.mode

    def _outputs(self, rows: Sequence[Row], alone: bool = False) -> Outputs:
        if self.fast is not None:
            try:
                # alone: the fast path decides whether to share the walk (size, idle cores); else it does not
                outputs = self.fast.outputs(rows, None if alone else False)
            except Exception:  # noqa: BLE001 - the pipeline gives the answer, or the error the client hears
                outputs = None
            if outputs is not None:
                return outputs
        return self._pipeline_outputs(rows)

    def _pipeline_outputs(self, rows: Sequence[Row]) -> Outputs:
        return self._estimate(self._prepared(rows))

    def _prepared(self, rows: Sequence[Row]) -> Any:
        frame = self.codec.frame(rows)
        if self._prepare is None:
            return frame
        with np.errstate(all="ignore"):
            return self._prepare.transform(frame)

    def _estimate(self, prepared: Any) -> Outputs:
        with np.errstate(all="ignore"):
            if self.classes is not None:
                probabilities = np.asarray(self._final.predict_proba(prepared), dtype=np.float64)
                return self.classes[np.argmax(probabilities, axis=1)], probabilities
            return np.asarray(self._final.predict(prepared)), None

    def _result(self, outputs: Outputs, start: int, stop: int) -> Scored | BaseException:
        predictions, probabilities = outputs
        if probabilities is not None:
            part = probabilities[start:stop]
            bad = ~np.isfinite(part).all(axis=1)
        else:
            part = None
            values = predictions[start:stop]
            numeric = values.dtype.kind in "fiub"
            bad = ~np.isfinite(values.astype(np.float64)) if numeric else np.zeros(len(values), dtype=bool)
        if bad.any():
            return ModelInputError(
                "the model gave a non-finite output; the values are probably far outside the range it was trained on",
                [int(i) for i in np.flatnonzero(bad)],
            )
        scored_probabilities = None
        if part is not None:
            scored_probabilities = _shares(self.class_keys, part.tolist())
        return Scored(predictions[start:stop].tolist(), scored_probabilities)

    def _locate(self, rows: Sequence[Row]) -> list[int] | None:
        if len(rows) == 1:
            return [0]
        if len(rows) > LOCATE_LIMIT:
            return None
        failing = []
        for i, row in enumerate(rows):
            try:
                self._outputs([row])
            except Exception:  # noqa: BLE001 - only asking which rows fail
                failing.append(i)
        return failing or None


def limit_native_threads() -> None:
    """Run in the model thread at its start: one OpenMP/BLAS thread, unless OMP_NUM_THREADS says otherwise.

    Micro-batches are small, and OpenMP's thread team costs more than it gives on them: on a busy 2-core host a
    1-row `predict_proba` of a gradient-boosting pipeline took 100 ms with 2 threads and 11 ms with 1. The event
    loop keeps the other core. (A big batch on the fast path is shared with helper threads in flowship's own way,
    `fastpath.Helpers`, which never waits for a thread that has not started.)
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # For OpenMP the limit holds for the calling thread, i.e. the model thread, from now on.
    threadpool_limits(limits=1)


def _shares(keys: Sequence[str], rows: list[list[float]]) -> list[dict[str, float]]:
    """Each row of probabilities as {class: probability}. A dict display for two classes (the common case) is ten
    times as fast as `dict(zip(...))` per row; `zip(..., strict=True)` would cost twice that again (its keyword is
    parsed on every call), and the model gives one probability per class."""
    if len(keys) == 2:
        first, second = keys
        return [{first: a, second: b} for a, b in rows]
    return [dict(zip(keys, row)) for row in rows]  # noqa: B905 - one probability per class


def _bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(sizes).tolist()
    return [(end - size, end) for size, end in zip(sizes, ends, strict=True)]


def _take_rows(prepared: Any, start: int, stop: int) -> Any:
    if hasattr(prepared, "iloc"):
        return prepared.iloc[start:stop]
    return prepared[start:stop]
