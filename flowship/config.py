"""`params.yaml` as typed models, read once at the entry point.

A bad key or value fails here, before any work, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowship.errors import ConfigError
from flowship.features import FeatureLists

if TYPE_CHECKING:
    from flowship.serving.guardrails import GuardrailPolicy
    from flowship.serving.privacy import PrivacyPolicy

TaskType = Literal["classification", "regression"]

CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


def metrics_for(task: TaskType) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="registered model name")
    seed: int = 42


class JoinConfig(Section):
    source: Path
    by: list[str] = Field(min_length=1)
    how: Literal["left", "inner"] = "left"


class TargetConfig(Section):
    column: str
    # A binary target derived from a numeric column: column = derive_from > above.
    derive_from: str | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _derivation_complete(self) -> TargetConfig:
        if (self.derive_from is None) != (self.above is None):
            raise ValueError("derive_from and above must be given together")
        return self


class FeaturesConfig(FeatureLists):
    """The feature lists as `params.yaml` states them: at least one feature, none of both kinds."""

    @model_validator(mode="after")
    def _some_features(self) -> FeaturesConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is required")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"listed as both numeric and categorical: {sorted(both)}")
        return self


class DataConfig(Section):
    source: Path
    format: Literal["auto", "csv", "parquet"] = "auto"
    join: JoinConfig | None = None
    target: TargetConfig
    task: TaskType
    time_column: str | None = None
    # The time column's layout as a strftime format (e.g. "%d/%m/%Y" for day-first dates); None: ISO 8601, or the one
    # layout inferred from the first value (e.g. 2013/01/31).
    time_format: str | None = Field(default=None, min_length=2, pattern=r"%")
    features: FeaturesConfig

    @model_validator(mode="after")
    def _target_not_feature(self) -> DataConfig:
        if self.target.column in self.features.all:
            raise ValueError(f"target {self.target.column!r} is also listed as a feature")
        if self.target.derive_from is not None and self.task != "classification":
            raise ValueError("a derived (thresholded) target needs task: classification")
        return self


class ColumnRule(Section):
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    max_null_fraction: float | None = Field(default=None, ge=0.0, le=1.0)  # None: validate.defaults


class ColumnDefaults(Section):
    """What every feature is held to unless its own rule says otherwise."""

    # Permissive: every estimator handles missing values (natively, or imputed by the pipeline), so a feature is
    # refused only when it is missing in most rows.
    max_null_fraction: float = Field(default=0.5, ge=0.0, le=1.0)


class ValidateConfig(Section):
    min_rows: int = Field(default=100, ge=1)
    defaults: ColumnDefaults = ColumnDefaults()
    columns: dict[str, ColumnRule] = {}

    def null_limit(self, column: str) -> float:
        """The largest share of missing values allowed in a feature column."""
        own = self.columns[column].max_null_fraction if column in self.columns else None
        return self.defaults.max_null_fraction if own is None else own


class TimeSplit(Section):
    method: Literal["time"]
    train_start: dt.date
    train_end: dt.date
    production_start: dt.date | None = None
    production_end: dt.date | None = None
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> TimeSplit:
        if self.train_end <= self.train_start:
            raise ValueError(f"train_end {self.train_end} must be after train_start {self.train_start}")
        if (self.production_start is None) != (self.production_end is None):
            raise ValueError("production_start and production_end must be given together")
        if self.production_start and self.production_end:
            if self.production_end <= self.production_start:
                raise ValueError("production_end must be after production_start")
            if self.production_start < self.train_end:
                raise ValueError("the production window must not overlap the training window")
        return self


class RandomSplit(Section):
    method: Literal["random"]
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    production_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _room_to_train(self) -> RandomSplit:
        if self.holdout_fraction + self.production_fraction >= 0.9:
            raise ValueError("holdout_fraction + production_fraction must leave at least 10% to train on")
        return self


class Distribution(Section):
    distribution: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.high <= self.low:
            raise ValueError(f"high {self.high} must be above low {self.low}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


class SearchConfig(Section):
    enabled: bool = False
    n_trials: int = Field(default=8, ge=1, le=1000)
    metric: str | None = None
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    max_workers: int = Field(default=2, ge=1)
    space: dict[str, list[Any] | Distribution] = {}

    @field_validator("space")
    @classmethod
    def _non_empty_lists(cls, space: dict[str, Any]) -> dict[str, Any]:
        for name, values in space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"search space for {name!r} is an empty list")
        return space


class TrainConfig(Section):
    estimator: str = "hist_gradient_boosting"
    params: dict[str, Any] = {}
    search: SearchConfig = SearchConfig()


class EvaluateConfig(Section):
    golden_size: int = Field(default=50, ge=1, le=10_000)
    # Permutation importance costs a prediction over importance_rows per feature and repeat: bounded here.
    importance: bool = True
    importance_rows: int = Field(default=2000, ge=10, le=1_000_000)
    importance_repeats: int = Field(default=2, ge=1, le=100)


class GateConfig(Section):
    primary_metric: str
    thresholds: dict[str, float] = {}
    max_regression: dict[str, float] = {}

    @field_validator("max_regression")
    @classmethod
    def _non_negative(cls, tolerances: dict[str, float]) -> dict[str, float]:
        for name, tol in tolerances.items():
            if tol < 0:
                raise ValueError(f"max_regression[{name!r}] = {tol} must be >= 0")
        return tolerances


class CanaryConfig(Section):
    """Live traffic on the challenger in steps, each judged against stable on that step's traffic (names after
    Flagger's: `step_weights`, `interval`, a success rate and a request duration)."""

    step_weights: list[int] = Field(default=[5, 25, 50], min_length=1)  # percent of live traffic, in turn
    shadow_first: bool = False  # a shadow step (judged as `shadow:` says) before the first: no client sees it yet
    interval_s: float = Field(default=30.0, ge=0.0, le=86_400.0)  # at least this long per step
    min_requests: int = Field(default=100, ge=1, le=10_000_000)  # and at least this many canary answers
    max_wait_s: float = Field(default=600.0, gt=0.0, le=7 * 86_400.0)  # a step short of them by then aborts
    min_success_rate: float = Field(default=0.99, ge=0.0, le=1.0)  # share of the canary's answers not 5xx
    max_p99_ratio: float = Field(default=1.5, gt=0.0)  # canary's p99 (at the gateway) at most this x stable's
    max_p99_ms: float | None = Field(default=None, gt=0.0)  # and, when set, at most this
    # how far the canary's predictions may be from stable's: Jensen-Shannon distance of the predicted classes
    # (classification), Wasserstein distance over stable's standard deviation (regression)
    max_prediction_distance: float = Field(default=0.1, gt=0.0)

    @field_validator("step_weights")
    @classmethod
    def _rising_percentages(cls, weights: list[int]) -> list[int]:
        if any(not 0 < w < 100 for w in weights) or weights != sorted(set(weights)):
            raise ValueError(f"{weights}: percentages between 1 and 99, rising (all steps passing promotes)")
        return weights


class ShadowConfig(Section):
    """A copy of live traffic for the challenger, whose answers are compared with stable's and never sent back."""

    min_requests: int = Field(default=200, ge=1, le=10_000_000)  # records answered by both and compared
    max_wait_s: float = Field(default=600.0, gt=0.0, le=7 * 86_400.0)  # short of them by then: the shadow fails
    min_agreement: float = Field(default=0.95, ge=0.0, le=1.0)  # classification: share given the same class
    max_mean_difference: float = Field(default=0.1, ge=0.0)  # regression: mean |difference| / stable's std
    max_p99_ratio: float = Field(default=2.0, gt=0.0)  # the shadow's p99 (model time) at most this x stable's
    max_p99_ms: float | None = Field(default=None, gt=0.0)  # and, when set, at most this


class ApprovalConfig(Section):
    """A person's decision before production changes, taken in the Prefect UI: the release flow pauses with a form
    that shows the checks' numbers, and goes on only when someone approves."""

    # none: no one is asked; promotion: before production switches; each_step: also before each canary step after
    # the first (the canary keeps its share while it waits)
    before: Literal["none", "promotion", "each_step"] = "none"
    timeout_s: int = Field(default=3600, ge=10, le=7 * 86_400)  # no decision by then rejects


class ReleaseConfig(Section):
    """How a challenger is verified in staging and served in production (on loopback)."""

    # direct: production switches once staging passes; canary: live traffic in steps first (`canary:`);
    # shadow: a copy of live traffic first, answers compared (`shadow:`)
    strategy: Literal["direct", "canary", "shadow"] = "direct"
    canary: CanaryConfig = CanaryConfig()
    shadow: ShadowConfig = ShadowConfig()
    approval: ApprovalConfig = ApprovalConfig()

    production_port: int = Field(default=8000, ge=1024, le=65535)
    staging_port: int = Field(default=8001, ge=1024, le=65535)
    latency_requests: int = Field(default=200, ge=10, le=100_000)
    latency_p95_ms: float = Field(default=50.0, ge=0.0)
    golden_tolerance: float = Field(default=1e-6, ge=0.0)
    max_batch: int = Field(default=1000, ge=1, le=1_000_000)
    health_timeout_s: float = Field(default=60.0, gt=0.0)
    # containers of the production version behind the gateway; null: chosen for the machine (`replicas_for`)
    replicas: int | None = Field(default=None, ge=1, le=16)
    # after a promotion or rollback the version it replaced keeps running (out of traffic) this long, so that going
    # back within it is a switch of the gateway, not a start; the next release or `flowship status` stops it after
    warm_s: float = Field(default=600.0, ge=0.0, le=7 * 24 * 3600)

    @property
    def replica_count(self) -> int:
        return self.replicas if self.replicas is not None else replicas_for(os.cpu_count())

    @model_validator(mode="after")
    def _distinct_ports(self) -> ReleaseConfig:
        if self.production_port == self.staging_port:
            raise ValueError(f"staging_port must differ from production_port ({self.production_port})")
        return self


def replicas_for(cpus: int | None) -> int:
    """One replica per two cores, at least two (one crashing never stops production) and at most eight."""
    return max(2, min(8, (cpus or 1) // 2))


class RateLimit(Section):
    """Requests per second per client (its `client_header` value, else its address), with a burst allowance."""

    per_second: float = Field(default=500.0, gt=0.0, le=1_000_000.0)
    burst: int = Field(default=1000, ge=0, le=1_000_000)


class GatewayConfig(Section):
    """The reverse proxy in front of production (nginx): what it lets through and how long it waits."""

    enabled: bool = True  # false: production containers are published directly on production_port, as before
    rate_limit: RateLimit | None = RateLimit()  # null: no limit
    client_header: str = Field(default="X-Client-Key", pattern=r"^[A-Za-z0-9-]{1,64}$")
    timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)  # the model's answer; past it the client gets a 504
    max_body_mb: float = Field(default=8.0, gt=0.0, le=1024.0)  # a larger request body gets a 413
    # a file of API keys, one per line (kept out of git): then every request but /health needs `X-API-Key`
    api_keys_file: Path | None = None
    # what the gateway answers with while paused (`flowship pause`)
    retry_after_s: int = Field(default=30, ge=1, le=86_400)
    # 0: each answer closes its client connection, so a reload (a promotion, a rollback) never cuts a request a
    # client sends on an idle kept-alive connection at that instant. Above 0: connections kept that long, cheaper
    # for busy clients, which must then retry a request cut by a reload.
    keepalive_s: float = Field(default=0.0, ge=0.0, le=3600.0)


# Evidently's statistical tests by name; pinned in params.yaml because Evidently's own default changes with row count.
# As Evidently decides: a distance drifts at or above the threshold, a p-value below it.
DISTANCE_METHODS = ("wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed")
P_VALUE_METHODS = ("ks", "chisquare", "z", "TVD", "anderson", "cramer_von_mises", "es", "t_test", "mannw",
                   "empirical_mmd", "g_test", "fisher_exact")  # fmt: skip
DRIFT_METHODS = DISTANCE_METHODS + P_VALUE_METHODS


class DriftConfig(Section):
    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float = Field(default=0.1, gt=0.0, description="a feature drifts past this score")
    share: float = Field(default=0.3, gt=0.0, le=1.0, description="alert when more than this share of features drift")
    key_features: list[str] = []  # alert when any of these drifts, whatever the share

    @field_validator("num_method", "cat_method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in DRIFT_METHODS:
            raise ValueError(f"unknown drift method {method!r}; allowed: {', '.join(DRIFT_METHODS)}")
        return method


class QualityConfig(Section):
    metric: str | None = None  # default: gate.primary_metric
    max_drop: float = Field(
        default=0.05, ge=0.0, description="alert when the metric is this much worse than on the holdout"
    )
    min_labels: int = Field(default=200, ge=1)


class AlertConfig(Section):
    webhook: str | None = Field(default=None, pattern=r"^https?://")  # else: the local alert log only
    cooldown_hours: float = Field(default=24.0, ge=0.0)


class RetrainConfig(Section):
    enabled: bool = False  # on drift: train on a window moved up to the newest labelled data
    deploy: bool = False  # then release the challenger through staging and its checks


class GuardrailAlertConfig(Section):
    # alert when one guardrail fires on one feature for more than this share of a version's records in a window
    max_share: float = Field(default=0.05, gt=0, le=1)


class ErrorBudgetConfig(Section):
    # this share of the requests over the last `days` days should be good (not a server error)
    target: float = Field(default=0.995, gt=0, lt=1)
    days: int = Field(default=7, ge=1, le=90)


class CostConfig(Section):
    """Prices of the serving processes' resources (in one currency, whichever the prices are in), and the ceiling of
    the cost per 1,000 predictions (null: figures, no alert)."""

    vcpu_hour: float = Field(ge=0, allow_inf_nan=False, description="the price of one CPU busy for an hour")
    gb_hour: float = Field(ge=0, allow_inf_nan=False, description="the price of 1 GiB of memory held for an hour")
    max_per_1000: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="alert above this cost per 1,000 predictions"
    )


class ServiceAlertConfig(Section):
    """The service's alerts, from the gateway's access log (each window, and the error budget over days), and its
    cost, from the serving processes' usage log (no prices: no cost, the resources only)."""

    max_error_ratio: float = Field(default=0.01, ge=0, le=1, description="alert above this share of server errors")
    p99_ms: float = Field(default=1000.0, gt=0, description="alert when the gateway's p99 is above this")
    min_requests: int = Field(default=100, ge=1, description="fewer requests: no verdict on errors or latency")
    error_budget: ErrorBudgetConfig = ErrorBudgetConfig()
    cost: CostConfig | None = None


class DashboardConfig(Section):
    """The monitoring dashboard: each check adds its run to the model's project in an Evidently UI workspace."""

    enabled: bool = True
    # relative to the project's root; `flowship up` serves it with the Evidently UI
    workspace: str = Field(default="reports/evidently", min_length=1)


class MonitoringConfig(Section):
    min_records: int = Field(default=500, ge=1, description="fewer records in a window: no verdict, no alert")
    reference_rows: int = Field(default=50_000, ge=100)
    sample_rows: int = Field(default=100_000, ge=1000, description="drift is computed on at most this many records")
    drift: DriftConfig = DriftConfig()
    quality: QualityConfig = QualityConfig()
    alerts: AlertConfig = AlertConfig()
    retrain: RetrainConfig = RetrainConfig()
    guardrails: GuardrailAlertConfig = GuardrailAlertConfig()
    service: ServiceAlertConfig = ServiceAlertConfig()
    dashboard: DashboardConfig = DashboardConfig()


DASK_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class DaskConfig(Section):
    # a running Dask scheduler; None: a local cluster is started for the run (and stopped after it)
    address: str | None = None
    workers: int = Field(default=2, ge=1, le=1024, description="local cluster only")
    threads_per_worker: int = Field(default=1, ge=1, le=256, description="local cluster only")

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, address: str | None) -> str | None:
        if address is None:
            return None
        found = DASK_ADDRESS.match(address)
        if found is None or not 0 < int(found.group(3)) < 65536:
            raise ValueError(
                "expected the address of a running Dask scheduler as tcp://host:port (e.g. tcp://10.0.0.5:8786), "
                "or null for a local cluster started for the run"
            )
        return address


class ComputeConfig(Section):
    """Where the parallel work (search trials, batch scoring chunks) runs. Not a DVC param: results don't depend
    on it, so changing it never re-runs a stage."""

    engine: Literal["threads", "dask"] = "threads"
    dask: DaskConfig = DaskConfig()


# The logs a retention setting applies to (params.yaml `retention:`).
RETAINED_LOGS = ("inference", "labels", "access", "safety")


class RetentionConfig(Section):
    """Days each log's daily files are kept (null: for ever); a scheduled run deletes the older ones. Not a DVC
    param: nothing trained depends on it."""

    inference: int | None = 90
    labels: int | None = 90
    access: int | None = 30
    safety: int | None = 90

    @field_validator(*RETAINED_LOGS)
    @classmethod
    def _at_least_a_day(cls, days: int | None) -> int | None:
        if days is not None and days < 1:
            raise ValueError("days to keep must be at least 1 (today's and yesterday's files are always kept), or null "
                             "to keep the files for ever")  # fmt: skip
        return days

    def days(self, log: str) -> int | None:
        value: int | None = getattr(self, log)
        return value


class Params(Section):
    project: ProjectConfig
    data: DataConfig
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    split: Annotated[TimeSplit | RandomSplit, Field(discriminator="method")]
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig
    release: ReleaseConfig = ReleaseConfig()
    gateway: GatewayConfig = GatewayConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    compute: ComputeConfig = ComputeConfig()
    retention: RetentionConfig = RetentionConfig()
    # What the serving app does when a record or an answer leaves what the model knows: checked by `parse_params`
    # against the serving app's own model (`guardrails` below), imported there so that the pipeline's stages, which
    # never serve, do not run that code (and need not list it in dvc.yaml).
    guardrails_section: dict[str, Any] = Field(default={}, alias="guardrails")
    # The sensitive feature columns and what the logs keep of them: the serving app's model too (`privacy` below).
    privacy_section: dict[str, Any] = Field(default={}, alias="privacy")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        allowed = metrics_for(self.data.task)
        named = {
            "gate.primary_metric": [self.gate.primary_metric],
            "gate.thresholds": list(self.gate.thresholds),
            "gate.max_regression": list(self.gate.max_regression),
            "train.search.metric": [self.train.search.metric] if self.train.search.metric else [],
            "monitoring.quality.metric": [self.monitoring.quality.metric] if self.monitoring.quality.metric else [],
        }
        for where, names in named.items():
            for name in names:
                if name not in allowed:
                    raise ValueError(
                        f"{where}: metric {name!r} is not computed for task {self.data.task!r}; "
                        f"allowed: {', '.join(allowed)}"
                    )
        if isinstance(self.split, TimeSplit) and not self.data.time_column:
            raise ValueError("split.method 'time' needs data.time_column")
        unknown = set(self.validate_.columns) - {*self.data.features.all, self.data.target.column}
        if unknown:
            raise ValueError(f"validate.columns names columns that are not features or the target: {sorted(unknown)}")
        not_features = set(self.monitoring.drift.key_features) - set(self.data.features.all)
        if not_features:
            raise ValueError(
                f"monitoring.drift.key_features names columns that are not features: {sorted(not_features)}"
            )
        return self

    @cached_property
    def guardrails(self) -> GuardrailPolicy:
        from flowship.serving.guardrails import GuardrailPolicy

        return GuardrailPolicy.model_validate(self.guardrails_section)

    @cached_property
    def privacy(self) -> PrivacyPolicy:
        from flowship.serving.privacy import PrivacyPolicy

        return PrivacyPolicy.model_validate(self.privacy_section)

    @property
    def search_metric(self) -> str:
        return self.train.search.metric or self.gate.primary_metric

    @property
    def quality_metric(self) -> str:
        return self.monitoring.quality.metric or self.gate.primary_metric


def _describe(error: Mapping[str, Any]) -> str:
    parts = [str(p) for p in error["loc"] if not str(p).startswith(("function-after", "tagged-union"))]
    if parts[:1] == ["split"] and parts[1:2] in (["time"], ["random"]):
        del parts[1]  # the discriminated union's tag: not a key of params.yaml
    loc = ".".join(parts)
    loc = loc.replace("validate_", "validate")
    value = error.get("input")
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key (value {value!r})"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{loc or '<top level>'}: {msg}{shown}"


def _unquoted_dates(raw: Any, where: str = "") -> list[str]:
    if isinstance(raw, dict):
        return [p for k, v in raw.items() for p in _unquoted_dates(v, f"{where}.{k}" if where else str(k))]
    if isinstance(raw, list):
        return [p for i, v in enumerate(raw) for p in _unquoted_dates(v, f"{where}.{i}")]
    if isinstance(raw, dt.date):
        return [f'{where}: write the date in quotes ("{raw.isoformat()}"); DVC cannot read unquoted YAML dates']
    return []


def parse_params(raw: Any, check_estimator: bool = True, check_serving: bool = True) -> Params:
    """Typed params; `check_estimator=False` skips the estimator check (it imports scikit-learn),
    `check_serving=False` the guardrails' (it imports the serving app's policy)."""
    if not isinstance(raw, dict):
        raise ConfigError([f"<top level>: expected a mapping of sections, got {type(raw).__name__}"])
    dates = _unquoted_dates(raw)
    if dates:
        raise ConfigError(dates)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from None
    if check_estimator:
        # Imported here: checking estimator names and hyperparameters needs scikit-learn.
        from flowship.estimators import check_estimator_config

        check_estimator_config(params)
    if check_serving:
        _check_guardrails(params)
        _check_privacy(params)
    return params


def _check_guardrails(params: Params) -> None:
    try:
        policy = params.guardrails
    except ValidationError as exc:
        raise ConfigError([_describe({**e, "loc": ("guardrails", *e["loc"])}) for e in exc.errors()]) from None
    if params.data.task == "regression" and (problem := policy.fallback_problem("regression", None)):
        raise ConfigError([problem])


def _check_privacy(params: Params) -> None:
    try:
        policy = params.privacy
    except ValidationError as exc:
        raise ConfigError([_describe({**e, "loc": ("privacy", *e["loc"])}) for e in exc.errors()]) from None
    features = params.data.features
    problems = [
        f"privacy.columns: {column!r} is not a feature (data.features: {', '.join(features.all)})"
        for column in policy.columns
        if column not in features.all
    ]
    unmonitored = policy.unmonitored(features.numeric)
    problems += [
        f"monitoring.drift.key_features: {column!r} is left out of monitoring by privacy (mode {policy.mode}"
        f"{'' if policy.mode == 'drop' else ', a hashed number has no distribution to compare'})"
        for column in params.monitoring.drift.key_features
        if column in unmonitored
    ]
    if problems:
        raise ConfigError(problems)


def _has_key(raw: Any, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def missing_tracked_params(raw: Any, dvc_yaml: Path) -> list[str]:
    """Keys that `dvc.yaml` tracks as stage params but `params.yaml` leaves out (DVC needs each one written)."""
    return [
        f"{key}: required key is missing (dvc.yaml tracks it for stage {stage!r}; "
        "write it out: null for no value, {} for a section of defaults)"
        for key, stage in tracked_params(dvc_yaml).items()
        if not _has_key(raw, key)
    ]


def tracked_params(dvc_yaml: Path) -> dict[str, str]:
    """The params keys `dvc.yaml` tracks, each with the first stage that tracks it."""
    if not dvc_yaml.exists():
        return {}
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{dvc_yaml}: not valid YAML ({exc})"]) from None
    tracked: dict[str, str] = {}
    for stage_name, stage in stages.items():
        for entry in stage.get("params") or []:
            if isinstance(entry, str):  # {file: [keys]} entries name other files
                tracked.setdefault(entry, stage_name)
    return tracked


def _leaves(values: Mapping[str, Any], where: str) -> list[str]:
    return [
        leaf
        for key, value in values.items()
        for leaf in (_leaves(value, f"{where}.{key}") if isinstance(value, Mapping) and value else [f"{where}.{key}"])
    ]


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], tracked: Mapping[str, str]) -> dict[str, Any]:
    """`raw` with `overrides` merged in, key by key (a deployment's parameters for its environment). What DVC
    tracks is refused: a run must train on what params.yaml says, or `dvc repro` and the flow would disagree."""
    if not isinstance(overrides, Mapping):
        raise ConfigError([f"overrides: expected a mapping of params.yaml sections, got {type(overrides).__name__}"])
    problems = []
    for leaf in _leaves(overrides, "overrides"):
        key = leaf.removeprefix("overrides.")
        for dotted, stage in tracked.items():
            if key == dotted or key.startswith(f"{dotted}.") or dotted.startswith(f"{key}."):
                problems.append(
                    f"{leaf}: {dotted} is tracked by dvc.yaml (stage {stage!r}); overrides may change only what "
                    "DVC does not track (release, monitoring, compute, ...): edit params.yaml for the rest"
                )
                break
    if problems:
        raise ConfigError(problems)

    def merge(base: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(base) if isinstance(base, Mapping) else {}
        for key, value in extra.items():
            merged[key] = merge(merged.get(key), value) if isinstance(value, Mapping) and value else value
        return merged

    return merge(raw, overrides)


def load_params(
    path: Path, check_estimator: bool = True, overrides: Mapping[str, Any] | None = None, check_serving: bool = True
) -> Params:
    """Read and check `path`; keys that the `dvc.yaml` beside it tracks must be written out. `overrides` (a
    deployment's per-environment parameters) change keys DVC does not track, and are checked like the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    missing = missing_tracked_params(raw, path.parent / "dvc.yaml")
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: expected a mapping of sections, got {type(raw).__name__}"])
        raw = apply_overrides(raw, overrides, tracked_params(path.parent / "dvc.yaml"))
        try:
            params = parse_params(raw, check_estimator, check_serving)
        except ConfigError as exc:
            raise ConfigError([f"{p} (params.yaml with the overrides)" for p in exc.problems]) from None
    else:
        params = parse_params(raw, check_estimator, check_serving)
    if missing:
        raise ConfigError(missing)
    return params


def params_section(params: Params, name: str) -> dict[str, Any]:
    """One section as plain data, as it is hashed for lineage."""
    dumped: dict[str, Any] = params.model_dump(mode="json", by_alias=True)
    return dumped[name]  # type: ignore[no-any-return]
