"""The upstream connection: an asyncio protocol parsing responses with httptools.

An :class:`UpstreamConnection` carries one exchange at a time. The forwarder writes the request
head, awaits :attr:`UpstreamConnection.head` (the response head arrived, or an error), then
attaches a sink that gets the response body as it is parsed, straight from ``data_received``,
and awaits the end of the message. Head, idle and total deadlines run on one lazy timer; a
failure becomes an :class:`UpstreamError` whose kind the retry policy reads. When the exchange
is over the connection goes back to its endpoint's pool (``_pool``) or is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from ._timer import LazyTimer

if TYPE_CHECKING:
    from ._pool import Endpoint

__all__ = ["UpstreamConnection", "UpstreamError"]

_WRITE_HIGH_WATER = 256 * 1024


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
