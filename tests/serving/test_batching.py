"""Micro-batching: concurrent requests share model calls, answers equal one-call-per-request answers, every
record lands in the inference log exactly once, across restarts too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from flowship.serving.app import create_app
from flowship.serving.batching import MicroBatcher
from flowship.serving.bundle import ModelBundle
from flowship.serving.inference_log import read_inference_log
from tests.serving.conftest import CARRIERS, settings_for

T = TypeVar("T")


def records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "distance": float(rng.uniform(100, 3000)),
                "temp": None if i % 7 == 0 else float(rng.normal(60, 15)),
                "hour": int(rng.integers(5, 23)),
                "carrier": None if i % 11 == 0 else str(rng.choice([*CARRIERS, "ZZ"])),
            }
        )
    return out


@asynccontextmanager
async def serving(app: FastAPI):  # type: ignore[no-untyped-def]
    """The app with its lifespan, and an HTTP client on it (in this event loop, so requests are concurrent)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield client


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coroutine())  # type: ignore[arg-type]


def model_calls(app: FastAPI) -> int:
    batcher = app.state.serving.batcher
    assert batcher is not None
    return int(batcher.model_calls)


@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_batched_answers_equal_unbatched_ones(tmp_path: Path, which: str, request: pytest.FixtureRequest) -> None:
    bundle: ModelBundle = request.getfixturevalue(which)
    batch = records(32)
    batched_app = create_app(bundle, settings_for(tmp_path / "a", batch_window_ms=50))
    unbatched_app = create_app(bundle, settings_for(tmp_path / "b", batch_window_ms=0))

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with serving(batched_app) as client:
            together = await asyncio.gather(*(client.post("/predict", json=r) for r in batch))
        async with serving(unbatched_app) as client:
            alone = [await client.post("/predict", json=r) for r in batch]
        return [r.json() for r in together], [r.json() for r in alone]

    together, alone = run(go)
    assert model_calls(batched_app) < len(batch) / 4  # they really were combined
    assert model_calls(unbatched_app) == len(batch)
    for a, b in zip(together, alone, strict=True):
        assert a["predictions"] == b["predictions"]  # exactly equal, not approximately
        assert a.get("probabilities") == b.get("probabilities")
    # and equal to the pipeline scoring each record on its own
    frame = pd.DataFrame(batch)
    with threadpool_limits(limits=1):  # as in the model thread (OpenMP teams are slow for 1 row)
        for i, answer in enumerate(together):
            row = frame.iloc[[i]]
            if bundle.metadata.task == "classification":
                probabilities = bundle.pipeline.predict_proba(row)[0]
                assert list(answer["probabilities"][0].values()) == probabilities.tolist()
                assert answer["predictions"] == [bundle.pipeline.classes_[probabilities.argmax()].item()]
            else:
                assert answer["predictions"] == bundle.pipeline.predict(row).tolist()


def test_at_concurrency_16_a_model_call_serves_many_requests(tmp_path: Path, classifier: ModelBundle) -> None:
    app = create_app(classifier, settings_for(tmp_path))  # the default window: 2 ms
    requests_per_client = 12

    async def client_loop(client: httpx.AsyncClient, seed: int) -> int:
        ok = 0
        for r in records(requests_per_client, seed):
            ok += (await client.post("/predict", json=r)).status_code == 200
        return ok

    async def go() -> list[int]:
        async with serving(app) as client:
            return await asyncio.gather(*(client_loop(client, seed) for seed in range(16)))

    assert run(go) == [requests_per_client] * 16
    assert model_calls(app) <= 16 * requests_per_client / 4


def test_a_lone_request_does_not_wait_for_the_window(tmp_path: Path, classifier: ModelBundle) -> None:
    app = create_app(classifier, settings_for(tmp_path, batch_window_ms=1000))

    async def through_the_app() -> None:
        async with serving(app) as client:
            for r in records(3):
                assert (await client.post("/predict", json=r)).status_code == 200

    run(through_the_app)
    assert model_calls(app) == 3  # three sequential requests: each scored alone

    # A window of an hour: a request held for it would never come back within the test's deadline.
    batcher = MicroBatcher(lambda batch, alone: [f"scored {len(rows)}" for rows in batch], 3600.0, max_rows=100)

    async def lone_requests() -> list[object]:
        batcher.start()
        try:
            return [await asyncio.wait_for(batcher.submit([{"n": i}]), timeout=60) for i in range(3)]
        finally:
            await batcher.close()

    assert run(lone_requests) == ["scored 1"] * 3
    assert batcher.model_calls == 3


def test_a_model_call_hears_whether_its_requests_are_all_the_process_has_in_flight() -> None:
    heard: list[bool] = []

    def score_many(batch: Any, alone: bool) -> list[object]:
        heard.append(alone)
        return ["scored"] * len(batch)

    batcher = MicroBatcher(score_many, 3600.0, max_rows=100)

    async def requests() -> None:
        batcher.start()
        try:
            mine = batcher.arrival()
            await asyncio.wait_for(batcher.submit([{"n": 1}], mine), timeout=60)  # the only request
            mine.end()
            other = batcher.arrival()  # another request: its body read, queued, answered, not yet ended
            other.release()
            mine = batcher.arrival()
            await asyncio.wait_for(batcher.submit([{"n": 2}], mine), timeout=60)
            mine.end()
            other.end()
            other.end()  # ending twice counts once
            await asyncio.wait_for(batcher.submit([{"n": 3}]), timeout=60)
        finally:
            await batcher.close()

    run(requests)
    assert heard == [True, False, True]


def test_every_request_leaves_the_in_flight_count_however_it_ends(tmp_path: Path, classifier: ModelBundle) -> None:
    app = create_app(classifier, settings_for(tmp_path))

    async def through_the_app() -> None:
        async with serving(app) as client:
            answers = await asyncio.gather(
                client.post("/predict", json=records(3)),
                client.post("/predict", json=[{"distance": "far"}]),  # 422
                client.post("/predict", content=b"{", headers={"Content-Type": "application/json"}),  # 400
                client.post("/invocations", json={"instances": records(2)}),
                client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"}),  # 415
            )
            assert [a.status_code for a in answers] == [200, 422, 400, 200, 415]
            assert app.state.serving.batcher._in_flight == 0

    run(through_the_app)


def test_a_request_the_model_fails_on_does_not_fail_its_batch(
    tmp_path: Path, classifier: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(classifier, settings_for(tmp_path, batch_window_ms=50))
    predictor = app.state.serving.predictor
    real = predictor._prepared

    def picky(rows: Any) -> Any:
        if any(row[0] == 4242.0 for row in rows):
            raise ValueError("distance 4242 is cursed")
        return real(rows)

    monkeypatch.setattr(predictor, "_prepared", picky)
    # the plain pipeline's path (the fast path falls back to it on any error: tests/serving/test_fastpath.py)
    monkeypatch.setattr(predictor, "try_fast_path", lambda rows: "plain pipeline (test)")
    batch = records(10)
    batch[4]["distance"] = 4242.0

    async def go() -> list[httpx.Response]:
        async with serving(app) as client:
            return await asyncio.gather(*(client.post("/predict", json=r) for r in batch))

    responses = run(go)
    assert [r.status_code for r in responses] == [200] * 4 + [422] + [200] * 5
    assert "distance 4242 is cursed" in responses[4].json()["message"]
    assert responses[4].json()["records"] == [0]


def test_every_record_is_logged_once_under_concurrency_and_across_restarts(
    tmp_path: Path, classifier: ModelBundle
) -> None:
    sent: dict[str, int] = {}
    answers: dict[str, list[Any]] = {}

    async def client_loop(client: httpx.AsyncClient, lifetime: int, worker: int) -> None:
        for i in range(6):
            n = 1 + (i % 3)
            request_id = f"L{lifetime}-w{worker}-{i}"
            body: Any = records(n, seed=worker * 100 + i)
            response = await client.post(
                "/predict", json=body if n > 1 else body[0], headers={"X-Request-ID": request_id}
            )
            assert response.status_code == 200
            sent[request_id] = n
            answers[request_id] = response.json()["predictions"]

    for lifetime in (1, 2):  # two app lifetimes append to the same files
        app = create_app(classifier, settings_for(tmp_path, log_flush_seconds=10))  # only the shutdown flushes

        async def go(app: FastAPI = app, lifetime: int = lifetime) -> None:
            async with serving(app) as client:
                await asyncio.gather(*(client_loop(client, lifetime, w) for w in range(16)))

        run(go)

    logged, skipped = read_inference_log(tmp_path / "logs")
    assert skipped == 0
    assert len(logged) == sum(sent.values()) == 2 * 16 * (1 + 2 + 3) * 2
    assert logged.groupby("request_id").size().to_dict() == sent
    for request_id, predictions in answers.items():
        assert logged.loc[logged["request_id"] == request_id, "prediction"].tolist() == predictions


def _centre(x: Any) -> Any:
    return x - x.mean(axis=0)  # depends on the other rows of the call: batching would change the answers


def test_the_probe_keeps_answers_exact_whatever_the_pipeline(
    tmp_path: Path, classifier: ModelBundle, regressor: ModelBundle, training_frame: pd.DataFrame
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from flowship.serving.bundle import load_bundle, write_bundle
    from flowship.serving.predictor import Predictor
    from flowship.serving.schema import RecordCodec, record_model
    from tests.serving.conftest import CATEGORICAL, NUMERIC, golden, metadata

    def predictor(bundle: ModelBundle) -> Predictor:
        return Predictor(bundle, RecordCodec(bundle, record_model(bundle.metadata)))

    assert predictor(classifier).mode == "whole"  # trees: one call for everything
    assert predictor(regressor).mode == "per_request"  # a matrix product: one estimator call per request

    pipeline = Pipeline(
        [
            ("numeric", ColumnTransformer([("keep", "passthrough", NUMERIC)])),
            ("fill", FunctionTransformer(np.nan_to_num)),
            ("centre", FunctionTransformer(_centre)),
            ("model", Ridge()),
        ]
    ).fit(training_frame[NUMERIC + CATEGORICAL], training_frame["delay"])
    odd = load_bundle(
        write_bundle(
            tmp_path / "odd",
            pipeline,
            metadata("regression", "odd", None),
            golden(pipeline, training_frame, "regression"),
        )
    )
    checked = predictor(odd)
    assert checked.probe([checked.codec.row_from_dict(g.features) for g in odd.golden or []]) == "isolated"

    app = create_app(odd, settings_for(tmp_path / "a", batch_window_ms=50))
    batch = records(12)

    async def go() -> list[Any]:
        async with serving(app) as client:
            answers = await asyncio.gather(*(client.post("/predict", json=r) for r in batch))
        return [a.json()["predictions"] for a in answers]

    together = run(go)
    assert app.state.serving.predictor.mode == "isolated"
    from flowship.pipeline.training import coerce_features

    alone = [pipeline.predict(coerce_features(pd.DataFrame([r]), NUMERIC, CATEGORICAL)).tolist() for r in batch]
    assert together == alone
