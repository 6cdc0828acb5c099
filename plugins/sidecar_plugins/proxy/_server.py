"""Downstream HTTP/1.1: one :class:`asyncio.Protocol` per client connection, parsed by httptools.

Bytes are parsed as they arrive; a complete request head becomes a :class:`Request` that one
task per connection hands to the forwarder, in order (pipelined requests queue up). The request
body streams through :class:`RequestBody` to whatever the forwarder attaches, with reads paused
while nothing consumes it. Limits answer here: 400 for malformed requests, 408 for a request
head that does not arrive within ``header_read_timeout`` (slowloris), 414/431 for oversized
heads, 413 for bodies over ``max_body_bytes`` (also chunked ones, once exceeded). TLS is done
with ``loop.start_tls`` on the accepted socket, so a failed handshake is counted and logged at
debug level instead of reaching asyncio's exception handler.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools

from ._config import LimitsConfig
from ._request import BadRequest, Request, RequestBody, parse_head, simple_response
from ._timer import LazyTimer
from ._x509 import PeerIdentity, peer_identity

__all__ = ["Connection", "Handler", "Listener", "Producer", "Request", "simple_response"]

_MAX_PIPELINED = 8
_PROTO_HTTP = b"x-forwarded-proto: http\r\n"


class Producer(Protocol):
    """What the connection pauses when its client reads slower than the upstream writes."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


Handler = Callable[["Connection", Request], Coroutine[Any, Any, None] | None]


@dataclass(eq=False)
class Listener:
    """What every connection of one listener shares."""

    name: str
    handler: Handler
    limits: LimitsConfig
    tls: ssl.SSLContext | None = None
    on_bad_request: Callable[[str], None] = lambda reason: None
    on_tls_error: Callable[[str], None] = lambda detail: None
    log: Any = None
    router: Any = None
    connections: set[Connection] = field(default_factory=set)
    draining: bool = False

    @property
    def forwarded_proto(self) -> bytes:
        """The ``X-Forwarded-Proto`` line the proxy adds for this listener's requests."""
        return b"x-forwarded-proto: https\r\n" if self.tls is not None else _PROTO_HTTP


class Connection(asyncio.Protocol):
    """One client connection: parsing, limits, ordering of pipelined requests, writing."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.peer_bytes = b""
        self.forwarded_for = b"x-forwarded-for: \r\n"  # with the peer, once connected
        self.ssl_object: ssl.SSLObject | None = None
        self.identity: PeerIdentity | None = None
        self.closed = False
        self.requests = 0
        self.bytes_out = 0
        self.write_paused = False
        self.producer: Producer | None = None
        self.on_lost: Callable[[], None] | None = None
        self.tunnel: Callable[[bytes], None] | None = None
        self.close_after = False
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Request | None = None  # the request being parsed
        self._url = b""
        self._head_bytes = 0
        self._head_started = 0.0
        self._now = 0.0  # when the bytes being parsed arrived
        self._in_head = False
        self._busy = False  # a request is being handled
        self._error: bytes | None = None  # a response to send once the current one is done
        self.pause_reasons: set[str] = set()  # why reading is paused (empty: it is not)
        self._upgrade_rest = b""
        self._upgraded = False
        self.timer = LazyTimer(self.loop, self._on_timeout)

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        listener = self.listener
        limit = self.limits.max_connections
        if limit and len(listener.connections) >= limit:
            listener.on_bad_request("too_many_connections")
            self.closed = True
            transport.abort()
            return
        listener.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unix"
        self.peer_bytes = self.peer.encode("latin-1")
        self.forwarded_for = b"x-forwarded-for: %s\r\n" % self.peer_bytes
        if self.listener.tls is not None and self.transport is None:
            transport.pause_reading()
            self.transport = transport
            self._task = self.loop.create_task(self._handshake(transport))
            return
        self._start(transport)

    def _start(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.timer.set(time.monotonic() + self.limits.idle_timeout)
        if self.listener.draining:
            self.close()

    async def _handshake(self, raw: asyncio.Transport) -> None:
        context = self.listener.tls
        assert context is not None
        try:
            tls = await self.loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self.limits.header_read_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as err:
            self.listener.on_tls_error(_tls_reason(err))
            if self.listener.log is not None:
                self.listener.log.debug("tls_handshake_failed", client=self.peer, error=str(err))
            raw.abort()
            self._lost()
            return
        finally:
            self._task = None
        if tls is None:  # the client went away during the handshake
            self._lost()
            return
        self.ssl_object = tls.get_extra_info("ssl_object")
        self.identity = peer_identity(self.ssl_object)
        self._start(tls)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.listener.connections.discard(self)
        if self._current is not None and self._current.body is not None:
            self._current.body.fail(499)
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.producer is not None:
            self.producer.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.producer is not None:
            self.producer.resume_reading()

    def pause_reading_for(self, reason: str) -> None:
        if not self.pause_reasons and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.pause_reasons.add(reason)

    def resume_reading_for(self, reason: str) -> None:
        if reason in self.pause_reasons:
            self.pause_reasons.discard(reason)
            if not self.pause_reasons and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self.bytes_out += len(data)
            self.transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        """One chunk of a ``transfer-encoding: chunked`` body."""
        if data and not self.closed:
            assert self.transport is not None
            self.bytes_out += len(data)
            if len(data) < 16384:
                self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))

    def close(self) -> None:
        """Close after the buffered writes are flushed."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._lost()

    @property
    def idle(self) -> bool:
        """No request is being read or handled (a keep-alive connection between requests)."""
        return not self._busy and not self._in_head and not self._queue

    # -- reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self._upgraded:
            self._upgrade_rest += data  # bytes for the upgraded protocol, sent once it is up
            return
        self._now = now = time.monotonic()
        if not self._in_head and self._current is None:
            self._in_head = True
            self._head_bytes = 0
            self._head_started = now
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            self._upgrade_rest = data[exc.args[0] :]
            self.pause_reading_for("upgrade")
        except BadRequest as exc:
            self._bad(exc.status, exc.reason)
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self._bad(cause.status, cause.reason)
            else:
                self._bad(400, "malformed")
            return
        except httptools.HttpParserError:
            self._bad(400, "malformed")
            return
        if self._in_head:  # a head still incomplete: it must arrive in header_read_timeout
            if self._head_bytes > self.limits.max_header_bytes:
                self._bad(431, "header_too_large")
            else:
                self.timer.set(self._head_started + self.limits.header_read_timeout)

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        request = self._current = Request()
        request.started = self._now

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_header_bytes:
            raise BadRequest(414, "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._current
        if request is None or not self._in_head:
            return  # trailers of a chunked body: dropped (re-framed)
        request.headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        self._in_head = False
        parser = self.parser
        if self._head_bytes > self.limits.max_header_bytes:
            size = len(self._url) + sum(len(n) + len(v) + 4 for _, n, v in request.headers)
            if size > self.limits.max_header_bytes:
                raise BadRequest(431, "header_too_large")
        method = request.method_bytes = parser.get_method()
        request.method = method.decode("ascii", "replace")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        parse_head(request, self._url)
        limit = self.limits.max_body_bytes
        if limit and request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, "body_too_large")
        if request.content_length or request.chunked:
            request.body = RequestBody(self, self.limits.retry_buffer_bytes)
        self._queue.append(request)
        if len(self._queue) > _MAX_PIPELINED:
            self.pause_reading_for("pipeline")
        if not self._busy:
            self._dispatch()

    def on_body(self, chunk: bytes) -> None:
        request = self._current
        if request is None or request.body is None:
            return
        limit = self.limits.max_body_bytes
        if limit and request.body.size + len(chunk) > limit:
            raise BadRequest(413, "body_too_large")
        request.body.feed(chunk)

    def on_message_complete(self) -> None:
        request = self._current
        self._current = None
        if request is not None and request.body is not None:
            request.body.finish()

    def _bad(self, status: int, reason: str) -> None:
        """Answer a malformed or oversized request (after the one in flight) and close."""
        self.listener.on_bad_request(reason)
        self.pause_reading_for("error")
        self._in_head = False
        self.timer.set(None)
        self.close_after = True
        current, self._current = self._current, None
        if current is not None and current.body is not None and not current.body.complete:
            current.body.fail(status)  # its handler answers (or has answered) this request
            return
        body = {400: b"bad request\n", 408: b"request timeout\n"}.get(
            status, reason.encode() + b"\n"
        )
        response = simple_response(status, body, close=True)
        if self._busy or self._queue:
            self._error = response
            return
        self.write(response)
        self.close()

    def _on_timeout(self) -> None:
        if self._busy or self.closed:
            return
        if self._in_head and self._head_bytes:
            self._bad(408, "header_timeout")
        else:
            self.close()  # an idle keep-alive connection, or one that never sent a byte

    # -- serving ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand the next queued request to the handler (one at a time, in order)."""
        queue = self._queue
        while queue and not self._busy and not self.closed:
            request = queue.popleft()
            if self.pause_reasons:
                self.resume_reading_for("pipeline")
            self._busy = True
            self.requests += 1
            try:
                pending = self.listener.handler(self, request)
            except Exception as err:  # a bug must not take the listener down
                self._failed(err)
                return
            if pending is not None:
                self._task = self.loop.create_task(self._complete(pending, request))
                return
            # else the handler calls finish(request) once the response is out

    def adopt(self, pending: Coroutine[Any, Any, None], request: Request) -> None:
        """Let a coroutine finish the request the handler began synchronously."""
        self._task = self.loop.create_task(self._complete(pending, request))

    async def _complete(self, pending: Coroutine[Any, Any, None], request: Request) -> None:
        try:
            await pending
        except Exception as err:
            self._failed(err)
            return
        finally:
            self._task = None
        self.finish(request)

    def _failed(self, err: BaseException) -> None:
        if self.listener.log is not None:
            self.listener.log.error("proxy_connection_failed", error=repr(err), exc_info=err)
        self._busy = False
        self.abort()

    def finish(self, request: Request, now: float | None = None) -> None:
        """The response to ``request`` is complete (at ``now``, loop time, when the caller
        knows it): keep-alive bookkeeping, then the next one."""
        self._busy = False
        self.producer = None
        self.on_lost = None
        if not self._finish_request(request, now) and self._queue:
            self._dispatch()

    def _finish_request(self, request: Request, now: float | None) -> bool:
        """Keep-alive bookkeeping after a response; True when the connection is done."""
        if self.closed:
            return True
        if self._error is not None and not self._queue:
            self.write(self._error)
            self.close()
            return True
        body = request.body
        max_requests = self.limits.max_requests_per_connection
        if (
            self.close_after
            or not request.keep_alive
            or request.upgrade
            or self.listener.draining
            or (body is not None and not body.complete)
            or (max_requests and self.requests >= max_requests)
        ):
            self.close()
            return True
        if self._in_head:
            self.timer.set(self._head_started + self.limits.header_read_timeout)
        elif not self._queue:
            self.timer.set((now or time.monotonic()) + self.limits.idle_timeout)
        return False

    def wants_close(self, request: Request) -> bool:
        """Whether the response to ``request`` will be the last one on this connection."""
        max_requests = self.limits.max_requests_per_connection
        return (
            self.close_after
            or not request.keep_alive
            or self.listener.draining
            or bool(max_requests and self.requests >= max_requests)
        )

    def take_upgrade_bytes(self) -> bytes:
        """Bytes the client sent after an upgrade request's head; reading resumes for the tunnel."""
        data, self._upgrade_rest = self._upgrade_rest, b""
        return data


def _tls_reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, ssl.SSLError):
        return (err.reason or "ssl_error").lower()
    return "connection_error"
