"""Replay: production traffic over real HTTP to the serving app (`python -m flowship.serving` with a small real
model), labels written afterwards, joined back to the inference log on (request_id, row)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flowship.config import parse_params
from flowship.errors import ReplayError
from flowship.monitoring.replay import WHOLE, Columns, Replay, ReplayBook, first_month, month_rows, months, parts
from flowship.serving.bundle import write_bundle
from flowship.serving.inference_log import read_inference_log
from flowship.serving.labels import read_labels
from tests.conftest import REPO, default_params
from tests.helpers import QuietHandler, free_port, wait_until
from tests.serving.conftest import CATEGORICAL, NUMERIC, fit_classifier, golden, metadata, synthetic_frame

TOKEN = "replay-token"
MAX_BATCH = 50
COLUMNS = Columns(features=NUMERIC + CATEGORICAL, target="late", time="time_hour")
JULY, AUGUST, SEPTEMBER, OCTOBER = (pd.Period(f"2013-{m:02d}", freq="M") for m in (7, 8, 9, 10))


def production_frame(per_month: int = 30) -> pd.DataFrame:
    """Synthetic flights in July, August and October 2013 (no September), shuffled; every distance unique."""
    months_present = [JULY, AUGUST, OCTOBER]
    frame = synthetic_frame(per_month * len(months_present), seed=7).drop(columns="delay")
    rng = np.random.default_rng(7)
    starts = np.repeat([m.start_time.tz_localize("UTC") for m in months_present], per_month)
    frame["time_hour"] = pd.DatetimeIndex(starts) + pd.to_timedelta(rng.integers(0, 28 * 24, len(frame)), unit="h")
    frame["distance"] = frame["distance"].round(3) + np.arange(len(frame)) * 1e-6  # a key back to the row
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


@dataclass
class Server:
    url: str
    logs: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The serving app as production runs it: its own process, real HTTP on loopback, a bearer token."""
    base = tmp_path_factory.mktemp("replay-server")
    training = synthetic_frame()
    pipeline = fit_classifier(training)
    meta = metadata("classification", "flights-delay", pipeline.classes_.tolist())
    bundle = write_bundle(base / "model", pipeline, meta, golden(pipeline, training, "classification"))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FLOWSHIP_MODEL_DIR": str(bundle),
        "FLOWSHIP_LOG_DIR": str(base / "logs"),
        "FLOWSHIP_HOST": "127.0.0.1",
        "FLOWSHIP_PORT": str(port),
        "FLOWSHIP_LOG_FLUSH_SECONDS": "0.05",
        "FLOWSHIP_MAX_BATCH": str(MAX_BATCH),
        "FLOWSHIP_API_TOKEN": TOKEN,
    }
    with (base / "server.log").open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flowship.serving"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (base / "server.log").read_text()
            try:
                return httpx.get(f"{url}/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "the serving app's /ready", detail=(base / "server.log").read_text)
        yield Server(url, base / "logs")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def logged(server: Server, replay: Replay, expected: int) -> pd.DataFrame:
    """This replay's inference-log lines, in file order, once all `expected` have been written."""

    def mine() -> pd.DataFrame:
        records, skipped = read_inference_log(server.logs)
        assert skipped == 0
        return records[records["request_id"].str.startswith(f"{replay.id}-")].reset_index(drop=True)

    wait_until(lambda: len(mine()) >= expected, 10, f"{expected} inference-log lines of replay {replay.id}")
    found = mine()
    assert len(found) == expected
    return found


def joined(server: Server, replay: Replay, labels_dir: Path, expected: int) -> pd.DataFrame:
    """Every logged prediction with its label: each matches exactly one label, and each label one prediction."""
    predictions = logged(server, replay, expected)
    labels, skipped = read_labels(labels_dir)
    assert skipped == 0
    labels = labels[labels["request_id"].str.startswith(f"{replay.id}-")]
    assert len(labels) == expected
    both = predictions.merge(labels, on=["request_id", "row"], how="outer", validate="one_to_one", indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"]
    return predictions.merge(labels, on=["request_id", "row"], how="left")  # in log order


def assert_labels_belong_to_their_records(both: pd.DataFrame, frame: pd.DataFrame) -> None:
    """The record the server logged is the one the label was taken from (distance is unique per row)."""
    truth = frame.set_index("distance")
    sent = [truth.loc[features["distance"]] for features in both["features"]]
    assert both["label"].tolist() == [bool(row["late"]) for row in sent]
    assert both["event_time"].tolist() == [row["time_hour"] for row in sent]


# --- months and the month's rows ---


def test_months_are_inclusive_and_checked() -> None:
    assert months("2013-07", "2013-12") == [pd.Period(f"2013-{m:02d}", freq="M") for m in range(7, 13)]
    assert months("2013-12", "2014-01") == [pd.Period("2013-12", freq="M"), pd.Period("2014-01", freq="M")]
    assert months(" 2013-07", "2013-07") == [JULY]
    for bad in ("2013-7", "2013-13", "2013-00", "July", "2013-07-01", "", "13-07"):
        with pytest.raises(ReplayError, match="expected YYYY-MM") as caught:
            months(bad, "2013-12")
        assert repr(bad) in str(caught.value)
    with pytest.raises(ReplayError, match=r"the last month 2013-06 \(--to\) is before the first month 2013-07"):
        months("2013-07", "2013-06")


def test_a_month_is_its_rows_in_stable_time_order() -> None:
    frame = pd.DataFrame(
        {
            "time_hour": pd.to_datetime(
                [
                    "2013-08-01 00:00",
                    "2013-07-31 23:00",
                    "2013-07-02 08:00",
                    "2013-07-02 08:00",
                    "2013-07-01 00:00",
                    "2013-06-30 23:59",
                ]
            ),  # naive: taken as UTC
            "n": range(6),
        }
    )
    assert month_rows(frame, JULY, "time_hour")["n"].tolist() == [4, 2, 3, 1]
    frame["time_hour"] = frame["time_hour"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    assert month_rows(frame, JULY, "time_hour")["n"].tolist() == [4, 2, 3, 1]  # the month is a UTC month


def test_a_month_without_data_names_the_months_the_data_covers() -> None:
    frame = production_frame(per_month=3)
    with pytest.raises(
        ReplayError, match=r"no data for 2013-09 in 'time_hour': the data covers 2013-07..2013-08, 2013-10"
    ):
        month_rows(frame, SEPTEMBER, "time_hour")
    with pytest.raises(ReplayError, match="no time column 'when'"):
        month_rows(frame, JULY, "when")


def test_without_a_time_column_the_production_share_is_one_part_and_months_are_refused(tmp_path: Path) -> None:
    raw = default_params()
    raw["data"]["time_column"] = None
    raw["split"] = {"method": "random", "holdout_fraction": 0.2, "production_fraction": 0.1}
    timeless = Columns.of(parse_params(raw, check_estimator=False))
    assert timeless.time is None and timeless.target == "late"
    production = tmp_path / "production.parquet"
    with pytest.raises(ReplayError, match="no production data: run `flowship train` first"):
        parts(timeless, production, None, None)
    production_frame().drop(columns="time_hour").to_parquet(production)
    assert parts(timeless, production, None, None) == [WHOLE]
    for spec in (("2013-07", None), (None, "2013-08")):
        with pytest.raises(ReplayError, match="--from and --to pick months of data.time_column, and params.yaml"):
            parts(timeless, production, *spec)
    with pytest.raises(ReplayError, match="replayed whole, not month by month"):
        Replay("http://127.0.0.1:1", timeless, tmp_path / "labels").month(production_frame(), JULY)

    timed = Columns.of(parse_params(default_params(), check_estimator=False))
    assert timed.time == "time_hour" and "carrier" in timed.features
    production_frame().to_parquet(production)
    assert parts(timed, production, None, None) == ["2013-07"]  # the first month of the data
    assert parts(timed, production, "2013-07", "2013-09") == ["2013-07", "2013-08", "2013-09"]


def test_the_replay_book_keeps_the_months_replayed_across_runs(tmp_path: Path) -> None:
    path = tmp_path / ".flowship" / "replayed.json"
    book = ReplayBook(path)
    wanted = ["2013-07", "2013-08", "2013-09"]
    assert book.pending(wanted) == (wanted, []) and book.replayed_at("2013-07") is None
    book.record("2013-07", "abcd", "http://127.0.0.1:1", 30)
    again = ReplayBook(path)  # a later run reads what the first one wrote
    assert again.pending(wanted) == (wanted[1:], ["2013-07"])
    assert again.replayed_at("2013-07") == json.loads(path.read_text())["2013-07"]["time"]
    entry = json.loads(path.read_text())["2013-07"]
    assert (entry["replay"], entry["url"], entry["sent"]) == ("abcd", "http://127.0.0.1:1", 30)


def test_replay_starts_by_default_at_the_first_month_of_the_production_data(tmp_path: Path) -> None:
    production = tmp_path / "production.parquet"
    with pytest.raises(ReplayError, match="no production data: run `flowship train` first"):
        first_month(production, "when")
    pd.DataFrame({"when": pd.to_datetime(["2013-09-02", "2013-08-31"])}).to_parquet(production)
    assert first_month(production, "when") == "2013-08"
    pd.DataFrame({"when": pd.Series([None, None], dtype="datetime64[ns]")}).to_parquet(production)
    with pytest.raises(ReplayError, match="the production data has no 'when' values to replay"):
        first_month(production, "when")


# --- real traffic ---


@pytest.mark.integration  # the serving app in its own process
def test_one_at_a_time_the_log_follows_time_order_and_every_prediction_gets_its_label(
    tmp_path: Path, server: Server
) -> None:
    frame = production_frame()
    labels_dir = tmp_path / "labels"
    replay = Replay(server.url, COLUMNS, labels_dir, batch_size=1, concurrency=1, token=TOKEN)
    result = replay.month(frame, JULY)
    assert (result.part, result.records, result.sent, result.rejected, result.requests) == ("2013-07", 30, 30, 0, 30)
    assert result.errors == () and result.requests_per_second == pytest.approx(30 / result.seconds)
    assert result.labels_file is not None and result.labels_file.parent == labels_dir

    both = joined(server, replay, labels_dir, 30)
    assert (both["row"] == 0).all()
    assert both["request_id"].tolist() == [f"{replay.id}-{n}" for n in range(30)]  # log order = send order
    expected = month_rows(frame, JULY, "time_hour")
    assert [f["distance"] for f in both["features"]] == expected["distance"].tolist()  # = time order
    assert both["event_time"].is_monotonic_increasing
    assert (both["time_y"] > both["time_x"]).all()  # each label arrived after its prediction
    assert_labels_belong_to_their_records(both, frame)
    assert both["features"].iloc[0].keys() == set(NUMERIC + CATEGORICAL)  # only the features are sent


@pytest.mark.integration  # the serving app in its own process
def test_batches_in_flight_together_and_months_share_one_replay_id(tmp_path: Path, server: Server) -> None:
    frame = production_frame()
    frame.loc[frame.index[::4], "temp"] = np.nan  # missing values go as null
    labels_dir = tmp_path / "labels"
    replay = Replay(server.url, COLUMNS, labels_dir, batch_size=7, concurrency=3, token=TOKEN)
    july, august = replay.month(frame, JULY), replay.month(frame, AUGUST)
    assert (july.sent, july.requests, august.sent, august.requests) == (30, 5, 30, 5)  # 7+7+7+7+2 records

    both = joined(server, replay, labels_dir, 60)
    per_request = both.groupby("request_id")["row"].apply(sorted).to_dict()
    assert sorted(per_request) == sorted(f"{replay.id}-{n}" for n in range(10))  # request ids go on across months
    assert sorted(map(len, per_request.values())) == [2, 2, 7, 7, 7, 7, 7, 7, 7, 7]
    assert all(rows == list(range(len(rows))) for rows in per_request.values())
    assert_labels_belong_to_their_records(both, frame)
    sent = pd.concat([month_rows(frame, m, "time_hour") for m in (JULY, AUGUST)])
    assert both["features"].map(lambda f: f["temp"] is None).sum() == sent["temp"].isna().sum() > 0

    again = Replay(server.url, COLUMNS, labels_dir, batch_size=7, concurrency=3, token=TOKEN)
    assert again.id != replay.id  # a repeated replay never reuses a request id


@pytest.mark.integration  # the serving app in its own process
def test_records_the_server_rejects_are_counted_and_get_no_label(tmp_path: Path, server: Server) -> None:
    frame = production_frame().astype({"distance": object})
    july = month_rows(frame, JULY, "time_hour").index
    bad = july[[2, 5, 11]]
    frame.loc[bad, "distance"] = "far"  # a wrong type: the app answers 422
    labels_dir = tmp_path / "labels"
    replay = Replay(server.url, COLUMNS, labels_dir, batch_size=1, concurrency=4, token=TOKEN)
    result = replay.month(frame, JULY)
    assert (result.records, result.sent, result.rejected, result.requests) == (30, 27, 3, 30)
    assert len(result.errors) == 3
    assert all("HTTP 422" in e and "distance" in e for e in result.errors)

    both = joined(server, replay, labels_dir, 27)
    assert "far" not in {f["distance"] for f in both["features"]}
    assert_labels_belong_to_their_records(both, frame.drop(index=bad))

    # in a batch, one bad record turns the whole request away
    replay = Replay(server.url, COLUMNS, tmp_path / "batched", batch_size=10, concurrency=2, token=TOKEN)
    result = replay.month(frame, JULY)
    assert (result.sent, result.rejected, result.requests) == (10, 20, 3)
    assert len(read_labels(tmp_path / "batched")[0]) == 10


@pytest.mark.integration  # the serving app in its own process
def test_a_wrong_token_stops_the_replay_at_once(tmp_path: Path, server: Server) -> None:
    replay = Replay(server.url, COLUMNS, tmp_path / "labels", concurrency=2, token="not-the-token")
    with pytest.raises(
        ReplayError,
        match=r"refused the requests: HTTP 403, forbidden: FLOWSHIP_API_TOKEN is not.*; 0 records were sent so far",
    ):
        replay.month(production_frame(), JULY)
    assert not (tmp_path / "labels").exists()


def test_a_server_that_does_not_answer_fails_fast_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    replay = Replay(url, COLUMNS, tmp_path / "labels", concurrency=4)
    with pytest.raises(ReplayError) as caught:
        replay.month(production_frame(), JULY)
    message = str(caught.value)
    assert f"{url}/predict did not answer" in message and "ConnectError" in message and "after 3 attempts" in message
    assert message.endswith("; 0 records were sent so far (0 of 30 in 2013-07)")
    assert not (tmp_path / "labels").exists()


@pytest.mark.integration  # the serving app in its own process
def test_ctrl_c_stops_sending_and_what_was_answered_keeps_its_labels(tmp_path: Path, server: Server) -> None:
    # Far more records than a replay sends in the time the log takes to show 50 of them, even on a busy machine:
    # the interrupt always lands mid-month.
    production_frame(per_month=50_000).to_parquet(tmp_path / "production.parquet")
    # Ctrl-C as in a terminal, whatever this test process left its children: Python keeps SIGINT ignored when it
    # starts ignored, and an in-process `dvc repro` earlier in the session can leave it so (DVC ignores SIGINT
    # while a stage runs and restores only a handler it finds set).
    script = f"""
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
import pandas as pd
from pathlib import Path
from flowship.monitoring.replay import Columns, Replay
columns = Columns({COLUMNS.features!r}, {COLUMNS.target!r}, {COLUMNS.time!r})
replay = Replay({server.url!r}, columns, Path({str(tmp_path / "labels")!r}), concurrency=4, token={TOKEN!r})
print(replay.id, flush=True)
replay.month(pd.read_parquet({str(tmp_path / "production.parquet")!r}), pd.Period("2013-07", freq="M"))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        replay_id = process.stdout.readline().strip()

        def answered_50() -> bool:
            assert process.poll() is None, process.communicate()
            return bool((read_inference_log(server.logs)[0]["request_id"].str.startswith(f"{replay_id}-")).sum() > 50)

        wait_until(answered_50, 30, "50 answered records", 0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) != 0  # a deadline for a busy machine: it exits at the next answer
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    labels, _ = read_labels(tmp_path / "labels")
    assert 50 < len(labels) < 50_000  # stopped early

    def logged_pairs() -> set[tuple[str, int]]:
        predictions = read_inference_log(server.logs)[0]
        predictions = predictions[predictions["request_id"].str.startswith(f"{replay_id}-")]
        return set(zip(predictions["request_id"], predictions["row"], strict=True))

    labelled = set(zip(labels["request_id"], labels["row"], strict=True))
    # the app's log writer flushes every 50 ms: every labelled record's prediction is logged, and nothing else
    wait_until(lambda: logged_pairs() >= labelled, 10, "the app's log writer to log every labelled record")
    assert logged_pairs() == labelled


class _Failing(QuietHandler):
    """Answers 503 to every request after the first `ok` ones, which get a valid prediction."""

    ok = 0
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).hits <= type(self).ok:
            self.answer(200, b'{"predictions":[true],"request_id":"%s"}' % self.headers["X-Request-ID"].encode())
        else:
            self.answer(503, b'{"error":"not_ready","message":"the model is not ready"}')


def test_a_server_error_is_retried_then_fails_naming_what_was_sent(tmp_path: Path) -> None:
    _Failing.ok, _Failing.hits = 4, 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        replay = Replay(url, COLUMNS, tmp_path / "labels", batch_size=1, concurrency=1)
        with pytest.raises(ReplayError) as caught:
            replay.month(production_frame(), JULY)
    finally:
        httpd.shutdown()
        httpd.server_close()
    message = str(caught.value)
    assert message.startswith(f"{url}/predict did not answer: HTTP 503: ") and "after 3 attempts" in message
    assert message.endswith("; 4 records were sent so far (4 of 30 in 2013-07, their labels written)")
    assert _Failing.hits == 4 + 3  # the fifth request, tried three times, and nothing after it
    labels, _ = read_labels(tmp_path / "labels")  # the answered records keep their labels
    assert labels["request_id"].tolist() == [f"{replay.id}-{n}" for n in range(4)]


class _RateLimited(_Failing):
    """Answers every other request 429 with `Retry-After: 0.05` (every one, past `always_after` hits), the rest 200."""

    always_after = 10**9
    client_keys: set[str] = set()

    def do_POST(self) -> None:
        type(self).hits += 1
        type(self).client_keys.add(str(self.headers.get("X-Client-Key")))
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).hits % 2 or type(self).hits > type(self).always_after:
            self.send_response(429)
            self.send_header("Retry-After", "0.05")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        else:
            self.answer(200, b'{"predictions":[true],"request_id":"%s"}' % self.headers["X-Request-ID"].encode())


def test_a_rate_limit_is_waited_out_as_the_gateway_says_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowship.monitoring import replay as replay_module

    _RateLimited.hits, _RateLimited.always_after, _RateLimited.client_keys = 0, 10**9, set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        result = Replay(url, COLUMNS, tmp_path / "labels", batch_size=1, concurrency=1).month(production_frame(), JULY)
        assert result.sent == 30 and result.rejected == 0 and _RateLimited.hits == 60  # each told once to wait
        assert _RateLimited.client_keys == {"flowship-replay"}

        # Past the bound, a 429 is a refusal like any 4xx: counted, and the replay goes on.
        monkeypatch.setattr(replay_module, "RATE_LIMITED_WAIT_S", 0.1)
        _RateLimited.hits, _RateLimited.always_after = 0, 20
        result = Replay(url, COLUMNS, tmp_path / "labels-2", batch_size=1, concurrency=1).month(
            production_frame(), JULY
        )
        assert result.sent == 10 and result.rejected == 20
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the command ---


def replay_project(tmp_path: Path, frame: pd.DataFrame | None, time_column: str | None = "time_hour") -> Path:
    """A project whose params describe the synthetic flights, with `frame` as its production data."""
    params = default_params()
    if time_column is None:
        params["data"]["time_column"] = None
        params["split"] = {"method": "random", "holdout_fraction": 0.2, "production_fraction": 0.2}
    params["data"]["features"] = {"numeric": NUMERIC, "categorical": CATEGORICAL}
    params["validate"]["columns"] = {}
    params["monitoring"]["drift"]["key_features"] = ["temp"]
    params["release"]["max_batch"] = MAX_BATCH
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    if frame is not None:
        (tmp_path / "data" / "prepared").mkdir(parents=True)
        frame.to_parquet(tmp_path / "data" / "prepared" / "production.parquet")
    return tmp_path / "params.yaml"


def flowship(*args: str, env: dict[str, str] | None = None) -> Any:
    from flowship.cli.main import app

    return CliRunner().invoke(app, list(args), env={"FLOWSHIP_RUNTIME": "process", **(env or {})})


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--from", "2013-7"], 1, "bad month '2013-7': expected YYYY-MM"),
        (["--from", "2013-08", "--to", "2013-07"], 1, "the last month 2013-07 (--to) is before the first month"),
        (["--from", "2013-07", "--batch-size", "51"], 1, "--batch-size 51 is more than release.max_batch (50)"),
        (["--from", "2013-07", "--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
        (["--from", "2013-07", "--concurrency", "0"], 2, "Invalid value for '--concurrency'"),
    ],
)
def test_bad_arguments_fail_before_any_traffic(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    params = replay_project(tmp_path, production_frame(per_month=2))
    result = flowship("replay", "--params", str(params), "--no-monitor", *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert not (tmp_path / "logs").exists()


def test_the_command_needs_production_data_and_something_serving(tmp_path: Path) -> None:
    params = replay_project(tmp_path, None)
    result = flowship("replay", "--params", str(params), "--from", "2013-07", "--no-monitor")
    assert result.exit_code == 1 and "no production data: run `flowship train` first" in result.stderr

    params = replay_project(tmp_path, production_frame(per_month=2))
    result = flowship("replay", "--params", str(params), "--from", "2013-07", "--no-monitor")
    assert result.exit_code == 1 and "nothing serves production: run `flowship deploy` first" in result.stderr


@pytest.mark.integration  # the serving app in its own process
def test_the_command_replays_each_month_and_reports_it(tmp_path: Path, server: Server) -> None:
    params = replay_project(tmp_path, production_frame())
    common = ["replay", "--params", str(params), "--url", server.url, "--no-monitor", "--concurrency", "2"]
    result = flowship(
        *common, "--from", "2013-07", "--to", "2013-08", "--batch-size", "5", env={"FLOWSHIP_API_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("replay ") and f": 2013-07 to 2013-08 → {server.url}/predict" in lines[0]
    assert lines[1].split()[:5] == ["2013-07", "sent", "30", "of", "30"]
    assert lines[2].split()[:5] == ["2013-08", "sent", "30", "of", "30"]
    assert all("rejected 0" in line and "req/s" in line and "labels written 30" in line for line in lines[1:3])
    assert len(read_labels(tmp_path / "logs" / "labels")[0]) == 60

    # --once: months already replayed are skipped; without --from the first month of the data is the one.
    result = flowship(*common, "--once", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("2013-07  already replayed (")
    assert len(read_labels(tmp_path / "logs" / "labels")[0]) == 60  # nothing sent again
    result = flowship(*common, "--once", "--from", "2013-08", "--to", "2013-10", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert result.exit_code == 1 and "no data for 2013-09" in result.stderr

    result = flowship(*common, "--from", "2013-08", "--to", "2013-10", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert result.exit_code == 1
    assert "no data for 2013-09" in result.stderr and "2013-07..2013-08, 2013-10" in result.stderr
    assert result.stdout.splitlines()[1].startswith("2013-08")  # the month before was sent


@pytest.mark.integration  # the serving app in its own process
def test_without_a_time_column_the_command_replays_the_share_whole_in_stored_order(
    tmp_path: Path, server: Server
) -> None:
    frame = production_frame().drop(columns="time_hour")
    params = replay_project(tmp_path, frame, time_column=None)
    common = ["replay", "--params", str(params), "--url", server.url, "--no-monitor", "--concurrency", "1"]
    before = pd.Timestamp.now(tz="UTC")
    result = flowship(*common, "--once", "--batch-size", "20", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert f": all → {server.url}/predict" in result.stdout.splitlines()[0]
    assert result.stdout.splitlines()[1].split()[:5] == ["all", "sent", "90", "of", "90"]
    assert result.stderr == ""  # nothing that reads like an error

    replay_id = result.stdout.split()[1].rstrip(":")
    predictions = logged(server, Replay(server.url, COLUMNS, tmp_path, replay_id=replay_id), 90)
    assert [f["distance"] for f in predictions["features"]] == frame["distance"].tolist()  # the stored order
    labels, _ = read_labels(tmp_path / "logs" / "labels")
    both = predictions.merge(labels, on=["request_id", "row"], how="left", validate="one_to_one")
    truth = frame.set_index("distance")
    assert both["label"].tolist() == [bool(truth.loc[f["distance"], "late"]) for f in both["features"]]
    assert (both["event_time"] >= before).all()  # no event time in the data: the records happen as they are sent

    again = flowship(*common, "--once", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert again.exit_code == 0 and again.stdout.startswith("all  already replayed (")
    months_asked = flowship(*common, "--from", "2013-07", env={"FLOWSHIP_API_TOKEN": TOKEN})
    assert months_asked.exit_code == 1 and "--from and --to pick months of data.time_column" in months_asked.stderr
