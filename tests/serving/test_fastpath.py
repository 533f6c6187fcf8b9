"""The fast numeric path: used only when it reproduces the pipeline bit for bit; else the plain pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from flowship.serving import fastpath
from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle, load_bundle, write_bundle
from flowship.serving.errors import ModelInputError
from flowship.serving.fastpath import SMALL_BATCH, SPLIT_ROWS, FastPath, Helpers, TreeTable
from flowship.serving.predictor import Predictor, Scored
from flowship.serving.schema import RecordCodec, Row, record_model
from tests.serving.conftest import (
    CATEGORICAL,
    NUMERIC,
    MakeClient,
    _coerce,
    golden,
    metadata,
    record,
    settings_for,
)


def predictor(bundle: ModelBundle, threads: int = 1) -> Predictor:
    return Predictor(bundle, RecordCodec(bundle, record_model(bundle.metadata)), threads)


def golden_rows(p: Predictor, bundle: ModelBundle) -> list[Row]:
    return [p.codec.row_from_dict(g.features) for g in bundle.golden or []]


def odd_rows(p: Predictor, frame: pd.DataFrame) -> list[Row]:
    x = frame[NUMERIC + CATEGORICAL].head(200).astype(object)
    x = x.where(x.notna(), None)
    rows = [p.codec.row_from_dict(r) for r in x.to_dict(orient="records")]
    extra = [
        record(carrier="ZZ"),  # unknown category
        record(carrier=None, temp=None),  # missing values
        record(distance=1e300, hour=-5.0),  # far outside the training range
        record(carrier=""),
    ]
    return rows + [p.codec.row_from_dict(r) for r in extra]


def same_bits(a: Any, b: Any) -> bool:
    return bool(np.asarray(a).tobytes() == np.asarray(b).tobytes())


def test_the_fast_path_answers_exactly_as_the_pipeline(classifier: ModelBundle, training_frame: pd.DataFrame) -> None:
    p = predictor(classifier)
    assert p.try_fast_path(golden_rows(p, classifier)).startswith("fast")
    assert p.fast is not None
    rows = odd_rows(p, training_frame)
    fast = p._outputs(rows)
    plain = p._pipeline_outputs(rows)
    assert fast[0].tolist() == plain[0].tolist()
    assert same_bits(fast[1], plain[1])
    # and what the pipeline itself says, through its own input path
    frame = pd.DataFrame([dict(zip(p.codec.columns, r, strict=True)) for r in rows]).astype(object)
    assert same_bits(fast[1], classifier.pipeline.predict_proba(frame.where(frame.notna(), None)))
    # one row at a time too
    for row in rows[:20] + rows[-4:]:
        assert same_bits(p._outputs([row])[1], p._pipeline_outputs([row])[1])


def test_a_tree_regressor_gets_the_fast_path_too(tmp_path: Path, training_frame: pd.DataFrame) -> None:
    encode = ColumnTransformer(
        [
            ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    pipeline = Pipeline([("coerce", _coerce()), ("encode", encode), ("model", HistGradientBoostingRegressor())])
    pipeline.fit(training_frame[NUMERIC + CATEGORICAL], training_frame["delay"])
    bundle = load_bundle(
        write_bundle(
            tmp_path / "hgb",
            pipeline,
            metadata("regression", "hgb", None),
            golden(pipeline, training_frame, "regression"),
        )
    )
    p = predictor(bundle)
    assert p.try_fast_path(golden_rows(p, bundle)).startswith("fast")
    rows = odd_rows(p, training_frame)
    fast, plain = p._outputs(rows), p._pipeline_outputs(rows)
    assert fast[1] is None and plain[1] is None
    assert same_bits(fast[0], plain[0])


def test_a_category_the_encoder_knows_and_the_trees_never_saw_is_binned_as_the_pipeline_walks_it(
    tmp_path: Path, training_frame: pd.DataFrame
) -> None:
    # as when a rare category is only in early stopping's validation rows: the trees' binning never saw it
    x = training_frame[NUMERIC + CATEGORICAL]
    coerce = _coerce().fit(x)
    encode = ColumnTransformer(
        [
            ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    encode.fit(coerce.transform(x))
    seen = training_frame["carrier"] != "DL"  # between two categories the trees know
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features=CATEGORICAL, random_state=0)
    model.fit(encode.transform(coerce.transform(x[seen])), training_frame["late"][seen])
    pipeline = Pipeline([("coerce", coerce), ("encode", encode), ("model", model)])
    bundle = load_bundle(
        write_bundle(
            tmp_path / "unseen",
            pipeline,
            metadata("classification", "unseen", [False, True]),
            golden(pipeline, training_frame, "classification"),
        )
    )
    p = predictor(bundle)
    assert p.try_fast_path(golden_rows(p, bundle)).startswith("fast")
    rows = [r for r in odd_rows(p, training_frame) if "DL" in r] * 3  # a big batch: the binned walk
    assert len(rows) > SMALL_BATCH
    fast, plain = p._outputs(rows), p._pipeline_outputs(rows)
    assert same_bits(fast[1], plain[1]) and fast[0].tolist() == plain[0].tolist()
    # binned beside the next category the trees know (UA), DL would have been answered otherwise
    as_ua = [tuple("UA" if v == "DL" else v for v in r) for r in rows]
    assert not same_bits(p._pipeline_outputs(as_ua)[1], plain[1])


def test_other_pipelines_keep_the_plain_path(regressor: ModelBundle) -> None:
    p = predictor(regressor)  # Ridge on one-hot columns
    assert p.try_fast_path(golden_rows(p, regressor)).startswith("plain pipeline")
    assert p.fast is None


def test_no_golden_records_no_fast_path(classifier: ModelBundle) -> None:
    p = predictor(classifier)
    assert p.try_fast_path([]).startswith("plain pipeline")
    assert p.fast is None


def test_a_scikit_learn_without_the_compiled_tree_walk_keeps_the_plain_path(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastpath, "_predict_from_binned_data", None)  # as where the private function is gone
    p = predictor(classifier)
    assert (
        p.try_fast_path(golden_rows(p, classifier))
        == "plain pipeline (this scikit-learn has no _predict_from_binned_data and _map_to_bins)"
    )
    assert p.fast is None
    assert isinstance(p.score_one(golden_rows(p, classifier)), Scored)


def test_the_fast_path_is_refused_when_a_single_bit_differs(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FastPath.estimate

    def off_by_one_ulp(self: FastPath, x: np.ndarray, *args: Any) -> Any:
        predictions, probabilities = original(self, x, *args)
        assert probabilities is not None
        return predictions, np.nextafter(probabilities, 2.0)

    monkeypatch.setattr(FastPath, "estimate", off_by_one_ulp)
    p = predictor(classifier)
    decision = p.try_fast_path(golden_rows(p, classifier))
    assert decision.startswith("plain pipeline") and "differs" in decision
    assert p.fast is None


def test_unknown_categories_go_through_the_pipeline_when_its_encoder_rejects_them(
    tmp_path: Path, training_frame: pd.DataFrame
) -> None:
    encode = ColumnTransformer(
        [("categorical", OrdinalEncoder(), CATEGORICAL), ("numeric", "passthrough", NUMERIC)],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    pipeline = Pipeline([("coerce", _coerce()), ("encode", encode), ("model", HistGradientBoostingRegressor())])
    frame = training_frame.dropna(subset=CATEGORICAL)
    pipeline.fit(frame[NUMERIC + CATEGORICAL], frame["delay"])
    bundle = load_bundle(
        write_bundle(
            tmp_path / "strict", pipeline, metadata("regression", "strict", None), golden(pipeline, frame, "regression")
        )
    )
    p = predictor(bundle)
    assert p.try_fast_path(golden_rows(p, bundle)).startswith("fast")
    assert p.fast is not None and p.fast.outputs([p.codec.row_from_dict(record(carrier="ZZ"))]) is None
    failed = p.score_one([p.codec.row_from_dict(record(carrier="ZZ"))])
    assert isinstance(failed, ModelInputError)  # as the plain pipeline answers


def test_the_app_serves_through_the_fast_path(make_client: MakeClient, classifier: ModelBundle) -> None:
    client = make_client()
    state = client.app.state.serving  # type: ignore[attr-defined]
    assert state.predictor.fast is not None
    batch = [record(), record(carrier="ZZ"), record(temp=None, carrier=None)]
    answer = client.post("/predict", json=batch).json()
    frame = pd.DataFrame(batch)
    expected = classifier.pipeline.predict_proba(frame)
    assert answer["probabilities"] == [
        dict(zip([str(c) for c in classifier.pipeline.classes_], row, strict=True)) for row in expected.tolist()
    ]
    assert answer["predictions"] == classifier.pipeline.predict(frame).tolist()


def test_a_failing_fast_path_falls_back_to_the_pipeline(
    make_client: MakeClient, classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    predictor = client.app.state.serving.predictor  # type: ignore[attr-defined]
    assert predictor.fast is not None
    expected = client.post("/predict", json=[record(), record(carrier=None)]).json()

    def broken(self: FastPath, x: np.ndarray, *args: Any) -> Any:
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(FastPath, "estimate", broken)
    answer = client.post("/predict", json=[record(), record(carrier=None)])
    assert answer.status_code == 200
    assert {k: v for k, v in answer.json().items() if k != "request_id"} == {
        k: v for k, v in expected.items() if k != "request_id"
    }

    def broken_pipeline(rows: Any) -> Any:
        raise RuntimeError("and the pipeline too")

    monkeypatch.setattr(predictor, "_estimate", broken_pipeline)
    assert client.post("/predict", json=record()).status_code == 500  # the pipeline's own error, as before


# --- big batches: the trees walked in parts, by the model thread and helper threads ---


def test_a_big_batch_walked_in_parts_answers_as_the_pipeline(
    classifier: ModelBundle, training_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = predictor(classifier, threads=3)
    decision = p.try_fast_path(golden_rows(p, classifier))
    assert decision.startswith("fast") and decision.endswith(
        f"; a lone request of {SPLIT_ROWS} rows or more walked by 3 threads on idle cores)"
    )
    rows = (odd_rows(p, training_frame) * 4)[: SPLIT_ROWS + 37]
    parts: list[int] = []
    original = FastPath._walk

    def counted(self: FastPath, x: np.ndarray, raw: np.ndarray) -> None:
        parts.append(x.shape[0])
        original(self, x, raw)

    monkeypatch.setattr(FastPath, "_walk", counted)
    idle = [True]
    monkeypatch.setattr(Helpers, "idle", lambda self: idle[0])
    fast = p._outputs(rows, alone=True)
    assert sorted(parts) == [183, 183, 183] and sum(parts) == len(rows)  # three parts, every row once
    plain = p._pipeline_outputs(rows)
    assert fast[0].tolist() == plain[0].tolist() and same_bits(fast[1], plain[1])
    # one walk, no hand-off: other requests in flight; fewer rows; no idle core
    for rows_, alone, idle[0] in ((rows, False, True), (rows[: SPLIT_ROWS - 1], True, True), (rows, True, False)):
        parts.clear()
        assert same_bits(p._outputs(rows_, alone)[1], plain[1][: len(rows_)])
        assert parts == [len(rows_)]
    p.close()
    assert p.fast is None


@pytest.mark.parametrize(
    ("cores", "loadavg", "idle"),
    [
        ({0, 1}, "0.48 0.92 1.43 1/109 10923\n", True),  # the caller alone: a core left for the helper
        ({0, 1}, "1.95 1.90 1.80 2/230 10924\n", False),  # something else runs too
        ({0, 1, 2, 3}, "2.00 2.00 2.00 3/230 10924\n", True),
        ({0, 1, 2, 3}, "2.00 2.00 2.00 4/230 10924\n", False),
        ({0, 1}, "", False),  # not the format read: no sharing
        ({0, 1}, "a b c d/e f\n", False),
        ({0, 1}, None, False),  # no such file (not Linux)
    ],
)
def test_helpers_share_only_while_the_kernel_counts_an_idle_core_for_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: set[int], loadavg: str | None, idle: bool
) -> None:
    monkeypatch.setattr(fastpath.os, "sched_getaffinity", lambda pid: cores)
    path = tmp_path / "loadavg"
    if loadavg is not None:
        path.write_text(loadavg)
    helpers = Helpers(1, loadavg=path)
    assert helpers.idle() is idle
    helpers.close()


def test_this_kernel_counts_runnable_threads_where_helpers_read_them() -> None:
    # the 4th field of /proc/loadavg: "running/total", this test's own thread among the running
    running, total = fastpath.LOADAVG.read_text().split()[3].split("/")
    assert 1 <= int(running) <= int(total)


def test_one_thread_walks_big_batches_whole(classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    p = predictor(classifier)  # threads=1: FLOWSHIP_MODEL_THREADS=1, or a process on one core
    assert p.try_fast_path(golden_rows(p, classifier)) == (
        "fast numeric path (bit-identical on the golden and probe rows)"
    )
    assert p.fast is not None and p.fast.helpers is None
    walked: list[int] = []
    original = FastPath._walk
    monkeypatch.setattr(FastPath, "_walk", lambda self, x, raw: (walked.append(x.shape[0]), original(self, x, raw)))
    monkeypatch.setattr(Helpers, "idle", lambda self: True)
    p._outputs(golden_rows(p, classifier) * 20, alone=True)
    assert walked == [20 * len(classifier.golden or [])]


def test_helpers_walk_parts_at_the_same_time_as_the_model_thread() -> None:
    helpers = Helpers(1)
    both_inside = threading.Barrier(2, timeout=30)  # passes only when two threads walk at once
    walkers: dict[int, str] = {}

    def walk(part: int) -> None:
        walkers[part] = threading.current_thread().name
        both_inside.wait()

    helpers.share(walk, [0, 1])
    assert sorted(walkers) == [0, 1] and walkers[0] != walkers[1]
    assert {walkers[0], walkers[1]} >= {threading.current_thread().name}
    helpers.close()


def test_the_model_thread_walks_what_no_helper_has_started() -> None:
    helpers = Helpers(1)
    busy, started = threading.Event(), threading.Event()
    helpers._pool.submit(lambda: (started.set(), busy.wait(30)))  # the only helper, held elsewhere
    assert started.wait(30)
    walkers: list[tuple[int, str]] = []
    helpers.share(lambda part: walkers.append((part, threading.current_thread().name)), [0, 1, 2])
    # every part done, by this thread, without waiting for the helper
    assert walkers == [(i, threading.current_thread().name) for i in range(3)]
    busy.set()
    helpers.close()


def test_a_part_that_fails_raises_in_the_model_thread_after_every_part_is_done(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpers = Helpers(2)
    done: list[int] = []

    def walk(part: int) -> None:
        if part == 1:
            raise ValueError("part 1 is broken")
        done.append(part)

    with pytest.raises(ValueError, match="part 1 is broken"):
        helpers.share(walk, [0, 1, 2])
    assert sorted(done) == [0, 2]
    helpers.close()
    # and a request whose parted walk fails is answered by the pipeline
    p = predictor(classifier, threads=2)
    assert p.try_fast_path(golden_rows(p, classifier)).startswith("fast")
    rows = golden_rows(p, classifier) * (SPLIT_ROWS // len(classifier.golden or []) + 1)
    expected = p._pipeline_outputs(rows)

    def broken_part(self: FastPath, part: Any) -> None:
        raise RuntimeError("a bug in a helper's part")

    monkeypatch.setattr(FastPath, "_walk_part", broken_part)
    monkeypatch.setattr(Helpers, "idle", lambda self: True)
    scored = p.score_one(rows, alone=True)
    assert isinstance(scored, Scored) and scored.probabilities is not None
    assert same_bits([list(d.values()) for d in scored.probabilities], expected[1])
    p.close()


def test_the_fast_path_is_refused_when_walking_in_parts_differs_by_a_bit(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FastPath._walk_part

    def off_by_one_ulp(self: FastPath, part: tuple[np.ndarray, np.ndarray]) -> None:
        original(self, part)
        part[1][:] = np.nextafter(part[1], np.inf)

    monkeypatch.setattr(FastPath, "_walk_part", off_by_one_ulp)
    p = predictor(classifier, threads=2)
    decision = p.try_fast_path(golden_rows(p, classifier))
    # the golden records of this bundle are few enough for the tree table; the probe rows are walked in parts
    assert decision == "plain pipeline (the fast path differs: probe rows: output 1 differs when walked in parts)"
    assert p.fast is None


def test_the_app_stops_the_helper_threads_at_shutdown(tmp_path: Path, classifier: ModelBundle) -> None:
    before = set(threading.enumerate())
    with TestClient(create_app(classifier, settings_for(tmp_path, model_threads=2))) as client:
        assert client.post("/predict", json=[record()] * SPLIT_ROWS).status_code == 200
        helpers = [t for t in threading.enumerate() if t not in before and t.name.startswith("flowship-trees")]
        assert helpers  # started by the startup check, which walks the golden records in parts
    assert not any(t.is_alive() for t in helpers)


# --- the tree table: single records and small batches, all trees at once ---


def sklearn_raw(model: Any, x: np.ndarray) -> np.ndarray:
    """scikit-learn's own walk, tree by tree (what `FastPath.estimate` does for more than SMALL_BATCH rows)."""
    raw = np.asfortranarray(np.zeros((x.shape[0], model.n_trees_per_iteration_)))
    raw += model._baseline_prediction
    model._predict_iterations(x, model._predictors, raw, False, 1)
    return raw


def test_the_tree_table_walks_a_multiclass_model_with_categories_as_scikit_learn(
    training_frame: pd.DataFrame,
) -> None:
    frame = training_frame.assign(band=pd.cut(training_frame["delay"], 3, labels=["early", "on time", "late"]))
    x = pd.DataFrame(
        {
            "carrier": frame["carrier"].map({c: float(i) for i, c in enumerate(["AA", "DL", "UA", "B6"])}),
            **{c: frame[c] for c in NUMERIC},
        }
    )
    model = HistGradientBoostingClassifier(max_iter=25, categorical_features=[0], random_state=0)
    model.fit(x.to_numpy(), frame["band"].astype(str))
    assert model.n_trees_per_iteration_ == 3 and model._bin_mapper.is_categorical_[0]
    table = TreeTable(model)
    rows = x.to_numpy()[:60].copy()
    rows[0, 0] = 7.0  # a category never seen: the missing way
    rows[1, 0] = -1.0  # a negative code: the missing way too
    rows[2, :] = np.nan
    rows[3, 1] = 1e300
    rows[4, 0] = 2.7  # a code between two: cast down, as scikit-learn's walk casts it
    for size in (1, 3, SMALL_BATCH):
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            got = table.raw(chunk)
            assert got is not None and same_bits(got, sklearn_raw(model, chunk)), (size, start)
    assert table.raw(np.array([[300.0, 1.0, 1.0, 1.0]])) is None  # beyond a byte: scikit-learn's walk decides


def test_the_fast_path_is_refused_when_the_tree_table_differs_by_a_bit(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TreeTable.raw

    def off_by_one_ulp(self: TreeTable, x: np.ndarray) -> Any:
        raw = original(self, x)
        return None if raw is None else np.nextafter(raw, np.inf)

    monkeypatch.setattr(TreeTable, "raw", off_by_one_ulp)
    p = predictor(classifier)
    decision = p.try_fast_path(golden_rows(p, classifier))
    assert decision.startswith("plain pipeline") and "differs" in decision
