"""Routes compiled for the request path: first match wins, like an Istio VirtualService.

A :class:`Route` is its config turned into what each request needs without work: the match as
a few comparisons, header edits as sets of lower-case names and a pre-built header block, the
retry policy and budget, and the upstream cluster it sends to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ._config import RouteConfig, route_label
from ._pool import Cluster
from ._retry import RetryBudget, RetryConfig, RetryPolicy
from ._server import Request

__all__ = ["Route", "Router"]


class Route:
    """One compiled route."""

    __slots__ = (
        "budget",
        "cluster",
        "config",
        "exact",
        "headers",
        "host",
        "host_rewrite",
        "host_suffix",
        "idempotent",
        "methods",
        "name",
        "prefix",
        "regex",
        "request_add",
        "request_remove",
        "response_add",
        "response_remove",
        "retry",
        "rewrite",
        "stats",
        "timeout",
    )

    def __init__(
        self,
        config: RouteConfig,
        index: int,
        cluster: Cluster,
        *,
        default_retry: RetryConfig,
        default_timeout: float,
    ) -> None:
        match = config.match
        self.config = config
        self.name = route_label(config, index)
        self.cluster = cluster
        self.prefix = match.prefix if match.prefix not in (None, "/") else None
        self.exact = match.path
        self.regex = re.compile(match.regex) if match.regex is not None else None
        host = match.host.lower() if match.host is not None else None
        self.host_suffix = host[1:] if host is not None and host.startswith("*.") else None
        self.host = None if host == "*" or self.host_suffix is not None else host
        self.headers = [
            (name.lower().encode("latin-1"), None if value == "*" else value.encode("latin-1"))
            for name, value in match.headers.items()
        ]
        self.methods = frozenset(match.methods) if match.methods else None
        self.rewrite = (
            (match.prefix, config.rewrite_prefix) if config.rewrite_prefix is not None else None
        )
        self.host_rewrite = (
            config.host_rewrite.encode("latin-1") if config.host_rewrite is not None else None
        )
        self.request_remove = frozenset(
            n.lower().encode("latin-1") for n in config.request_headers_remove
        )
        self.request_add = b"".join(
            b"%s: %s\r\n" % (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in config.request_headers_add.items()
        )
        self.response_remove = frozenset(
            n.lower().encode("latin-1") for n in config.response_headers_remove
        ) | frozenset(n.lower().encode("latin-1") for n in config.response_headers_add)
        self.response_add = b"".join(
            b"%s: %s\r\n" % (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in config.response_headers_add.items()
        )
        retry = config.retry or default_retry
        self.retry = RetryPolicy(retry)
        self.idempotent = frozenset(retry.methods)
        self.budget = RetryBudget.from_config(retry)
        self.timeout = config.timeout if config.timeout is not None else default_timeout
        self.stats: object = None  # the metrics' pre-bound children, set by the engine

    def matches(self, request: Request) -> bool:
        path = request.path
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.exact is not None and path != self.exact:
            return False
        if self.regex is not None and self.regex.fullmatch(path) is None:
            return False
        if self.host is not None or self.host_suffix is not None:
            host = _strip_port(request.host).lower()
            if self.host is not None:
                if host != self.host and _strip_port(self.host) != host:
                    return False
            elif not host.endswith(self.host_suffix or ""):
                return False
        if self.methods is not None and request.method not in self.methods:
            return False
        for lname, expected in self.headers:
            value = request.header(lname)
            if value is None or (expected is not None and value != expected):
                return False
        return True

    def rewrite_path(self, path: str) -> str:
        """The path with the matched prefix replaced (``rewrite_prefix``)."""
        if self.rewrite is None:
            return path
        prefix, replacement = self.rewrite
        assert prefix is not None
        rest = path[len(prefix) :]
        if replacement.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        elif not replacement.endswith("/") and rest and not rest.startswith("/"):
            rest = "/" + rest
        return replacement + rest


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


class Router:
    """A listener's routes in order."""

    def __init__(
        self,
        configs: Sequence[RouteConfig],
        clusters: Mapping[str, Cluster],
        *,
        default_retry: RetryConfig,
        default_timeout: float,
        shared: dict[int, Route] | None = None,
    ) -> None:
        shared = {} if shared is None else shared
        self.routes: list[Route] = []
        for i, config in enumerate(configs):
            key = id(config)
            if key not in shared:  # the top-level routes are compiled once for all listeners
                shared[key] = Route(
                    config,
                    i,
                    clusters[config.upstream],
                    default_retry=default_retry,
                    default_timeout=default_timeout,
                )
            self.routes.append(shared[key])

    def match(self, request: Request) -> Route | None:
        for route in self.routes:
            if route.matches(request):
                return route
        return None
