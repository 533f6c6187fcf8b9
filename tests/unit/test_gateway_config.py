"""The gateway's configuration as text, its routing state on disk, and the settings behind them (no nginx here:
tests/release/test_gateway.py runs what these write)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowship.config import GatewayConfig, RateLimit, ReleaseConfig, replicas_for
from flowship.files import daily_path, daily_paths
from flowship.gateway import routing
from flowship.gateway.nginx import Backend, Pool, Routing, Site, header_variable, read_api_keys, render
from flowship.gateway.routing import GatewayState

SITE = Site(
    "8080", Path("/logs/access.jsonl"), Path("/logs/shadow.jsonl"), "stderr", Path("/tmp/nginx.pid"), Path("/tmp")
)
V1 = Pool("1", (Backend("r1", "172.18.0.2:8000"), Backend("r2", "172.18.0.3:8000")), "img:v1")
V2 = Pool("2", (Backend("r3", "172.18.0.4:8000"),), "img:v2")


def upstream(text: str, name: str) -> list[str]:
    """The lines of `upstream name { ... }` in an nginx.conf, without its comments."""
    block = text[text.index(f"    upstream {name} {{\n") :]
    lines = block[: block.index("\n    }\n")].splitlines()[1:]
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_every_replica_is_an_upstream_server_and_a_request_is_never_sent_twice() -> None:
    text = render(SITE, Routing(V1), GatewayConfig())
    # one request at a time to each replica, the first far above the others while it is free; once each has one, to
    # each in turn without a limit; all counted together by nginx's workers
    assert upstream(text, "stable") == [
        "zone stable 64k;",
        "server 172.18.0.2:8000 weight=100 max_conns=1 max_fails=1 fail_timeout=3s;",
        "server 172.18.0.3:8000 max_conns=1 max_fails=1 fail_timeout=3s;",
        "server 172.18.0.2:8000 backup max_fails=1 fail_timeout=3s;",
        "server 172.18.0.3:8000 backup max_fails=1 fail_timeout=3s;",
        "keepalive 32;",
        "keepalive_timeout 2s;",
    ]
    assert "proxy_next_upstream error timeout;" in text  # never `non_idempotent`: a sent POST is not repeated
    # a request refused by replicas that died may try every server of its group
    assert "proxy_next_upstream_tries 4;" in text
    assert "listen 8080;" in text and "access_log /logs/access.jsonl flowship;" in text
    # a lone replica needs no order
    alone = render(SITE, Routing(V2), GatewayConfig())
    assert upstream(alone, "stable") == [
        "server 172.18.0.4:8000 max_fails=1 fail_timeout=3s;",
        "keepalive 32;",
        "keepalive_timeout 2s;",
    ]
    assert "proxy_next_upstream_tries 3;" in alone
    three = Pool("1", (*V1.backends, Backend("r4", "172.18.0.5:8000")))
    assert "proxy_next_upstream_tries 6;" in render(SITE, Routing(three), GatewayConfig())


def test_the_protections_follow_the_settings() -> None:
    text = render(SITE, Routing(V1), GatewayConfig(timeout_s=2.5, max_body_mb=0.5, client_header="X-Tenant"))
    assert "proxy_read_timeout 2500ms;" in text and "client_max_body_size 512k;" in text
    assert "client_body_buffer_size 1024k;" in text  # a batch's body goes to a replica from memory, not a temp file
    assert 'map $http_x_tenant $limit_key { "" $binary_remote_addr; default $http_x_tenant; }' in text
    assert "rate=500r/s" in text and "limit_req zone=clients burst=1000 nodelay;" in text
    assert "keepalive_timeout 0ms;" in text  # a reload never cuts a request sent on an idle connection
    slow = render(SITE, Routing(V1), GatewayConfig(rate_limit=RateLimit(per_second=0.5, burst=0)))
    assert "rate=30r/m" in slow and "limit_req zone=clients nodelay;" in slow  # nginx refuses burst=0
    unlimited = render(SITE, Routing(V1), GatewayConfig(rate_limit=None))
    assert "limit_req" not in unlimited
    assert "X-API-Key" in unlimited and "$api_key_refusal" not in unlimited  # the header is stripped, never checked


def test_api_keys_are_checked_except_on_the_probes(tmp_path: Path) -> None:
    text = render(SITE, Routing(V1), GatewayConfig(), ["k-0123456789abcdef", "k-fedcba9876543210"])
    assert '"k-0123456789abcdef" 0;' in text and '"" 401;' in text and "default 403;" in text
    main = text[text.index("location / {") :]
    assert "if ($api_key_refusal = 401) { return 401; }" in main
    probe = text[text.index("location = /health {") : text.index("location = /ready {")]
    assert "api_key_refusal" not in probe and "limit_req" not in probe


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no API key"),
        ("# only a comment\n\n", "holds no API key"),
        ("k-0123456789abcdef\nshort\n", "line 2: an API key is 16 to 256 characters"),
        ('k-0123456789abcdef"; evil\n', "line 1: an API key is 16 to 256 characters"),
    ],
)
def test_an_api_key_file_nginx_could_not_hold_safely_is_refused(tmp_path: Path, content: str, message: str) -> None:
    keys = tmp_path / "keys"
    keys.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_api_keys(keys)


def test_paused_answers_503_json_everywhere_and_sends_nothing_on_but_feedback() -> None:
    text = render(SITE, Routing(V1, paused="it's broken"), GatewayConfig(retry_after_s=60))
    server = text[text.index("    server {") :]
    start = server.index("location = /feedback {")
    feedback = server[start : server.index("        }\n", start)]
    elsewhere = server[:start] + server[start + len(feedback) :]
    assert "proxy_pass" not in elsewhere and "add_header Retry-After 60 always;" in elsewhere
    assert """"error":"paused","message":"production is paused: it\\'s broken","request_id":"$req_id\"""" in elsewhere
    assert "location = /health" not in server and "location = /ready" not in server  # the probes say it too
    assert feedback.count("proxy_pass") == 1 and "proxy_pass http://stable;" in feedback


def test_a_version_without_replicas_cannot_be_routed_to() -> None:
    with pytest.raises(ValueError, match="v3 has no replica"):
        render(SITE, Routing(Pool("3", ())), GatewayConfig())


def test_header_names_and_settings_are_checked() -> None:
    assert header_variable("X-Client-Key") == "$http_x_client_key"
    with pytest.raises(ValidationError, match="client_header"):
        GatewayConfig(client_header="X Client")
    with pytest.raises(ValidationError, match="timeout_s"):
        GatewayConfig(timeout_s=0)
    assert [replicas_for(n) for n in (None, 1, 2, 4, 6, 8, 64)] == [2, 2, 2, 2, 3, 4, 8]
    assert ReleaseConfig(replicas=3).replica_count == 3


def test_a_switch_keeps_the_replaced_version_warm_until_its_time(tmp_path: Path) -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    state = GatewayState(8000, V1).switched(V2, now + timedelta(minutes=10))
    assert state.stable == V2 and state.warm_pool("1") == V1 and state.running_pool("2") == V2
    assert state.expired(now) == [] and state.expired(now + timedelta(minutes=10)) == [V1]
    back = state.switched(V1, None)  # back to v1, v2 let go
    assert back.stable == V1 and back.warm == ()
    routing.save(tmp_path, state)
    assert routing.load(tmp_path) == state
    routing.forget(tmp_path)
    assert routing.load(tmp_path) is None


def test_each_writer_of_a_log_has_its_own_daily_file(tmp_path: Path) -> None:
    day = date(2026, 12, 2)
    assert daily_path(tmp_path, "inference-", day).name == "inference-20261202.jsonl"
    assert daily_path(tmp_path, "inference-", day, "v2-ab12-1").name == "inference-20261202.v2-ab12-1.jsonl"
    for name in ("inference-20261202.jsonl", "inference-20261202.v2-ab12-1.jsonl", "inference-20261203.v2-ab12-2.jsonl",
                 "inference-2026120.jsonl", "inference-20261202.a.b.jsonl", "inference-20261302.jsonl"):  # fmt: skip
        (tmp_path / name).touch()
    found = [p.name for p in daily_paths(tmp_path, "inference-", last=day)]
    assert found == ["inference-20261202.jsonl", "inference-20261202.v2-ab12-1.jsonl"]


def test_a_canary_gets_its_share_sticky_per_client_key() -> None:
    text = render(SITE, Routing(V1, canary=V2, canary_weight=5), GatewayConfig())
    assert "upstream canary {" in text and "server 172.18.0.4:8000" in text
    assert 'map $http_x_client_key $split_key { "" $request_id; default $http_x_client_key; }' in text
    assert "5% canary;" in text and "* stable;" in text and "proxy_pass http://$pool;" in text
    # the canary's replicas in turn; stable's stand in when none of them takes a connection
    assert upstream(text, "canary") == [
        "server 172.18.0.4:8000 max_fails=1 fail_timeout=3s;",
        "server 172.18.0.2:8000 backup;",
        "server 172.18.0.3:8000 backup;",
        "keepalive 32;",
        "keepalive_timeout 2s;",
    ]
    assert '"pool":"$pool"' in text  # the access log says which side answered
    for off in (Routing(V1, canary=V2, canary_weight=0), Routing(V1)):
        plain = render(SITE, off, GatewayConfig())
        assert "upstream canary" not in plain and "map $request_id $pool { default stable; }" in plain


def test_feedback_goes_to_production_with_the_key_and_rate_limit_and_a_small_body_never_to_a_shadow() -> None:
    routing = Routing(V1, canary=V2, canary_weight=5.0, shadow=V2)
    text = render(SITE, routing, GatewayConfig(), ["k-0123456789abcdef"])
    start = text.index("location = /feedback {")
    feedback = text[start : text.index("        }\n", start)]
    assert "proxy_pass http://stable;" in feedback  # production's replicas, whatever the canary's share
    assert "mirror" not in feedback
    assert "if ($api_key_refusal = 401) { return 401; }" in feedback
    assert "limit_req zone=clients burst=1000 nodelay;" in feedback
    assert "client_max_body_size 16k;" in feedback
    assert "proxy_set_header X-Request-ID $req_id;" in feedback and 'proxy_set_header X-API-Key "";' in feedback
    # a gateway body limit below 16k applies to the feedback too
    tiny = render(SITE, Routing(V1), GatewayConfig(max_body_mb=0.005, rate_limit=None))
    start = tiny.index("location = /feedback {")
    assert "client_max_body_size 5k;" in tiny[start : tiny.index("        }\n", start)]
    assert "limit_req" not in tiny


def test_paused_still_takes_feedback_with_the_key_and_rate_limit_of_serving() -> None:
    """The pause leaves the replicas running: what users say about the answers under investigation still arrives,
    behind the same key check, rate limit and body limit as when serving."""
    keys = ["k-0123456789abcdef"]

    def feedback_location(routing: Routing) -> str:
        text = render(SITE, routing, GatewayConfig(), keys)
        start = text.index("location = /feedback {")
        return text[start : text.index("        }\n", start)]

    assert feedback_location(Routing(V1, paused="bad release")) == feedback_location(Routing(V1))
