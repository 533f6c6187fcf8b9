"""Alert delivery to a webhook over HTTP (httpx), with retries for what may pass by itself.

A connection error, a timeout, a 5xx or a 429 is tried again a few times with a growing pause; any other
4xx is the receiver refusing this alert, and is reported at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from flowship.errors import AlertDeliveryError

# Pauses before the second and the third attempt: a receiver that restarts or sheds load gets a few seconds.
BACKOFF_SECONDS: tuple[float, ...] = (1.0, 3.0)
TIMEOUT_SECONDS = 10.0


class WebhookFailed(AlertDeliveryError):
    """The webhook did not take the alert; `reason` is the last failure in httpx's words."""

    def __init__(self, url: str, reason: str, attempts: int) -> None:
        self.url = url
        self.reason = reason
        self.attempts = attempts
        super().__init__(f"webhook {url} failed: {reason}")


def is_transient(exc: httpx.HTTPError) -> bool:
    """Worth another attempt: no answer at all, a server error, or "too many requests"."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 429
    return isinstance(exc, httpx.TransportError)


@dataclass(frozen=True)
class Webhook:
    """POSTs alerts as JSON to `url`; `backoff` holds the pauses between attempts (len(backoff) + 1 attempts)."""

    url: str
    timeout: float = TIMEOUT_SECONDS
    backoff: Sequence[float] = BACKOFF_SECONDS

    def send(self, payload: dict[str, Any]) -> int:
        """Deliver `payload` and return the attempts it took; raise WebhookFailed once the attempts are used
        up or the receiver refused it."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = httpx.post(self.url, json=payload, timeout=self.timeout)
                response.raise_for_status()
                return attempt
            except httpx.HTTPError as exc:
                if attempt > len(self.backoff) or not is_transient(exc):
                    raise WebhookFailed(self.url, str(exc), attempt) from exc
            time.sleep(self.backoff[attempt - 1])
