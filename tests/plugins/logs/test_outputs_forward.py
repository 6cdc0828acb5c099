"""Fluentd forward protocol against a real TCP server in the test that decodes each message by
the Forward Protocol Specification v1: Forward, PackedForward and CompressedPackedForward
modes, EventTime (ext type 0) or integer times, acks per chunk, the shared-key handshake, and
what happens when the connection drops before the ack (the batch is resent: a duplicate)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest
import trustme
from anyio.streams.tls import TLSListener
from sidecar_plugins.logs._delivery import Delivery
from sidecar_plugins.logs._model import Batch, Record
from sidecar_plugins.logs.outputs import FluentdForwardConfig, RetryLater, make_output
from sidecar_plugins.logs.outputs._fluentd import event_time

from sidecar_runtime import Duration

pytestmark = pytest.mark.anyio

T0 = 1714563000.25
_DECODER = msgspec.msgpack.Decoder()


class Quiet:
    def bind(self, **_: Any) -> Quiet:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *a, **k: None


def _sha512(*parts: str | bytes) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + struct.pack(">H", n) if n < 65536 else b"\xdd" + struct.pack(">I", n)


@dataclass
class Event:
    tag: str
    time: float
    time_kind: str  # "event_time" or "integer"
    record: dict[str, Any]


@dataclass
class ForwardServer:
    """A forward-protocol receiver: validates and decodes messages, acks chunks, can misbehave."""

    port: int = 0
    ack: bool = True
    drop_before_ack: int = 0  # close the connection instead of acking this many chunks
    shared_key: str | None = None
    hostname: str = "fluentd-server"
    events: list[Event] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    connections: int = 0
    auth_failures: int = 0
    peers: list[anyio.abc.ByteStream] = field(default_factory=list)

    async def _read(self, stream: anyio.abc.ByteStream, buffer: bytearray) -> Any:
        while True:
            if buffer:
                try:
                    message = _DECODER.decode(bytes(buffer))
                except msgspec.DecodeError as err:
                    if "truncated" not in str(err):
                        raise
                else:
                    buffer.clear()
                    return message
            try:
                buffer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None

    async def _handshake(self, stream: anyio.abc.ByteStream, buffer: bytearray) -> bool:
        assert self.shared_key is not None
        nonce = os.urandom(16)
        helo = ["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]
        await stream.send(msgspec.msgpack.encode(helo))
        ping = await self._read(stream, buffer)
        assert isinstance(ping, list)
        assert len(ping) == 6
        kind, hostname, salt, digest, user, password = ping
        assert (kind, user, password) == ("PING", "", "")
        ok = bool(digest == _sha512(salt, hostname, nonce, self.shared_key))
        reply = _sha512(salt, self.hostname, nonce, self.shared_key)
        await stream.send(
            msgspec.msgpack.encode(["PONG", ok, "" if ok else "key", self.hostname, reply])
        )
        if not ok:
            self.auth_failures += 1
        return ok

    def _entries(self, message: list[Any]) -> list[list[Any]]:
        tag, entries, option = message
        assert isinstance(tag, str)
        assert isinstance(option, dict)
        if isinstance(entries, list):
            self.modes.append("forward")
            return entries
        assert isinstance(entries, bytes)
        if option.get("compressed") == "gzip":
            self.modes.append("compressed")
            entries = gzip.decompress(entries)
        else:
            self.modes.append("packed")
        decoded = _DECODER.decode(_array_header(option["size"]) + entries)
        assert isinstance(decoded, list)
        return decoded

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        self.connections += 1
        self.peers.append(stream)
        buffer = bytearray()
        async with stream:
            if self.shared_key is not None and not await self._handshake(stream, buffer):
                return
            while (message := await self._read(stream, buffer)) is not None:
                assert isinstance(message, list)
                assert len(message) == 3
                entries = self._entries(message)
                option = message[2]
                assert option["size"] == len(entries)
                self.options.append(option)
                for time_value, record in entries:
                    if isinstance(time_value, msgspec.msgpack.Ext):
                        assert time_value.code == 0
                        assert len(bytes(time_value.data)) == 8
                        seconds, nanos = struct.unpack(">II", time_value.data)
                        stamp, kind = seconds + nanos / 1e9, "event_time"
                    else:
                        assert isinstance(time_value, int)
                        stamp, kind = float(time_value), "integer"
                    self.events.append(Event(message[0], stamp, kind, record))
                chunk = option.get("chunk")
                if chunk is None:
                    continue
                self.chunks.append(chunk)
                if self.drop_before_ack > 0:
                    self.drop_before_ack -= 1
                    return  # gone before the ack: the sender must resend
                if self.ack:
                    with contextlib.suppress(anyio.ClosedResourceError):
                        await stream.send(msgspec.msgpack.encode({"ack": chunk}))


@pytest.fixture
async def server() -> AsyncIterator[ForwardServer]:
    srv = ForwardServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    srv.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, srv.handle)
        yield srv
        tg.cancel_scope.cancel()


def config(server: ForwardServer, **keys: Any) -> FluentdForwardConfig:
    base: dict[str, Any] = {
        "port": server.port,
        "tag": "app.logs",
        "timeout": Duration(0.5),
        "retry_initial": Duration(0.01),
        "retry_max": Duration(0.02),
        "batch_timeout": Duration(0.0),
    }
    base.update(keys)
    return FluentdForwardConfig(**base)


def records(n: int = 3) -> list[Record]:
    return [{"message": f"line {i}", "time": T0 + i, "stream": "stdout"} for i in range(n)]


async def until(check: Any) -> None:
    """Poll ``check`` for up to 5 s."""
    for _ in range(500):
        if check():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


@pytest.mark.parametrize("mode", ["packed", "forward", "compressed"])
async def test_modes_with_event_time_and_ack(server: ForwardServer, mode: str) -> None:
    """Each mode decodes per the spec; EventTime keeps sub-second time; chunks are acked."""
    output = make_output("fwd", config(server, mode=mode), log=Quiet())
    try:
        with anyio.fail_after(5):
            await output.send(records(3))
            await output.send(records(20))  # array16 header in packed mode... and beyond 15
    finally:
        await output.close()
    assert server.modes == [mode, mode]
    assert [e.record for e in server.events] == records(3) + records(20)
    assert {e.tag for e in server.events} == {"app.logs"}
    assert [e.time for e in server.events[:3]] == [T0, T0 + 1, T0 + 2]
    assert {e.time_kind for e in server.events} == {"event_time"}
    assert len(set(server.chunks)) == 2
    assert server.connections == 1  # kept alive between batches


async def test_integer_times_without_ack(server: ForwardServer) -> None:
    """time_format = integer sends whole seconds; without require_ack no chunk id is sent."""
    output = make_output(
        "fwd", config(server, time_format="integer", require_ack=False), log=Quiet()
    )
    try:
        with anyio.fail_after(5):
            await output.send(records(2))
        await until(lambda: len(server.events) == 2)
    finally:
        await output.close()
    assert [(e.time, e.time_kind) for e in server.events] == [
        (float(int(T0)), "integer"),
        (float(int(T0 + 1)), "integer"),
    ]
    assert server.options == [{"size": 2}]


async def test_dropped_before_ack_is_resent_and_duplicated(
    server: ForwardServer, tmp_path: Path
) -> None:
    """A connection lost after the server got the chunk but before its ack: the batch is sent
    again on a new connection. Forward delivery is at least once, so the server has it twice."""
    server.drop_before_ack = 1
    cfg = config(server)
    output = make_output("fwd", cfg, log=Quiet())
    delivered = anyio.Event()
    d = Delivery(
        output,
        cfg,
        spool_dir=str(tmp_path / "s"),
        on_delivered=lambda _: delivered.set(),
        log=Quiet(),
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(d.run)
            await d.put(Batch(records(2), {"f": 2}))
            with anyio.fail_after(5):
                await delivered.wait()
            tg.cancel_scope.cancel()
    finally:
        await output.close()
    assert server.connections == 2
    assert [e.record["message"] for e in server.events] == ["line 0", "line 1"] * 2
    assert len(set(server.chunks)) == 2
    assert d.stats.errors == {"connect": 1}
    assert d.stats.records_out == 2


async def test_missing_ack_times_out(server: ForwardServer) -> None:
    """A server that never acks: the send fails after timeout as a retryable ack_timeout."""
    server.ack = False
    output = make_output("fwd", config(server, timeout=Duration(0.2)), log=Quiet())
    try:
        with pytest.raises(RetryLater) as stalled:
            await output.send(records(1))
    finally:
        await output.close()
    assert stalled.value.kind == "ack_timeout"
    assert len(server.events) == 1


async def test_reconnects_after_the_server_closed_an_idle_connection(
    server: ForwardServer,
) -> None:
    """A kept-alive connection closed by the server while idle is replaced before sending."""
    output = make_output("fwd", config(server), log=Quiet())
    try:
        with anyio.fail_after(5):
            await output.send(records(1))
            for peer in server.peers:
                await peer.aclose()
            await anyio.sleep(0.05)
            await output.send(records(2))
    finally:
        await output.close()
    assert server.connections == 2
    assert len(server.events) == 3


async def test_shared_key_handshake(server: ForwardServer) -> None:
    """With shared_key, HELO/PING/PONG runs first; digests are checked both ways."""
    server.shared_key = "s3cret"
    output = make_output(
        "fwd", config(server, shared_key="s3cret", self_hostname="client-1"), log=Quiet()
    )
    try:
        with anyio.fail_after(5):
            await output.send(records(1))
    finally:
        await output.close()
    assert [e.record for e in server.events] == records(1)
    wrong = make_output("fwd", config(server, shared_key="nope"), log=Quiet())
    try:
        with pytest.raises(RetryLater) as refused:
            await wrong.send(records(1))
    finally:
        await wrong.close()
    assert refused.value.kind == "auth"
    assert server.auth_failures == 1
    assert len(server.events) == 1


async def test_tls_transport(tmp_path: Path) -> None:
    """tls = true wraps the same protocol in TLS, verified against ca_file."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    srv = ForwardServer()
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    srv.port = tcp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    listener = TLSListener(tcp, server_ctx, standard_compatible=False)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, srv.handle)
        output = make_output("fwd", config(srv, tls=True, ca_file=str(ca_file)), log=Quiet())
        try:
            with anyio.fail_after(5):
                await output.send(records(2))
                await output.send(records(1))
        finally:
            await output.close()
        untrusted = make_output("fwd", config(srv, tls=True), log=Quiet())
        try:
            with pytest.raises(RetryLater, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusted.send(records(1))
        finally:
            await untrusted.close()
        tg.cancel_scope.cancel()
    assert [e.record for e in srv.events] == records(2) + records(1)
    assert srv.connections == 1


async def test_nothing_listening_is_retryable() -> None:
    """Connection refused is a retryable connect error naming host and port."""
    output = make_output("fwd", FluentdForwardConfig(port=9, timeout=Duration(1.0)), log=Quiet())
    with pytest.raises(RetryLater, match=re.escape("127.0.0.1:9")) as refused:
        await output.send(records(1))
    assert refused.value.kind == "connect"


def test_event_time_layout() -> None:
    """EventTime is ext type 0 with seconds and nanoseconds as two big-endian uint32."""
    ext = event_time(1714563000.5)
    assert ext.code == 0
    assert struct.unpack(">II", ext.data) == (1714563000, 500_000_000)
    assert struct.unpack(">II", event_time(-5).data) == (0, 0)
