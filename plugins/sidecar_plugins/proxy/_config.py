"""``[plugins.proxy]``: listeners, upstream clusters, routes and the limits around them.

The shape follows what Envoy and Istio users know: listeners (``address`` + optional ``tls``)
carry routes (a VirtualService's ``http`` list: first match wins), routes point at named
upstream clusters (``endpoints``, ``tls`` for egress, ``circuit_breaker``, ``outlier``), and
``timeouts``, ``limits``, ``retry``, ``rate_limit`` and ``access_log`` apply to all of them.
Every check here is pure: a bad table is an error naming its key before anything starts.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from sidecar_runtime import Address, Duration, parse_address

from ._breaker import CircuitBreakerConfig
from ._outlier import OutlierConfig
from ._ratelimit import RateLimitConfig
from ._retry import RetryConfig
from ._tls import ServerTLSConfig
from ._upstream_tls import UpstreamTLSConfig

__all__ = [
    "AccessLogConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MatchConfig",
    "ProxyConfig",
    "RouteConfig",
    "TimeoutsConfig",
    "UpstreamConfig",
    "endpoint_address",
    "route_label",
]

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOST_RE = re.compile(r"(\*\.)?[A-Za-z0-9._-]+(:\d+)?|\*")

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


def _check_header_name(key: str, name: str) -> None:
    if not _TOKEN_RE.fullmatch(name):
        msg = f"{key}: invalid header name {name!r}"
        raise ValueError(msg)


def _check_header_value(key: str, name: str, value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        msg = f"{key}: header {name!r} has a line break or NUL in its value"
        raise ValueError(msg)


def endpoint_address(text: str) -> Address:
    """``HOST:PORT`` or ``unix:/path`` of an upstream endpoint; ValueError otherwise."""
    address = parse_address(text)
    if address.kind == "tcp" and (address.port == 0 or text.startswith(":")):
        msg = f"invalid endpoint {text!r}: needs a host and a port other than 0"
        raise ValueError(msg)
    return address


class MatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a request must look like for a route to apply (all given conditions must hold)."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    host: str | None = None
    headers: dict[str, str] = {}
    methods: list[str] = []

    def __post_init__(self) -> None:
        given = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            msg = f"use only one of prefix, path or regex (found: {', '.join(given)})"
            raise ValueError(msg)
        for key in ("prefix", "path"):
            value = getattr(self, key)
            if value is not None and not value.startswith("/"):
                msg = f"{key}: must start with '/', got {value!r}"
                raise ValueError(msg)
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                msg = f"regex: invalid regular expression {self.regex!r}: {err}"
                raise ValueError(msg) from None
        if self.host is not None and not _HOST_RE.fullmatch(self.host):
            msg = (
                "host: expected a host like 'api.example.com' or '*.example.com', "
                f"got {self.host!r}"
            )
            raise ValueError(msg)
        for name, value in self.headers.items():
            _check_header_name("headers", name)
            _check_header_value("headers", name, value)
        for method in self.methods:
            if not _TOKEN_RE.fullmatch(method) or method.upper() != method:
                msg = f"methods: expected methods in capitals like 'GET', got {method!r}"
                raise ValueError(msg)


class RouteConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One route: a match, the upstream cluster, rewrites, header edits, timeout and retries."""

    name: str | None = None
    match: MatchConfig = MatchConfig()
    upstream: str = "app"
    rewrite_prefix: str | None = None
    host_rewrite: str | None = None
    request_headers_add: dict[str, str] = {}
    request_headers_remove: list[str] = []
    response_headers_add: dict[str, str] = {}
    response_headers_remove: list[str] = []
    timeout: Duration | None = None
    retry: RetryConfig | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME_RE.fullmatch(self.name):
            msg = f"name: use 1-63 letters, digits, '_', '.' or '-', got {self.name!r}"
            raise ValueError(msg)
        if self.rewrite_prefix is not None:
            if not self.rewrite_prefix.startswith("/"):
                msg = f"rewrite_prefix: must start with '/', got {self.rewrite_prefix!r}"
                raise ValueError(msg)
            if self.match.prefix is None:
                msg = "rewrite_prefix: needs a match.prefix to replace"
                raise ValueError(msg)
        if self.host_rewrite is not None and not _HOST_RE.fullmatch(self.host_rewrite):
            msg = f"host_rewrite: expected a host like 'api.example.com', got {self.host_rewrite!r}"
            raise ValueError(msg)
        for key in ("request_headers_add", "response_headers_add"):
            for name, value in getattr(self, key).items():
                _check_header_name(key, name)
                _check_header_value(key, name, value)
        for key in ("request_headers_remove", "response_headers_remove"):
            for name in getattr(self, key):
                _check_header_name(key, name)
        if self.timeout is not None and self.timeout < 0:
            msg = f"timeout: must be >= 0 (0 = none), got {self.timeout}"
            raise ValueError(msg)


class UpstreamConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A cluster: endpoints balanced round-robin, optional TLS origination, its pool and guards."""

    endpoints: list[str]
    tls: UpstreamTLSConfig | None = None
    app: bool | None = None
    connect_timeout: Duration | None = None
    idle_timeout: Duration = Duration(4.0)
    max_idle_per_endpoint: NonNegative = 128
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    outlier: OutlierConfig | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            msg = "endpoints: at least one endpoint ('HOST:PORT' or 'unix:/path') is needed"
            raise ValueError(msg)
        for text in self.endpoints:
            try:
                endpoint_address(text)
            except ValueError as err:
                msg = f"endpoints: {err}"
                raise ValueError(msg) from None
        if len(set(self.endpoints)) != len(self.endpoints):
            msg = f"endpoints: listed twice: {self.endpoints}"
            raise ValueError(msg)
        if self.connect_timeout is not None and self.connect_timeout <= 0:
            msg = f"connect_timeout: must be > 0, got {self.connect_timeout}"
            raise ValueError(msg)
        if self.idle_timeout <= 0:
            msg = f"idle_timeout: must be > 0, got {self.idle_timeout}"
            raise ValueError(msg)


class ListenerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the proxy accepts connections: ``HOST:PORT`` or ``unix:/path``, plain or TLS."""

    address: str
    name: str | None = None
    tls: ServerTLSConfig | None = None
    routes: list[RouteConfig] | None = None

    def __post_init__(self) -> None:
        try:
            parse_address(self.address)
        except ValueError as err:
            msg = f"address: {err}"
            raise ValueError(msg) from None
        if self.name is not None and not _NAME_RE.fullmatch(self.name):
            msg = f"name: use 1-63 letters, digits, '_', '.' or '-', got {self.name!r}"
            raise ValueError(msg)


class TimeoutsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Upstream timeouts; the connect one may be set per upstream, response_headers per route."""

    connect: Duration = Duration(5.0)
    response_headers: Duration = Duration(15.0)
    idle: Duration = Duration(60.0)
    total: Duration = Duration(0.0)
    tunnel_idle: Duration = Duration(3600.0)

    def __post_init__(self) -> None:
        if self.connect <= 0:
            msg = f"connect: must be > 0, got {self.connect}"
            raise ValueError(msg)
        for key in ("response_headers", "idle", "total", "tunnel_idle"):
            if getattr(self, key) < 0:
                msg = f"{key}: must be >= 0 (0 = none), got {getattr(self, key)}"
                raise ValueError(msg)


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Downstream limits: header and body sizes, slow clients, idle keep-alive connections."""

    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 65536
    max_body_bytes: NonNegative = 0
    header_read_timeout: Duration = Duration(10.0)
    idle_timeout: Duration = Duration(60.0)
    max_requests_per_connection: NonNegative = 0
    retry_buffer_bytes: NonNegative = 65536
    max_connections: NonNegative = 0

    def __post_init__(self) -> None:
        if self.header_read_timeout <= 0:
            msg = f"header_read_timeout: must be > 0, got {self.header_read_timeout}"
            raise ValueError(msg)
        if self.idle_timeout <= 0:
            msg = f"idle_timeout: must be > 0, got {self.idle_timeout}"
            raise ValueError(msg)


class AccessLogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``request_finished`` events: on or off, and the share of successful requests logged."""

    enabled: bool = True
    sample: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.sample <= 1:  # also rejects nan
            msg = f"sample: must be within 0..1, got {self.sample}"
            raise ValueError(msg)


class ProxyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole ``[plugins.proxy]`` table."""

    listeners: list[ListenerConfig] = []
    upstreams: dict[str, UpstreamConfig] = {}
    routes: list[RouteConfig] = []
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    retry: RetryConfig = RetryConfig()
    rate_limit: RateLimitConfig | None = None
    access_log: AccessLogConfig = AccessLogConfig()
    hold_timeout: Duration = Duration(10.0)
    drain_timeout: Duration = Duration(5.0)
    trust_forwarded: bool = False

    def __post_init__(self) -> None:
        if not self.listeners:
            msg = "listeners: at least one listener is needed, e.g. [{address = '0.0.0.0:8443'}]"
            raise ValueError(msg)
        for name in self.upstreams:
            if not _NAME_RE.fullmatch(name):
                msg = f"upstreams: names use 1-63 letters, digits, '_', '.' or '-', got {name!r}"
                raise ValueError(msg)
        if (
            not self.routes
            and "app" not in self.upstreams
            and any(listener.routes is None for listener in self.listeners)
        ):
            known = ", ".join(sorted(self.upstreams)) or "none"
            msg = (
                f"routes: none given, and no upstream named 'app' to send everything to "
                f"(upstreams: {known})"
            )
            raise ValueError(msg)
        for key, routes in self._route_lists():
            for i, route in enumerate(routes):
                if route.upstream not in self.upstreams:
                    known = ", ".join(sorted(self.upstreams)) or "none"
                    msg = (
                        f"{key}[{i}].upstream: unknown upstream {route.upstream!r} "
                        f"(upstreams: {known})"
                    )
                    raise ValueError(msg)
        seen: set[str] = set()
        for i, listener in enumerate(self.listeners):
            address = str(parse_address(listener.address))
            if address in seen and not address.endswith(":0"):
                msg = f"listeners[{i}].address: {listener.address!r} is listed twice"
                raise ValueError(msg)
            seen.add(address)
        for key in ("hold_timeout", "drain_timeout"):
            if getattr(self, key) < 0:
                msg = f"{key}: must be >= 0, got {getattr(self, key)}"
                raise ValueError(msg)

    def _route_lists(self) -> list[tuple[str, list[RouteConfig]]]:
        lists = [("routes", self.routes)]
        for i, listener in enumerate(self.listeners):
            if listener.routes is not None:
                lists.append((f"listeners[{i}].routes", listener.routes))
        return lists

    def effective_routes(self, listener: ListenerConfig | None) -> list[RouteConfig]:
        """A listener's routes: its own, else the top-level ones, else everything to ``app``."""
        if listener is not None and listener.routes is not None:
            return listener.routes
        return self.routes or [RouteConfig()]


def route_label(route: RouteConfig, index: int) -> str:
    """The route's name for metrics and logs: ``name``, else ``route<index>``."""
    return route.name if route.name is not None else f"route{index}"
