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


def request_head(
    conn: Connection, req: Request, route: Route, request_id: bytes, *, trust_forwarded: bool
) -> bytes:
    """The request head for the upstream, built once for all tries."""
    path = req.raw_path if route.rewrite is None else b""
    if route.rewrite is not None or req.path != req.raw_path.decode("latin-1"):
        path = route.rewrite_path(req.path).encode("latin-1")
    parts = [req.method.encode("ascii"), b" ", path, req.query, b" HTTP/1.1\r\n"]
    append = parts.append
    skip = _REQUEST_SPECIAL | route.request_remove | req.connection_tokens
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
    host = req.host.encode("latin-1")
    if route.host_rewrite is not None:
        append(b"host: %s\r\n" % route.host_rewrite)
    elif not host_seen:
        append(b"host: %s\r\n" % (host or route.cluster.default_host))
    peer = conn.peer.encode("latin-1")
    append(b"x-forwarded-for: %s\r\n" % (xff + b", " + peer if xff else peer))
    if not proto:
        append(b"x-forwarded-proto: %s\r\n" % conn.listener.scheme)
    if not (trust_forwarded and req.header(b"x-forwarded-host")) and host:
        append(b"x-forwarded-host: %s\r\n" % host)
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
    n = (_random_bits(128) & _UUID_CLEAR) | _UUID_SET
    h = b"%032x" % n
    return b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def response_head(
    conn: Connection, req: Request, route: Route, upstream: UpstreamConnection
) -> tuple[bytes, bool]:
    """The response head for the client, and whether the body is sent chunked."""
    status = upstream.status
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    parts = [line]
    append = parts.append
    skip = HOP_BY_HOP | route.response_remove
    has_length = False
    tokens: set[bytes] = set()
    for name, value in upstream.headers:
        lname = name.lower()
        if lname in skip:
            if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                tokens |= {t.strip().lower() for t in value.split(b",")}
            continue
        if lname == b"content-length":
            has_length = True
        append(b"%s: %s\r\n" % (name, value))
    tokens -= {b"close", b"keep-alive", b""}
    if tokens:  # headers the upstream's Connection header names are hop-by-hop too
        parts = [line] + [
            b"%s: %s\r\n" % (n, v)
            for n, v in upstream.headers
            if (ln := n.lower()) not in skip and ln not in tokens
        ]
        append = parts.append
    if route.response_add:
        append(route.response_add)
    no_body = req.method == "HEAD" or status in (204, 304) or status < 200
    chunked = False
    close = conn.wants_close(req) or req.upgrade
    if not no_body and not has_length:
        if req.version == "1.1":
            append(b"transfer-encoding: chunked\r\n")
            chunked = True
        else:
            close = True  # an HTTP/1.0 client: the end of the body is the end of the connection
    if close:
        conn.close_after = True
        append(b"connection: close\r\n")
    elif req.version == "1.0":
        append(b"connection: keep-alive\r\n")
    append(b"\r\n")
    return b"".join(parts), chunked
