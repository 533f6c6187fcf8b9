"""The model bundle: the folder the image ships (`model.pkl`, `metadata.json`, optional `golden.json` and
`profile.json`)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cloudpickle
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowship.features import FeatureLists
from flowship.files import atomic_write
from flowship.serving.errors import BundleError
from flowship.serving.guardrails import PROFILE_FILE, TrainingProfile

MODEL_FILE = "model.pkl"
METADATA_FILE = "metadata.json"
GOLDEN_FILE = "golden.json"

FEATURE_TYPES = {"numeric": "double", "categorical": "string"}

log = logging.getLogger(__name__)


class InputField(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    type: Literal["double", "string"]


class BundleMetadata(BaseModel):
    """`metadata.json`; keys beyond these are kept (the release flow may add its own)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Literal["classification", "regression"]
    features: FeatureLists
    classes: list[str | bool | int | float] | None = None
    lineage: dict[str, str] = {}
    input_schema: list[InputField] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> BundleMetadata:
        problems = []
        if self.task == "classification" and (self.classes is None or len(self.classes) < 2):
            problems.append("a classifier needs `classes` (two or more)")
        if self.task == "regression" and self.classes is not None:
            problems.append("a regressor has `classes: null`")
        names = [f.name for f in self.input_schema]
        if len(set(names)) != len(names):
            problems.append(f"input_schema lists a name twice: {sorted({n for n in names if names.count(n) > 1})}")
        declared = {f.name: f.type for f in self.input_schema}
        expected = {name: FEATURE_TYPES[kind] for kind in FEATURE_TYPES for name in getattr(self.features, kind)}
        if len(expected) != len(self.features.all):
            problems.append("a feature is listed as both numeric and categorical")
        for name, kind in expected.items():
            if name not in declared:
                problems.append(f"feature {name!r} is missing from input_schema")
            elif declared[name] != kind:
                problems.append(f"feature {name!r} has input_schema type {declared[name]!r}, expected {kind!r}")
        extra = sorted(set(declared) - set(expected))
        if extra:
            problems.append(f"input_schema lists fields that are not model features: {extra}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class GoldenRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    features: dict[str, Any]
    prediction: Any
    probabilities: dict[str, float] | None = None


@dataclass(frozen=True)
class ModelBundle:
    """A fitted scikit-learn pipeline with its metadata (and the golden records and the training profile, when the
    bundle has them: a version registered before profiles existed has none)."""

    pipeline: Any
    metadata: BundleMetadata
    golden: list[GoldenRecord] | None = None
    profile: TrainingProfile | None = None


def load_bundle(path: str | Path) -> ModelBundle:
    """Read a bundle folder; a missing, corrupt or inconsistent file raises `BundleError` naming it."""
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(folder, "no such directory (set FLOWSHIP_MODEL_DIR to the model bundle folder)")
    metadata = _parse(folder, METADATA_FILE, BundleMetadata.model_validate)
    golden = None
    if (folder / GOLDEN_FILE).exists():
        golden = _parse(folder, GOLDEN_FILE, _golden_list)
    profile = None
    if (folder / PROFILE_FILE).exists():
        profile = _parse(folder, PROFILE_FILE, TrainingProfile.model_validate)
        _check_profile(folder, profile, metadata)
    pipeline = _unpickle(folder / MODEL_FILE)
    _check_pipeline(folder, pipeline, metadata)
    return ModelBundle(pipeline=pipeline, metadata=metadata, golden=golden, profile=profile)


def write_bundle(
    path: str | Path,
    pipeline: Any,
    metadata: dict[str, Any],
    golden: list[dict[str, Any]] | None = None,
    profile: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder that `load_bundle` accepts; files are replaced atomically, a stale golden set or
    profile removed.

    flowship's own functions inside the pipeline (the feature coercion step) are pickled by value, so the
    serving image can load the model without the training code.
    """
    folder = Path(path)
    try:
        meta = BundleMetadata.model_validate(metadata)
        checked_golden = _golden_list(golden) if golden is not None else None
        checked_profile = TrainingProfile.model_validate(profile) if profile is not None else None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        detail = _problems(exc) if isinstance(exc, ValidationError) else str(exc)
        raise BundleError(folder, f"refusing to write: {detail}") from None
    _check_pipeline(folder, pipeline, meta)
    if checked_profile is not None:
        _check_profile(folder, checked_profile, meta)
    folder.mkdir(parents=True, exist_ok=True)
    with _flowship_pickled_by_value():
        model_bytes = cloudpickle.dumps(pipeline)
    atomic_write(folder / MODEL_FILE, model_bytes)
    atomic_write(folder / METADATA_FILE, _json_bytes(meta.model_dump(mode="json")))
    if checked_golden is not None:
        atomic_write(folder / GOLDEN_FILE, _json_bytes([g.model_dump(mode="json") for g in checked_golden]))
    else:
        (folder / GOLDEN_FILE).unlink(missing_ok=True)
    if checked_profile is not None:
        atomic_write(folder / PROFILE_FILE, _json_bytes(checked_profile.model_dump(mode="json")))
    else:
        (folder / PROFILE_FILE).unlink(missing_ok=True)
    return folder


def _golden_list(raw: Any) -> list[GoldenRecord]:
    if not isinstance(raw, list):
        raise ValueError("golden set must be a JSON list of records")
    return [GoldenRecord.model_validate(item) for item in raw]


def _parse(folder: Path, name: str, validate: Callable[[Any], Any]) -> Any:
    file = folder / name
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(folder, f"{name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(folder, f"{name} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(folder, f"{name} is not valid JSON: {exc}") from None
    try:
        return validate(raw)
    except ValueError as exc:
        detail = _problems(exc) if isinstance(exc, ValidationError) else str(exc)
        raise BundleError(folder, f"{name} is invalid: {detail}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def _unpickle(file: Path) -> Any:
    if not file.is_file():
        raise BundleError(file.parent, f"{MODEL_FILE} is missing")
    try:
        with warnings.catch_warnings(record=True) as caught, file.open("rb") as handle:
            warnings.simplefilter("always")
            pipeline = cloudpickle.load(handle)
    except ModuleNotFoundError as exc:
        raise BundleError(
            file.parent, f"{MODEL_FILE} needs module {exc.name!r}, which this environment does not have"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - unpickling a corrupt file can raise almost anything
        raise BundleError(file.parent, f"{MODEL_FILE} is corrupt or incompatible: {type(exc).__name__}: {exc}") from exc
    for warning in caught:
        # e.g. sklearn's InconsistentVersionWarning: the image should carry the versions the model was fitted with
        log.warning("loading %s: %s", MODEL_FILE, warning.message)
    return pipeline


def _check_pipeline(folder: Path, pipeline: Any, metadata: BundleMetadata) -> None:
    needed = "predict_proba" if metadata.task == "classification" else "predict"
    if not callable(getattr(pipeline, needed, None)):
        raise BundleError(folder, f"{MODEL_FILE} holds a {type(pipeline).__name__} without {needed}()")
    fitted_columns = getattr(pipeline, "feature_names_in_", None)
    if fitted_columns is not None and sorted(map(str, fitted_columns)) != sorted(metadata.features.all):
        raise BundleError(
            folder,
            f"the model was fitted on columns {sorted(map(str, fitted_columns))}, "
            f"metadata lists features {sorted(metadata.features.all)}",
        )
    if metadata.task == "classification":
        fitted = [str(c) for c in getattr(pipeline, "classes_", [])]
        declared = [str(c) for c in metadata.classes or []]
        if fitted != declared:
            raise BundleError(folder, f"metadata classes {declared} differ from the model's classes {fitted}")


def _check_profile(folder: Path, profile: TrainingProfile, metadata: BundleMetadata) -> None:
    wrong = sorted(set(profile.numeric) - set(metadata.features.numeric)) + sorted(
        set(profile.categorical) - set(metadata.features.categorical)
    )
    if wrong:
        raise BundleError(folder, f"{PROFILE_FILE} profiles columns that are not features of that kind: {wrong}")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, allow_nan=False) + "\n").encode("utf-8")


@contextmanager
def _flowship_pickled_by_value() -> Iterator[None]:
    """While pickling, treat the `flowship` package as code to embed rather than a module to import."""
    package = sys.modules["flowship"]
    already = package.__name__ in cloudpickle.list_registry_pickle_by_value()
    if not already:
        cloudpickle.register_pickle_by_value(package)
    try:
        yield
    finally:
        if not already:
            cloudpickle.unregister_pickle_by_value(package)
