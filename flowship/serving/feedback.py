"""`POST /feedback`: what a user says about an answer, kept durably where monitoring reads it.

A feedback names a prediction by the request id its answer carried and the record's position in that request
(`row`, 0 by default), and brings a true `label`, a `rating` (1: thumbs up, -1: thumbs down), or both, and maybe a
`comment`. The label and the rating go to the label log (`labels-<day>[.<writer>].jsonl` in the inference log's
folder, this replica's own file), the comment to `comments-<day>[.<writer>].jsonl` beside it (free text stays out of
the label log); both are on disk before the answer leaves.

A request id this replica never answered is accepted as late: its prediction may be in another replica's log, or
in a log line not written yet. Monitoring joins what matches when it checks; what never matches is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from flowship.serving.labels import NO_LABEL, RATINGS, Comment, Label, write_comments, write_labels
from flowship.values import plain

# what a request id may be (the app's own rule for an incoming X-Request-ID; its own are hex)
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
MAX_COMMENT = 2000  # characters
KINDS = ("label", "rating", "comment")
BODY_PROBLEM = 'a JSON object is required: {"request_id": ..., "row": 0, "label": ..., "rating": 1 or -1}'


def feedback_model(task: str, classes: Iterable[Any] | None, max_batch: int) -> type[BaseModel]:
    """The body of `POST /feedback` for this model: a label of the target's type (for a classifier one of its
    `classes`, of the same JSON type), and a `row` that a request of at most `max_batch` records can have."""
    known = [plain(c) for c in (classes if classes is not None else [])]
    if task == "classification":
        label_schema: dict[str, Any] = {"anyOf": [{"enum": known}, {"type": "null"}]}
        label_schema["description"] = f"the true class, one of {known}"
    else:
        label_schema = {"anyOf": [{"type": "number"}, {"type": "null"}]}
        label_schema["description"] = "the true value (a finite number)"
    rating_schema = {"anyOf": [{"enum": list(RATINGS)}, {"type": "null"}], "description": "1: thumbs up, -1: down"}

    class Feedback(BaseModel):
        model_config = ConfigDict(extra="forbid", title="Feedback")

        request_id: str = Field(
            pattern=REQUEST_ID_PATTERN, description="the request id of the answer (its `request_id`, `X-Request-ID`)"
        )
        row: int = Field(
            default=0, ge=0, lt=max_batch, strict=True, description="the record's position in that request"
        )
        label: Annotated[Any, WithJsonSchema(label_schema)] = None
        rating: Annotated[int | None, Field(strict=True), WithJsonSchema(rating_schema)] = None
        comment: str | None = Field(default=None, max_length=MAX_COMMENT, description="kept apart from the label")

        @field_validator("label")
        @classmethod
        def _of_the_target(cls, value: Any) -> Any:
            if value is None:
                return None
            if task == "classification":
                if not any(type(value) is type(c) and value == c for c in known):
                    raise PydanticCustomError(
                        "unknown_class",
                        "not one of the model's classes {classes} (a JSON {kinds})",
                        {"classes": known, "kinds": " or ".join(sorted({_json_type(c) for c in known}))},
                    )
            elif isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                raise PydanticCustomError("finite_number", "the true value of a regression: a finite number")
            return value

        @field_validator("rating")
        @classmethod
        def _thumbs(cls, value: int | None) -> int | None:
            if value is not None and value not in RATINGS:
                raise PydanticCustomError("rating", "1 (thumbs up) or -1 (thumbs down)")
            return value

    return Feedback


def said(feedback: BaseModel) -> list[str]:
    """What a valid feedback brings, of `KINDS`; empty: it says nothing (neither a label nor a rating)."""
    kinds = [kind for kind in KINDS if getattr(feedback, kind) is not None]
    return kinds if {"label", "rating"} & set(kinds) else []


@dataclass(frozen=True)
class FeedbackLog:
    """This replica's label and comment files in `folder` (the inference log's)."""

    folder: Path
    writer: str | None = None

    def keep(self, feedback: Any, feedback_id: str, arrived: datetime | None = None) -> list[str]:
        """Append what `feedback` brings, fsync'ed; returns its kinds. Raises OSError when the disk refuses."""
        stamp = arrived or datetime.now(UTC)
        kinds = said(feedback)
        label = Label(
            feedback.request_id,
            feedback.row,
            NO_LABEL if feedback.label is None else feedback.label,
            rating=feedback.rating,
        )
        write_labels(self.folder, [label], stamp, self.writer)
        if feedback.comment is not None:
            comment = Comment(feedback.request_id, feedback.row, feedback.comment, feedback_id)
            write_comments(self.folder, [comment], stamp, self.writer)
        return kinds


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
