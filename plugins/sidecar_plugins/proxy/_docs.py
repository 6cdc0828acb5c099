"""The proxy plugin's reference prose, kept beside the code it describes.

``docs/gen_reference.py`` reads :data:`CONFIG_DOCS` and :data:`EVENT_DOCS` through the plugin
class and writes :func:`reference_page` to ``docs/reference/proxy.md``. Every key of every
table, every event and every metric must have prose here, or generating the page fails.
"""

from __future__ import annotations

from typing import Any

from .._refdocs import key_table, metric_table
from ._breaker import CircuitBreakerConfig
from ._config import (
    AccessLogConfig,
    LimitsConfig,
    ListenerConfig,
    MatchConfig,
    RouteConfig,
    TimeoutsConfig,
    UpstreamConfig,
)
from ._metrics import METRIC_DOCS
from ._outlier import OutlierConfig
from ._ratelimit import RateLimitConfig
from ._retry import RetryConfig
from ._tls import ServerTLSConfig
from ._upstream_tls import UpstreamTLSConfig

__all__ = ["CONFIG_DOCS", "EVENT_DOCS", "TABLE_DOCS", "reference_page"]

CONFIG_DOCS: dict[str, str] = {
    "listeners": (
        "Where the proxy accepts connections: a list of tables with `address`, `tls`, `routes` "
        "([keys](proxy.md#listeners)). Required. `--proxy LISTEN=UPSTREAM` replaces the list."
    ),
    "upstreams": (
        "Named clusters the routes send to: `endpoints`, `tls`, pool and guards "
        "([keys](proxy.md#upstreams)). The one named `app` is the supervised app."
    ),
    "routes": (
        "Routes of every listener without its own, in order, first match wins "
        "([keys](proxy.md#routes)). Empty: everything goes to the upstream `app`."
    ),
    "timeouts": "Upstream timeouts ([keys](proxy.md#timeouts)).",
    "limits": "Limits on clients: sizes, slow clients, idle connections ([keys](proxy.md#limits)).",
    "retry": "The retry policy of routes without their own ([keys](proxy.md#retry)).",
    "rate_limit": (
        "Local rate limit, a token bucket for all and one per client IP; unset: none "
        "([keys](proxy.md#rate_limit))."
    ),
    "access_log": "`request_finished` events: on/off and sampling ([keys](proxy.md#access_log)).",
    "hold_timeout": (
        "How long a request for the app waits while the app is not ready (starting, restarting, "
        "refusing connections) before `503` with `Retry-After`. `0`: answer `503` at once."
    ),
    "drain_timeout": (
        "On shutdown, how long in-flight requests may finish (listeners closed, idle keep-alive "
        "connections closed) before the rest are cut and the app is stopped."
    ),
    "trust_forwarded": (
        "Keep the client's `X-Forwarded-Proto` and `X-Forwarded-Host` (behind a trusted load "
        "balancer). Off: the proxy sets them. `X-Forwarded-For` is always appended to."
    ),
}

TABLE_DOCS: dict[type[Any], dict[str, str]] = {
    ListenerConfig: {
        "address": "`HOST:PORT` (`0.0.0.0:8443`, `[::]:8443`) or `unix:/path` (a stale socket "
        "file is replaced, the file is removed on exit).",
        "name": "Used in metrics and logs; default `listener<index>`.",
        "tls": "Serve HTTPS ([keys](#listener-tls)).",
        "routes": "This listener's own routes; unset: the top-level `routes`.",
    },
    ServerTLSConfig: {
        "cert": "PEM certificate chain file.",
        "key": "PEM private key file (unencrypted).",
        "client_ca": "PEM CA bundle that signs client certificates: enables mTLS.",
        "client_auth": "`strict`: a valid client certificate is required (default with "
        "`client_ca`); `permissive`: optional, but verified if presented; `none`.",
        "min_version": "Lowest TLS version, `1.2` or `1.3`.",
        "ciphers": "OpenSSL cipher list for TLS 1.2 (Mozilla *intermediate* by default).",
        "reload_interval": "How often the files are checked for changes (`0`: never); "
        "changed files are loaded for new handshakes, open connections stay.",
    },
    UpstreamConfig: {
        "endpoints": "`HOST:PORT` or `unix:/path` addresses, balanced round-robin.",
        "tls": "Originate TLS to the endpoints ([keys](#upstream-tls)).",
        "app": "Requests are held while the app is not ready (default: for the one named `app`).",
        "connect_timeout": "Connect timeout; unset: `timeouts.connect`.",
        "idle_timeout": "Pooled keep-alive connections are closed after this idle time; keep "
        "it below the app's own keep-alive timeout.",
        "max_idle_per_endpoint": "At most this many idle connections are pooled per endpoint.",
        "circuit_breaker": "Thresholds ([keys](#circuit_breaker)).",
        "outlier": "Eject failing endpoints ([keys](#outlier)); unset: never.",
    },
    UpstreamTLSConfig: {
        "ca": "PEM CA bundle to verify the upstream with; unset: the system's CAs.",
        "verify": "Verify the certificate and host name.",
        "server_name": "SNI and the name to verify; default: the endpoint's host.",
        "cert": "Client certificate for mTLS to the upstream.",
        "key": "Its private key.",
    },
    CircuitBreakerConfig: {
        "max_connections": "Open connections to the cluster; more requests wait as pending.",
        "max_pending_requests": "Requests waiting for a connection; more are refused.",
        "max_requests": "Requests in flight to the cluster; more are refused.",
        "max_retries": "Retries in flight to the cluster; more are not retried.",
    },
    OutlierConfig: {
        "consecutive_5xx": "5xx responses (and local errors) in a row that eject an endpoint; "
        "`0`: off.",
        "consecutive_gateway_errors": "502/503/504 responses and connect errors, resets or "
        "timeouts in a row that eject an endpoint; `0`: off.",
        "base_ejection_time": "Ejection time, times the number of ejections so far.",
        "max_ejection_time": "The longest ejection.",
        "max_ejection_percent": "At most this share of the endpoints is ejected at once.",
        "always_eject_one_host": "Allow one ejection even when the percentage forbids it.",
        "interval": "Each full interval in service lowers an endpoint's ejection multiplier.",
    },
    RouteConfig: {
        "name": "Used in metrics and logs; default `route<index>`.",
        "match": "Conditions, all of which must hold ([keys](#match)); empty: everything.",
        "upstream": "The cluster to send to.",
        "rewrite_prefix": "Replace the matched `match.prefix` with this.",
        "host_rewrite": "Send this `Host` header instead of the client's.",
        "request_headers_add": "Headers added to the request (after removals).",
        "request_headers_remove": "Headers removed from the request.",
        "response_headers_add": "Headers set on the response (replacing the upstream's).",
        "response_headers_remove": "Headers removed from the response.",
        "timeout": "Time for the response head, all tries included; unset: "
        "`timeouts.response_headers`; `0`: none.",
        "retry": "This route's retry policy; unset: the top-level `retry`.",
    },
    MatchConfig: {
        "prefix": "The path starts with this (by characters, as Envoy).",
        "path": "The path is exactly this.",
        "regex": "The whole path matches this regular expression.",
        "host": "The `Host` (port ignored) is this, or ends with it for `*.example.com`.",
        "headers": "Each header has this exact value; `*`: present with any value.",
        "methods": "The method is one of these.",
    },
    TimeoutsConfig: {
        "connect": "Connecting to an endpoint (a failure is `503`, and retried).",
        "response_headers": "From the request to the response head (`504`), per route.",
        "idle": "No byte in either direction for this long ends the exchange (`504` before "
        "the response head); `0`: none.",
        "total": "The whole exchange, response body included; `0`: none.",
        "tunnel_idle": "An upgraded connection (WebSocket) with no byte for this long is closed.",
    },
    LimitsConfig: {
        "max_header_bytes": "Request line and headers; more: `431` (`414` for the URI).",
        "max_body_bytes": "Request body, also chunked ones once exceeded: `413`; `0`: no limit.",
        "header_read_timeout": "A request head must arrive within this (slowloris): `408`.",
        "idle_timeout": "Keep-alive connections without a request are closed after this.",
        "max_requests_per_connection": "Close a client connection after this many requests; "
        "`0`: no limit.",
        "retry_buffer_bytes": "Request bodies up to this size are kept so they can be retried.",
        "max_connections": "Client connections open at once per listener; more are closed "
        "at once (counted as `too_many_connections`); `0`: no limit.",
    },
    RetryConfig: {
        "attempts": "Tries in all, the first included (`1`: no retries).",
        "retry_on": "Conditions that retry: `connect-failure`, `reset`, `gateway-error` (502, "
        "503, 504), `5xx`, `retriable-status-codes` (the `statuses`).",
        "statuses": "Statuses for `retriable-status-codes`.",
        "per_try_timeout": "Response-head timeout of each try; unset: the route's.",
        "backoff_base": "Backoff before a retry: full jitter up to base * (2^n - 1).",
        "backoff_max": "The longest backoff.",
        "budget_percent": "Retries in flight may be at most this share of requests in flight.",
        "min_retry_concurrency": "Retries always allowed in flight, whatever the budget.",
        "methods": "Methods that may be retried (idempotent ones).",
    },
    RateLimitConfig: {
        "rate": "Tokens per second for all clients together.",
        "burst": "Bucket size for all clients together.",
        "per_client_rate": "Tokens per second for each client IP; unset: no per-client bucket.",
        "per_client_burst": "Each client's bucket size; default: one second of tokens.",
        "max_clients": "Client buckets kept (least recently used ones are dropped).",
    },
    AccessLogConfig: {
        "enabled": "Log `request_finished` events (at info level: `--log-level info`).",
        "sample": "Share of successful requests logged (0..1); errors are always logged.",
    },
}

EVENT_DOCS: dict[str, str] = {
    "proxy_reloaded": (
        "A config reload was applied in place: `routes` and `upstreams` now in force."
    ),
    "proxy_listening": "A listener is bound; `address` is what it bound (port 0 resolved).",
    "request_finished": (
        "The access log: one per request, with `status`, `duration_ms`, `upstream_ms`, "
        "`route`, `upstream`, `endpoint`, `retries`, `request_id`, `client`, `identity` (the "
        "mTLS principal) and `detail` for what the proxy answered itself."
    ),
    "proxy_drained": (
        "Shutdown: the listeners are closed and the in-flight requests finished (or "
        "`timed_out` after `drain_timeout`); the app is stopped next."
    ),
    "proxy_request_failed": "A bug in the proxy while handling a request: `500`, traceback.",
    "proxy_connection_failed": "A bug in the proxy on a client connection: it was closed.",
    "tls_handshake_failed": "A client's TLS handshake failed (debug level; counted).",
    "tls_reloaded": "A listener's certificate files were reloaded (new `serial`, `not_after`).",
    "tls_reload_failed": "Changed certificate files could not be loaded; the old ones stay.",
    "tls_certificate_expired": "At start: the serving certificate has expired already.",
}

#: (heading, what the table is, its struct); a heading's anchor is what the prose links to.
_SECTIONS: list[tuple[str, str, type[Any]]] = [
    ("`listeners`", "`[[plugins.proxy.listeners]]`", ListenerConfig),
    ("Listener TLS", "A listener's `tls` table.", ServerTLSConfig),
    ("`upstreams`", "`[plugins.proxy.upstreams.<name>]`", UpstreamConfig),
    ("Upstream TLS", "An upstream's `tls` table.", UpstreamTLSConfig),
    ("`circuit_breaker`", "An upstream's `circuit_breaker` table.", CircuitBreakerConfig),
    ("`outlier`", "An upstream's `outlier` table (Envoy's outlier detection).", OutlierConfig),
    ("`routes`", "`[[plugins.proxy.routes]]`, or a listener's `routes`.", RouteConfig),
    ("Match", "A route's `match` table.", MatchConfig),
    ("`timeouts`", "`[plugins.proxy.timeouts]`", TimeoutsConfig),
    ("`limits`", "`[plugins.proxy.limits]`", LimitsConfig),
    ("`retry`", "`[plugins.proxy.retry]`, or a route's `retry`.", RetryConfig),
    ("`rate_limit`", "`[plugins.proxy.rate_limit]`", RateLimitConfig),
    ("`access_log`", "`[plugins.proxy.access_log]`", AccessLogConfig),
]


_INTRO = """\
The `proxy` plugin is an Envoy-like HTTP/1.1 reverse proxy inside `sidecar-run`: TLS and mTLS
for an app that knows nothing of them, routing, keep-alive pools, retries, timeouts, circuit
breaking, outlier ejection, local rate limiting, an access log and metrics. It is off unless a
`[plugins.proxy]` table or `--proxy LISTEN=UPSTREAM` enables it. Setting it up:
[TLS in front of an app](../how-to/proxy-tls.md).

```toml
[plugins.proxy]
listeners = [{ address = "0.0.0.0:8443", tls = { cert = "/tls/tls.crt", key = "/tls/tls.key" } }]
upstreams.app = { endpoints = ["127.0.0.1:8080"] }
upstreams.payments = { endpoints = ["api.pay.example:443", "api2.pay.example:443"], tls = {} }

[[plugins.proxy.routes]]
match = { prefix = "/pay/" }
upstream = "payments"
rewrite_prefix = "/v1/"
host_rewrite = "api.pay.example"

[[plugins.proxy.routes]]
upstream = "app"
```
"""

_BEHAVIOUR = """\
## What the proxy does to requests

- **Hop-by-hop headers** are removed both ways: `Connection` and the headers it names,
  `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`, `Proxy-Authenticate`, `TE`,
  `Trailer`, `Transfer-Encoding` (bodies are re-framed: `Content-Length` kept, else chunked to
  HTTP/1.1 clients and close-delimited to HTTP/1.0 ones; trailers are dropped) and `Upgrade`
  (kept for upgrades). `Expect: 100-continue` is answered by the proxy.
- **Forwarding headers**: `X-Forwarded-For` gets the client's address appended;
  `X-Forwarded-Proto` (`http`/`https`) and `X-Forwarded-Host` (the client's `Host`) are set
  (kept from the client with `trust_forwarded`). `X-Request-ID` is kept when it is 1-128 of
  `A-Z a-z 0-9 . _ ~ : / + = @ -`, else a random UUID is sent (and logged).
- **Client certificates** (mTLS): `X-Forwarded-Client-Cert` is set in Envoy's format
  (`Hash=...;Subject="...";URI=...;DNS=...`); one sent by the client is always dropped.
- **Paths** are routed after removing dot segments (`/a/../b` is `/b`), and that is the path
  the upstream gets.
- **Keep-alive**: connections to upstreams are pooled (most recently used first) and closed
  after `idle_timeout` (4 s, below the 5 s many app servers use). A request that finds its
  pooled connection closed by the app before any byte of the response is sent again once on a
  new connection when its method is idempotent and its body (if any) was kept.
- **WebSocket** and other upgrades: after the upstream's `101`, bytes are copied both ways.

## Statuses the proxy answers itself

| Status | When |
|---|---|
| `400` | Malformed request, bad `Host`, bad target; counted by `reason` |
| `404` | No route matches |
| `408` | The request head did not arrive within `limits.header_read_timeout` |
| `413` | The body is larger than `limits.max_body_bytes` (the connection is closed) |
| `414`, `431` | The URI, or the whole head, is larger than `limits.max_header_bytes` |
| `429` | Rate limited, with `Retry-After` |
| `502` | The upstream sent an invalid response |
| `503` | Connect failure or reset before the response head (as Envoy's "upstream connect \
error or disconnect/reset before headers"; nginx would say 502); the app not ready after \
`hold_timeout` (with `Retry-After`); a circuit-breaker threshold (with \
`x-sidecar-overloaded: true`) |
| `504` | No response head within the route's timeout (or `timeouts.idle`) |

A failure after the response head was sent cuts the client's connection: the client sees a
truncated response, never a complete-looking one.

## Lifecycle

- Requests for the app (`app = true`, default for the upstream named `app`) wait while the
  readiness board says not ready, or while the app refuses connections, up to
  `hold_timeout`; then `503` with `Retry-After: 1`.
- On shutdown, before the app gets its stop signal: the listeners close, idle keep-alive
  connections close, responses carry `Connection: close`, in-flight requests finish up to
  `drain_timeout`, the rest are cut; then the app is stopped (`proxy_drained` in the log).
- Certificates are reloaded when their files change (checked every `reload_interval`), and
  at once on a config reload (SIGHUP or `POST /reload`).
- A config reload applies routes, upstreams, timeouts, retries, rate limits, `hold_timeout`
  and the access log in place: new requests use them, requests in flight finish on what they
  started with, pools of unchanged upstreams are kept (`proxy_reloaded` in the log). A change
  of the listeners (address, name, TLS files) or of `limits` or `trust_forwarded` restarts
  the plugin instead (listeners close and open again).

## Design and performance

The downstream side is an `asyncio.Protocol` parsing with `httptools`; the upstream side is a
pool of protocols parsing responses with `httptools`; header blocks are written as bytes. A
request without a body that finds a pooled connection is handled entirely in protocol
callbacks (no task, no future); everything else (new connections, bodies, retries, holding,
upgrades) runs as one task per request. Measured with `bench/proxy.py` (wrk, 2 cores): the
first version, a task per connection awaiting futures, spent about 190 µs of CPU per request;
the callback path brought that down by roughly a third, the rest being asyncio's own socket
handling and the parsers. An aiohttp server in front of the same pool was not pursued: the
aiohttp server alone costs about as much per request as the whole proxy path here, and the
minimal aiohttp proxy spends 400-570 µs per request.

On that path the engine's own Python work is measured apart from sockets and the event loop by
`bench/proxy.py --engine` (fake transports, the plugin's defaults): 41 µs per request
before the per-request work was cut, 35 µs after. What was cut: one clock read per
socket read instead of nine per request (the request's arrival time, the upstream's last read,
the response's end are reused for the balancer, the pool's idle deadline and the connection's
keep-alive deadline); header-name sets computed once per route instead of a union per request;
the `X-Forwarded-For`/`-Proto` lines built once per connection and listener; hosts validated
once (a small cache); the response written, the connection pooled and the request finished in
one function, without the generic hand-offs of the slow path; the upstream histogram bound to
its cluster; the access log's fields passed straight to the logger, rounded with `round(x *
1e6) / 1000` (`round(x, 3)` formats a decimal string and alone cost 1.4 µs). Connection
deadlines are one lazily re-armed timer each (`_timer`), so no request schedules or cancels a
loop timer. The rest is spread evenly over the parsers' callbacks (13 per request), the two
header blocks, the request ID and the metrics; the access log still costs about 4 µs per
request when the runtime's log level (`warning` by default) drops it, because the plugin API
offers no way to ask the logger whether `info` is on.

At one connection the added latency is dominated by what the engine does not control: two
wake-ups of the event loop per request (selector, callbacks) and the loopback `send` calls,
about 100 µs of user and 40 µs of system CPU per request in all at `-c1` against 35 µs of
engine work. In `bench/proxy.py` on a quiet machine the proxy adds 0.09 ms at p50 at one connection
(nginx as a proxy adds 0.05) and handles 12,100 requests/s at 32 connections, 3x the aiohttp
proxy, at 82 µs of CPU per request (before: 0.12 ms, 10,800 requests/s, 92 µs). Figures and
method: `bench/README.md`.
"""


def reference_page() -> str:
    """``docs/reference/proxy.md``: every table's keys, behaviour, statuses, metrics."""
    parts = ["# Proxy", "", _INTRO]
    for heading, what, struct in _SECTIONS:
        parts += [
            f"## {heading}",
            "",
            what,
            "",
            key_table(
                struct, TABLE_DOCS[struct], where=f"TABLE_DOCS[{struct.__name__}] (proxy/_docs.py)"
            ),
            "",
        ]
    parts += [_BEHAVIOUR, "## Metrics", "", metric_table(METRIC_DOCS), ""]
    return "\n".join(parts)
