"""The serving app: `create_app(bundle, settings)` gives a FastAPI app that serves that one model.

Request shape for `POST /predict`: one record (a JSON object) or a non-empty JSON array of records; the
answer always holds lists, one entry per record.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at runtime, and the
# request model is built per bundle inside `create_app`.

import asyncio
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from flowship.serving import encoding
from flowship.serving.batching import Arrival, MicroBatcher
from flowship.serving.bundle import BundleMetadata, InputField, ModelBundle
from flowship.serving.errors import LogUnavailable, ModelInputError, NotReady
from flowship.serving.feedback import BODY_PROBLEM, REQUEST_ID_PATTERN, FeedbackLog, feedback_model, said
from flowship.serving.guardrails import Answered, GuardrailRefusal, Guardrails, Report, build_guardrails, report
from flowship.serving.inference_log import SAFETY_PREFIX, InferenceEntry, InferenceLog, SafetyEntry
from flowship.serving.logs import ACCESS_LOGGER
from flowship.serving.metrics import ServingMetrics
from flowship.serving.mlflow_protocol import FORMATS, ProtocolError, mlflow_records
from flowship.serving.predictor import Predictor, Scored
from flowship.serving.privacy import log_privacy
from flowship.serving.schema import RecordCodec, Row, record_model
from flowship.serving.settings import ServingSettings
from flowship.serving.usage import USAGE_PREFIX, UsageSampler
from flowship.values import plain

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
# An incoming request id is kept only if it is short and plain (it goes into headers and logs).
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
ENDPOINTS = frozenset(
    {"/health", "/ready", "/predict", "/invocations", "/feedback", "/metadata", "/metrics", "/docs", "/openapi.json"}
)
SCORING = frozenset({"/predict", "/invocations"})
# /invocations' body for the OpenAPI document (it is read by `mlflow_records`, not by FastAPI)
MLFLOW_BODY = {
    "type": "object",
    "description": "exactly one of: " + ", ".join(FORMATS),
    "properties": {
        "dataframe_split": {
            "type": "object",
            "properties": {"columns": {"type": "array"}, "data": {"type": "array"}, "index": {"type": "array"}},
        },
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {"type": "array", "items": {"type": "object"}},
        "inputs": {"anyOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]},
    },
}
# relative tolerance when the warm-up replays the golden records
GOLDEN_TOLERANCE = 1e-6
ERROR_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "batch_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "not_ready",
}
# what a status means when it has more than one code (the OpenAPI document's descriptions)
RESPONSE_DESCRIPTIONS = {
    503: "not_ready (starting or shutting down), or log_unavailable (the inference log cannot record the answer "
    "within FLOWSHIP_LOG_WAIT_SECONDS, e.g. the disk refuses writes: no prediction leaves unlogged)",
}

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: whatever a client sent (a lone surrogate in a field name) can be echoed."""

    def render(self, content: Any) -> bytes:
        return encoding.dumps(content)


# --- response bodies (for the OpenAPI document; the routes build plain dicts) ---


class ModelRef(BaseModel):
    name: str
    version: str


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    reason: str | None = None
    model: ModelRef


class FeedbackFor(BaseModel):
    request_id: str
    row: int


class FeedbackAccepted(BaseModel):
    status: str = Field(examples=["accepted"])
    feedback_for: FeedbackFor = Field(description="the prediction the feedback is about")
    kept: list[str] = Field(description="what was kept: label, rating, comment")
    request_id: str = Field(description="this request's id")


class GuardrailsInfo(BaseModel):
    active: bool
    status: str = Field(description="what the guardrails do for this version, or why they are off")
    policy: dict[str, Any] | None = Field(description="params.yaml `guardrails:` as this service applies it")


class Metadata(BaseModel):
    name: str
    version: str
    task: str
    classes: list[str | bool | int | float] | None
    features: dict[str, list[str]]
    lineage: dict[str, str]
    input_schema: list[InputField]
    guardrails: GuardrailsInfo


class GuardrailWarning(BaseModel):
    guardrail: str = Field(description="out_of_range, unseen_category, missing, low_confidence or output_range")
    action: str = Field(description="flag, refuse, fallback or clip")
    feature: str | None = Field(description="the feature at fault (null: the record or the output as a whole)")
    value: Any = Field(description="the value sent, or the model's output")
    expected: str = Field(description="what the model knows from training")


class RefusedRecord(GuardrailWarning):
    record: int = Field(description="the record's position in the request")


class FieldProblem(BaseModel):
    field: str = Field(description="the field at fault (`body` for the body as a whole)")
    record: int | None = Field(description="its record's position in a list of records, else null")
    problem: str
    type: str


class ErrorBody(BaseModel):
    error: str = Field(
        description="a short code: invalid_input, refused_by_guardrails, invalid_json, batch_too_large, "
        "unauthorized, not_ready, log_unavailable, ..."
    )
    message: str
    request_id: str
    fields: list[FieldProblem] | None = None
    records: list[int] | None = Field(default=None, description="the records the model could not score")
    guardrails: list[RefusedRecord] | None = Field(
        default=None, description="refused_by_guardrails: each record, feature and value at fault"
    )


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": RESPONSE_DESCRIPTIONS.get(status, ERROR_CODES[status])}
        for status in statuses
    }


# --- per-request and per-app state ---


@dataclass
class RequestContext:
    request_id: str
    n_records: int | None = None
    features: Sequence[Any] | None = None
    arrival: Arrival | None = None


def request_context(request: Request) -> RequestContext:
    context = request.scope.get("flowship")
    if isinstance(context, RequestContext):
        return context
    context = RequestContext(uuid.uuid4().hex)
    request.scope["flowship"] = context
    return context


@dataclass
class ServingState:
    bundle: ModelBundle
    settings: ServingSettings
    predictor: Predictor
    metrics: ServingMetrics
    batcher: MicroBatcher | None = None
    inference_log: InferenceLog | None = None
    safety_log: InferenceLog | None = None
    usage_log: InferenceLog | None = None
    usage: UsageSampler | None = None
    guardrails: Guardrails | None = None
    guardrails_status: str = "off"
    ready: bool = False
    reason: str = "starting"
    model: dict[str, str] = field(default_factory=dict)

    def readiness(self) -> tuple[bool, str | None]:
        if not self.ready:
            return False, self.reason
        for writer in (self.inference_log, self.safety_log):
            if writer is not None and writer.error:
                return False, writer.error
        return True, None

    def safety_entry(self, request_id: str, fired: Report) -> SafetyEntry | None:
        """Count the events in /metrics; the entry of the safety-event log (no feature values), None if none."""
        if not fired.events:
            return None
        self.metrics.observe_guardrails(fired.counts)
        meta = self.bundle.metadata
        return SafetyEntry(datetime.now(UTC), request_id, meta.name, meta.version, fired.events)

    async def commit(self, inference: InferenceEntry | None, safety: SafetyEntry | None) -> None:
        """Return once the request's entries are written to their logs (together, within one wait); else
        `LogUnavailable`, and the answer must not leave."""
        commits = []
        if inference is not None:
            assert self.inference_log is not None
            commits.append(self.inference_log.commit(inference, self.settings.log_wait_seconds))
        if safety is not None:
            assert self.safety_log is not None
            commits.append(self.safety_log.commit(safety, self.settings.log_wait_seconds))
        for outcome in await asyncio.gather(*commits, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def warm_up(self) -> None:
        """Score the golden records once: the model works here and gives the answers it gave at release."""
        assert self.batcher is not None
        golden = self.bundle.golden or []
        if golden:
            rows = [self.predictor.codec.row_from_dict(g.features) for g in golden]
            path = await self.batcher.run(self.predictor.try_fast_path, rows)
            log.info("scoring: %s", path)
            mode = await self.batcher.run(self.predictor.probe, rows)
            log.info("micro-batching mode: %s", mode)
            (result,) = await self.batcher.call([rows])
            problem = _golden_mismatch(result, golden)
            if problem:
                self.reason = f"golden check failed: {problem}"
                log.error("not ready: %s", self.reason)
                return
        self.ready, self.reason = True, "ready"


def _golden_mismatch(result: Scored | BaseException, golden: list[Any]) -> str | None:
    if isinstance(result, BaseException):
        return f"the model fails on its golden records: {result}"
    for i, expected in enumerate(golden):
        got = result.predictions[i]
        if isinstance(got, float) and isinstance(expected.prediction, int | float):
            if not math.isclose(got, expected.prediction, rel_tol=GOLDEN_TOLERANCE, abs_tol=GOLDEN_TOLERANCE):
                return f"record {i}: prediction {got} != {expected.prediction}"
        elif str(got) != str(expected.prediction):
            return f"record {i}: prediction {got!r} != {expected.prediction!r}"
        if expected.probabilities and result.probabilities is not None:
            for key, p in expected.probabilities.items():
                q = result.probabilities[i].get(key)
                if q is None or not math.isclose(q, p, rel_tol=GOLDEN_TOLERANCE, abs_tol=GOLDEN_TOLERANCE):
                    return f"record {i}: probability of {key!r} {q} != {p}"
    return None


# --- auth ---


def _auth_problem(settings: ServingSettings, credentials: HTTPAuthorizationCredentials | None) -> HTTPException | None:
    if settings.api_token is None:
        return None
    if credentials is None:
        return HTTPException(
            401,
            "missing or malformed Authorization header: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    expected = settings.api_token.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        return HTTPException(403, "the bearer token is not valid")
    return None


# --- the app ---


def create_app(bundle: ModelBundle, settings: ServingSettings) -> FastAPI:
    """The service for this bundle; the lifespan starts the batcher, the logs and the usage sampler, and stops
    them."""
    meta = bundle.metadata
    example = bundle.golden[0].features if bundle.golden else None
    record: Any = record_model(meta, example)  # a class built at runtime: Any for the type checker
    codec = RecordCodec(bundle, record)
    state = ServingState(bundle, settings, Predictor(bundle, codec, settings.tree_threads), ServingMetrics(bundle))
    state.model = {"name": meta.name, "version": meta.version}
    guardrails, state.guardrails_status = build_guardrails(
        settings.guardrails, bundle.profile, codec.columns, meta.task, meta.classes
    )
    state.guardrails = guardrails
    # what the logs keep of the sensitive columns; refused here (before serving) when it cannot be applied
    privacy = log_privacy(settings.privacy, settings.privacy_key, codec.columns)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the process's resources from its start to its end, off the request path (monitoring's cost figures)
        state.usage_log = InferenceLog(
            settings.log_dir, settings.log_flush_seconds, writer=settings.log_writer, prefix=USAGE_PREFIX
        ).start()
        state.usage = UsageSampler(
            state.usage_log, meta.name, meta.version, settings.usage_seconds, settings.log_writer
        ).start()
        state.inference_log = InferenceLog(
            settings.log_dir, settings.log_flush_seconds, writer=settings.log_writer
        ).start()
        state.safety_log = InferenceLog(
            settings.log_dir, settings.log_flush_seconds, writer=settings.log_writer, prefix=SAFETY_PREFIX
        ).start()
        state.batcher = MicroBatcher(
            state.predictor.score_many,
            settings.batch_window_seconds,
            settings.max_batch,
            on_call=state.metrics.model_calls.observe,
        )
        state.batcher.start()
        try:
            await state.warm_up()
            log.info("serving %s %s (%s)", meta.name, meta.version, state.reason)
            (log.info if guardrails is not None or not settings.guardrails.enabled else log.warning)(
                "guardrails %s", state.guardrails_status
            )
            yield
        finally:
            state.ready, state.reason = False, "shutting down"
            await state.batcher.close()
            state.predictor.close()
            await asyncio.to_thread(state.inference_log.close)
            await asyncio.to_thread(state.safety_log.close)
            await asyncio.to_thread(state.usage.close)
            await asyncio.to_thread(state.usage_log.close)
            log.info("stopped: every prediction is in the inference log")

    app = FastAPI(
        title=f"flowship: {meta.name}",
        version=meta.version,
        description=_description(meta, settings),
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_middleware(ServingMiddleware, state=state)
    _add_exception_handlers(app, state)

    bearer = HTTPBearer(auto_error=False, description="FLOWSHIP_API_TOKEN")

    async def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        problem = _auth_problem(settings, credentials)
        if problem is not None:
            raise problem

    protected = [Depends(authorized)] if settings.api_token is not None else []
    auth_errors = (401, 403) if settings.api_token is not None else ()

    single = Annotated[record, Tag("record")]
    many = Annotated[list[record], Field(min_length=1, max_length=settings.max_batch), Tag("records")]
    Payload = Annotated[single | many, Discriminator(_payload_kind)]
    response_model = _predict_response_model(bundle, guardrails is not None)
    many_records: TypeAdapter[list[Any]] = TypeAdapter(list[record])

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["operations"])
    async def ready() -> Response:
        """200 once the model is loaded and has passed its warm-up; 503 while starting or shutting down."""
        ok, reason = state.readiness()
        return SafeJSONResponse({"ready": ok, "reason": reason, "model": state.model}, status_code=200 if ok else 503)

    # what both scoring endpoints answer, and who may call them
    scoring: dict[str, Any] = {
        "response_model": response_model,
        "dependencies": protected,
        "responses": _error_responses(400, *auth_errors, 413, 415, 422, 500, 503),
        "tags": ["model"],
    }

    async def predict(
        request: Request,
        body: Annotated[
            Payload,
            Body(
                description="One record (a JSON object) or a non-empty list of records; every field is required, "
                "`null` means a missing value.",
            ),
        ],
    ) -> Response:
        """Score one record or a list of records (at most FLOWSHIP_MAX_BATCH)."""
        return await score(request, codec.rows(body if isinstance(body, list) else [body]))

    async def predict_quickly(request: Request) -> Response | None:
        """`/predict` for a well-formed request, without FastAPI's parsing and per-record validation (most of a big
        batch's cost); None for anything else, which `predict` then answers, and words the error as it always has."""
        if _media_type(request) != "application/json":
            return None
        if settings.api_token is not None and _auth_problem(settings, await bearer(request)) is not None:
            return None
        read = codec.read_body(await request.body(), settings.max_batch)
        return None if read is None else await score(request, read.rows, read.records)

    app.router.add_api_route(
        "/predict", predict, methods=["POST"], route_class_override=quick_route(predict_quickly), **scoring
    )

    @app.post(
        "/invocations",
        **scoring,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": MLFLOW_BODY}}}},
    )
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, as `mlflow models serve` takes it: exactly one of `dataframe_split`,
        `dataframe_records`, `instances` or `inputs`. The records are validated, scored, guarded and logged as
        `/predict`'s are; the answer has `predictions` (and what `/predict` answers besides)."""
        if _media_type(request) != "application/json":
            return _error(request, 415, "send the records as JSON, with the header 'Content-Type: application/json'")
        body = await request.body()
        try:
            payload = encoding.loads(body)
            # the standard library reads what orjson refuses (NaN, lone surrogates: the schema refuses those in its
            # words), and words what neither can read
            quick = payload is not None
            if not quick:
                payload = json.loads(body)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            return _error(request, 400, f"the body is not valid JSON: {exc}")
        except RecursionError:
            return _error(request, 400, "the body cannot be read as JSON: nested too deeply")
        try:
            raw = mlflow_records(payload)
        except ProtocolError as exc:
            problem = FieldProblem(field="body", record=None, problem=str(exc), type="mlflow_format")
            return _error(request, 422, f"invalid input: {exc}", fields=[problem.model_dump()])
        if not raw:
            return _error(request, 422, "invalid input: no records: send at least one")
        if len(raw) > settings.max_batch:
            return _error(
                request,
                413,
                f"a request may carry at most {settings.max_batch} records (FLOWSHIP_MAX_BATCH); "
                f"this one has {len(raw)}",
            )
        read = codec.read_json(raw, settings.max_batch) if quick else None
        if read is not None:
            return await score(request, read.rows, read.records)
        try:
            rows = codec.rows(many_records.validate_python(raw))
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", "records", *e["loc"])} for e in exc.errors()]
            raise RequestValidationError(errors) from None
        return await score(request, rows)

    async def score(request: Request, rows: list[Row], records: Sequence[Any] | None = None) -> Response:
        """Validated rows → guardrails → the model → the answer, logged. `records`: the rows as the structs they
        were read into (`RecordCodec.read_body`), which the log writes as they are when no column is sensitive."""
        context = request_context(request)
        # as the logs may keep them: the sensitive columns hashed or dropped (the model gets the values sent)
        features = records if records is not None and privacy.keeps_all else privacy.apply(codec.features_of(rows))
        context.n_records = len(rows)
        if settings.log_features:
            context.features = features
        if state.batcher is None or not state.ready:
            raise NotReady(f"the model is not ready ({state.reason})")
        inputs = guardrails.check_inputs(rows) if guardrails is not None else None
        if inputs is not None:
            refused = Guardrails.refusals(inputs)
            if refused:
                await state.commit(None, state.safety_entry(context.request_id, report(inputs)))
                raise GuardrailRefusal(refused)
        if settings.fault_delay_ms:
            await asyncio.sleep(settings.fault_delay_ms / 1000)
        scored = await state.batcher.submit(rows, context.arrival)
        answered = (
            guardrails.apply_outputs(scored.predictions, scored.probabilities, inputs)
            if guardrails is not None
            else None
        )
        fired = report(answered.warnings) if answered is not None else None
        # the answer leaves only once its records are written (a crash of the process loses none)
        safety = state.safety_entry(context.request_id, fired) if fired is not None else None
        await state.commit(_inference_entry(context.request_id, meta, features, scored, answered, fired), safety)
        state.metrics.observe_predictions(scored.predictions)
        content: dict[str, Any]
        if answered is None:
            content = {"predictions": scored.predictions}
            if scored.probabilities is not None:
                content["probabilities"] = scored.probabilities
        else:
            content = {"predictions": answered.predictions}
            if answered.probabilities is not None:
                content["probabilities"] = answered.probabilities
            content["warnings"] = fired.bodies if fired is not None else []
        content["model"] = state.model
        content["request_id"] = context.request_id
        return SafeJSONResponse(content)

    Feedback: Any = feedback_model(meta.task, state.predictor.classes, settings.max_batch)  # built per model
    feedback_log = FeedbackLog(settings.log_dir, settings.log_writer)

    @app.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackAccepted,
        dependencies=protected,
        responses=_error_responses(400, *auth_errors, 415, 422, 503),
        tags=["feedback"],
    )
    async def feedback(request: Request, body: Feedback) -> Response:
        """A true label, a rating (1 up, -1 down) or both, and maybe a comment, for the record `row` of the answer
        to `request_id`: on disk when the 202 comes back. An id this replica never answered is accepted as late."""
        context = request_context(request)
        kinds = said(body)
        if not kinds:
            problem = "send a label, a rating, or both"
            raise RequestValidationError(
                [{"type": "missing_feedback", "loc": ("body", field), "msg": problem} for field in ("label", "rating")]
            )
        try:
            await asyncio.to_thread(feedback_log.keep, body, context.request_id)
        except OSError as exc:
            log.exception("feedback not kept (request %s)", context.request_id)
            return _error(request, 503, f"the feedback could not be kept ({exc}); send it again", code="not_kept")
        state.metrics.observe_feedback(kinds)
        content = {
            "status": "accepted",
            "feedback_for": {"request_id": body.request_id, "row": body.row},
            "kept": kinds,
            "request_id": context.request_id,
        }
        return SafeJSONResponse(content, status_code=202)

    @app.get(
        "/metadata",
        response_model=Metadata,
        dependencies=protected,
        responses=_error_responses(*auth_errors),
        tags=["model"],
    )
    async def metadata() -> dict[str, Any]:
        """The model's name, version, task, lineage and input schema."""
        return {
            "name": meta.name,
            "version": meta.version,
            "task": meta.task,
            "classes": meta.classes,
            "features": {"numeric": meta.features.numeric, "categorical": meta.features.categorical},
            "lineage": meta.lineage,
            "input_schema": meta.input_schema,
            "guardrails": {
                "active": guardrails is not None,
                "status": state.guardrails_status,
                "policy": settings.guardrails.model_dump(mode="json") if guardrails is not None else None,
            },
        }

    @app.get(
        "/metrics",
        response_class=Response,
        dependencies=protected,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"},
            **_error_responses(*auth_errors),
        },
        tags=["operations"],
    )
    async def metrics() -> Response:
        """Prometheus metrics: requests, latency, errors, predicted classes or values, rows per model call."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def quick_route(quick: Callable[[Request], Awaitable[Response | None]]) -> type[APIRoute]:
    """A route that asks `quick` first and goes the validating way (FastAPI's parsing, dependencies, errors) when it
    answers None. The body `quick` read is cached on the request: it is not read twice."""

    class QuickRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            validating = super().get_route_handler()

            async def handle(request: Request) -> Response:
                answer = await quick(request)
                return answer if answer is not None else await validating(request)

            return handle

    return QuickRoute


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _payload_kind(value: Any) -> str:
    return "records" if isinstance(value, list) else "record"


def _inference_entry(
    request_id: str,
    meta: BundleMetadata,
    features: Sequence[Any],
    scored: Scored,
    answered: Answered | None,
    fired: Report | None,
) -> InferenceEntry:
    """The model's own outputs, and where guardrails acted, which did what and the answer given instead."""
    flagged = fired.logged if fired is not None and fired.events else None
    answers = None
    if answered is not None:
        if answered.replaced:
            answers = {i: answered.predictions[i] for i in answered.replaced}
    return InferenceEntry(
        time=datetime.now(UTC),
        request_id=request_id,
        model_name=meta.name,
        model_version=meta.version,
        features=features,
        predictions=scored.predictions,
        probabilities=scored.probabilities,
        guardrails=flagged,
        answers=answers,
    )


WARNINGS_DESCRIPTION = (
    "per record, the guardrails that acted on it (empty: none); present while this version has guardrails"
)


def _predict_response_model(bundle: ModelBundle, guarded: bool) -> type[BaseModel]:
    """The answer's schema; with guardrails, a fallback may answer `null` (abstain) in place of the model."""
    meta = bundle.metadata
    fallback = " (null: a guardrail's fallback abstained)" if guarded else ""
    if meta.task == "classification":
        classes = list(getattr(bundle.pipeline, "classes_", meta.classes or []))
        kinds = {type(plain(c)) for c in classes}
        label: Any = kinds.pop() if len(kinds) == 1 and kinds <= {str, int, bool, float} else str | int | bool | float
        if guarded:
            label = label | None

        class ClassificationResponse(BaseModel):
            model_config = ConfigDict(title="Prediction")
            predictions: list[label] = Field(
                description=f"the predicted class of each record, one of {[str(c) for c in classes]}{fallback}"
            )
            probabilities: list[dict[str, float] | None] = Field(
                description=f"per record: class -> probability{fallback}"
            )
            warnings: list[list[GuardrailWarning]] | None = Field(default=None, description=WARNINGS_DESCRIPTION)
            model: ModelRef
            request_id: str

        return ClassificationResponse

    value: Any = float | None if guarded else float

    class RegressionResponse(BaseModel):
        model_config = ConfigDict(title="Prediction")
        predictions: list[value] = Field(description=f"the predicted value of each record{fallback}")
        warnings: list[list[GuardrailWarning]] | None = Field(default=None, description=WARNINGS_DESCRIPTION)
        model: ModelRef
        request_id: str

    return RegressionResponse


def _description(meta: BundleMetadata, settings: ServingSettings) -> str:
    auth = (
        "Every endpoint but /health, /ready and the docs wants `Authorization: Bearer <token>`. "
        if settings.api_token
        else ""
    )
    return (
        f"Serves {meta.task} model **{meta.name}** version **{meta.version}**.\n\n"
        "`POST /predict` takes one record (a JSON object) or a non-empty JSON array of at most "
        f"{settings.max_batch} records. Every input field is required; `null` means a missing value; numbers "
        "must be finite. Answers hold one entry per record, in order. `POST /feedback` takes a true label or a "
        "rating (or both) for an answer, by its request id and the record's row: 202 once it is on disk. "
        f"{auth}Errors are JSON with `error`, `message`, `request_id` and, for bad input, the `fields` at fault. "
        "An answer leaves only once the inference log holds it: a 503 `log_unavailable` means it could not be "
        "recorded, and no prediction was given."
    )


# --- errors ---


def _error(
    request: Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
    **extra: Any,
) -> SafeJSONResponse:
    body = {
        "error": code or ERROR_CODES.get(status, "error"),
        "message": message,
        "request_id": request_context(request).request_id,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _add_exception_handlers(app: FastAPI, state: ServingState) -> None:
    settings = state.settings

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Authentication is checked first, whatever the body.
        credentials = await HTTPBearer(auto_error=False)(request) if settings.api_token else None
        problem = _auth_problem(settings, credentials)
        if problem is not None:
            return await on_http(request, problem)
        return _validation_response(request, exc, settings.max_batch)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's words when json.loads fails with something else than a syntax error
            message = "the body cannot be read as JSON: not UTF-8, nested too deeply, or a number too long"
        return _error(request, exc.status_code, message, headers=exc.headers)

    async def on_model_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelInputError)
        return _error(request, 422, exc.problem, records=exc.records)

    async def on_not_ready(request: Request, exc: Exception) -> Response:
        return _error(request, 503, str(exc))

    async def on_log_unavailable(request: Request, exc: Exception) -> Response:
        return _error(request, 503, str(exc), code="log_unavailable")

    async def on_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GuardrailRefusal)
        refused = [{"record": i, **e.body()} for i, e in exc.events]
        return _error(request, 422, str(exc), code="refused_by_guardrails", guardrails=refused)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(ModelInputError, on_model_input)
    app.add_exception_handler(NotReady, on_not_ready)
    app.add_exception_handler(LogUnavailable, on_log_unavailable)
    app.add_exception_handler(GuardrailRefusal, on_refusal)


def _validation_response(request: Request, exc: RequestValidationError, max_batch: int) -> Response:
    errors = list(exc.errors())
    if isinstance(exc.body, bytes | bytearray):
        # FastAPI leaves the body unparsed when the content type is not JSON
        return _error(request, 415, "send the records as JSON, with the header 'Content-Type: application/json'")
    for error in errors:
        if error["type"] == "json_invalid":
            where = error["loc"][-1] if len(error["loc"]) > 1 else "?"
            detail = (error.get("ctx") or {}).get("error", "")
            return _error(request, 400, f"the body is not valid JSON: {detail} (at character {where})")
        if error["type"] == "too_long" and tuple(error["loc"][:2]) == ("body", "records"):
            actual = (error.get("ctx") or {}).get("actual_length", "more")
            return _error(
                request,
                413,
                f"a request may carry at most {max_batch} records (FLOWSHIP_MAX_BATCH); this one has {actual}",
            )
    problems = [_field_problem(error) for error in errors]
    if request.url.path == "/feedback":  # the body-level words are the scoring routes'
        problems = [
            p.model_copy(update={"problem": BODY_PROBLEM}) if p.field == "body" and p.type != "string_unicode" else p
            for p in problems
        ]
    summary = "; ".join(
        f"{p.field if p.record is None else f'record {p.record}: {p.field}'}: {p.problem}" for p in problems[:10]
    )
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return _error(request, 422, f"invalid input: {summary}{more}", fields=[p.model_dump() for p in problems])


def _field_problem(error: MutableMapping[str, Any] | Any) -> FieldProblem:
    loc = list(error.get("loc", ()))
    kind = str(error.get("type", "invalid"))
    message = str(error.get("msg", "invalid"))
    record: int | None = None
    if loc[:1] == ["body"]:
        loc = loc[1:]
    if loc[:1] == ["records"]:
        loc = loc[1:]
        if loc and isinstance(loc[0], int):
            record, loc = loc[0], loc[1:]
    elif loc[:1] == ["record"]:
        loc = loc[1:]
    name = ".".join(str(part) for part in loc) or "body"
    if kind == "string_unicode":
        message = "a field name or value is not valid Unicode text (a lone surrogate escape)"
    elif name == "body":
        if kind == "missing":
            message = "a JSON body is required: one record (an object) or a list of records"
        elif kind == "too_short":
            message = "the list of records is empty: send at least one record"
        elif kind in {"model_attributes_type", "model_type", "dict_type"}:
            message = (
                "each record must be a JSON object"
                if record is not None
                else "expected one record (a JSON object) or a non-empty list of records"
            )
    elif kind == "extra_forbidden":
        message = "unknown field (not in the model's input schema)"
    elif kind == "missing":
        message = "field required (send null for a missing value)"
    return FieldProblem(field=name, record=record, problem=message, type=kind)


# --- middleware: request id, auth-free bookkeeping, metrics, the JSON access log, last-resort 500 ---

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ServingMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: ServingState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(_request_id(scope))
        scope["flowship"] = context
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        batcher = self.state.batcher
        if endpoint in SCORING and scope.get("method") == "POST" and batcher is not None:
            context.arrival = batcher.arrival()
        status = 500
        response_started = False
        # the request id, and the version that answered (a gateway in front logs it)
        headers = [(REQUEST_ID_HEADER.lower().encode(), context.request_id.encode())]
        version = self.state.model.get("version")
        if version is not None:
            headers.append((MODEL_VERSION_HEADER.lower().encode(), str(version).encode("latin-1", "replace")))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error (request %s)", context.request_id)
            if not response_started:
                body = {
                    "error": "internal_error",
                    "message": "internal error; quote the request id when reporting it",
                    "request_id": context.request_id,
                }
                await SafeJSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            if context.arrival is not None:
                context.arrival.end()
            seconds = time.perf_counter() - started
            self.state.metrics.observe_request(endpoint, status, seconds)
            fields: dict[str, Any] = {
                "request_id": context.request_id,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "n_records": context.n_records,
                "model_version": self.state.model.get("version"),
            }
            if context.features is not None:
                fields["features"] = context.features
            access_log.info("%s %s %s", scope.get("method"), path, status, extra={"fields": fields})


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex
