"""Header blocks for both directions, built as bytes in one pass over the headers.

The request head for the upstream drops hop-by-hop headers (and those ``Connection`` names),
sets ``X-Forwarded-For/-Proto/-Host``, ``X-Request-ID`` and ``X-Forwarded-Client-Cert`` (the
client's own is never passed on), and applies the route's edits. The response head for the
client drops hop-by-hop headers, applies the route's edits and frames the body again:
``Content-Length`` kept, else chunked (HTTP/1.1) or close-delimited (HTTP/1.0).
"""

from __future__ import annotations

import random
import re
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._request import Request
    from ._router import Route
    from ._server import Connection
    from ._upstream import UpstreamConnection

__all__ = ["HOP_BY_HOP", "request_head", "request_id", "response_head"]

_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}")
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
#: Request headers the proxy sets itself (or drops), besides the hop-by-hop ones.
_REQUEST_SPECIAL = HOP_BY_HOP | {
    b"expect",
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"x-forwarded-client-cert",
}
_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode("latin-1")) for s in HTTPStatus
}
_random_bits = random.Random().getrandbits  # noqa: S311 - request IDs need uniqueness, not secrecy
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close"))
_PLAIN_TOKENS = frozenset((b"close", b"keep-alive", b""))
_NOTHING: frozenset[bytes] = frozenset()
#: A route's removal set → all the names to drop (the key ``frozenset()`` holds the base set).
_REQUEST_SKIP = {_NOTHING: _REQUEST_SPECIAL}
_RESPONSE_SKIP = {_NOTHING: HOP_BY_HOP}


def request_head(
    conn: Connection, req: Request, route: Route, request_id: bytes, *, trust_forwarded: bool
) -> bytes:
    """The request head for the upstream, built once for all tries."""
    raw_path = req.raw_path
    if route.rewrite is not None or (b"/." in raw_path and req.path != raw_path.decode("latin-1")):
        path = route.rewrite_path(req.path).encode("latin-1")
    else:
        path = raw_path
    parts = [req.method_bytes, b" ", path, req.query, b" HTTP/1.1\r\n"]
    append = parts.append
    skip = _REQUEST_SKIP.get(route.request_remove) or _skip_set(_REQUEST_SKIP, route.request_remove)
    if req.connection_tokens:
        skip = skip | req.connection_tokens
    xff = b""
    proto = host_seen = b""
    for lname, name, value in req.headers:
        if lname in skip:
            if lname == b"host":
                host_seen = value
                if route.host_rewrite is None:
                    append(b"%s: %s\r\n" % (name, value))
            elif lname == b"x-forwarded-for":
                xff = xff + b", " + value if xff else value
            elif trust_forwarded and lname in (b"x-forwarded-proto", b"x-forwarded-host"):
                if lname == b"x-forwarded-proto":
                    proto = value
                append(b"%s: %s\r\n" % (name, value))
            elif lname == b"upgrade" and req.upgrade:
                append(b"%s: %s\r\n" % (name, value))
            continue
        append(b"%s: %s\r\n" % (name, value))
    host = req.host_bytes
    if route.host_rewrite is not None:
        append(b"host: %s\r\n" % route.host_rewrite)
    elif not host_seen:
        append(b"host: %s\r\n" % (host or route.cluster.default_host))
    if xff:
        append(b"x-forwarded-for: %s, %s\r\n" % (xff, conn.peer_bytes))
    else:
        append(conn.forwarded_for)  # "x-forwarded-for: <peer>", built once per connection
    if not proto:
        append(conn.listener.forwarded_proto)
    if host and not (trust_forwarded and req.header(b"x-forwarded-host")):
        append(b"x-forwarded-host: %s\r\nx-request-id: %s\r\n" % (host, request_id))
    else:
        append(b"x-request-id: %s\r\n" % request_id)
    if conn.identity is not None:
        append(b"x-forwarded-client-cert: %s\r\n" % conn.identity.xfcc().encode("latin-1"))
    if route.request_add:
        append(route.request_add)
    if req.upgrade:
        append(b"connection: upgrade\r\n")
    elif req.chunked:
        append(b"transfer-encoding: chunked\r\n")
    append(b"\r\n")
    return b"".join(parts)


def request_id(req: Request) -> bytes:
    """The client's ``X-Request-ID`` when it is sane, else a new random (version 4) UUID."""
    value = req.request_id
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    h = "%032x" % ((_random_bits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def _skip_set(
    cache: dict[frozenset[bytes], frozenset[bytes]], extra: frozenset[bytes]
) -> frozenset[bytes]:
    """The names to drop: the cache's base set plus a route's ``extra`` ones (computed once)."""
    if len(cache) >= 1024:  # reloads with ever new removal sets: start over
        base = cache[_NOTHING]
        cache.clear()
        cache[_NOTHING] = base
    skip = cache[extra] = cache[_NOTHING] | extra
    return skip


def response_head(
    conn: Connection, req: Request, route: Route, upstream: UpstreamConnection
) -> tuple[bytes, bool]:
    """The response head for the client, and whether the body is sent chunked."""
    status = upstream.status
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    parts = [line]
    append = parts.append
    skip = _RESPONSE_SKIP.get(route.response_remove) or _skip_set(
        _RESPONSE_SKIP, route.response_remove
    )
    has_length = False
    tokens: set[bytes] | None = None
    for name, value in upstream.headers:
        lname = name.lower()
        if lname in skip:
            if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                named = {t.strip().lower() for t in value.split(b",")} - _PLAIN_TOKENS
                tokens = named if tokens is None else tokens | named
            continue
        if lname == b"content-length":
            has_length = True
        append(b"%s: %s\r\n" % (name, value))
    if tokens:  # headers the upstream's Connection header names are hop-by-hop too
        parts = [line] + [
            b"%s: %s\r\n" % (n, v)
            for n, v in upstream.headers
            if (ln := n.lower()) not in skip and ln not in tokens
        ]
        append = parts.append
    if route.response_add:
        append(route.response_add)
    chunked = False
    close = conn.wants_close(req) or req.upgrade
    if not has_length and status >= 200 and status not in (204, 304) and req.method != "HEAD":
        if req.version == "1.1":
            append(b"transfer-encoding: chunked\r\n")
            chunked = True
        else:
            close = True  # an HTTP/1.0 client: the end of the body is the end of the connection
    if close:
        conn.close_after = True
        append(b"connection: close\r\n\r\n")
    elif req.version == "1.0":
        append(b"connection: keep-alive\r\n\r\n")
    else:
        append(b"\r\n")
    return b"".join(parts), chunked
