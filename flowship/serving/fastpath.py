"""A fast numeric path for one common pipeline shape, used only when it reproduces the pipeline to the bit.

The shape: `Pipeline([coerce (any step that keeps the column names), ColumnTransformer(OrdinalEncoder on the
categorical features, the numeric ones passed through), HistGradientBoostingClassifier/Regressor])`. Scoring it
through scikit-learn spends most of its time on per-call pandas and input checks, not on the trees. Here each
categorical value is looked up in a table (string -> the code the trees see, built by running the pipeline's
own steps on every known category, a missing value and an unknown string) and the numeric values go straight
into the matrix; the trees then walk its bins, as training's early stopping walks them, or, for a few rows, all
at once by `TreeTable` (scikit-learn calls each tree in turn: 200 calls cost about 1.4 ms for a single record). A big
batch's rows are walked in parts by the model thread and `Helpers` (the walk releases the GIL), which uses a
core the process would otherwise leave idle while a lone big request is scored.

`build_fast_path` returns None whenever the pipeline has another shape, and `FastPath.verify` compares its
outputs with the pipeline's on the golden records and on probe rows (every category, missing and unknown
values, odd numbers): any bit of difference, or any error, and the caller keeps the plain pipeline.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from flowship.serving.schema import RecordCodec, Row

try:  # the compiled binning and walk of one tree, as training's early stopping calls them (private: verified bit for
    # bit at start)
    from sklearn.ensemble._hist_gradient_boosting._binning import _map_to_bins
    from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_binned_data
except ImportError:  # another scikit-learn: no fast path
    _map_to_bins = _predict_from_binned_data = None

log = logging.getLogger(__name__)

HGB_MODULE = "sklearn.ensemble._hist_gradient_boosting."
# at most this many rows are scored by the tree table (more: scikit-learn's compiled walk, tree by tree)
SMALL_BATCH = 8
# at least this many rows are walked in parts, one per thread (below it, handing a part over costs more than it
# saves: each part is one call per tree)
SPLIT_ROWS = 512
# the kernel's instant count of runnable threads ("running/total", the 4th field)
LOADAVG = Path("/proc/loadavg")
# a string no category is: where unknown values go
UNKNOWN_PROBE = "\x00flowship-unknown-category\x00"
Outputs = tuple[np.ndarray, np.ndarray | None]


class FastPath:
    """Rows (in the codec's column order) -> the matrix the trees see -> predictions and probabilities."""

    def __init__(
        self,
        pipeline: Pipeline,
        codec: RecordCodec,
        layout: list[tuple[int, dict[str, float] | None]],
        missing: dict[int, float | None],
        unknown: dict[int, float | None],
        classes: np.ndarray | None,
        threads: int = 1,
    ) -> None:
        self.pipeline = pipeline
        self.codec = codec
        self.model: Any = pipeline[-1]
        # per matrix column: (the row position it comes from, its category table or None for a number)
        self.layout = layout
        self.missing = missing
        self.unknown = unknown
        self.classes = classes
        self.table = TreeTable(self.model)
        # scikit-learn's walk of binned values, tree by tree, with what it would work out or allocate on every call
        # made once (a partial, a method call and an output array per tree)
        self.trees = [
            (k, tree.nodes, tree.binned_left_cat_bitsets) for it in self.model._predictors for k, tree in enumerate(it)
        ]
        mapper = self.model._bin_mapper
        self.thresholds = mapper.bin_thresholds_
        self.is_categorical = np.asarray(mapper.is_categorical_, dtype=np.uint8)
        self.missing_bin = int(mapper.missing_values_bin_idx_)
        # per categorical column: its codes with the missing value's (None: a value the pipeline must judge)
        self.codes = {position: {**table, None: missing[position]} for position, table in layout if table is not None}
        self.helpers = Helpers(threads - 1) if threads > 1 else None

    def matrix(self, rows: Sequence[Row]) -> np.ndarray | None:
        """The trees' input for these rows; None when a value needs the pipeline (an unknown category it rejects).

        Column by column in C-level passes: numbers through numpy (None becomes NaN), categories by dict lookups."""
        out = np.empty((len(rows), len(self.layout)), dtype=np.float64)
        if not rows:
            return out
        columns = list(zip(*rows, strict=True))
        for j, (position, table) in enumerate(self.layout):
            values = columns[position]
            if table is None:
                out[:, j] = np.array(values, dtype=np.float64)
                continue
            codes = list(map(self.codes[position].get, values, repeat(self.unknown[position], len(values))))
            if None in codes:
                return None
            out[:, j] = codes
        return out

    def estimate(self, x: np.ndarray, split: bool | None = None) -> Outputs:
        """As `predict_proba` (classifiers: argmax for the class) or `predict` (regressors), without the checks.
        `split`: walk the trees in parts with the helpers; None: when there are SPLIT_ROWS rows or more and the
        helpers find idle cores (for a caller with no other request in flight)."""
        model = self.model
        with np.errstate(all="ignore"):
            raw = self.table.raw(x) if x.shape[0] <= SMALL_BATCH else None
            if raw is None:
                if split is None:
                    split = x.shape[0] >= SPLIT_ROWS and self.helpers is not None and self.helpers.idle()
                raw = self.walk(x, split)
            if self.classes is not None:
                probabilities = np.asarray(model._loss.predict_proba(raw), dtype=np.float64)
                return self.classes[np.argmax(probabilities, axis=1)], probabilities
            return np.asarray(model._loss.link.inverse(raw.ravel())), None

    def walk(self, x: np.ndarray, split: bool = False) -> np.ndarray:
        """The raw predictions (rows x classes), as `_raw_predict` adds them up: the baseline, then each tree's
        values in turn, one OpenMP thread per walker; with `split` (and helpers), in parts of the rows, one per
        thread (each row's sum is the same whichever thread adds it up).

        The trees walk the values' bins, as training does, not the values: a node then compares one byte with its
        bin threshold where it would compare a float with the threshold's value, and the same rows go left (a value
        is at most a threshold exactly when its bin is at most the threshold's bin; a missing value has a bin of its
        own). A category's code is its own bin: the model's own encoder (`_preprocessor`, in the category tables)
        gives the categories its trees saw the codes 0, 1, ... and any other the missing code (`verify` walks every
        category the pipeline's encoder knows). 1,000 rows of the default model: 4.7 ms walked by value, 3.3 ms by
        bin, binning included."""
        model = self.model
        raw = np.zeros((x.shape[0], model.n_trees_per_iteration_), dtype=model._baseline_prediction.dtype)
        raw = np.asfortranarray(raw)
        raw += model._baseline_prediction
        binned = np.empty(x.shape, dtype=np.uint8, order="F")
        _map_to_bins(x, self.thresholds, self.is_categorical, self.missing_bin, 1, binned)
        if not split or self.helpers is None or x.shape[0] < 2:
            self._walk(binned, raw)
            return raw
        bounds = np.linspace(0, x.shape[0], self.helpers.count + 2).astype(int).tolist()
        parts = [(binned[a:b], raw[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        self.helpers.share(self._walk_part, parts)
        return raw

    def _walk(self, binned: np.ndarray, raw: np.ndarray) -> None:
        out = np.empty(binned.shape[0], dtype=raw.dtype)
        for k, nodes, bitsets in self.trees:
            _predict_from_binned_data(nodes, binned, bitsets, self.missing_bin, 1, out)
            raw[:, k] += out

    def _walk_part(self, part: tuple[np.ndarray, np.ndarray]) -> None:
        self._walk(*part)

    def close(self) -> None:
        """Stop the helper threads (after the last call)."""
        if self.helpers is not None:
            self.helpers.close()

    def outputs(self, rows: Sequence[Row], split: bool | None = None) -> Outputs | None:
        x = self.matrix(rows)
        return None if x is None else self.estimate(x, split)

    def verify(self, rows: Sequence[Row], reference: Any) -> str | None:
        """None when the fast path gives, bit for bit, what `reference(rows)` (the plain pipeline) gives on these
        rows and on probe rows; else what differs."""
        for name, sample in (("golden", list(rows)), ("probe", self.probe_rows())):
            try:
                expected = reference(sample)
                got = self.outputs(sample)
                # walked in parts by the helper threads, as big batches are
                shared = self.outputs(sample, split=True)
                # and a few rows at a time, as single records and small batches are scored (by the tree table)
                chunks = [self.outputs(sample[i : i + SMALL_BATCH]) for i in range(0, len(sample), SMALL_BATCH)]
            except Exception as exc:  # noqa: BLE001 - any failure means: do not use the fast path
                return f"{name} rows: {type(exc).__name__}: {exc}"
            if got is None or shared is None or any(chunk is None for chunk in chunks):
                return f"{name} rows: the fast path cannot encode them"
            for part, a in enumerate(expected):
                b, c_shared = got[part], shared[part]
                in_chunks = [chunk[part] for chunk in chunks if chunk is not None]
                if any((a is None) != (c is None) for c in (b, c_shared, *in_chunks)):
                    return f"{name} rows: output {part} missing on one side"
                if a is None:
                    continue
                if not _same_bits(np.asarray(a), np.asarray(b)):
                    return f"{name} rows: output {part} differs"
                if not _same_bits(np.asarray(a), np.asarray(c_shared)):
                    return f"{name} rows: output {part} differs when walked in parts"
                if not _same_bits(np.asarray(a), np.concatenate([np.asarray(c) for c in in_chunks])):
                    return f"{name} rows: output {part} differs in small batches"
        return None

    def probe_rows(self) -> list[Row]:
        """Every known category of each categorical column, a missing and an unknown one; numbers of all kinds."""
        tables = {position: table for position, table in self.layout if table is not None}
        longest = max((len(t) for t in tables.values()), default=0) + 2
        numbers = [0.0, -1.5, 1e300, -1e-300, 3.0, 12345.678, math.nan, 7.0, -0.0, 1e-7]
        rows = []
        for i in range(max(longest, len(numbers))):
            row: list[Any] = []
            for position in range(len(self.codec.columns)):
                table = tables.get(position)
                if table is None:
                    number = numbers[(i + position) % len(numbers)]
                    row.append(None if math.isnan(number) else number)
                    continue
                choices: list[Any] = list(table)
                if self.missing[position] is not None:
                    choices.append(None)
                if self.unknown[position] is not None:
                    choices.append(UNKNOWN_PROBE)
                row.append(choices[i % len(choices)])
            rows.append(tuple(row))
        return rows


class Helpers:
    """Threads that walk parts of a big batch beside the model thread (the compiled walk releases the GIL), while
    the machine has a core that nothing else wants.

    Parts cost: the threads take the GIL in turns between trees, and a helper on a core that other work wants
    slows the whole call down (scoring 1,000 rows on the test machines, the trees walked by value: 6.2 ms alone,
    5.0 ms with a helper on an idle core, 7.2 ms with a helper beside a busy one; by bin, the walk alone 3.3 ms
    and 2.75 ms with a helper on an idle core). So a walk is shared only when the caller says its
    requests are all the process has in flight, and `idle` then asks the kernel how many threads are running or
    ready to run on the whole machine (`/proc/loadavg`, an instant count, the caller included): one core per
    helper must be left over.

    `share` hands each helper a job that takes the next part not yet taken; the model thread takes parts the same
    way, so where a helper does not get a core before the model thread is done with its own part, the model
    thread walks the rest itself: the worst case is one hand-off, never a wait on a thread that has not started.
    The model thread then waits only for parts a helper has taken."""

    def __init__(self, count: int, loadavg: Path = LOADAVG) -> None:
        self.count = count
        self._loadavg = loadavg
        self._cores = len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="flowship-trees")

    def idle(self) -> bool:
        """True when the threads running or ready to run, the caller included, leave a core for each helper."""
        try:
            running = int(self._loadavg.read_bytes().split()[3].split(b"/")[0])
        except (OSError, IndexError, ValueError):  # no such file (not Linux), or another format: do not share
            return False
        return running + self.count <= self._cores

    def share(self, work: Callable[[Any], None], parts: Sequence[Any]) -> None:
        """`work(part)` for every part, by this thread and the helpers; raises the first part's error, if any."""
        order = iter(range(len(parts)))
        done = [threading.Event() for _ in parts]
        errors: list[BaseException | None] = [None] * len(parts)

        def take_parts() -> None:
            for i in order:  # next() of a range iterator is atomic under the GIL: each part is taken once
                try:
                    work(parts[i])
                except BaseException as exc:  # noqa: BLE001 - raised in the model thread below
                    errors[i] = exc
                finally:
                    done[i].set()

        for _ in range(min(self.count, len(parts) - 1)):
            self._pool.submit(take_parts)
        take_parts()
        for event in done:
            event.wait()
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class TreeTable:
    """Every tree of the model in one table, walked level by level for all trees and rows at once: the same
    decisions as scikit-learn's `_predict_from_raw_data` (a missing value goes the node's missing way; a category
    goes left when in the node's set, right when known, else the missing way; a number left when <= the
    threshold), then each class's leaf values added in the trees' order, as `_predict_iterations` adds them.

    For a few rows only: a level costs a handful of numpy calls over (rows x trees), where scikit-learn pays one
    call per tree; for many rows its compiled walk is faster. `FastPath.verify` checks it bit for bit."""

    def __init__(self, model: Any) -> None:
        trees = [(k, tree) for iteration in model._predictors for k, tree in enumerate(iteration)]
        known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        nodes, bitsets, roots, node_offset, bitset_offset = [], [], [], 0, 0
        for _, tree in trees:
            table = tree.nodes
            roots.append(node_offset)
            shifted = {
                "left": table["left"].astype(np.int64) + node_offset,
                "right": table["right"].astype(np.int64) + node_offset,
                "bitset": table["bitset_idx"].astype(np.int64) + bitset_offset,
            }
            nodes.append((table, shifted))
            bitsets.append(np.asarray(tree.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8))
            node_offset += len(table)
            bitset_offset += len(bitsets[-1])
        every = np.concatenate([table for table, _ in nodes])
        self.value = every["value"].astype(np.float64)
        self.feature = every["feature_idx"].astype(np.int64)
        self.threshold = every["num_threshold"].astype(np.float64)
        self.missing_left = every["missing_go_to_left"].astype(bool)
        self.is_leaf = every["is_leaf"].astype(bool)
        self.is_categorical = every["is_categorical"].astype(bool)
        self.left = np.concatenate([shifted["left"] for _, shifted in nodes])
        self.right = np.concatenate([shifted["right"] for _, shifted in nodes])
        self.bitset = np.concatenate([shifted["bitset"] for _, shifted in nodes])
        self.left_bitsets = np.concatenate(bitsets) if bitset_offset else np.zeros((1, 8), dtype=np.uint32)
        self.known_bitsets = np.asarray(known, dtype=np.uint32).reshape(-1, 8)
        self.known_index = np.asarray(f_idx_map, dtype=np.int64)
        self.any_categorical = bool(self.is_categorical.any())
        self.roots = np.asarray(roots, dtype=np.int64)
        classes = np.asarray([k for k, _ in trees])
        self.trees_of_class = [np.flatnonzero(classes == k) for k in range(model.n_trees_per_iteration_)]
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)

    def raw(self, x: np.ndarray) -> np.ndarray | None:
        """The raw predictions (rows x classes), as `_raw_predict` gives them; None where a category code is one
        scikit-learn's walk would read differently (beyond 255)."""
        n = x.shape[0]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        rows = np.arange(n)[:, None]
        while True:
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            value = x[rows, self.feature[node]]
            missing = np.isnan(value)
            left = value <= self.threshold[node]
            if self.any_categorical:
                categorical = self.is_categorical[node] & ~missing & ~leaf
                if categorical.any():
                    codes = value[categorical]
                    if (codes >= 256).any():
                        return None
                    at = node[categorical]
                    valid = codes >= 0
                    code = np.where(valid, codes, 0).astype(np.uint8).astype(np.int64)
                    word, bit = code // 32, (code % 32).astype(np.uint32)
                    in_left = (self.left_bitsets[self.bitset[at], word] >> bit) & 1 == 1
                    known = (self.known_bitsets[self.known_index[self.feature[at]], word] >> bit) & 1 == 1
                    goes_missing_way = ~valid | (~in_left & ~known)
                    left[categorical] = np.where(goes_missing_way, self.missing_left[at], in_left)
            left = np.where(missing, self.missing_left[node], left)
            node = np.where(leaf, node, np.where(left, self.left[node], self.right[node]))
        leaves = self.value[node]
        raw = np.empty((n, len(self.trees_of_class)), dtype=np.float64)
        for k, trees in enumerate(self.trees_of_class):
            # the baseline, then each tree's value added in turn: the same float additions as `+=` per tree
            terms = np.concatenate([np.full((n, 1), self.baseline[k]), leaves[:, trees]], axis=1)
            raw[:, k] = np.add.accumulate(terms, axis=1)[:, -1]
        return raw


def build_fast_path(
    pipeline: Any, codec: RecordCodec, numeric: Sequence[str], classes: np.ndarray | None, threads: int = 1
) -> FastPath:
    """The fast path for this pipeline, walking big batches with `threads` threads; raises ValueError when the
    pipeline has another shape."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 3:
        raise ValueError("not a 3-step pipeline")
    coerce = pipeline[0]
    if not (isinstance(coerce, FunctionTransformer) and getattr(coerce.func, "__name__", "") == "coerce_features"):
        raise ValueError("first step is not flowship's coerce_features")
    model = pipeline[-1]
    if not type(model).__module__.startswith(HGB_MODULE):
        raise ValueError(f"final step is {type(model).__name__}, not a histogram gradient boosting model")
    if _predict_from_binned_data is None or _map_to_bins is None:
        raise ValueError("this scikit-learn has no _predict_from_binned_data and _map_to_bins")
    for attribute in ("_bin_mapper", "_predictors", "_baseline_prediction", "_loss", "n_trees_per_iteration_"):
        if not hasattr(model, attribute):
            raise ValueError(f"the model has no {attribute}")
    encode = pipeline[1]
    if not isinstance(encode, ColumnTransformer):
        raise ValueError("second step is not a ColumnTransformer")
    columns = codec.columns
    numeric_set = set(numeric)
    categories: dict[str, list[str]] = {}
    for _, transformer, selected in encode.transformers_:
        if isinstance(transformer, OrdinalEncoder):
            if not isinstance(selected, list) or len(selected) != len(transformer.categories_):
                raise ValueError("an OrdinalEncoder without a list of column names")
            for name, known in zip(selected, transformer.categories_, strict=True):
                categories[str(name)] = [c for c in known if isinstance(c, str)]
        elif not _passes_through(transformer):
            raise ValueError(f"unsupported transformer {type(transformer).__name__}")
    categorical = [c for c in columns if c not in numeric_set]
    if sorted(categories) != sorted(categorical):
        raise ValueError("the categorical features are not exactly the OrdinalEncoder's columns")

    # The order the trees see: the encoder's output names, reordered by the model's own preprocessor if any.
    stage_names = [str(c) for c in encode.get_feature_names_out()]
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is None:
        final_names = stage_names
    else:
        final_names = []
        for name, _, mask in preprocessor.transformers_:
            if name == "remainder":
                continue
            final_names += [stage_names[i] for i in np.flatnonzero(np.asarray(mask))]
    if sorted(final_names) != sorted(columns):
        raise ValueError("the model's input columns are not the features")
    position_of = {name: i for i, name in enumerate(columns)}

    # Category tables from the pipeline's own steps: one row per known category, then a missing and an unknown
    # value (None when the pipeline rejects it: such requests go through the pipeline, which says why).
    longest = max((len(known) for known in categories.values()), default=0) or 1
    probe: dict[str, list[Any]] = {}
    for name in columns:
        known = categories.get(name)
        if known is None:
            probe[name] = [0.0] * longest
        else:
            probe[name] = [known[i] if i < len(known) else known[0] for i in range(longest)]
    codes = _tree_inputs(pipeline, codec, probe, final_names)
    missing_codes = _tree_inputs_or_none(pipeline, codec, {n: [None] for n in columns}, final_names)
    unknown_probe = {name: [UNKNOWN_PROBE if name in categories else 0.0] for name in columns}
    unknown_codes = _tree_inputs_or_none(pipeline, codec, unknown_probe, final_names)
    layout: list[tuple[int, dict[str, float] | None]] = []
    missing: dict[int, float | None] = {}
    unknown: dict[int, float | None] = {}
    for name in final_names:
        position = position_of[name]
        if name not in categories:
            layout.append((position, None))
            continue
        known = categories[name]
        layout.append((position, {value: float(codes[name].iloc[i]) for i, value in enumerate(known)}))
        missing[position] = None if missing_codes is None else float(missing_codes[name].iloc[0])
        unknown[position] = None if unknown_codes is None else float(unknown_codes[name].iloc[0])
    return FastPath(pipeline, codec, layout, missing, unknown, classes, threads)


def _tree_inputs_or_none(
    pipeline: Pipeline, codec: RecordCodec, data: dict[str, list[Any]], names: list[str]
) -> pd.DataFrame | None:
    try:
        return _tree_inputs(pipeline, codec, data, names)
    except ValueError:
        return None


def _tree_inputs(pipeline: Pipeline, codec: RecordCodec, data: dict[str, list[Any]], names: list[str]) -> pd.DataFrame:
    rows = list(zip(*(data[c] for c in codec.columns), strict=True))
    stage = pipeline[:-1].transform(codec.frame(rows))
    preprocessor = getattr(pipeline[-1], "_preprocessor", None)
    out = preprocessor.transform(stage) if preprocessor is not None else stage
    return pd.DataFrame(np.asarray(out, dtype=np.float64), columns=names)


def _passes_through(transformer: Any) -> bool:
    # a fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer
    if isinstance(transformer, str):
        return transformer in ("drop", "passthrough")
    return isinstance(transformer, FunctionTransformer) and transformer.func is None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))
