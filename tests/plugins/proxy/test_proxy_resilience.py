"""Upstreams that fail: connect errors, hangs, resets, 5xx; retries, the retry budget, the
circuit breaker, outlier ejection, rate limiting, and holding requests while the app is down."""

from __future__ import annotations

import asyncio

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.plugins.proxy.helpers import (
    aiohttp_upstream,
    config,
    exchange,
    raw_upstream,
    read_head,
    running_proxy,
)

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def get(url: str, method: str = "GET", **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as r,  # type: ignore[arg-type]
    ):
        return r.status, dict(r.headers), await r.read()


async def test_connect_failure_is_503_and_counted() -> None:
    """Nothing listens on the upstream port: 503 after the retry, connect errors counted."""
    async with running_proxy(config(free_port())) as proxy:
        status, _, body = await get(proxy.url)
        assert (status, body) == (503, b"upstream connect error\n")
        assert proxy.metric("sidecar_proxy_upstream_connect_errors_total", {"upstream": "app"}) == 2
        assert proxy.metric("sidecar_proxy_retries_total", {"upstream": "app"}) == 1


async def test_hanging_upstream_is_504() -> None:
    """No response head within the route timeout: 504, and the proxy keeps serving."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(30)

    async with raw_upstream(hang) as port:
        table = config(port, routes=[{"timeout": "300ms", "retry": {"attempts": 1}}])
        async with running_proxy(table) as proxy:
            with anyio.fail_after(5):
                status, _, body = await get(proxy.url)
            assert (status, body) == (504, b"upstream timeout\n")


async def test_reset_before_response_retried_for_get_not_post() -> None:
    """An upstream that resets the first connection: GET is retried and succeeds, POST is not
    retried (not idempotent) and gets 503."""
    seen = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        head = await read_head(reader)
        seen += 1
        if seen % 2 == 1:
            writer.transport.abort()  # reset before any byte of a response
            return
        if head.startswith(b"POST"):
            await reader.readexactly(2)
        writer.write(OK)
        await writer.drain()

    async with raw_upstream(flaky) as port, running_proxy(config(port)) as proxy:
        status, _, body = await get(proxy.url)
        assert (status, body) == (200, b"ok")
        status, _, body = await get(proxy.url, "POST", data=b"hi")
        assert status == 503
        assert body == b"upstream reset before response\n"


async def test_retriable_statuses_are_retried_with_budget() -> None:
    """retry_on 5xx: two 503s then 200 → the client sees 200 and two retries are counted; with
    a zero budget the 503 is passed through and the exhausted budget counted."""
    calls = 0

    async def unavailable(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if calls % 3 else 200, text=str(calls))

    retry = {"attempts": 3, "retry_on": ["5xx"], "backoff_base": "1ms", "backoff_max": "2ms"}
    async with aiohttp_upstream(unavailable) as port:
        async with running_proxy(config(port, retry=retry)) as proxy:
            status, _, body = await get(proxy.url)
            assert (status, body) == (200, b"3")
            assert proxy.metric("sidecar_proxy_retries_total", {"upstream": "app"}) == 2
        none = {**retry, "budget_percent": 0, "min_retry_concurrency": 0}
        async with running_proxy(config(port, retry=none)) as proxy:
            status, _, body = await get(proxy.url)
            assert (status, body) == (503, b"4")
            labels = {"upstream": "app", "threshold": "retry_budget"}
            assert proxy.metric("sidecar_proxy_overflows_total", labels) == 1


async def test_keep_alive_race_retried_once_on_reused_connection() -> None:
    """The app closes an idle keep-alive connection just as the proxy reuses it: the request
    is sent again on a new connection (even without a retry policy) and succeeds."""

    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)  # keep-alive by default, but we close right after
        await writer.drain()
        await reader.read(1)  # the next request's first byte, then close without answering

    async with raw_upstream(close_after_one) as port:
        table = config(port, retry={"attempts": 1})
        async with running_proxy(table) as proxy:
            for _ in range(3):
                status, _, body = await get(proxy.url)
                assert (status, body) == (200, b"ok")
            assert proxy.metric("sidecar_proxy_retries_total", {"upstream": "app"}) == 0


async def test_circuit_breaker_overflow_is_503_overloaded() -> None:
    """With max_requests = 1, a second concurrent request is refused at once."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    async with aiohttp_upstream(slow) as port:
        table = config(port)
        table["upstreams"]["app"]["circuit_breaker"] = {"max_requests": 1}
        async with running_proxy(table) as proxy, aiohttp.ClientSession() as session:
            first = asyncio.ensure_future(session.get(proxy.url))
            await asyncio.sleep(0.2)
            async with session.get(proxy.url) as second:
                assert second.status == 503
                assert second.headers["x-sidecar-overloaded"] == "true"
            release.set()
            async with await first as response:
                assert await response.text() == "done"
            labels = {"upstream": "app", "threshold": "requests"}
            assert proxy.metric("sidecar_proxy_overflows_total", labels) == 1


async def test_outlier_ejection_sends_traffic_to_healthy_endpoints() -> None:
    """One of two endpoints answers 502: after two in a row it is ejected and the rest of the
    traffic goes to the healthy one."""

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad")

    async def good(request: web.Request) -> web.Response:
        return web.Response(text="good")

    async with aiohttp_upstream(bad) as b, aiohttp_upstream(good) as g:
        table = config(b, retry={"attempts": 1})
        table["upstreams"]["app"]["endpoints"] = [f"127.0.0.1:{b}", f"127.0.0.1:{g}"]
        table["upstreams"]["app"]["outlier"] = {
            "consecutive_gateway_errors": 2,
            "max_ejection_percent": 50,
        }
        async with running_proxy(table) as proxy:
            bodies = [(await get(proxy.url))[2] for _ in range(10)]
            assert bodies.count(b"bad") == 2
            assert bodies[-6:] == [b"good"] * 6
            assert proxy.metric("sidecar_proxy_outlier_ejections_total", {"upstream": "app"}) == 1
            assert proxy.metric("sidecar_proxy_outlier_ejected", {"upstream": "app"}) == 1


async def test_rate_limit_is_429_with_retry_after() -> None:
    """burst 2 at 0.5/s: the third request in a row is refused with Retry-After."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with (
        aiohttp_upstream(ok) as port,
        running_proxy(config(port, rate_limit={"rate": 0.5, "burst": 2})) as proxy,
    ):
        statuses = [(await get(proxy.url))[0] for _ in range(2)]
        status, headers, _ = await get(proxy.url)
        assert statuses == [200, 200]
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert proxy.metric("sidecar_proxy_rate_limited_total") == 1


async def test_upstream_reset_mid_body_cuts_the_client_off() -> None:
    """A response cut after its head reaches the client as a cut response, never as complete."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async with raw_upstream(cut) as port, running_proxy(config(port)) as proxy:
        response = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200")
        assert response.endswith(b"partial")  # 7 of 100 bytes, then the connection ended


async def test_requests_held_while_the_app_is_not_ready() -> None:
    """Requests to the app's upstream wait while it is not ready and go through once it is;
    with hold_timeout passed they get 503 with Retry-After."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with aiohttp_upstream(ok) as port:
        table = config(port, hold_timeout="200ms")
        table["upstreams"]["app"]["app"] = True
        async with running_proxy(table) as proxy:
            status, headers, body = await get(proxy.url)
            assert (status, body) == (503, b"app not ready\n")
            assert headers["Retry-After"] == "1"
        table["hold_timeout"] = "10s"
        async with running_proxy(table) as proxy:
            held = asyncio.ensure_future(get(proxy.url))
            await asyncio.sleep(0.3)
            assert not held.done()
            await proxy.harness.start_app()  # RUNNING, and so ready, after start_seconds (1 s)
            with anyio.fail_after(5):
                status, _, body = await held
            assert (status, body) == (200, b"ok")
