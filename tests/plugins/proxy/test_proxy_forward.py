"""The request path through a real proxy to real upstreams: routing, headers, streaming, framing."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.plugins.proxy.helpers import (
    aiohttp_upstream,
    config,
    exchange,
    raw_upstream,
    read_head,
    running_proxy,
    status_of,
)

pytestmark = pytest.mark.anyio


async def echo(request: web.Request) -> web.Response:
    """Answer with what arrived: method, path, headers, body length."""
    body = await request.read()
    data = {
        "method": request.method,
        "path": request.path_qs,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": len(body),
    }
    return web.json_response(data, headers={"X-Upstream": "yes", "Keep-Alive": "timeout=5"})


async def test_get_post_and_forwarded_headers() -> None:
    """Requests arrive with X-Forwarded-*, a generated X-Request-ID and without hop-by-hop
    headers; bodies and query strings pass; responses lose their hop-by-hop headers."""
    async with (
        aiohttp_upstream(echo) as port,
        running_proxy(config(port)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        headers = {
            "X-Forwarded-For": "10.0.0.1",
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "hop",
            "Proxy-Authorization": "Basic eA==",
            "TE": "trailers",
            "X-Forwarded-Client-Cert": "forged",
        }
        async with session.get(f"{proxy.url}/a/b?x=1&y=2", headers=headers) as response:
            assert response.status == 200
            seen = await response.json()
            assert "keep-alive" not in {k.lower() for k in response.headers}
            assert response.headers["X-Upstream"] == "yes"
        async with session.post(f"{proxy.url}/post", data=b"x" * 1000) as response:
            posted = await response.json()
    got = seen["headers"]
    assert seen["path"] == "/a/b?x=1&y=2"
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", got["x-request-id"]
    )
    for hop in ("x-secret", "proxy-authorization", "te", "x-forwarded-client-cert"):
        assert hop not in got
    assert posted["method"] == "POST"
    assert posted["body"] == 1000


async def test_request_id_propagated_if_valid() -> None:
    """A sane X-Request-ID is kept; one with spaces or too long is replaced."""
    async with (
        aiohttp_upstream(echo) as port,
        running_proxy(config(port)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(proxy.url, headers={"X-Request-ID": "abc-123"}) as r:
            kept = (await r.json())["headers"]["x-request-id"]
        async with session.get(proxy.url, headers={"X-Request-ID": "a" * 300}) as r:
            replaced = (await r.json())["headers"]["x-request-id"]
    assert kept == "abc-123"
    assert len(replaced) == 36


async def test_routes_match_rewrite_and_edit_headers() -> None:
    """First match wins: prefix+rewrite, exact, regex, host and header matches, header edits;
    no match is a 404 from the proxy."""

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"other": request.path_qs, "h": dict(request.headers)})

    async with aiohttp_upstream(echo) as a, aiohttp_upstream(other) as b:
        table = {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {
                "app": {"endpoints": [f"127.0.0.1:{a}"], "app": False},
                "other": {"endpoints": [f"127.0.0.1:{b}"]},
            },
            "routes": [
                {
                    "match": {"prefix": "/api/"},
                    "upstream": "other",
                    "rewrite_prefix": "/v2/",
                    "request_headers_add": {"X-Route": "api"},
                    "request_headers_remove": ["X-Drop"],
                    "response_headers_add": {"X-Served-By": "proxy"},
                    "response_headers_remove": ["Server"],
                },
                {"match": {"path": "/exact"}, "upstream": "other"},
                {"match": {"regex": "/items/[0-9]+"}, "upstream": "other"},
                {"match": {"host": "*.example.com"}, "upstream": "other"},
                {"match": {"headers": {"x-canary": "1"}}, "upstream": "other"},
                {"match": {"prefix": "/app"}, "upstream": "app"},
            ],
        }
        async with running_proxy(table) as proxy, aiohttp.ClientSession() as session:

            async def get(path: str, **headers: str) -> tuple[int, dict[str, str], str]:
                async with session.get(proxy.url + path, headers=headers) as r:
                    return r.status, dict(r.headers), await r.text()

            status, headers, text = await get("/api/users?q=1", X_Drop="x")
            assert status == 200
            assert json.loads(text)["other"] == "/v2/users?q=1"
            assert json.loads(text)["h"]["X-Route"] == "api"
            assert "X-Drop" not in json.loads(text)["h"]
            assert headers["X-Served-By"] == "proxy"
            assert "Server" not in headers
            assert "other" in (await get("/exact"))[2]
            assert (await get("/exact/more"))[0] == 404
            assert "other" in (await get("/items/42"))[2]
            assert (await get("/items/x"))[0] == 404
            assert "other" in (await get("/x", Host="a.example.com"))[2]
            assert "other" in (await get("/x", **{"X-Canary": "1"}))[2]
            assert '"method"' in (await get("/app/x"))[2]
            status, _, text = await get("/nowhere")
            assert (status, text) == (404, "no route\n")


async def test_streaming_both_ways_without_buffering() -> None:
    """A chunked upload bigger than any buffer reaches the upstream while the client is still
    sending, and a streamed response reaches the client before the upstream finished."""
    first_chunk = asyncio.Event()
    release_response = asyncio.Event()
    received = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal received
        if request.method == "POST":
            async for chunk in request.content.iter_any():
                received += len(chunk)
                first_chunk.set()
            return web.Response(text=str(received))
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await release_response.wait()
        await response.write(b"second\n")
        return response

    async with aiohttp_upstream(stream) as port, running_proxy(config(port)) as proxy:
        total = 8 * 1024 * 1024

        async def body() -> object:
            sent = 0
            while sent < total:
                yield b"z" * 65536
                sent += 65536
                if sent == 1024 * 1024:
                    with anyio.fail_after(5):  # the upstream sees bytes before we finish
                        await first_chunk.wait()

        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url, data=body()) as r:
                assert await r.text() == str(total)
            async with session.get(proxy.url) as r:
                assert r.headers["Transfer-Encoding"] == "chunked"
                with anyio.fail_after(5):
                    assert await r.content.readline() == b"first\n"
                release_response.set()
                assert await r.content.readline() == b"second\n"


async def test_keep_alive_pool_reuses_upstream_connections() -> None:
    """Sequential requests share one upstream connection (the pool keeps it alive)."""
    peers: set[object] = set()

    async def who(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    async with (
        aiohttp_upstream(who) as port,
        running_proxy(config(port)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(20):
            async with session.get(proxy.url) as r:
                assert await r.text() == "ok"
    assert len(peers) == 1


async def test_framing_head_204_http10_and_close_delimited() -> None:
    """HEAD keeps Content-Length without a body; 204 has none; an HTTP/1.0 client gets a
    close-delimited body; an upstream body ended by closing is re-framed as chunked."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            target = head.split(b" ")[1]
            if target == b"/eof":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await writer.drain()
                return
            if target == b"/204":
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                if not head.startswith(b"HEAD"):
                    writer.write(b"hello")
            await writer.drain()

    async with raw_upstream(upstream) as port, running_proxy(config(port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.write(b"GET /eof HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        with anyio.fail_after(5):
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"Content-Length: 5" in head
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 204")
            head = await read_head(reader)
            assert b"transfer-encoding: chunked" in head
            body = await reader.readuntil(b"0\r\n\r\n")
        writer.close()
        assert body == b"d\r\nuntil the end\r\n0\r\n\r\n"
        old = await exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
        assert old.startswith(b"HTTP/1.1 200")
        assert old.endswith(b"\r\n\r\nhello")


async def test_expect_continue_answered_by_the_proxy() -> None:
    """``Expect: 100-continue`` gets ``100 Continue`` from the proxy, then the upstream's
    response; the upstream never sees the Expect header."""
    async with aiohttp_upstream(echo) as port, running_proxy(config(port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        with anyio.fail_after(5):
            assert await read_head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"data")
            head = await read_head(reader)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            body = json.loads(await reader.readexactly(length))
        writer.close()
        assert status_of(head) == 200
        assert body["body"] == 4
        assert "expect" not in body["headers"]


async def test_pipelined_requests_answered_in_order() -> None:
    """Three pipelined requests on one connection get three responses in order."""
    async with aiohttp_upstream(echo) as port, running_proxy(config(port)) as proxy:
        data = b"".join(
            b"GET /%d HTTP/1.1\r\nHost: x\r\n%s\r\n"
            % (i, b"Connection: close\r\n" if i == 2 else b"")
            for i in range(3)
        )
        raw = await exchange(proxy.port, data)
    paths = re.findall(rb'"path": "(/\d)"', raw)
    assert paths == [b"/0", b"/1", b"/2"]


async def test_slow_client_pauses_the_upstream() -> None:
    """A client that does not read makes the upstream's writes wait: the proxy holds no more
    than a few buffers, not the whole 64 MiB response."""
    written = 0
    total = 64 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        chunk = b"x" * 65536
        while written < total:
            writer.write(chunk)
            await writer.drain()
            written += len(chunk)

    async with raw_upstream(big) as port, running_proxy(config(port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=65536)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(5):
            await read_head(reader)
        await asyncio.sleep(0.5)  # not reading: every buffer on the way fills up
        stalled = written
        await asyncio.sleep(0.2)
        assert written == stalled
        assert written < 16 * 1024 * 1024
        received = 0
        with anyio.fail_after(20):
            while received < total:
                received += len(await reader.read(1 << 20))
        writer.close()
        assert received == total
