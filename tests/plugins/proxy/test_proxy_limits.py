"""Bad input at the downstream side: malformed requests, oversized heads and bodies, slow
clients, and a fuzzed parser that must answer or close and never raise."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_plugins.proxy._config import LimitsConfig
from sidecar_plugins.proxy._request import Request
from sidecar_plugins.proxy._server import Connection, Listener

from tests.plugins.proxy.helpers import (
    config,
    exchange,
    raw_upstream,
    read_head,
    running_proxy,
    status_of,
)

pytestmark = pytest.mark.anyio


async def ok_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request 200 with a short body (request bodies are read by length)."""
    while True:
        head = await read_head(reader)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


LIMITS = {"max_header_bytes": 2048, "max_body_bytes": 1000, "header_read_timeout": "300ms"}


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "malformed"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "bad_host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_host"),
        (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_target"),
        (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n",
            431,
            "header_too_large",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "body_too_large"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
            "malformed",
        ),
    ],
)
async def test_bad_requests_answered_and_counted(
    request_bytes: bytes, status: int, reason: str
) -> None:
    """Each malformed or oversized request gets its status and closes the connection, and
    ``sidecar_proxy_bad_requests_total{reason}`` counts it."""
    async with (
        raw_upstream(ok_upstream) as port,
        running_proxy(config(port, limits=LIMITS)) as proxy,
    ):
        response = await exchange(proxy.port, request_bytes)
        assert status_of(response) == status
        assert b"connection: close" in response.lower()
        assert proxy.metric("sidecar_proxy_bad_requests_total", {"reason": reason}) == 1


async def test_chunked_body_over_the_limit_is_413() -> None:
    """A chunked body is cut off with 413 once it passes max_body_bytes, not buffered."""
    async with (
        raw_upstream(ok_upstream) as port,
        running_proxy(config(port, limits=LIMITS)) as proxy,
    ):
        chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        response = await exchange(proxy.port, head + chunk * 3 + b"0\r\n\r\n")
        assert status_of(response) == 413
        small = await exchange(
            proxy.port,
            head.replace(b"1.1\r\n", b"1.1\r\nConnection: close\r\n", 1) + chunk + b"0\r\n\r\n",
        )
        assert status_of(small) == 200


async def test_slowloris_gets_408_and_idle_connections_close() -> None:
    """A client that sends half a head within header_read_timeout gets 408 and is closed; an
    idle keep-alive connection is closed after limits.idle_timeout."""
    limits = {**LIMITS, "idle_timeout": "300ms"}
    async with (
        raw_upstream(ok_upstream) as port,
        running_proxy(config(port, limits=limits)) as proxy,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        with anyio.fail_after(5):
            response = await reader.read(-1)
        writer.close()
        assert status_of(response) == 408
        assert proxy.metric("sidecar_proxy_bad_requests_total", {"reason": "header_timeout"}) == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(5):
            await read_head(reader)
            assert await reader.read(-1) == b"ok"  # then closed by the proxy: idle
        writer.close()


class _Transport(asyncio.Transport):
    """Collects writes; remembers whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.data += chunk

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _fuzz_listener(handled: list[Request]) -> Listener:
    def handler(conn: Connection, request: Request) -> None:
        handled.append(request)
        conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        conn.finish(request)

    limits = msgspec.convert({"max_header_bytes": 1024, "max_body_bytes": 64}, LimitsConfig)
    return Listener(name="fuzz", handler=handler, limits=limits)


_PIECES = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"Host: a\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Upgrade: websocket\r\nConnection: upgrade\r\n",
        b"\r\n",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"hello",
        b" ",
        b":",
        b"\x00",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(_PIECES, max_size=12).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=5),
)
def test_fuzzed_requests_never_raise(data: bytes, cuts: list[int]) -> None:
    """Random bytes, split anywhere, fed to the server protocol: it answers (200, 400, 413,
    414, 431) or closes, never raises, and every answer starts with a status line."""

    async def run() -> None:
        handled: list[Request] = []
        conn = Connection(_fuzz_listener(handled))
        transport = _Transport()
        conn.connection_made(transport)
        points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
        for start, end in itertools.pairwise(points):
            if transport.closed:
                break
            conn.data_received(data[start:end])
        conn.connection_lost(None)
        conn.timer.cancel()
        out = bytes(transport.data)
        while out:
            assert out.startswith(b"HTTP/1.1 "), out[:40]
            assert status_of(out) in (100, 200, 400, 405, 408, 413, 414, 431)
            head, _, rest = out.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out = rest[length:]

    asyncio.run(run())


async def test_connections_over_the_limit_are_refused() -> None:
    """With limits.max_connections = 1, a second client connection is closed at once."""
    limits = {**LIMITS, "max_connections": 1}
    async with (
        raw_upstream(ok_upstream) as port,
        running_proxy(config(port, limits=limits)) as proxy,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(5):
            await read_head(reader)
            refused = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.close()
        assert refused == b""
        labels = {"reason": "too_many_connections"}
        assert proxy.metric("sidecar_proxy_bad_requests_total", labels) == 1
