"""Upstream clusters: keep-alive pools of asyncio protocols parsing responses with httptools.

An :class:`UpstreamConnection` carries one exchange at a time. The forwarder writes the request
head, awaits :attr:`UpstreamConnection.head` (the response head arrived, or an error), then
attaches a sink that gets the response body as it is parsed, straight from ``data_received``,
and awaits the end of the message. Idle connections wait in their endpoint's pool for
``idle_timeout`` (default 4 s, below the usual 5 s of app servers, so the app never closes a
connection we are about to reuse). A :class:`Cluster` owns its endpoints, round robin with
outlier ejection, the circuit breaker, and TLS origination.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from sidecar_runtime import Address

from ._breaker import CircuitBreaker
from ._config import UpstreamConfig, endpoint_address
from ._metrics import Histogram
from ._outlier import OutlierDetector, RoundRobin
from ._timer import LazyTimer
from ._tls import client_context, server_hostname

__all__ = ["Cluster", "Endpoint", "UpstreamConnection", "UpstreamError"]

_WRITE_HIGH_WATER = 256 * 1024
CONNECT_FAILURE = "connect-failure"
OVERFLOW = "overflow"


class UpstreamError(Exception):
    """Raised when an upstream try fails; ``kind`` is what the retry policy and logs call it:
    ``connect-failure``, ``reset``, ``timeout``, ``protocol`` or ``overflow``."""

    def __init__(self, kind: str, detail: str = "", *, before_response: bool = True) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.before_response = before_response


class UpstreamConnection(asyncio.Protocol):
    """One connection to an endpoint; one request/response exchange at a time."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.cluster.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.uses = 0
        self.timer = LazyTimer(self.loop, self._on_timer)
        self.downstream: Any = None  # the client connection to pause while we cannot write
        self.tunnel: Callable[[bytes], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.watcher: Any = None  # instead of the futures: an object whose progress() is called
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.active = False
        self.head: asyncio.Future[None] | None = None
        self.done: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.got_bytes = False
        self.head_done = False
        self.complete = False
        self.head_request = False
        self.upgraded = False
        self.upgrade_rest = b""
        self.sink: Callable[[bytes], None] | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.body_bytes = 0
        self.request_done = True
        self._informational = False
        self._skip_body = False
        self._head_deadline: float | None = None
        self._total_deadline: float | None = None
        self._idle = 0.0
        self.last_io = 0.0
        self.reading_paused = False

    # -- transport callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.endpoint.forget(self)
        if self.on_close is not None:
            self.on_close()
        if not self.active:
            return
        if self.head_done and not self.complete and self._close_delimited():
            self._finish()
            self._notify()
            return
        detail = str(exc) if exc else "connection closed by the upstream"
        self._fail(UpstreamError("reset", detail, before_response=not self.got_bytes))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.pause_reading_for("upstream")

    def resume_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.resume_reading_for("upstream")

    def pause_reading(self) -> None:
        """Called when the client cannot take the response body as fast as it comes."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if not self.active:  # bytes while idle: the upstream is confused; never reuse this
            self.close()
            return
        self.got_bytes = True
        self.last_io = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.status == 101:
                self.upgraded = True
                self.upgrade_rest = data[exc.args[0] :]
                self._resolve_head()
            else:
                self._fail(UpstreamError("protocol", "unexpected upgrade"))
            return
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("protocol", str(exc) or "malformed response"))
            return
        if self._skip_body and self.head_done:  # a response to HEAD ends with its head
            self.parser = httptools.HttpResponseParser(self)
            self._finish()
        if self.watcher is not None and (self.head_done or self.error is not None):
            self.watcher.progress()

    # -- parser callbacks --------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue and friends: wait for the final response
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_request:
            self._skip_body = True
        if status != 101:  # _resolve_head(), inlined
            self.head_done = True
            self._head_deadline = None
            head = self.head
            if head is not None and not head.done():
                head.set_result(None)

    def on_body(self, chunk: bytes) -> None:
        if self._skip_body:
            self.keep_alive = False  # bytes after a HEAD response: do not trust this connection
            return
        self.body_bytes += len(chunk)
        sink = self.sink
        if sink is not None:
            sink(chunk)
            return
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.pending_size > _WRITE_HIGH_WATER:
            self.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if not self._skip_body:
            self._finish()

    # -- the exchange ------------------------------------------------------------------------------

    def begin(
        self,
        head: bytes,
        *,
        head_request: bool,
        head_timeout: float,
        idle_timeout: float,
        total_deadline: float | None,
        now: float,
        watcher: Any = None,
    ) -> None:
        """Send a request head and start waiting for the response (timeouts in seconds, 0 = off).

        Progress is reported through :attr:`head` and :meth:`wait_done` futures, or, with a
        ``watcher``, by calling ``watcher.progress()`` whenever something happened."""
        self._reset_exchange()
        self.active = True
        self.uses += 1
        self.head_request = head_request
        self.watcher = watcher
        if watcher is None:
            self.head = self.loop.create_future()
        self._head_deadline = now + head_timeout if head_timeout else None
        self._total_deadline = total_deadline
        self._idle = idle_timeout
        self.last_io = now
        self.timer.set(self._next_deadline(now))
        assert self.transport is not None
        self.transport.write(head)

    def send_body(self, chunk: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.last_io = time.monotonic()
            self.transport.write(chunk)

    def send_chunk(self, chunk: bytes) -> None:
        """One chunk of a ``transfer-encoding: chunked`` request body."""
        if chunk and not self.closed and self.transport is not None:
            self.last_io = time.monotonic()
            if len(chunk) < 16384:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))

    def end_chunked(self) -> None:
        self.send_body(b"0\r\n\r\n")
        self.request_done = True

    def end_body(self) -> None:
        self.request_done = True

    def wait_done(self) -> asyncio.Future[None] | None:
        """A future for the end of the response; None when it has ended already."""
        if self.complete or self.error is not None:
            return None
        self.done = self.loop.create_future()
        return self.done

    def take_pending(self) -> bytes:
        """The response body received so far, taken (the caller sends it)."""
        pending, self.pending, self.pending_size = self.pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return b"".join(pending)

    def stream_to(self, sink: Callable[[bytes], None]) -> None:
        """Give the body received so far, and all that follows, to ``sink``."""
        pending, self.pending, self.pending_size = self.pending, [], 0
        for chunk in pending:
            sink(chunk)
        self.sink = sink
        if not self.closed and (self.downstream is None or not self.downstream.write_paused):
            self.resume_reading()

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.request_done
            and not self.closed
            and self.error is None
            and not self.upgraded
        )

    def release(self) -> None:
        """The exchange is over: back to the pool when clean, else closed."""
        reuse = (
            self.complete
            and self.keep_alive
            and self.request_done
            and not self.closed
            and self.error is None
            and not self.upgraded
        )
        self.active = False
        self.sink = None
        self.downstream = None
        self.watcher = None
        self.head = self.done = None
        if reuse:
            self.endpoint.put_idle(self)
        else:
            self.close()

    def abort_exchange(self, error: UpstreamError) -> None:
        """Give up on the exchange in flight (the client left, or a deadline passed)."""
        self._fail(error)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        else:
            self.connection_lost(None)

    def _close_delimited(self) -> bool:
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length" or (
                lname == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return not self.head_request and self.status not in (204, 304)

    def _resolve_head(self) -> None:
        self.head_done = True
        self._head_deadline = None
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def _finish(self) -> None:
        self.complete = True  # the timer stays: release() re-arms it for the pool
        self.keep_alive = self.keep_alive and not self.closed
        if not self.head_done:
            self._resolve_head()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is not None or self.complete:
            return
        self.error = error
        self.timer.set(None)
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        if not self.closed:
            self.close()
        self._notify()

    def _notify(self) -> None:
        if self.watcher is not None:
            self.watcher.progress()

    def _next_deadline(self, now: float) -> float | None:
        deadline = self._head_deadline
        total = self._total_deadline
        if total is not None and (deadline is None or total < deadline):
            deadline = total
        if self._idle:
            idle = self.last_io + self._idle
            if deadline is None or idle < deadline:
                deadline = idle
        return deadline

    def _on_timer(self) -> None:
        now = time.monotonic()
        if not self.active:
            self.close()  # idle in the pool for idle_timeout
            return
        if self._head_deadline is not None and now >= self._head_deadline:
            self._fail(UpstreamError("timeout", "no response headers in time"))
        elif self._total_deadline is not None and now >= self._total_deadline:
            self._fail(
                UpstreamError("timeout", "total timeout", before_response=not self.head_done)
            )
        elif self._idle and now >= self.last_io + self._idle:
            self._fail(UpstreamError("timeout", "idle timeout", before_response=not self.head_done))
        else:
            self.timer.set(self._next_deadline(now))


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
