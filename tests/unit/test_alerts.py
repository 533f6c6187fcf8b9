"""Alert delivery: the webhook adapter against a real local HTTP server, and what the alert log and the cool-down
keep for each outcome."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowship.adapters.alerts import Webhook, WebhookFailed
from flowship.monitoring.alerts import Alert, AlertDelivery, deliver_alerts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUICK = (0.01, 0.01)  # three attempts, without the real pauses


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next status of `statuses` (the last one repeats) and keeps the bodies."""

    statuses: list[int] = [204]
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.received.append(body)
        status = Receiver.statuses[min(len(Receiver.received), len(Receiver.statuses)) - 1]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.statuses, Receiver.received = [204], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


@pytest.fixture
def nothing_listening() -> str:
    """The URL of a loopback port that was just freed: connections to it are refused."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/alerts"


def test_an_accepted_alert_is_sent_once(receiver: str) -> None:
    assert Webhook(receiver, backoff=QUICK).send({"version": "1"}) == 1
    assert Receiver.received == [{"version": "1"}]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_or_too_many_requests_is_tried_again(receiver: str, status: int) -> None:
    Receiver.statuses = [status, 204]
    assert Webhook(receiver, backoff=QUICK).send({"version": "1"}) == 2
    assert Receiver.received == [{"version": "1"}, {"version": "1"}]


def test_a_server_that_keeps_failing_is_given_up_after_the_attempts(receiver: str) -> None:
    Receiver.statuses = [502]
    with pytest.raises(WebhookFailed) as failed:
        Webhook(receiver, backoff=QUICK).send({"version": "1"})
    assert failed.value.attempts == 3 and len(Receiver.received) == 3
    assert str(failed.value).startswith(f"webhook {receiver} failed: Server error '502 Bad Gateway'")


@pytest.mark.parametrize(("status", "words"), [(400, "400 Bad Request"), (404, "404 Not Found")])
def test_a_refused_alert_is_not_tried_again(receiver: str, status: int, words: str) -> None:
    Receiver.statuses = [status, 204]
    with pytest.raises(WebhookFailed) as failed:
        Webhook(receiver, backoff=QUICK).send({"version": "1"})
    assert failed.value.attempts == 1 and len(Receiver.received) == 1
    assert failed.value.url == receiver and f"Client error '{words}' for url '{receiver}'" in failed.value.reason
    assert str(failed.value) == f"webhook {receiver} failed: {failed.value.reason}"


def test_nothing_listening_is_tried_again_then_reported(nothing_listening: str) -> None:
    with pytest.raises(WebhookFailed) as failed:
        Webhook(nothing_listening, backoff=QUICK).send({"version": "1"})
    assert failed.value.attempts == 3
    assert failed.value.reason  # httpx's words for the refused connection, e.g. "[Errno 111] Connection refused"
    assert str(failed.value) == f"webhook {nothing_listening} failed: {failed.value.reason}"


def alert(version: str, new: list[str]) -> Alert:
    return Alert(NOW.isoformat(), "m", version, "drift", ["drift_share"], ["r"], "w", "report", new)


def logged(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_delivered_alerts_start_their_cool_down_and_are_logged(tmp_path: Path, receiver: str) -> None:
    log = tmp_path / "alerts.jsonl"
    done = deliver_alerts(
        [alert("1", ["drift_share"]), alert("2", [])], Webhook(receiver, backoff=QUICK), log, {}, 24, NOW
    )
    assert done.deliveries == [
        AlertDelivery("1", ["drift_share"], ["drift_share"], f"sent to {receiver}"),
        AlertDelivery("2", ["drift_share"], [], "within the 24 h cool-down of an earlier alert: logged only"),
    ]
    assert done.sent == {"m:v1:drift_share": "2026-03-01T12:00:00+00:00"} and done.failures == []
    assert [r["version"] for r in Receiver.received] == ["1"]  # the alert within its cool-down is not sent
    assert [line["delivery"] for line in logged(log)] == [d.delivery for d in done.deliveries]


def test_without_a_webhook_alerts_go_to_the_log_only(tmp_path: Path) -> None:
    log = tmp_path / "alerts.jsonl"
    done = deliver_alerts([alert("1", ["drift_share"])], None, log, {"m:v9:x": "earlier"}, 24, NOW)
    assert [d.delivery for d in done.deliveries] == [f"logged to {log}"]
    assert done.sent == {"m:v9:x": "earlier", "m:v1:drift_share": "2026-03-01T12:00:00+00:00"}


def test_a_failed_delivery_is_logged_and_reported_and_starts_no_cool_down(tmp_path: Path, receiver: str) -> None:
    Receiver.statuses = [400]
    log = tmp_path / "alerts.jsonl"
    done = deliver_alerts([alert("1", ["drift_share"])], Webhook(receiver, backoff=QUICK), log, {}, 24, NOW)
    (delivery,) = done.deliveries
    assert delivery.delivery.startswith(f"webhook {receiver} failed: Client error '400 Bad Request'")
    assert done.failures == [delivery.delivery] and done.sent == {}
    assert logged(log)[0]["delivery"] == delivery.delivery
