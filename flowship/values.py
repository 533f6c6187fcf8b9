"""Plain values from what reaches us: times as aware UTC datetimes, numpy and pandas scalars as Python's.

Standard library only: the serving image carries this module (`SERVING_CODE` in
`flowship.adapters.docker_engine`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc(value: datetime | str) -> datetime:
    """`value` as an aware UTC datetime: an ISO 8601 string (a date alone means its midnight) or a datetime;
    a naive one means UTC. Raises ValueError for a string that is no ISO time, TypeError for anything else."""
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(stamp, datetime):
        raise TypeError(f"not a time: {value!r}")
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def plain(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value it holds (what JSON and YAML know); anything else as is."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value
