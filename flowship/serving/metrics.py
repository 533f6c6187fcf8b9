"""Prometheus metrics of one app instance (its own registry, so two apps in one process never mix)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flowship.serving.bundle import ModelBundle

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# regression outputs of unknown scale: a symmetric log scale, unless the golden set shows the real range
DEFAULT_VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 100.0, 1000.0)


class ServingMetrics:
    def __init__(self, bundle: ModelBundle) -> None:
        meta = bundle.metadata
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flowship_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "flowship_request_latency_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "flowship_request_errors",
            "Responses with a 4xx or 5xx status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.records = Counter("flowship_predicted_records", "Records scored", registry=self.registry)
        self.model_calls = Histogram(
            "flowship_model_call_rows",
            "Rows per model call (micro-batching combines concurrent requests)",
            buckets=ROWS_BUCKETS,
            registry=self.registry,
        )
        self.guardrails = Counter(
            "flowship_guardrail_events",
            "Guardrails that fired, by guardrail and action (one per record and guardrail)",
            ["guardrail", "action"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "flowship_feedback",
            "What POST /feedback kept, by kind (label, rating, comment; a feedback may bring several)",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("label", "rating", "comment"):
            self.feedback.labels(kind)  # every kind shows, at 0, from the start
        info = Gauge(
            "flowship_model_info", "The model being served", ["name", "version", "task"], registry=self.registry
        )
        info.labels(meta.name, meta.version, meta.task).set(1)
        self.classes: Counter | None = None
        self.values: Histogram | None = None
        if meta.task == "classification":
            self.classes = Counter(
                "flowship_predictions", "Predicted records by class", ["predicted_class"], registry=self.registry
            )
            for label in meta.classes or []:
                self.classes.labels(str(label))  # every class shows, at 0, from the start
        else:
            self.values = Histogram(
                "flowship_prediction_value",
                "Distribution of predicted values",
                buckets=value_buckets([g.prediction for g in bundle.golden or []]),
                registry=self.registry,
            )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()

    def observe_predictions(self, predictions: Sequence[Any]) -> None:
        self.records.inc(len(predictions))
        if self.classes is not None:
            for label, count in Tally(predictions).items():  # labels: the classes as text
                self.classes.labels(str(label)).inc(count)
        elif self.values is not None:
            for value in predictions:
                self.values.observe(float(value))

    def observe_guardrails(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Events per (guardrail, action)."""
        for (guardrail, action), count in counts.items():
            self.guardrails.labels(guardrail, action).inc(count)

    def observe_feedback(self, kinds: Sequence[str]) -> None:
        for kind in kinds:
            self.feedback.labels(kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def value_buckets(golden_predictions: Sequence[Any]) -> tuple[float, ...]:
    """Deciles of the golden predictions when there are enough of them, else a wide default."""
    values = np.asarray([v for v in golden_predictions if isinstance(v, int | float)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) >= 10:
        edges = np.unique(np.round(np.quantile(values, np.linspace(0.1, 0.9, 9)), 6))
        if len(edges) >= 3:
            return tuple(float(e) for e in edges)
    return DEFAULT_VALUE_BUCKETS
