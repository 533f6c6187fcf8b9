"""The fast numeric path: used only when it reproduces the pipeline bit for bit; else the plain pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from flowship.serving import fastpath
from flowship.serving.bundle import ModelBundle, load_bundle, write_bundle
from flowship.serving.errors import ModelInputError
from flowship.serving.fastpath import SMALL_BATCH, FastPath, TreeTable
from flowship.serving.predictor import Predictor, Scored
from flowship.serving.schema import RecordCodec, Row, record_model
from tests.serving.conftest import CATEGORICAL, NUMERIC, MakeClient, _coerce, golden, metadata, record


def predictor(bundle: ModelBundle) -> Predictor:
    return Predictor(bundle, RecordCodec(bundle, record_model(bundle.metadata)))


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
    monkeypatch.setattr(fastpath, "_predict_from_raw_data", None)  # as where the private function is gone
    p = predictor(classifier)
    assert (
        p.try_fast_path(golden_rows(p, classifier))
        == "plain pipeline (this scikit-learn has no _predict_from_raw_data)"
    )
    assert p.fast is None
    assert isinstance(p.score_one(golden_rows(p, classifier)), Scored)


def test_the_fast_path_is_refused_when_a_single_bit_differs(
    classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FastPath.estimate

    def off_by_one_ulp(self: FastPath, x: np.ndarray) -> Any:
        predictions, probabilities = original(self, x)
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

    def broken(self: FastPath, x: np.ndarray) -> Any:
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
