"""Replay: send the production share of the data to a serving endpoint as real traffic, month by month (or whole,
in its stored order, when the data has no time column), and write the true labels afterwards, keyed by request id
and row, as they would arrive later in real life.

Records go in time order (stored order without a time column), `batch_size` per request, with `concurrency`
requests in flight: worker threads take consecutive chunks in turn, so requests start in that order (and with one in
flight, reach the inference log in that order). Request ids are `<replay id>-<n>`, the replay id random per run, so
a repeated replay never reuses one.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any

import httpx
import pandas as pd

from flowship.config import Params
from flowship.errors import ReplayError
from flowship.files import atomic_write
from flowship.serving.labels import Label, write_labels

MONTH_FORMAT = "YYYY-MM, e.g. 2013-07"
# The part a production share without a time column is replayed as: all of it, in one go.
WHOLE = "all"
_MONTH = re.compile(r"\d{4}-\d{2}")
# answers that are about the endpoint rather than the records: nothing sent after them would be scored
_ENDPOINT_REFUSED = {
    401: "unauthorized: set FLOWSHIP_API_TOKEN to the endpoint's token",
    403: "forbidden: FLOWSHIP_API_TOKEN is not the endpoint's token",
    404: "no /predict here",
    405: "no POST /predict here",
}
KEEP_ERRORS = 5
ATTEMPTS = 3
BACKOFF_SECONDS = 0.2
# A gateway's rate limit (429) is waited out as its Retry-After says, for at most this long per request.
RATE_LIMITED_WAIT_S = 120.0
CLIENT_KEY = "flowship-replay"  # the gateway counts the replay's requests as one client's


@dataclass(frozen=True)
class Columns:
    """What replay takes from the data: the features sent, the label written later, the time that orders them
    (None: the data has none, and is replayed whole in its stored order)."""

    features: list[str]
    target: str
    time: str | None

    @classmethod
    def of(cls, params: Params) -> Columns:
        return cls(params.data.features.all, params.data.target.column, params.data.time_column)


@dataclass(frozen=True)
class PartResult:
    """One part of replayed traffic (a month, or `WHOLE`): `sent` records were answered (and labelled), `rejected`
    got a 4xx."""

    part: str
    records: int
    sent: int
    rejected: int
    requests: int
    seconds: float
    errors: tuple[str, ...] = ()
    labels_file: Path | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class ReplayBook:
    """Which parts (months, or `WHOLE`) were replayed to a project, and when (`.flowship/replayed.json`): `--once`
    skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def replayed_at(self, part: str) -> str | None:
        entry = self.parts.get(part)
        return None if entry is None else str(entry["time"])

    def pending(self, wanted: list[str]) -> tuple[list[str], list[str]]:
        """(parts not replayed yet, parts already replayed), each in the order given."""
        done = [p for p in wanted if p in self.parts]
        return [p for p in wanted if p not in self.parts], done

    def record(self, part: str, replay_id: str, url: str, sent: int) -> None:
        """The part as replayed now, written at once: an interrupted replay keeps the parts it finished."""
        self.parts[part] = {
            "replay": replay_id,
            "url": url,
            "sent": sent,
            "time": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ}",
        }
        atomic_write(self.path, json.dumps(self.parts, indent=2))


def first_month(production: Path, time_column: str) -> str:
    """The first month (YYYY-MM) of the production data: where a replay starts by default."""
    require_production_data(production)
    times = pd.read_parquet(production, columns=[time_column])[time_column]
    if times.dropna().empty:
        raise ReplayError(f"the production data has no {time_column!r} values to replay")
    return f"{pd.Timestamp(times.min()):%Y-%m}"


def require_production_data(production: Path) -> None:
    if not production.exists():
        raise ReplayError("no production data: run `flowship train` first")


def parts(columns: Columns, production: Path, spec_from: str | None, spec_to: str | None) -> list[str]:
    """The parts to replay: with a time column, every month from `spec_from` (default: the production data's first)
    to `spec_to` (default: `spec_from`); without one, the production share whole."""
    require_production_data(production)
    if columns.time is None:
        if spec_from is not None or spec_to is not None:
            raise ReplayError(
                "--from and --to pick months of data.time_column, and params.yaml names none: "
                "the production share is replayed whole, in its stored order (leave them out)"
            )
        return [WHOLE]
    first = spec_from if spec_from is not None else first_month(production, columns.time)
    return [str(m) for m in months(first, spec_to or first)]


def months(spec_from: str, spec_to: str) -> list[pd.Period]:
    """Every month from `spec_from` to `spec_to`, both included."""
    first, last = _month(spec_from), _month(spec_to)
    if last < first:
        raise ReplayError(f"the last month {last} (--to) is before the first month {first} (--from)")
    return list(pd.period_range(first, last, freq="M"))


def _month(spec: str) -> pd.Period:
    text = spec.strip()
    if not _MONTH.fullmatch(text) or not 1 <= int(text[5:]) <= 12:
        raise ReplayError(f"bad month {spec!r}: expected {MONTH_FORMAT}")
    return pd.Period(text, freq="M")


def month_rows(frame: pd.DataFrame, month: pd.Period, time_column: str) -> pd.DataFrame:
    """The month's rows (by `time_column`, UTC; naive times are taken as UTC), in time order (stable)."""
    times = _times(frame, time_column)
    start = month.start_time.tz_localize("UTC")
    end = (month + 1).start_time.tz_localize("UTC")
    inside = (times >= start) & (times < end)
    if not inside.any():
        covered = _covered(times)
        raise ReplayError(f"no data for {month} in {time_column!r}: the data covers {covered}")
    order = times[inside].sort_values(kind="stable").index
    return frame.loc[order]


def _times(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise ReplayError(f"the data has no time column {column!r}; columns: {', '.join(map(str, frame.columns))}")
    try:
        return pd.to_datetime(frame[column], utc=True)
    except (TypeError, ValueError) as exc:
        raise ReplayError(f"time column {column!r} does not hold times: {exc}") from None


def _covered(times: pd.Series) -> str:
    """The months present, runs of consecutive months shown as `first..last`."""
    present = sorted({pd.Period(year=t.year, month=t.month, freq="M") for t in times.dropna().dt.normalize().unique()})
    if not present:
        return "no months (every time is missing)"
    runs: list[list[pd.Period]] = []
    for period in present:
        if runs and runs[-1][-1] + 1 == period:
            runs[-1].append(period)
        else:
            runs.append([period])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def json_records(frame: pd.DataFrame, features: Sequence[str]) -> list[dict[str, Any]]:
    """Each row's features as a JSON-ready dict; a missing value (NaN, NA, None) becomes null."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ReplayError(f"the data lacks feature column(s) {missing}")
    values = frame[list(features)].astype(object)
    return values.where(values.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


@dataclass
class _Chunk:
    index: int
    start: int
    records: list[dict[str, Any]]
    request_id: str = ""
    status: int | None = None
    answered_id: str | None = None  # the request id the server logged the records under (on a 200)
    error: str | None = None  # the server's reason (on a 4xx)


@dataclass
class _Progress:
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Event = field(default_factory=Event)
    failure: str | None = None
    raised: BaseException | None = None  # Ctrl-C in the caller, or an unexpected error in a worker


class Replay:
    """One replay run against `url`: a random replay id and a request counter shared by its months."""

    def __init__(
        self,
        url: str,
        columns: Columns,
        labels_dir: Path,
        batch_size: int = 1,
        concurrency: int = 8,
        token: str | None = None,
        timeout_s: float = 30.0,
        replay_id: str | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ReplayError(f"batch_size ({batch_size}) and concurrency ({concurrency}) must be at least 1")
        self.url = url.rstrip("/")
        self.columns = columns
        self.labels_dir = labels_dir
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.token = token
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self.id = replay_id or secrets.token_hex(4)
        self.requests = 0  # request ids handed out so far
        self.sent = 0  # records answered so far, all months

    def part(self, frame: pd.DataFrame, part: str) -> PartResult:
        """Send one part of the production data (a month, YYYY-MM, or `WHOLE`), then write its labels."""
        if part == WHOLE:
            return self._send_rows(frame, WHOLE)
        return self.month(frame, _month(part))

    def month(self, frame: pd.DataFrame, month: pd.Period) -> PartResult:
        """Send the month's records, then write their labels (arrival: now)."""
        if self.columns.time is None:
            raise ReplayError("the data has no time column: it is replayed whole, not month by month")
        return self._send_rows(month_rows(frame, month, self.columns.time), str(month))

    def _send_rows(self, rows: pd.DataFrame, part: str) -> PartResult:
        if self.columns.target not in rows.columns:
            raise ReplayError(f"the data has no target column {self.columns.target!r}")
        records = json_records(rows, self.columns.features)
        chunks = [
            _Chunk(i, start, records[start : start + self.batch_size])
            for i, start in enumerate(range(0, len(records), self.batch_size))
        ]
        for chunk in chunks:
            chunk.request_id = f"{self.id}-{self.requests + chunk.index}"
        self.requests += len(chunks)
        started = time.perf_counter()
        progress = self._send(chunks)
        seconds = time.perf_counter() - started
        answered = [c for c in chunks if c.status == 200]
        labels_file = self._write_labels(rows, answered)
        part_sent = sum(len(c.records) for c in answered)
        self.sent += part_sent
        if progress.raised is not None:
            raise progress.raised  # after the labels of what was answered: every prediction keeps its label
        if progress.failure is not None:
            labelled = ", their labels written" if part_sent else ""
            raise ReplayError(
                f"{self.url}/predict {progress.failure}; {self.sent} records were sent so far "
                f"({part_sent} of {len(records)} in {part}{labelled})"
            )
        rejected = [c for c in chunks if c.status is not None and c.status != 200]
        return PartResult(
            part=part,
            records=len(records),
            sent=part_sent,
            rejected=sum(len(c.records) for c in rejected),
            requests=len(answered) + len(rejected),
            seconds=seconds,
            errors=tuple(_error_text(c) for c in rejected[:KEEP_ERRORS]),
            labels_file=labels_file,
        )

    def _send(self, chunks: list[_Chunk]) -> _Progress:
        progress = _Progress()
        queue = iter(chunks)
        headers = {"Content-Type": "application/json", "X-Client-Key": CLIENT_KEY}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout, limits=limits) as client:
            # Each worker says when it is done on its own event: a join() cut by Ctrl-C can take a thread that
            # still runs for finished, so the labels would be written before its last answer.
            finished = [Event() for _ in range(min(self.concurrency, len(chunks)))]
            for n, done in enumerate(finished):
                args = (client, queue, progress, done)
                threading.Thread(target=self._worker, args=args, name=f"flowship-replay-{n}").start()
            try:
                for done in finished:
                    done.wait()
            except KeyboardInterrupt as exc:
                progress.stop.set()  # no new requests; those in flight get their answer
                progress.raised = exc
                for done in finished:
                    done.wait()
        return progress

    def _worker(self, client: httpx.Client, queue: Iterator[_Chunk], progress: _Progress, done: Event) -> None:
        try:
            while not progress.stop.is_set():
                with progress.lock:  # consecutive chunks in turn: requests start in time order
                    chunk = next(queue, None)
                if chunk is None:
                    return
                failure = self._post(client, chunk)
                if failure is not None:
                    with progress.lock:
                        progress.failure = progress.failure or failure
                    progress.stop.set()
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread once the labels are written
            progress.stop.set()
            with progress.lock:
                progress.raised = progress.raised or exc
        finally:
            done.set()

    def _post(self, client: httpx.Client, chunk: _Chunk) -> str | None:
        """Send one chunk (retrying what may pass: no connection, a 5xx); why the replay must stop, if it must."""
        payload = chunk.records[0] if self.batch_size == 1 else chunk.records
        # default=str: a value JSON has no type for goes as text, and the endpoint decides
        body = json.dumps(payload, separators=(",", ":"), default=str)
        last = ""
        attempt, waited = 0, 0.0
        while attempt < ATTEMPTS:
            if attempt:
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            attempt += 1
            try:
                response = client.post("/predict", content=body, headers={"X-Request-ID": chunk.request_id})
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code == 429 and waited < RATE_LIMITED_WAIT_S:  # sent too fast: as told, then again
                pause = _retry_after(response)
                time.sleep(pause)
                waited += pause
                attempt -= 1
                continue
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code in _ENDPOINT_REFUSED:
                reason = _ENDPOINT_REFUSED[response.status_code]
                return f"refused the requests: HTTP {response.status_code}, {reason} ({_message(response)})"
            chunk.status = response.status_code
            if response.status_code == 200:
                chunk.answered_id = _answered_id(response, chunk.request_id)
            else:
                chunk.error = _message(response)
            return None
        return f"did not answer: {last} after {ATTEMPTS} attempts"

    def _write_labels(self, rows: pd.DataFrame, answered: list[_Chunk]) -> Path | None:
        if not answered:
            return None
        targets = rows[self.columns.target].tolist()
        if self.columns.time is not None:
            times = pd.to_datetime(rows[self.columns.time], utc=True).tolist()  # none missing: the month selected them
        else:  # no event time in the data: the records happen now
            times = [pd.Timestamp.now(tz="UTC")] * len(rows)
        labels = [
            Label(chunk.answered_id or chunk.request_id, row, targets[chunk.start + row], times[chunk.start + row])
            for chunk in answered
            for row in range(len(chunk.records))
        ]
        return write_labels(self.labels_dir, labels)


def _answered_id(response: httpx.Response, sent: str) -> str:
    """The id the server logged the records under: its answer's, else the one sent."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    found = body.get("request_id") if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else response.headers.get("X-Request-ID", sent)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    fields = body.get("fields") or []
    detail = "; ".join(f"{f.get('field')}: {f.get('problem')}" for f in fields[:3] if isinstance(f, dict))
    return (str(body.get("message", "")) + (f" ({detail})" if detail else ""))[:300]


def _error_text(chunk: _Chunk) -> str:
    return f"request {chunk.request_id}: HTTP {chunk.status}: {chunk.error}"


def _retry_after(response: httpx.Response) -> float:
    """Seconds the server asks to wait (its `Retry-After` in seconds; 1 when it says nothing usable), at most 30."""
    try:
        return min(30.0, max(0.05, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0
