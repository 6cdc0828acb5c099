"""The forwarder's state and how requests end without an upstream response.

:class:`Bookkeeping` is the base of :class:`~._forward.Forwarder`: what it forwards with
(clusters, timeouts, rate limiter, access log; swapped by a config reload while requests in
flight keep theirs), the requests in flight and draining, the responses the proxy writes itself
(overflow, internal error, and those the request path chooses), and the record of every finished
request: route metrics and the access log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._accesslog import AccessLog, Outcome
from ._config import TimeoutsConfig
from ._gate import Gate
from ._metrics import ProxyMetrics, RouteStats
from ._pool import Cluster
from ._ratelimit import RateLimiter
from ._router import Route
from ._server import Connection, Request, simple_response
from ._upstream import UpstreamConnection

__all__ = ["Bookkeeping"]

_OVERLOADED = [(b"x-sidecar-overloaded", b"true")]


class Bookkeeping:
    """The forwarder's configuration, in-flight count, own responses and request records."""

    def __init__(
        self,
        *,
        clusters: Mapping[str, Cluster],
        timeouts: TimeoutsConfig,
        limiter: RateLimiter | None,
        gate: Gate,
        hold_timeout: float,
        trust_forwarded: bool,
        metrics: ProxyMetrics,
        access_log: AccessLog,
        log: Any,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.clusters = clusters
        self.timeouts = timeouts
        self.limiter = limiter
        self.gate = gate
        self.hold_timeout = hold_timeout
        self.trust_forwarded = trust_forwarded
        self.metrics = metrics
        self.access_log = access_log
        self.log = log
        self.in_flight = 0
        self.draining = False
        self._drained: asyncio.Future[None] | None = None
        self._unrouted = metrics.route_stats("unrouted")
        self._retry_children = {name: metrics.retries.labels(name) for name in clusters}
        for name, cluster in clusters.items():
            cluster.head_time = metrics.upstream_histogram(name)
            cluster.on_connect_error = metrics.connect_errors.labels(name).inc
            cluster.on_ejection = metrics.ejections.labels(name).inc

    def reconfigure(
        self,
        *,
        clusters: Mapping[str, Cluster],
        timeouts: TimeoutsConfig,
        limiter: RateLimiter | None,
        hold_timeout: float,
        access_log: AccessLog,
    ) -> None:
        """A config reload: what new requests use (requests in flight keep theirs)."""
        self.clusters = clusters
        self.timeouts = timeouts
        self.limiter = limiter
        self.hold_timeout = hold_timeout
        self.access_log = access_log
        metrics = self.metrics
        for name, cluster in clusters.items():  # new clusters, or new configs of old names
            cluster.head_time = metrics.upstream_histogram(name)
            cluster.on_connect_error = metrics.connect_errors.labels(name).inc
            cluster.on_ejection = metrics.ejections.labels(name).inc
            if name not in self._retry_children:
                self._retry_children[name] = metrics.retries.labels(name)

    def bind(self, routes: Sequence[Route]) -> None:
        """Give each route its metric accumulators."""
        for route in routes:
            if route.stats is None:
                route.stats = self.metrics.route_stats(route.name)

    async def wait_drained(self) -> None:
        """Return once no request is in flight."""
        if self.in_flight:
            self._drained = self.loop.create_future()
            await self._drained

    def _finish(self, conn: Connection, req: Request, route: Route | None, out: Outcome) -> None:
        conn.finish(req, self._record(conn, req, route, out))

    def _internal_error(self, conn: Connection, req: Request, out: Outcome, err: Exception) -> None:
        self.log.error("proxy_request_failed", error=repr(err), exc_info=err)
        out.detail = "internal_error"
        if out.status == 0 and not conn.closed:
            self._reply(conn, req, out, 500, b"internal proxy error\n")
        else:
            conn.abort()

    def _record(self, conn: Connection, req: Request, route: Route | None, out: Outcome) -> float:
        """Metrics and the access log for a finished request; returns the time it finished."""
        self.in_flight -= 1
        if conn.closed and out.status == 0:
            out.status = 499  # the client left before the response began
        now = time.monotonic()
        duration = now - req.started
        stats = route.stats if route is not None else self._unrouted
        assert isinstance(stats, RouteStats)
        stats.record(req.method, out.status, duration)
        access_log = self.access_log
        if access_log.enabled:
            body = req.body
            if body is not None:
                out.bytes_in = body.size
            identity = conn.identity
            access_log.emit(
                method=req.method,
                path=req.path,
                outcome=out,
                bytes_out=conn.bytes_out,
                duration=duration,
                client=conn.peer,
                identity=identity.principal() if identity is not None else None,
            )
        conn.bytes_out = 0
        drained = self._drained
        if drained is not None and not self.in_flight and not drained.done():
            drained.set_result(None)
        return now

    def _reply(
        self,
        conn: Connection,
        req: Request,
        out: Outcome,
        status: int,
        body: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A response generated by the proxy."""
        out.status = status
        close = conn.wants_close(req) or (req.body is not None and not req.body.complete)
        if close:
            conn.close_after = True
        conn.write(simple_response(status, body, close=close, extra=extra or []))

    def _overflow(
        self, conn: Connection, req: Request, out: Outcome, cluster: Cluster, threshold: str
    ) -> None:
        self.metrics.overflows.labels(cluster.name, threshold).inc()
        out.detail = f"overflow_{threshold}"
        self._reply(conn, req, out, 503, b"upstream overloaded\n", _OVERLOADED)

    def observe_head(
        self, route: Route, upstream: UpstreamConnection, elapsed: float, out: Outcome
    ) -> None:
        out.upstream_ms = elapsed * 1000
        route.cluster.head_time.observe(elapsed)
        if route.cluster.detector is not None:
            route.cluster.report(
                upstream.endpoint, status=upstream.status, error=False, now=time.monotonic()
            )
