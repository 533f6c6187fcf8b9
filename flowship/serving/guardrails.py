"""Guardrails on both sides of the model: each record checked against the profile of the training data, each
answer against the model's own confidence or target range, and a policy saying what happens when one fires.

- `TrainingProfile` (`profile.json` in the bundle, made at training): per numeric feature the observed range and
  robust bounds (0.5% / 99.5% quantiles), per categorical one the known values, the share of missing values of
  each, and the target's class shares or range.
- `GuardrailPolicy` (`params.yaml` `guardrails:`, handed to the service as FLOWSHIP_GUARDRAILS): per guardrail an
  action. Inputs: `flag` (answer, with a warning), `refuse` (a 422 naming feature, value and the known range),
  `fallback` (answer the configured fallback instead of the model) or `off`. Outputs: `low_confidence`
  (classification: `flag` / `fallback`) and `output_range` (regression: `flag` / `clip`).
- `Guardrails`: the policy compiled against one bundle; the request path calls `check_inputs` before scoring and
  `apply_outputs` after.

pydantic and the standard library only: the serving image carries this module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from flowship.errors import ConfigError

PROFILE_FILE = "profile.json"
INPUT_GUARDRAILS = ("out_of_range", "unseen_category", "missing")
OUTPUT_GUARDRAILS = ("low_confidence", "output_range")
GUARDRAILS = INPUT_GUARDRAILS + OUTPUT_GUARDRAILS

Row = tuple[Any, ...]


# --- the training profile (profile.json) ---


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericProfile(_Frozen):
    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)
    low: float = Field(allow_inf_nan=False, description="0.5% quantile")
    high: float = Field(allow_inf_nan=False, description="99.5% quantile")
    missing: float = Field(ge=0, le=1, description="share of training rows without a value")


class CategoricalProfile(_Frozen):
    values: list[str]
    missing: float = Field(ge=0, le=1)


class TargetProfile(_Frozen):
    prior: dict[str, float] | None = Field(default=None, description="classification: each class's share")
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    mean: float | None = Field(default=None, allow_inf_nan=False)


class TrainingProfile(_Frozen):
    """What the model saw at training: the reference the input and output guardrails check against."""

    rows: int = Field(ge=1)
    numeric: dict[str, NumericProfile] = {}
    categorical: dict[str, CategoricalProfile] = {}
    target: TargetProfile


# --- the policy (params.yaml `guardrails:`) ---


def _yaml_off(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads an unquoted `off` as false
    return "off" if value is False else value


InputAction = Annotated[Literal["off", "flag", "refuse", "fallback"], BeforeValidator(_yaml_off)]
ConfidenceAction = Annotated[Literal["off", "flag", "fallback"], BeforeValidator(_yaml_off)]
OutputRangeAction = Annotated[Literal["off", "flag", "clip"], BeforeValidator(_yaml_off)]


class InputRule(_Frozen):
    action: InputAction = "flag"


class RangeRule(InputRule):
    """A numeric value outside the training range, widened on each side by `margin` x its span."""

    bounds: Literal["observed", "robust"] = "observed"
    margin: float = Field(default=0.1, ge=0, le=100, allow_inf_nan=False)


class MissingRule(InputRule):
    """A record missing a feature that training never had missing, or more than `max_share` of its features."""

    max_share: float = Field(default=0.5, ge=0, le=1)


class ConfidenceRule(_Frozen):
    """Classification: the predicted class's probability below `min_confidence`."""

    action: ConfidenceAction = "off"
    min_confidence: float = Field(default=0.6, gt=0, le=1)


class OutputRangeRule(_Frozen):
    """Regression: a predicted value outside the training target's range, widened by `margin` x its span."""

    action: OutputRangeAction = "flag"
    margin: float = Field(default=0.1, ge=0, le=100, allow_inf_nan=False)


class FallbackAnswer(_Frozen):
    """The answer given instead of the model's: none (`abstain`), the training prior (classification: its most
    common class and the class shares; regression: the target's mean), or a `constant`."""

    kind: Literal["abstain", "prior", "constant"] = "abstain"
    value: str | bool | int | float | None = None

    @model_validator(mode="after")
    def _value_iff_constant(self) -> FallbackAnswer:
        if self.kind == "constant" and self.value is None:
            raise ValueError("`value` is required when kind is 'constant'")
        if self.kind != "constant" and self.value is not None:
            raise ValueError(f"`value` is only for kind 'constant' (kind is {self.kind!r})")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("`value` must be a finite number")
        return self


class GuardrailPolicy(_Frozen):
    enabled: bool = True
    out_of_range: RangeRule = RangeRule()
    unseen_category: InputRule = InputRule()
    missing: MissingRule = MissingRule()
    low_confidence: ConfidenceRule = ConfidenceRule()
    output_range: OutputRangeRule = OutputRangeRule()
    fallback: FallbackAnswer = FallbackAnswer()

    def fallback_problem(self, task: str, classes: Sequence[Any] | None) -> str | None:
        """Why the fallback cannot answer for this model (None: it can)."""
        value = self.fallback.value
        if self.fallback.kind != "constant":
            return None
        if task == "regression":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"guardrails.fallback.value {value!r} is not a number, and the model predicts numbers"
            return None
        known = [str(c) for c in classes or []]
        if str(value) not in known:
            return f"guardrails.fallback.value {value!r} is not one of the model's classes {known}"
        return None


# --- what fires ---


class Event(NamedTuple):
    """One guardrail firing on one record (a tuple: a big batch can fire one per record, cheaply)."""

    guardrail: str
    action: str
    feature: str | None
    value: Any
    expected: str

    def body(self) -> dict[str, Any]:
        """As the client sees it (the value it sent or the model gave, and what the model knows)."""
        return {
            "guardrail": self.guardrail,
            "action": self.action,
            "feature": self.feature,
            "value": self.value,
            "expected": self.expected,
        }

    def logged(self) -> dict[str, Any]:
        """As the logs keep it: no value. One dict per kind of event, shared: read it, never change it."""
        return _logged(self.guardrail, self.action, self.feature)

    def sentence(self) -> str:
        subject = f"{self.feature} = {_shown(self.value)}" if self.feature else _shown(self.value)
        return f"{subject}: {self.expected} ({self.guardrail})"


class Report(NamedTuple):
    """One request's guardrail events, as each reader takes them."""

    bodies: list[list[dict[str, Any]]]  # per record, as the client sees them (`Event.body`)
    logged: list[list[dict[str, Any]]]  # per record, as the inference log keeps them (`Event.logged`)
    events: list[tuple[int, dict[str, Any]]]  # (record, logged) per event: the safety-event log's lines
    counts: dict[tuple[str, str], int]  # events per (guardrail, action): /metrics


def report(warnings: Sequence[Sequence[Event]]) -> Report:
    """`warnings` (per record, the events that fired on it) for the answer, the logs and the metrics, in one pass;
    an event several records share (`check_inputs` gives one per distinct value) is described once."""
    bodies: list[list[dict[str, Any]]] = []
    logged: list[list[dict[str, Any]]] = []
    events: list[tuple[int, dict[str, Any]]] = []
    counts: dict[tuple[str, str], int] = {}
    # by id: the events live as long as this call
    described: dict[int, tuple[dict[str, Any], dict[str, Any], tuple[str, str]]] = {}
    for row, record in enumerate(warnings):
        if not record:
            bodies.append([])
            logged.append([])
            continue
        shown, kept = [], []
        for event in record:
            known = described.get(id(event))
            if known is None:
                known = described[id(event)] = (event.body(), event.logged(), (event.guardrail, event.action))
            body, kept_event, kind = known
            shown.append(body)
            kept.append(kept_event)
            events.append((row, kept_event))
            counts[kind] = counts.get(kind, 0) + 1
        bodies.append(shown)
        logged.append(kept)
    return Report(bodies, logged, events, counts)


class GuardrailRefusal(Exception):
    """A refusing guardrail fired: the request is answered 422 naming each record, feature and range."""

    def __init__(self, events: list[tuple[int, Event]]) -> None:
        self.events = events
        shown = "; ".join(f"record {i}: {e.sentence()}" for i, e in events[:10])
        more = f" (and {len(events) - 10} more)" if len(events) > 10 else ""
        super().__init__(f"refused by the input guardrails: {shown}{more}")


@dataclass(frozen=True)
class Answered:
    """One request's answer after the output guardrails and fallbacks: what the client gets."""

    predictions: list[Any]
    probabilities: list[dict[str, float] | None] | None
    warnings: list[list[Event]]
    # the records whose answer is not the model's (a fallback, a clipped value)
    replaced: frozenset[int]


class Guardrails:
    """The policy compiled against one model: the columns' positions, bounds and known values."""

    def __init__(
        self,
        policy: GuardrailPolicy,
        profile: TrainingProfile,
        columns: Sequence[str],
        task: str,
        classes: Sequence[Any] | None,
    ) -> None:
        problem = policy.fallback_problem(task, classes)
        if problem:
            raise ConfigError([problem])
        self.policy = policy
        self.n_features = len(columns)
        p = policy
        self._ranges: list[tuple[int, str, float, float, str]] = []
        self._known: list[tuple[int, str, frozenset[str], str]] = []
        self._never_missing: list[tuple[int, str]] = []
        self._unprofiled: list[int] = []
        for index, name in enumerate(columns):
            numeric = profile.numeric.get(name)
            categorical = profile.categorical.get(name)
            if numeric is not None:
                robust = p.out_of_range.bounds == "robust"
                low, high = (numeric.low, numeric.high) if robust else (numeric.min, numeric.max)
                lo, hi = _widened(low, high, p.out_of_range.margin)
                self._ranges.append((index, name, lo, hi, f"outside the training range [{_shown(lo)}, {_shown(hi)}]"))
                missing = numeric.missing
            elif categorical is not None:
                known = frozenset(categorical.values)
                listed = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
                self._known.append((index, name, known, f"not a category seen in training ({listed})"))
                missing = categorical.missing
            else:
                self._unprofiled.append(index)  # never seen with a value in training: only counted as missing
                continue
            if missing == 0:
                self._never_missing.append((index, name))
        self._missing_limit = p.missing.max_share * self.n_features
        self._input_fallback = any(getattr(p, name).action == "fallback" for name in INPUT_GUARDRAILS)
        # JSON keys and params.yaml values name classes as text; the answer carries the class itself (True, 3, "a")
        self._classes_by_key = {str(c): c for c in classes or []}
        self._prior = profile.target.prior
        lo_t, hi_t = profile.target.min, profile.target.max
        self._target_range = (
            _widened(lo_t, hi_t, p.output_range.margin) if lo_t is not None and hi_t is not None else None
        )
        self._target_mean = profile.target.mean

    # --- inputs ---

    def check_inputs(self, rows: Sequence[Row]) -> list[list[Event]] | None:
        """Per record the input guardrails that fired (None when none did). The common case, nothing fires, costs
        a few C-level passes per column (min and max, a set); records are looked at one by one only in a column
        where something fired."""
        if not rows:
            return None
        p = self.policy
        columns = list(zip(*rows))  # noqa: B905 - the codec gives every row every column
        fired: list[tuple[int, Event]] = []
        nones: dict[int, int] = {}  # column -> its missing values, for the columns that have some

        on_range, on_unseen, on_missing = p.out_of_range.action, p.unseen_category.action, p.missing.action
        for index, name, lo, hi, expected in self._ranges:
            column = columns[index]
            bounds, missing = _extent(column)
            if missing:
                nones[index] = missing
            if bounds is None:
                continue
            smallest, largest = bounds
            if on_range != "off" and (smallest < lo or largest > hi):
                hits = [i for i, v in enumerate(column) if v is not None and not lo <= v <= hi]
                fired += _fired(column, hits, Event("out_of_range", on_range, name, None, expected))
        for index, name, known, expected in self._known:
            column = columns[index]
            values = set(column)
            if None in values:
                nones[index] = column.count(None)
                values.discard(None)
            if on_unseen != "off" and not values <= known:
                hits = [i for i, v in enumerate(column) if v is not None and v not in known]
                fired += _fired(column, hits, Event("unseen_category", on_unseen, name, None, expected))
        if on_missing != "off":
            for index, name in self._never_missing:
                if index in nones:
                    event = Event("missing", on_missing, name, None, "missing, and never missing in training")
                    fired += [(i, event) for i, value in enumerate(columns[index]) if value is None]
            gappy = len(nones) + sum(None in columns[index] for index in self._unprofiled)
            if gappy > self._missing_limit:  # else no record misses more than the columns with a gap
                share = p.missing.max_share
                for i, row in enumerate(rows):
                    count = row.count(None)
                    if count > self._missing_limit:
                        expected = f"{count} of {self.n_features} features missing (at most a share of {share:g})"
                        fired.append((i, Event("missing", on_missing, None, count, expected)))
        if not fired:
            return None
        found: list[list[Event]] = [[] for _ in rows]
        for i, event in fired:  # per record, in the order the checks ran
            found[i].append(event)
        return found

    @staticmethod
    def refusals(events: list[list[Event]]) -> list[tuple[int, Event]]:
        return [(i, e) for i, record in enumerate(events) for e in record if e.action == "refuse"]

    # --- outputs ---

    def apply_outputs(
        self,
        predictions: list[Any],
        probabilities: list[dict[str, float]] | None,
        inputs: list[list[Event]] | None,
    ) -> Answered:
        """The model's answers with the output guardrails applied and the fallbacks given where a guardrail asks.
        `warnings` is `inputs` with the output guardrails' events added (one empty list per record when none)."""
        p = self.policy
        n = len(predictions)
        warnings: list[list[Event]] = inputs if inputs is not None else [[] for _ in range(n)]
        answers: list[Any] = predictions
        shown: list[dict[str, float] | None] | None = list(probabilities) if probabilities is not None else None
        fallback: set[int] = set()
        clipped: dict[int, Any] = {}
        if p.low_confidence.action != "off" and probabilities is not None:
            floor, action = p.low_confidence.min_confidence, p.low_confidence.action
            expected = f"the predicted class's probability is below {floor:g}"
            for i, shares in enumerate(probabilities):
                confidence = max(shares.values())
                if confidence < floor:
                    warnings[i].append(Event("low_confidence", action, None, confidence, expected))
                    if action == "fallback":
                        fallback.add(i)
        if p.output_range.action != "off" and probabilities is None and self._target_range is not None:
            lo, hi = self._target_range
            numbers = [v for v in predictions if isinstance(v, int | float)]
            if numbers and (min(numbers) < lo or max(numbers) > hi):
                on_range = p.output_range.action
                expected = f"outside the training target's range [{_shown(lo)}, {_shown(hi)}]"
                for i, value in enumerate(predictions):
                    if isinstance(value, int | float) and not lo <= value <= hi:
                        warnings[i].append(Event("output_range", on_range, None, value, expected))
                        if on_range == "clip":
                            clipped[i] = min(max(value, lo), hi)
        if inputs is not None and self._input_fallback:
            fallback.update(i for i, record in enumerate(inputs) if any(e.action == "fallback" for e in record))
        if fallback or clipped:
            answers = list(predictions)
            for i, value in clipped.items():
                answers[i] = value
            for i in fallback:
                answers[i], probability = self._fallback()
                if shown is not None:
                    shown[i] = probability
        return Answered(answers, shown, warnings, frozenset(fallback | clipped.keys()))

    def _fallback(self) -> tuple[Any, dict[str, float] | None]:
        kind = self.policy.fallback.kind
        value = self.policy.fallback.value
        if kind == "constant":
            return self._classes_by_key.get(str(value), value), None
        if kind == "prior":
            prior = self._prior
            if prior:
                common = max(prior, key=prior.__getitem__)
                return self._classes_by_key.get(common, common), dict(prior)
            return self._target_mean, None
        return None, None


def build_guardrails(
    policy: GuardrailPolicy,
    profile: TrainingProfile | None,
    columns: Sequence[str],
    task: str,
    classes: Sequence[Any] | None,
) -> tuple[Guardrails | None, str]:
    """The service's guardrails and a sentence saying what they are (or why there are none)."""
    if not policy.enabled:
        return None, "off (guardrails.enabled is false)"
    if profile is None:
        return None, "off: this model version carries no training profile (registered before guardrails existed)"
    guardrails = Guardrails(policy, profile, columns, task, classes)
    acting = [
        f"{name}: {getattr(policy, name).action}"
        for name in GUARDRAILS
        if getattr(policy, name).action != "off"
        and not (name == "low_confidence" and task != "classification")
        and not (name == "output_range" and task != "regression")
    ]
    return guardrails, "on (" + ", ".join(acting) + ")" if acting else "on, every guardrail off"


@functools.lru_cache(maxsize=1024)
def _logged(guardrail: str, action: str, feature: str | None) -> dict[str, Any]:
    return {"guardrail": guardrail, "action": action, "feature": feature}


def _fired(column: Sequence[Any], hits: list[int], kind: Event) -> list[tuple[int, Event]]:
    """(record, event) for each record of `hits`: `kind` with the record's value of `column`. One event per distinct
    value: a batch repeats its values, and an event is reported, logged and counted per record all the same."""
    events: dict[Any, Event] = {}
    out = []
    for i in hits:
        value = column[i]
        # 0.0 and -0.0 (equal as keys) are told apart by their text
        key = value if value != 0 else repr(value)
        event = events.get(key)
        if event is None:
            event = events[key] = kind._replace(value=value)
        out.append((i, event))
    return out


def _extent(column: tuple[Any, ...]) -> tuple[tuple[float, float] | None, int]:
    """The smallest and largest number of a column (None: it has none) and how many values it misses."""
    try:
        smallest, largest = min(column), max(column)
        if smallest is not None and largest is not None:
            return (smallest, largest), 0
    except TypeError:  # a missing value (None) among the numbers
        pass
    present = [v for v in column if v is not None]
    return ((min(present), max(present)) if present else None), len(column) - len(present)


def _widened(low: float, high: float, margin: float) -> tuple[float, float]:
    span = (high - low) * margin
    return low - span, high + span


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)
