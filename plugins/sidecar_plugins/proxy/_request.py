"""A request as the downstream side parsed it: its head, its body stream, and the checks on
both that answer 400 before anything is forwarded.

:class:`Request` carries the facts the forwarder needs (method, target, routed path, host,
framing, ``X-Request-ID``); :class:`RequestBody` streams the body to whatever the forwarder
attaches and keeps what a retry needs; :func:`parse_head` refuses ambiguous hosts and targets;
:func:`normalize_path` removes dot segments before routing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import httptools

__all__ = [
    "BadRequest",
    "Request",
    "RequestBody",
    "normalize_path",
    "parse_head",
    "simple_response",
]

_BAD_HOST = re.compile(r"[\s/\\@?#]")
_GOOD_HOSTS: set[str] = set()  # hosts that passed the check (a bounded cache)
_CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade", b""))
_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class _Reader(Protocol):
    """The connection a body pauses while nothing consumes it."""

    def pause_reading_for(self, reason: str) -> None: ...
    def resume_reading_for(self, reason: str) -> None: ...


def simple_response(
    status: int,
    body: bytes,
    *,
    close: bool,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """A complete proxy-generated response (``text/plain``)."""
    parts = [
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        % (status, _REASONS.get(status, b"Unknown"), len(body))
    ]
    parts += [name + b": " + value + b"\r\n" for name, value in extra]
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class RequestBody:
    """A request body in flight: buffered until a sink is attached, then passed straight on.

    Chunks are also kept (up to ``retain_limit`` bytes) so that a retry can replay them.
    """

    __slots__ = (
        "_conn",
        "_limit",
        "chunks",
        "complete",
        "error",
        "on_end",
        "on_error",
        "retained",
        "sink",
        "size",
    )

    def __init__(self, conn: _Reader, retain_limit: int) -> None:
        self._conn = conn
        self._limit = retain_limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.retained = True
        self.complete = False
        self.error = 0  # the status that ended it early: 413 too large, 499 client gone
        self.sink: Callable[[bytes], None] | None = None
        self.on_end: Callable[[], None] | None = None
        self.on_error: Callable[[], None] | None = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.retained:
            self.chunks.append(chunk)
            if self.size > self._limit:
                if self.sink is not None:
                    self.retained = False
                    self.chunks = []
                else:
                    self._conn.pause_reading_for("body")
        if self.sink is not None:
            self.sink(chunk)

    def finish(self) -> None:
        self.complete = True
        if self.on_end is not None:
            self.on_end()

    @property
    def replayable(self) -> bool:
        """True while every byte received so far can be sent again."""
        return self.retained

    def attach(self, sink: Callable[[bytes], None], on_end: Callable[[], None]) -> bool:
        """Send what arrived so far to ``sink``, the rest as it comes; False if not replayable."""
        if not self.retained:
            return False
        self.sink, self.on_end = sink, on_end
        for chunk in self.chunks:
            sink(chunk)
        if self.size > self._limit:
            self.retained = False
            self.chunks = []
        self._conn.resume_reading_for("body")
        if self.complete:
            on_end()
        return True

    def fail(self, status: int) -> None:
        """The body cannot be received completely (``status`` says why)."""
        if not self.error and not self.complete:
            self.error = status
            if self.on_error is not None:
                self.on_error()

    def detach(self) -> None:
        self.sink = self.on_end = self.on_error = None


class Request:
    """One request head as received, plus its body stream."""

    __slots__ = (
        "body",
        "chunked",
        "connection_tokens",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "host_bytes",
        "keep_alive",
        "method",
        "method_bytes",
        "path",
        "query",
        "raw_path",
        "request_id",
        "started",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method = ""
        self.method_bytes = b""
        self.target = b""
        self.raw_path = b""
        self.path = ""
        self.query = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes, bytes]] = []  # (lower name, name, value)
        self.host = ""
        self.host_bytes = b""
        self.keep_alive = True
        self.upgrade = False
        self.content_length: int | None = None
        self.chunked = False
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.expect_continue = False
        self.body: RequestBody | None = None
        self.request_id: bytes | None = None
        self.started = 0.0

    def header(self, lname: bytes) -> bytes | None:
        """The first value of header ``lname`` (lower case), or None."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None


#: Called with each request; returns None when it will call ``Connection.finish(request)``
#: itself (the synchronous fast path), or a coroutine that the connection runs as a task.
class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_head(request: Request, url: bytes) -> None:
    """Target, host and framing facts from the head; raises BadRequest on a malformed one."""
    request.target = url
    if url.startswith(b"/"):
        path, sep, query = url.partition(b"?")
        request.raw_path = path
        request.query = sep + query
    elif url == b"*" and request.method == "OPTIONS":
        request.raw_path = url
    elif url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(400, "malformed") from None
        request.raw_path = parsed.path or b"/"
        request.query = b"?" + parsed.query if parsed.query else b""
        host = parsed.host or b""
        if parsed.port:
            host += b":%d" % parsed.port
        request.host_bytes = host
    else:
        raise BadRequest(405 if request.method == "CONNECT" else 400, "bad_target")
    hosts = 0
    for lname, _, value in request.headers:
        if lname == b"host":
            hosts += 1
            if not request.host_bytes:
                request.host_bytes = value
        elif lname == b"content-length":
            request.content_length = int(value)  # llhttp accepted it: digits only
        elif lname == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")} - _CONNECTION_OPTIONS
            if tokens:
                request.connection_tokens |= tokens
        elif lname == b"transfer-encoding":
            request.chunked = True
        elif lname == b"x-request-id":
            request.request_id = value
        elif lname == b"expect" and value.lower() == b"100-continue":
            request.expect_continue = True
    if hosts > 1 or (hosts == 0 and request.version == "1.1" and not request.host_bytes):
        raise BadRequest(400, "bad_host")
    text = request.host = request.host_bytes.decode("latin-1")
    if text not in _GOOD_HOSTS:
        if _BAD_HOST.search(text) is not None or len(text) > 255:
            raise BadRequest(400, "bad_host")
        if len(_GOOD_HOSTS) >= 256:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(text)
    request.path = normalize_path(request.raw_path)


def normalize_path(raw: bytes) -> str:
    """The path for routing: latin-1 text with dot segments removed (RFC 3986 5.2.4).

    Percent-encoded dots and slashes stay as they are, so ``/api/%2e%2e/admin`` is matched
    literally; what reaches the app is what was routed.
    """
    path = raw.decode("latin-1")
    if "/." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments[1:], 1):
        if segment == "..":
            if out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        elif segment == ".":
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)
