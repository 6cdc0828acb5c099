"""The synchronous path: a request without a body on a pooled connection, driven by the
upstream connection's callbacks, with no task and no future.

Anything unusual (an error before the response head, a status the route may retry) hands the
request to the forwarder's slow path with what happened so far. :func:`send_head` and
:func:`end_response` are shared with the slow path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._accesslog import Outcome
from ._headers import request_head, response_head
from ._upstream import UpstreamConnection, UpstreamError

if TYPE_CHECKING:
    from ._forward import Forwarder
    from ._request import Request
    from ._router import Route
    from ._server import Connection

__all__ = ["FastExchange", "end_response", "send_head"]


def send_head(
    conn: Connection, req: Request, route: Route, upstream: UpstreamConnection, out: Outcome
) -> bool:
    """Write the response head with the body received so far (all of it, when complete, in
    one write); return whether the body is sent chunked."""
    head, chunked = response_head(conn, req, route, upstream)
    out.status = upstream.status
    pending = upstream.take_pending()
    if chunked and pending:
        pending = b"%x\r\n%b\r\n" % (len(pending), pending)
    if upstream.complete and chunked:
        conn.write(head + pending + b"0\r\n\r\n")
    else:
        conn.write(head + pending)
    return chunked


def end_response(
    conn: Connection, req: Request, upstream: UpstreamConnection, out: Outcome
) -> None:
    """After the body: cut the client off if the upstream failed, free the connection."""
    if upstream.error is not None or conn.closed:
        error = upstream.error
        if error is not None:
            out.detail = f"{error.kind} after the response began: {error.detail}"
        conn.abort()  # the client must see a cut response, not a complete one
    body = req.body
    if body is not None:
        body.detach()
        if not body.complete:
            conn.close_after = True
    upstream.release()
    conn.resume_reading_for("upstream")


class FastExchange:
    """A request without a body on a pooled connection, driven by callbacks from the upstream
    connection: no task, no future. Anything unusual (an error, a status to retry) hands the
    request to the slow path with what happened so far."""

    __slots__ = (
        "chunked",
        "conn",
        "done",
        "fw",
        "head",
        "head_sent",
        "out",
        "req",
        "route",
        "sent_at",
        "upstream",
    )

    def __init__(
        self,
        fw: Forwarder,
        conn: Connection,
        req: Request,
        route: Route,
        out: Outcome,
        upstream: UpstreamConnection,
    ) -> None:
        self.fw = fw
        self.conn = conn
        self.req = req
        self.route = route
        self.out = out
        self.upstream = upstream
        self.head = b""
        self.head_sent = False
        self.chunked = False
        self.done = False
        self.sent_at = 0.0

    def start(self) -> None:
        fw, conn, req, route, upstream = self.fw, self.conn, self.req, self.route, self.upstream
        self.head = request_head(
            conn, req, route, self.out.request_id, trust_forwarded=fw.trust_forwarded
        )
        upstream.downstream = conn
        conn.producer = upstream
        conn.on_lost = self.client_lost
        now = self.sent_at = time.monotonic()
        timeouts = fw.timeouts
        total = timeouts.total
        per_try = route.retry.config.per_try_timeout
        head_timeout = fw.head_timeout(route, req, now) if route.timeout or per_try else 0.0
        upstream.begin(
            self.head,
            head_request=req.method == "HEAD",
            head_timeout=head_timeout,
            idle_timeout=timeouts.idle,
            total_deadline=req.started + total if total else None,
            now=now,
            watcher=self,
        )

    def client_lost(self) -> None:
        self.upstream.abort_exchange(UpstreamError("reset", "client left"))

    def progress(self) -> None:
        """Called by the upstream connection: its response head or end arrived, or it failed."""
        if self.done:
            return
        upstream, conn = self.upstream, self.conn
        try:
            if upstream.error is not None or conn.closed:
                if not self.head_sent and not conn.closed and upstream.error is not None:
                    self._hand_over(upstream.error)
                    return
                if self.head_sent:
                    end_response(conn, self.req, upstream, self.out)
                    self._end(released=True)
                    return
                self._end()
                return
            req, out = self.req, self.out
            if not self.head_sent:
                route = self.route
                now = upstream.last_io  # set by the data_received that brought the head
                out.upstream_ms = (now - self.sent_at) * 1000
                cluster = route.cluster
                cluster.head_time.observe(now - self.sent_at)
                if cluster.detector is not None:
                    cluster.report(upstream.endpoint, status=upstream.status, error=False, now=now)
                if route.retry.retryable_status(upstream.status):
                    self._hand_over(upstream)
                    return
                self.head_sent = True
                head, chunked = response_head(conn, req, route, upstream)
                out.status = upstream.status
                if upstream.complete:  # the whole response in hand: one write, and done
                    pending = upstream.take_pending() if upstream.pending else b""
                    if chunked:
                        if pending:
                            pending = b"%x\r\n%b\r\n" % (len(pending), pending)
                        conn.write(head + pending + b"0\r\n\r\n")
                    else:
                        conn.write(head + pending if pending else head)
                    self._complete()
                    return
                pending = upstream.take_pending()
                if chunked and pending:
                    pending = b"%x\r\n%b\r\n" % (len(pending), pending)
                conn.write(head + pending)
                self.chunked = chunked
                upstream.stream_to(conn.write_chunk if chunked else conn.write)
                return
            if upstream.complete:
                if self.chunked:
                    conn.write(b"0\r\n\r\n")
                self._complete()
        except Exception as err:
            self.fw._internal_error(conn, self.req, self.out, err)
            self._end()

    def _complete(self) -> None:
        """The response went out whole: free the upstream connection, finish the request."""
        self.done = True
        conn, upstream = self.conn, self.upstream
        upstream.release()
        if conn.pause_reasons:
            conn.resume_reading_for("upstream")
        self.route.cluster.breaker.release_request()
        conn.finish(self.req, self.fw._record(conn, self.req, self.route, self.out))

    def _end(self, *, released: bool = False) -> None:
        self.done = True
        if not released:
            self.upstream.release()
            self.conn.resume_reading_for("upstream")
        self.route.cluster.breaker.release_request()
        self.fw._finish(self.conn, self.req, self.route, self.out)

    def _hand_over(self, outcome: UpstreamError | UpstreamConnection) -> None:
        self.done = True
        upstream = self.upstream
        upstream.watcher = None
        if isinstance(outcome, UpstreamError):
            upstream.release()
        self.conn.on_lost = None
        coro = self.fw._resume(
            self.conn, self.req, self.route, self.out, self.head, (upstream.endpoint, outcome)
        )
        self.conn.adopt(coro, self.req)
