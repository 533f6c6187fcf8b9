"""Property-based fuzzing of the app through its own OpenAPI document (schemathesis 4): no generated input, valid
or not, gives a 5xx, and every answer has a status, content type and body the document promises.

Hypothesis drives each operation directly (`APIOperation.as_strategy`): `schemathesis.pytest.from_fixture`
breaks on pytest 9 (it sets `node._nodeid`, which pytest 9 no longer has).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from flowship.serving.app import create_app
from flowship.serving.bundle import ModelBundle
from tests.serving.conftest import settings_for

CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # a schema-violating request may also get 413 (a batch above FLOWSHIP_MAX_BATCH, the array's maxItems)
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            },
            # A schema-valid record can still be one the model cannot score (a linear model given 1e308
            # overflows), and the app rightly answers 422 for it; a schema-valid feedback may say nothing (neither
            # a label nor a rating: one of the two is required, which the document cannot say field by field).
            "positive_data_acceptance": {"enabled": False},
        }
    }
)
# FLOWSHIP_FUZZ_EXAMPLES=600 for a longer hunt (about a minute)
EXAMPLES = {
    "/predict": int(os.environ.get("FLOWSHIP_FUZZ_EXAMPLES", "80")),
    "/invocations": int(os.environ.get("FLOWSHIP_FUZZ_EXAMPLES", "80")),
    "/feedback": int(os.environ.get("FLOWSHIP_FUZZ_EXAMPLES", "80")),
}
WITH_A_BODY = {"/predict", "/invocations", "/feedback"}


@pytest.fixture(params=["classifier", "regressor"])
def api_schema(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    bundle: ModelBundle = request.getfixturevalue(request.param)
    app = create_app(bundle, settings_for(tmp_path, max_batch=20))
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # the app's shutdown now, rather than at interpreter exit


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gives_a_server_error(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/health",
        "/ready",
        "/predict",
        "/invocations",
        "/feedback",
        "/metadata",
        "/metrics",
    }
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path not in WITH_A_BODY:
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES.get(operation.path, 5),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            # every check of CONFIG: not_a_server_error, status code, content type, body conformance...
            response = case.call_and_validate()
            assert response.status_code < 500

        check()
