"""Fluentd: ``in_http`` (``type = "fluentd_http"``) and the forward protocol (``fluentd_forward``).

**in_http**: ``POST <url>/<tag>`` with ``Content-Type: application/json`` and a JSON array of
records. For an array, in_http takes each record's ``time`` field (Unix seconds, fractional in
Fluentd 1.x) as the event time and removes it from the record; our records always carry one.

**Forward protocol v1** over TCP or TLS, messages in MessagePack:

* ``forward``: ``[tag, [[time, record], ...], option]``;
* ``packed`` (PackedForward, the default): ``[tag, <bin: concatenated [time, record]>, option]``;
* ``compressed`` (CompressedPackedForward): the same entries gzipped, ``compressed: "gzip"``.

``time`` is an EventTime (ext type 0: seconds and nanoseconds as two big-endian uint32) or
integer seconds (``time_format``). ``option`` holds ``size`` and, with ``require_ack``, a
``chunk`` id (base64 of 16 random bytes) that the server answers with ``{"ack": chunk}``
within ``timeout``. With ``shared_key`` the HELO/PING/PONG handshake runs first (SHA-512
digests of salt, hostname, nonce and key; user auth when the server asks). Any error closes
the connection and the batch is resent on a new one: delivery is at least once, so a
connection lost after the server received a chunk but before its ack arrived duplicates it.
Without ``require_ack`` a batch counts as delivered once written to the socket (at most once
if the connection then breaks); a kept-alive connection the server closed while idle is
noticed and replaced before writing.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import os
import socket
import ssl
import struct
from typing import Any

import anyio
import anyio.abc
import msgspec

from .._model import Record
from ._base import RetryLater, encode_array, record_time
from ._config import FluentdForwardConfig, FluentdHttpConfig
from ._transport import HttpTransport, client_ssl_context

__all__ = ["FluentdForwardOutput", "FluentdHttpOutput", "event_time", "forward_message"]

_MSGPACK = msgspec.msgpack.Encoder(enc_hook=str)
_DECODE = msgspec.msgpack.Decoder()
_NET_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
)


class FluentdHttpOutput:
    """Fluentd's in_http: one JSON array per batch, the tag in the path."""

    def __init__(self, name: str, config: FluentdHttpConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.url = f"{config.url.rstrip('/')}/{config.tag}"
        self.transport = HttpTransport(config)

    @property
    def bytes_sent(self) -> int:
        """Body bytes accepted by Fluentd (after gzip)."""
        return self.transport.bytes_sent

    async def open(self) -> None:
        await self.transport.open()

    async def send(self, records: list[Record]) -> None:
        await self.transport.post(self.url, encode_array(records), content_type="application/json")

    async def close(self) -> None:
        await self.transport.close()


def event_time(t: float) -> msgspec.msgpack.Ext:
    """Fluentd's EventTime: ext type 0, seconds and nanoseconds as big-endian uint32."""
    t = max(0.0, t)
    seconds = int(t)
    nanos = min(999_999_000, round((t - seconds) * 1e6) * 1000)  # floats hold microseconds
    return msgspec.msgpack.Ext(0, struct.pack(">II", seconds, nanos))


def _strip_array_header(data: bytes) -> bytes:
    """The concatenated elements of an encoded msgpack array."""
    first = data[0]
    if 0x90 <= first <= 0x9F:
        return data[1:]
    return data[3:] if first == 0xDC else data[5:]


def forward_message(
    tag: str,
    records: list[Record],
    *,
    mode: str = "packed",
    event_times: bool = True,
    chunk: str | None = None,
) -> bytes:
    """One forward-protocol message carrying ``records``."""
    if event_times:
        entries = [[event_time(record_time(r)), r] for r in records]
    else:
        entries = [[int(record_time(r)), r] for r in records]
    option: dict[str, Any] = {"size": len(records)}
    if chunk is not None:
        option["chunk"] = chunk
    if mode == "forward":
        return _MSGPACK.encode([tag, entries, option])
    packed = _strip_array_header(_MSGPACK.encode(entries))
    if mode == "compressed":
        packed = gzip.compress(packed)
        option["compressed"] = "gzip"
    return _MSGPACK.encode([tag, packed, option])


def _sha512(*parts: str | bytes) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


class FluentdForwardOutput:
    """The forward protocol on one kept-alive connection, reconnecting after any error."""

    def __init__(self, name: str, config: FluentdForwardConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.hostname = config.self_hostname or socket.gethostname()
        self.bytes_sent = 0
        self._stream: anyio.abc.ByteStream | None = None
        self._buffer = bytearray()
        self._ssl: ssl.SSLContext | None = None

    async def open(self) -> None:
        """Connections are made on the first send (and after errors)."""

    async def close(self) -> None:
        await self._reset()

    async def _reset(self) -> None:
        stream, self._stream = self._stream, None
        self._buffer.clear()
        if stream is not None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1),
                contextlib.suppress(*_NET_ERRORS),
            ):
                await stream.aclose()

    def _alive(self, stream: anyio.abc.ByteStream) -> bool:
        """False when the server closed the kept-alive connection while we were idle."""
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610
        if sock is None:
            return True
        try:  # peek on a duplicate: the event loop's socket object refuses recv()
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                data = dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return bool(data)  # b"": end of stream; data (TLS tickets) means alive

    async def _connect(self) -> anyio.abc.ByteStream:
        config = self.config
        stream: anyio.abc.ByteStream
        if config.tls:
            if self._ssl is None:
                self._ssl = client_ssl_context(
                    ca_file=config.ca_file,
                    cert_file=config.cert_file,
                    key_file=config.key_file,
                    verify=config.tls_verify,
                )
            stream = await anyio.connect_tcp(
                config.host, config.port, ssl_context=self._ssl, tls_standard_compatible=False
            )
        else:
            stream = await anyio.connect_tcp(config.host, config.port)
        self._stream = stream
        self._buffer.clear()
        if config.shared_key is not None:
            await self._handshake(stream, config.shared_key)
        return stream

    async def _receive(self, stream: anyio.abc.ByteStream) -> Any:
        """The next msgpack message from the server."""
        while True:
            if self._buffer:
                try:
                    message = _DECODE.decode(bytes(self._buffer))
                except msgspec.DecodeError as err:
                    if "truncated" not in str(err):
                        msg = f"fluentd sent invalid msgpack: {err}"
                        raise RetryLater(msg, kind="protocol") from None
                else:
                    self._buffer.clear()
                    return message
            self._buffer += await stream.receive()

    async def _handshake(self, stream: anyio.abc.ByteStream, shared_key: str) -> None:
        config = self.config
        helo = await self._receive(stream)
        if not (isinstance(helo, list) and len(helo) == 2 and helo[0] == "HELO"):
            msg = "fluentd did not start with HELO"
            raise RetryLater(msg, kind="protocol")
        options = helo[1] if isinstance(helo[1], dict) else {}
        nonce = options.get("nonce") or b""
        auth = options.get("auth") or b""
        salt = os.urandom(16).hex()
        ping = ["PING", self.hostname, salt, _sha512(salt, self.hostname, nonce, shared_key)]
        if auth:
            user, password = config.username or "", config.password or ""
            ping += [user, _sha512(auth, user, password)]
        else:
            ping += ["", ""]
        await stream.send(_MSGPACK.encode(ping))
        pong = await self._receive(stream)
        if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
            msg = "fluentd did not answer PING with PONG"
            raise RetryLater(msg, kind="protocol")
        _, ok, reason, server, digest = pong
        if not ok:
            msg = f"fluentd refused authentication: {reason}"
            raise RetryLater(msg, kind="auth")
        if digest != _sha512(salt, str(server), nonce, shared_key):
            msg = "fluentd's shared key digest does not match"
            raise RetryLater(msg, kind="auth")

    @staticmethod
    def _check_ack(reply: Any, chunk: str, where: str) -> None:
        if not isinstance(reply, dict) or reply.get("ack") != chunk:
            msg = f"fluentd at {where} answered {reply!r:.100} instead of the ack"
            raise RetryLater(msg, kind="protocol")

    async def send(self, records: list[Record]) -> None:
        config = self.config
        chunk = base64.b64encode(os.urandom(16)).decode() if config.require_ack else None
        message = forward_message(
            config.tag,
            records,
            mode=config.mode,
            event_times=config.time_format == "event_time",
            chunk=chunk,
        )
        where = f"{config.host}:{config.port}"
        stage = "connect"
        try:
            with anyio.fail_after(config.timeout):
                stream = self._stream
                if stream is None or not self._alive(stream):
                    await self._reset()
                    stream = await self._connect()
                stage = "send"
                await stream.send(message)
                if chunk is not None:
                    stage = "ack"
                    self._check_ack(await self._receive(stream), chunk, where)
        except TimeoutError:
            await self._reset()
            kind = "ack_timeout" if stage == "ack" else "timeout"
            msg = f"fluentd at {where}: no {stage} within {config.timeout:g}s"
            raise RetryLater(msg, kind=kind) from None
        except RetryLater:
            await self._reset()
            raise
        except _NET_ERRORS as err:
            await self._reset()
            detail = str(err) or type(err).__name__
            msg = f"fluentd at {where}: {stage} failed: {detail}"
            raise RetryLater(msg, kind="connect") from None
        self.bytes_sent += len(message)
