"""The gateway's nginx configuration, written from what serves (`Routing`) and what `params.yaml` allows (`gateway:`).

One pure function, `render`: the same text whether nginx runs in a container or on the host (`Site` says where it
listens and writes). Every answer the gateway makes itself is JSON shaped like the serving app's errors
(`error`, `message`, `request_id`), with the request id in `X-Request-ID`; the app's own answers pass through as
they are. A request goes to the next replica only when its replica refused the connection or did not take it in time
(never a second time once it was sent: a prediction is not repeated).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from flowship.config import GatewayConfig

# The request id the gateway passes on: the client's when it is short and plain (the serving app's own rule),
# else nginx's random one.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
API_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._~+/=\-]{16,256}$")
UNPROTECTED = ("/health", "/ready")  # probes: no API key, no rate limit
# POST /feedback: to production's own replicas (stable; they write the label log monitoring reads), never mirrored to
# a shadow (a copy would be a second label in a log no one reads), with the key and rate limit of every request and
# a body limit of its own (a feedback with the longest comment the app takes, every character escaped, is under 16k),
# and taken while production is paused.
FEEDBACK = "/feedback"
FEEDBACK_MAX_BODY_KB = 16
# A request body up to this size stays in memory on its way to a replica (nginx's default is 16k). A larger one is
# written to a temporary file first, and a 100-record request (30 KB) then took 53 ms through the gateway against
# 11 ms straight to the replica (`make bench-serving`); in memory, 13 ms. A 1,000-record request is about 300 KB.
BODY_BUFFER_KB = 1024
# A replica that refused a connection is left out for 3 s.
FAILS = "max_fails=1 fail_timeout=3s"
# How far production's first replica is preferred while it is free: it takes 100 of every 101 requests that find
# every replica free (`_first_free`).
FIRST_WEIGHT = 100
UPSTREAM_ZONE_KB = 64  # nginx wants 32k at least; a few hundred bytes a server


@dataclass(frozen=True)
class Backend:
    """One replica as the gateway reaches it."""

    name: str  # the container (or process) it is
    address: str  # host:port


@dataclass(frozen=True)
class Pool:
    """The replicas of one model version (and the image they run, with Docker)."""

    version: str
    backends: tuple[Backend, ...]
    image: str | None = None


@dataclass(frozen=True)
class Routing:
    """What the gateway sends traffic to: `stable`, and `canary_weight` percent to `canary` (the same client key
    always to the same side); whether it is paused (the reason, then)."""

    stable: Pool
    paused: str | None = None
    canary: Pool | None = None
    canary_weight: float = 0.0
    shadow: Pool | None = None  # gets a copy of every request; its answers are dropped


@dataclass(frozen=True)
class Site:
    """Where this nginx listens and writes: inside its container, or on the host."""

    listen: str  # "8080" (all interfaces of a container) or "127.0.0.1:8000"
    access_log: Path
    shadow_log: Path  # the shadow's answers to mirrored requests, one JSON line each
    error_log: str  # a path, or "stderr"
    pid: Path
    temp: Path
    workers: int = 1
    user: str | None = None  # the workers' user, when nginx is started by root


# What the gateway answers itself: status -> (error, message)
ERRORS = {
    401: ("unauthorized", "this gateway wants an API key in the X-API-Key header"),
    403: ("forbidden", "the API key in X-API-Key is not one this gateway knows"),
    413: ("payload_too_large", "the request body is larger than this gateway accepts"),
    429: ("rate_limited", "too many requests from this client; retry after the time in Retry-After"),
    502: ("bad_gateway", "no replica of the model answered"),
    504: ("timeout", "the model did not answer in time"),
}


def _json_text(value: object) -> str:
    """A JSON document as an nginx single-quoted string (nginx variables in it stay live)."""
    text = json.dumps(value, separators=(",", ":"))
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error_location(status: int, code: str, message: str, retry_after: int | None = None) -> str:
    body = _json_text({"error": code, "message": message, "request_id": "$req_id"})
    retry = f"        add_header Retry-After {retry_after} always;\n" if retry_after is not None else ""
    return (
        f"    location @error_{status} {{\n"
        "        default_type application/json;\n"
        "        add_header X-Request-ID $req_id always;\n"
        f"{retry}"
        f"        return {status} {body};\n"
        "    }\n"
    )


def _rate(per_second: float) -> str:
    if per_second >= 1 and float(per_second).is_integer():
        return f"{int(per_second)}r/s"
    return f"{max(1, round(per_second * 60))}r/m"


def _upstream(name: str, version: str, servers: str, zone: bool = False) -> str:
    # idle connections to the replicas are closed by the gateway (2 s) before the app would close them (uvicorn: 5 s):
    # otherwise a request can go out on a connection the app is closing at that instant, and fail
    keepalive = "        keepalive 32;\n        keepalive_timeout 2s;\n"
    # the workers count each replica's requests in flight together (`max_conns`), in memory they share
    shared = f"        zone {name} {UPSTREAM_ZONE_KB}k;\n" if zone else ""
    return f"    upstream {name} {{\n        # v{version}\n{shared}{servers}{keepalive}    }}\n"


def _servers(backends: tuple[Backend, ...], options: str, note: str = "") -> str:
    return "".join(f"        server {b.address} {options};  # {b.name}{note}\n" for b in backends)


def _round_robin(name: str, pool: Pool, backup: Pool | None = None) -> str:
    """Each request to the next replica in turn; `backup`'s replicas only when none of `pool`'s takes it."""
    servers = _servers(pool.backends, FAILS)
    if backup is not None:
        servers += _servers(backup.backends, "backup", f" (v{backup.version})")
    return _upstream(name, pool.version, servers)


def _first_free(name: str, pool: Pool) -> str:
    """A request to a replica with nothing in flight, the first one above all others; once every replica has a
    request, to each in turn.

    A lone client's requests then all go to one process, which stays warm: round robin alternated them between
    replicas, each starting every other request cold: a 1,000-record request took 14.4 ms (p50) against 12.2 ms
    this way and 11.4 ms with one replica left in the upstream (`make bench-gateway-replicas`, 1.16x round robin's
    rows/s); under load every replica still gets its share (4 clients: 1.03x).
    nginx's open-source balancers have no "first available" (`least_conn` breaks its ties by round robin): the
    primary tier, where each replica takes one request at a time (`max_conns=1`) and the first has a weight far above
    the others', gives it; the backup tier, each replica again without a limit, takes what the primary tier has no
    room for."""
    if len(pool.backends) == 1:
        return _round_robin(name, pool)
    first, *others = pool.backends
    servers = (
        _servers((first,), f"weight={FIRST_WEIGHT} max_conns=1 {FAILS}")
        + _servers(tuple(others), f"max_conns=1 {FAILS}")
        + _servers(pool.backends, f"backup {FAILS}", " (once every replica has a request)")
    )
    return _upstream(name, pool.version, servers, zone=True)


def header_variable(header: str) -> str:
    """nginx's variable for a request header: `X-Client-Key` → `$http_x_client_key`."""
    return "$http_" + header.lower().replace("-", "_")


def read_api_keys(path: Path) -> list[str]:
    """The keys in `path`, one per line (blank lines and `#` comments skipped); each must be a plain token."""
    keys = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if not API_KEY_PATTERN.fullmatch(key):
            raise ValueError(
                f"{path}, line {number}: an API key is 16 to 256 characters of letters, digits and ._~+/=- "
                "(no spaces or quotes)"
            )
        keys.append(key)
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return keys


def render(site: Site, routing: Routing, config: GatewayConfig, api_keys: list[str] | None = None) -> str:
    """The whole nginx.conf. `api_keys`: the keys read from `config.api_keys_file` (None: no key is asked)."""
    pools = {"stable": routing.stable}
    if routing.canary is not None and routing.canary_weight > 0:
        pools["canary"] = routing.canary
    for pool in pools.values():
        if not pool.backends:
            raise ValueError(f"v{pool.version} has no replica to send traffic to")
    groups = [_first_free("stable", routing.stable)]
    if "canary" in pools:
        # the canary's group falls back on stable's replicas when none of its own takes the connection
        groups.append(_round_robin("canary", pools["canary"], routing.stable))
    if routing.shadow is not None:
        if not routing.shadow.backends:
            raise ValueError(f"v{routing.shadow.version} has no replica to send traffic to")
        groups.append(_round_robin("shadow", routing.shadow))
    upstreams = "".join(groups)
    # a request refused by one replica may try each server of its group once (production's replicas are each in
    # their group twice): enough tries for every one, and 3 at least
    tries = max(3, *(group.count("        server ") for group in groups))
    if "canary" in pools:
        # sticky: a client that sends its key always lands on the same side; without one, each request is drawn
        client = header_variable(config.client_header)
        split = (
            f'    map {client} $split_key {{ "" $request_id; default {client}; }}\n'
            f'    split_clients "$split_key" $pool {{\n'
            f"        {routing.canary_weight:g}% canary;\n        * stable;\n    }}\n"
        )
    else:
        split = "    map $request_id $pool { default stable; }\n"
    client = header_variable(config.client_header)
    limit_zone = limit = ""
    if config.rate_limit is not None:
        limit_zone = (
            f'    map {client} $limit_key {{ "" $binary_remote_addr; default {client}; }}\n'
            f"    limit_req_zone $limit_key zone=clients:10m rate={_rate(config.rate_limit.per_second)};\n"
            "    limit_req_status 429;\n"
            "    limit_req_log_level warn;\n"
        )
        burst = f" burst={config.rate_limit.burst}" if config.rate_limit.burst else ""  # nginx refuses burst=0
        limit = f"            limit_req zone=clients{burst} nodelay;\n"
    key_map = key_check = ""
    if api_keys is not None:
        entries = "".join(f'        "{key}" 0;\n' for key in api_keys)
        key_map = (
            f'    map $http_x_api_key $api_key_refusal {{\n        default 403;\n        "" 401;\n{entries}    }}\n'
        )
        key_check = (
            "            if ($api_key_refusal = 401) { return 401; }\n"
            "            if ($api_key_refusal = 403) { return 403; }\n"
        )
    upstream_headers = (
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $host;\n"
        "            proxy_set_header X-Request-ID $req_id;\n"
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        '            proxy_set_header X-API-Key "";\n'
    )
    proxy = "            proxy_pass http://$pool;\n" + upstream_headers
    body_kb = min(FEEDBACK_MAX_BODY_KB, round(config.max_body_mb * 1024))
    feedback = (
        f"        location = {FEEDBACK} {{\n{key_check}{limit}"
        f"            client_max_body_size {body_kb}k;\n"
        f"            proxy_pass http://stable;\n{upstream_headers}        }}\n"
    )
    mirror = shadow_location = ""
    if routing.shadow is not None:
        mirror = "            mirror /_shadow;\n"
        shadow_location = (
            "        location = /_shadow {\n"
            "            internal;\n"
            "            log_subrequest on;\n"
            f"            access_log {site.shadow_log} flowship_shadow;\n"
            "            proxy_pass http://shadow$request_uri;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header X-Request-ID $req_id;\n"
            '            proxy_set_header X-API-Key "";\n'
            "        }\n"
        )
    if routing.paused is not None:
        message = f"production is paused: {routing.paused}"
        main = (
            "        location / {\n"
            "            default_type application/json;\n"
            "            add_header X-Request-ID $req_id always;\n"
            f"            add_header Retry-After {config.retry_after_s} always;\n"
            f"            return 503 {_json_text({'error': 'paused', 'message': message, 'request_id': '$req_id'})};\n"
            "        }\n"
            # Feedback on answers already given still reaches production's replicas (the pause leaves them running):
            # what users say about the answers under investigation is what the operator needs most.
            f"{feedback}"
        )
        probes = ""
    else:
        main = f"        location / {{\n{key_check}{limit}{mirror}{proxy}        }}\n{feedback}{shadow_location}"
        probes = "".join(f"        location = {path} {{\n{proxy}        }}\n" for path in UNPROTECTED)
    errors = "".join(
        _error_location(status, code, message, 1 if status == 429 else None)
        for status, (code, message) in ERRORS.items()
    )
    error_pages = "".join(f"        error_page {status} = @error_{status};\n" for status in ERRORS)
    temp = site.temp
    user = f"user {site.user};\n" if site.user else ""
    return f"""# Written by flowship from .flowship/gateway/routing.json and params.yaml (gateway:); edits are lost.
{user}worker_processes {site.workers};
pid {site.pid};
error_log {site.error_log} warn;

events {{
    worker_connections 4096;
}}

http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server_tokens off;
    default_type application/json;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout {round(config.keepalive_s * 1000)}ms;
    keepalive_requests 100000;

    map $http_x_request_id $req_id {{
        default $request_id;
        "~{REQUEST_ID_PATTERN}" $http_x_request_id;
    }}
    log_format flowship escape=json '{{"time":"$time_iso8601","request_id":"$req_id","client":"$remote_addr",'
        '"client_key":"{client}","method":"$request_method","path":"$uri","status":$status,'
        '"request_bytes":$request_length,"response_bytes":$body_bytes_sent,"request_time":$request_time,'
        '"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
        '"upstream_time":"$upstream_response_time","pool":"$pool","version":"$upstream_http_x_model_version"}}';
    log_format flowship_shadow escape=json '{{"time":"$time_iso8601","request_id":"$req_id","path":"$request_uri",'
        '"status":"$upstream_status","upstream_time":"$upstream_response_time","version":"$upstream_http_x_model_version"}}';
    access_log {site.access_log} flowship;
{limit_zone}{key_map}{split}
{upstreams}
    server {{
        listen {site.listen};
        client_max_body_size {round(config.max_body_mb * 1024)}k;
        client_body_buffer_size {BODY_BUFFER_KB}k;
        proxy_connect_timeout 1s;
        proxy_send_timeout {round(config.timeout_s * 1000)}ms;
        proxy_read_timeout {round(config.timeout_s * 1000)}ms;
        # a replica that refuses the connection or does not take it in time (a stopped container's address)
        # passes the request to the next one; a request once sent is never repeated (POST is not idempotent)
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries {tries};
{error_pages}
{probes}{main}
{errors}    }}
}}
"""
