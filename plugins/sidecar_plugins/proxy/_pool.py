"""Upstream clusters: endpoints with keep-alive pools, balancing, ejection, breaker and TLS.

An :class:`Endpoint` is one address and its idle :class:`UpstreamConnection` objects, most
recently used first. Idle connections wait in the pool for ``idle_timeout`` (default 4 s, below
the usual 5 s of app servers, so the app never closes a connection we are about to reuse). A
:class:`Cluster` owns its endpoints, round robin with outlier ejection, the circuit breaker
(whose connection and pending-request limits :meth:`Cluster.acquire` enforces), and TLS
origination.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable

from sidecar_runtime import Address

from ._breaker import CircuitBreaker
from ._config import UpstreamConfig, endpoint_address
from ._metrics import Histogram
from ._outlier import OutlierDetector, RoundRobin
from ._upstream import UpstreamConnection, UpstreamError
from ._upstream_tls import client_context, server_hostname

__all__ = ["Cluster", "Endpoint"]

CONNECT_FAILURE = "connect-failure"
OVERFLOW = "overflow"


class Endpoint:
    """One address of a cluster and its idle connections (most recently used first)."""

    def __init__(self, cluster: Cluster, name: str, address: Address) -> None:
        self.cluster = cluster
        self.name = name
        self.address = address
        self.idle: list[UpstreamConnection] = []
        self.open = 0

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put_idle(self, conn: UpstreamConnection) -> None:
        cluster = self.cluster
        if len(self.idle) >= cluster.max_idle or cluster.closing:
            conn.close()
            return
        # reusable means its response is complete: idle since the read that completed it
        conn.timer.set(conn.last_io + cluster.idle_timeout)
        self.idle.append(conn)
        if cluster.waiters:
            cluster.wake_one()

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: drop it from the pool and free its slot."""
        if conn in self.idle:
            self.idle.remove(conn)
        self.open -= 1
        self.cluster.breaker.release_connection()
        self.cluster.wake_one()

    async def connect(self, seconds: float) -> UpstreamConnection:
        cluster = self.cluster
        loop = cluster.loop
        address = self.address
        conn = UpstreamConnection(self)
        try:
            async with asyncio.timeout(seconds):
                if address.kind == "unix":
                    await loop.create_unix_connection(
                        lambda: conn,
                        address.path,
                        ssl=cluster.ssl_context,
                        server_hostname=cluster.sni(address),
                    )
                else:
                    await loop.create_connection(
                        lambda: conn,
                        address.host,
                        address.port,
                        ssl=cluster.ssl_context,
                        server_hostname=cluster.sni(address),
                    )
        except TimeoutError:
            msg = f"{self.name}: connect timeout"
            raise UpstreamError(CONNECT_FAILURE, msg) from None
        except (OSError, ssl.SSLError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            msg = f"{self.name}: {reason}"
            raise UpstreamError(CONNECT_FAILURE, msg) from None
        self.open += 1
        return conn


class Cluster:
    """A named upstream: endpoints, balancing, ejection, breaker, pool limits and TLS."""

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        *,
        connect_timeout: float,
        is_app: bool,
        where: str,
    ) -> None:
        self.name = name
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = config.connect_timeout or connect_timeout
        self.idle_timeout = config.idle_timeout
        self.max_idle = config.max_idle_per_endpoint
        self.is_app = is_app
        self.closing = False
        self.breaker = CircuitBreaker(config.circuit_breaker)
        self.detector = (
            OutlierDetector(config.outlier, config.endpoints)
            if config.outlier is not None
            else None
        )
        self.balancer = RoundRobin(config.endpoints, self.detector)
        self.ssl_context = (
            client_context(config.tls, where=f"{where}.tls") if config.tls is not None else None
        )
        self.endpoints = {
            text: Endpoint(self, text, endpoint_address(text)) for text in config.endpoints
        }
        self._single = self.endpoints[config.endpoints[0]] if len(config.endpoints) == 1 else None
        first = self.endpoints[config.endpoints[0]].address
        #: ``Host`` for clients that sent none (HTTP/1.0): the first endpoint.
        self.default_host = (str(first) if first.kind == "tcp" else "localhost").encode("latin-1")
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.on_connect_error: Callable[[], None] = lambda: None
        #: Seconds from a try's request head to the response head (set by the engine).
        self.head_time = Histogram()
        self.on_ejection: Callable[[], None] = lambda: None

    def sni(self, address: Address) -> str | None:
        if self.ssl_context is None or self.config.tls is None:
            return None
        return server_hostname(self.config.tls, address.host or "localhost")

    def pick(self, now: float) -> Endpoint:
        if self._single is not None:
            return self._single
        return self.endpoints[self.balancer.pick(now)]

    def report(self, endpoint: Endpoint, *, status: int | None, error: bool, now: float) -> None:
        detector = self.detector
        if detector is not None:
            before = detector.ejections_total
            detector.report(endpoint.name, status=status, error=error, now=now)
            if detector.ejections_total != before:
                self.on_ejection()

    @property
    def open_connections(self) -> int:
        return sum(e.open for e in self.endpoints.values())

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def acquire(self, endpoint: Endpoint, deadline: float) -> tuple[UpstreamConnection, bool]:
        """An open connection to ``endpoint`` and whether it was reused. Waits (as a pending
        request) while ``max_connections`` are open; raises :class:`UpstreamError`."""
        conn = endpoint.take_idle()
        if conn is not None:
            return conn, True
        pending = False
        try:
            while True:
                if self.breaker.try_connection():
                    try:
                        conn = await endpoint.connect(self.connect_timeout)
                    except UpstreamError:
                        self.breaker.release_connection()
                        self.on_connect_error()
                        raise
                    return conn, False
                if self._close_an_idle_connection():
                    continue
                if not pending:
                    if not self.breaker.try_pending():
                        threshold = "pending_requests"
                        raise UpstreamError(OVERFLOW, threshold)
                    pending = True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    threshold = "connections"
                    raise UpstreamError(OVERFLOW, threshold)
                waiter = self.loop.create_future()
                self.waiters.append(waiter)
                handle = self.loop.call_later(remaining, _expire, waiter)
                try:
                    await waiter
                finally:
                    handle.cancel()
                conn = endpoint.take_idle()
                if conn is not None:
                    return conn, True
        finally:
            if pending:
                self.breaker.release_pending()

    def _close_an_idle_connection(self) -> bool:
        """Free a connection slot held by an idle connection of another endpoint."""
        for endpoint in self.endpoints.values():
            if endpoint.idle:
                endpoint.idle.pop(0).close()
                return True
        return False

    def close(self) -> None:
        """Close every idle connection and keep no new ones."""
        self.closing = True
        for endpoint in self.endpoints.values():
            while endpoint.idle:
                endpoint.idle.pop().close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
