"""The request path: route, rate limit, hold, circuit breaker, tries with retries, response.

:class:`Forwarder` is the handler every client connection calls with each request. It writes
the upstream request head once (hop-by-hop headers removed, ``X-Forwarded-*``, ``X-Request-ID``
and ``X-Forwarded-Client-Cert`` set, route header edits applied), then makes tries: pick an
endpoint, take a pooled connection, stream the body, wait for the response head. Failed tries
are retried as the route's policy, the retry budget and the circuit breaker allow (and once
more, free, when a reused keep-alive connection was closed by the app before answering). The
response head is rewritten and the body streamed back without buffering.

Statuses the proxy answers itself: 404 no route, 429 rate limited, 503 app not ready after
``hold_timeout`` (with ``Retry-After``), 503 overloaded (``x-sidecar-overloaded: true``), 503
connect failure or reset before the response (as Envoy), 502 invalid response, 504 timeout.
Holding is the :class:`~._gate.Gate`; the forwarder's state, its own responses and the record
of each finished request are in its base, :class:`~._bookkeeping.Bookkeeping`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from ._accesslog import Outcome
from ._bookkeeping import Bookkeeping
from ._fast import FastExchange, end_response, send_head
from ._headers import request_head, request_id
from ._pool import Cluster, Endpoint
from ._ratelimit import retry_after_header
from ._router import Route
from ._server import Connection, Request
from ._upgrade import tunnel
from ._upstream import UpstreamConnection, UpstreamError

__all__ = ["Forwarder"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ERROR_REPLY = {
    "connect-failure": (503, b"upstream connect error\n"),
    "reset": (503, b"upstream reset before response\n"),
    "timeout": (504, b"upstream timeout\n"),
    "protocol": (502, b"invalid upstream response\n"),
}


class Forwarder(Bookkeeping):
    """The handler of every request of every listener."""

    def handle(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None:
        """Start handling ``req``: synchronously when it can be (no body, a pooled connection),
        else return the coroutine that does it."""
        self.in_flight += 1
        out = Outcome()
        out.request_id = request_id(req)
        route: Route | None = None
        try:
            route = conn.listener.router.match(req)
            if route is None:
                out.detail = "no_route"
                self._reply(conn, req, out, 404, b"no route\n")
                self._finish(conn, req, route, out)
                return None
            out.route = route.name
            limiter = self.limiter
            if limiter is not None:
                wait = limiter.acquire(conn.peer, time.monotonic())
                if wait is not None:
                    self.metrics.rate_limited.inc()
                    out.detail = "rate_limited"
                    retry = retry_after_header(wait).encode()
                    self._reply(conn, req, out, 429, b"rate limited\n", [(b"retry-after", retry)])
                    self._finish(conn, req, route, out)
                    return None
            cluster = route.cluster
            out.upstream = cluster.name
            if (
                req.body is None
                and not req.upgrade
                and (self.gate.open or not cluster.is_app)
                and cluster.breaker.try_request()
            ):
                endpoint = cluster.pick(req.started)
                upstream = endpoint.take_idle()
                if upstream is not None:
                    FastExchange(self, conn, req, route, out, upstream).start()
                    return None
                return self._slow(conn, req, route, out, admitted=True, endpoint=endpoint)
        except Exception as err:  # a bug: answer 500 and keep serving
            self._internal_error(conn, req, out, err)
            self._finish(conn, req, route, out)
            return None
        return self._slow(conn, req, route, out, admitted=False)

    async def _slow(
        self,
        conn: Connection,
        req: Request,
        route: Route,
        out: Outcome,
        *,
        admitted: bool,
        endpoint: Endpoint | None = None,
    ) -> None:
        """The general path: holding, new connections, bodies, upgrades, retries."""
        cluster = route.cluster
        try:
            body = req.body
            if body is not None and body.error:
                if body.error != 499:
                    out.detail = "body_too_large"
                    self._reply(conn, req, out, body.error, b"body too large\n")
                return
            if cluster.is_app and not self.gate.open:
                if not await self.gate.wait(self.hold_timeout):
                    out.detail = "app_not_ready"
                    retry = [(b"retry-after", b"1")]
                    self._reply(conn, req, out, 503, b"app not ready\n", retry)
                    return
                if _gone(conn):
                    return
            if not admitted:
                if not cluster.breaker.try_request():
                    self._overflow(conn, req, out, cluster, "requests")
                    return
                admitted = True
            head = request_head(
                conn, req, route, out.request_id, trust_forwarded=self.trust_forwarded
            )
            await self._tries(conn, req, route, out, head, None, endpoint)
        except Exception as err:
            self._internal_error(conn, req, out, err)
        finally:
            if admitted:
                cluster.breaker.release_request()
            self._record(conn, req, route, out)

    async def _resume(
        self,
        conn: Connection,
        req: Request,
        route: Route,
        out: Outcome,
        head: bytes,
        first: tuple[Endpoint, UpstreamError | UpstreamConnection],
    ) -> None:
        """The slow path taking over a fast-path try that failed or must be retried."""
        try:
            await self._tries(conn, req, route, out, head, first)
        except Exception as err:
            self._internal_error(conn, req, out, err)
        finally:
            route.cluster.breaker.release_request()
            self._record(conn, req, route, out)

    async def _tries(
        self,
        conn: Connection,
        req: Request,
        route: Route,
        out: Outcome,
        head: bytes,
        first: tuple[Endpoint, UpstreamError | UpstreamConnection] | None,
        picked: Endpoint | None = None,
    ) -> None:
        """Tries until a response is forwarded or no retry is left. ``first``: the outcome of
        a try the fast path made on a reused connection."""
        cluster = route.cluster
        policy = route.retry
        body = req.body
        deadline = req.started + route.timeout if route.timeout else None
        total = req.started + self.timeouts.total if self.timeouts.total else None
        attempt = 0
        free_retry = True  # one extra try when a reused connection was closed before answering
        hold_until: float | None = None
        holds = 0
        retrying = False
        try:
            while True:
                attempt += 1
                outcome: UpstreamError | UpstreamConnection | None
                if first is not None:
                    endpoint, outcome = first
                    reused = True
                    first = None
                else:
                    endpoint = picked or cluster.pick(time.monotonic())
                    picked = None
                    wait_until = (
                        deadline
                        if deadline is not None
                        else time.monotonic() + cluster.connect_timeout
                    )
                    try:
                        upstream, reused = await cluster.acquire(endpoint, wait_until)
                    except UpstreamError as err:
                        if conn.closed:
                            return
                        if err.kind == "overflow":
                            self._overflow(conn, req, out, cluster, err.detail)
                            return
                        now = time.monotonic()
                        cluster.report(endpoint, status=None, error=True, now=now)
                        if cluster.is_app and self.hold_timeout:
                            # The app is not there (restarting, or up but not listening yet):
                            # hold the request as if it were not ready, up to hold_timeout.
                            if hold_until is None:
                                hold_until = now + self.hold_timeout
                            if now < hold_until:
                                if not self.gate.open:
                                    await self.gate.wait(hold_until - now)
                                else:
                                    holds += 1
                                    await asyncio.sleep(min(0.01 * 2**holds, 0.5, hold_until - now))
                                if not _gone(conn):
                                    attempt -= 1
                                    continue
                        outcome = err
                    else:
                        outcome = await self._exchange(
                            conn, req, route, upstream, head, out, deadline, total
                        )
                out.endpoint = endpoint.name
                if isinstance(outcome, UpstreamError) and outcome.kind != "connect-failure":
                    if outcome.kind != "timeout":
                        cluster.report(endpoint, status=None, error=True, now=time.monotonic())
                    if (
                        reused
                        and free_retry
                        and outcome.kind == "reset"
                        and outcome.before_response
                        and not conn.closed
                        and req.method in route.idempotent
                        and (body is None or body.replayable)
                    ):
                        free_retry = False  # the keep-alive race: the app closed it first
                        attempt -= 1
                        continue
                if outcome is None or conn.closed:
                    if isinstance(outcome, UpstreamConnection):
                        outcome.release()
                    return
                if retrying:
                    self._release_retry(route, cluster)
                    retrying = False
                error = outcome.kind if isinstance(outcome, UpstreamError) else None
                status = outcome.status if isinstance(outcome, UpstreamConnection) else None
                if (
                    error in (None, "connect-failure", "reset", "timeout")
                    and policy.should_retry(attempt, status=status, error=error)  # type: ignore[arg-type]
                    and policy.retryable_method(req.method, body is None or body.replayable)
                    and self._take_retry(route, cluster)
                ):
                    if isinstance(outcome, UpstreamConnection):
                        if body is not None:
                            body.detach()
                        outcome.release()
                    retrying = True
                    out.retries += 1
                    self._retry_children[cluster.name].inc()
                    pause = policy.backoff(attempt)
                    if deadline is not None:
                        pause = min(pause, max(deadline - time.monotonic(), 0))
                    await asyncio.sleep(pause)
                    if _gone(conn):  # the client may have left during the pause
                        return
                    continue
                if isinstance(outcome, UpstreamConnection):  # retriable, but no retry is left
                    await self._respond(conn, req, route, outcome, out)
                    return
                status_code, text = _ERROR_REPLY.get(outcome.kind, (503, b"upstream error\n"))
                out.detail = f"{outcome.kind}: {outcome.detail}" if outcome.detail else outcome.kind
                if body is not None and body.error and body.error != 499:
                    status_code, text = body.error, b"body too large\n"
                self._reply(conn, req, out, status_code, text)
                return
        finally:
            if retrying:
                self._release_retry(route, cluster)

    def _take_retry(self, route: Route, cluster: Cluster) -> bool:
        breaker = cluster.breaker
        if not route.budget.try_acquire(breaker.active["requests"]):
            self.metrics.overflows.labels(cluster.name, "retry_budget").inc()
            return False
        if not breaker.try_retry():
            route.budget.release()
            self.metrics.overflows.labels(cluster.name, "retries").inc()
            return False
        return True

    def _release_retry(self, route: Route, cluster: Cluster) -> None:
        route.budget.release()
        cluster.breaker.release_retry()

    def head_timeout(self, route: Route, req: Request, now: float) -> float:
        """Seconds the next try may wait for response headers (0: no limit; < 0: too late)."""
        per_try = route.retry.config.per_try_timeout or 0.0
        if not route.timeout:
            return per_try
        left = req.started + route.timeout - now
        if left <= 0:
            return -1.0
        return min(left, per_try) if per_try else left

    async def _exchange(
        self,
        conn: Connection,
        req: Request,
        route: Route,
        upstream: UpstreamConnection,
        head: bytes,
        out: Outcome,
        deadline: float | None,
        total: float | None,
    ) -> UpstreamError | UpstreamConnection | None:
        """One try. Returns None when the response was forwarded (or the client left), the
        connection holding a response whose status the policy may retry, or the error."""
        body = req.body
        upstream.downstream = conn
        conn.producer = upstream
        conn.on_lost = lambda: upstream.abort_exchange(UpstreamError("reset", "client left"))
        now = time.monotonic()
        head_timeout = self.head_timeout(route, req, now)
        if head_timeout < 0:
            upstream.release()
            return UpstreamError("timeout", "route timeout")
        if upstream.closed:
            return UpstreamError("reset", "closed before the request", before_response=True)
        upstream.begin(
            head,
            head_request=req.method == "HEAD",
            head_timeout=head_timeout,
            idle_timeout=self.timeouts.idle,
            total_deadline=total,
            now=now,
        )
        if body is not None:
            upstream.request_done = False
            if req.expect_continue:
                req.expect_continue = False
                if not body.complete and not body.size:
                    conn.write(_CONTINUE)
            body.on_error = lambda: upstream.abort_exchange(UpstreamError("reset", "body"))
            if req.chunked:
                body.attach(upstream.send_chunk, upstream.end_chunked)
            else:
                body.attach(upstream.send_body, upstream.end_body)
        assert upstream.head is not None
        await upstream.head
        if body is not None and body.error:
            body.detach()
        error = upstream.error
        if error is not None or conn.closed:
            upstream.release()
            conn.resume_reading_for("upstream")
            return error
        self.observe_head(route, upstream, time.monotonic() - now, out)
        if upstream.upgraded:
            out.status = 101
            await tunnel(conn, upstream, req, self.timeouts.tunnel_idle)
            return None
        if route.retry.retryable_status(upstream.status):
            return upstream  # the caller decides: retry, or forward this response
        await self._respond(conn, req, route, upstream, out)
        return None

    async def _respond(
        self,
        conn: Connection,
        req: Request,
        route: Route,
        upstream: UpstreamConnection,
        out: Outcome,
    ) -> None:
        """Forward the response head and stream its body."""
        chunked = send_head(conn, req, route, upstream, out)
        if not upstream.complete:
            upstream.stream_to(conn.write_chunk if chunked else conn.write)
            done = upstream.wait_done()
            if done is not None:
                await done
            if chunked and upstream.error is None:
                conn.write(b"0\r\n\r\n")
        end_response(conn, req, upstream, out)


def _gone(conn: Connection) -> bool:
    return conn.closed
