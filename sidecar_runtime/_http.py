"""The core's small HTTP types. Plugins mount routes with these; the admin plugin serves them.

The core never imports an HTTP server: a route is a method, an exact path and an async handler
from :class:`Request` to :class:`Response`. A response body is bytes or an async iterator of
bytes (streamed). Routes marked ``mutating`` are POST-only and the admin listener refuses them
to non-loopback clients unless a token is configured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec

__all__ = ["Handler", "Request", "Response", "Route", "RouteTable"]


class Request(msgspec.Struct, frozen=True):
    """An HTTP request as the core sees it. Header names are lower case."""

    method: str
    path: str
    query: Mapping[str, str] = msgspec.field(default_factory=dict)
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""
    client: str | None = None


class Response(msgspec.Struct, frozen=True):
    """A reply: ``body`` is bytes, or an async iterator of chunks to stream."""

    status: int = 200
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
        return cls(status, {"Content-Type": "application/json"}, body)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode())


Handler = Callable[[Request], Awaitable[Response]]


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    handler: Handler
    owner: str
    mutating: bool = False


class RouteTable:
    """Routes by exact path; one handler per (method, path)."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}

    def add(
        self, method: str, path: str, handler: Handler, *, owner: str, mutating: bool = False
    ) -> Route:
        """Mount ``handler``; ValueError if the path does not start with '/' or is taken."""
        method = method.upper()
        if not path.startswith("/"):
            msg = f"route path {path!r} must start with '/'"
            raise ValueError(msg)
        if mutating and method != "POST":
            msg = f"mutating route {path!r} must be POST, not {method}"
            raise ValueError(msg)
        key = (method, path)
        if key in self._routes:
            msg = f"route {method} {path} is already mounted by {self._routes[key].owner!r}"
            raise ValueError(msg)
        route = Route(method, path, handler, owner, mutating)
        self._routes[key] = route
        return route

    def remove(self, route: Route) -> None:
        if self._routes.get((route.method, route.path)) is route:
            del self._routes[(route.method, route.path)]

    def resolve(self, method: str, path: str) -> tuple[Route | None, list[str]]:
        """The route for ``method path`` (GET also serves HEAD), and the methods ``path`` allows."""
        method = method.upper()
        route = self._routes.get((method, path))
        if route is None and method == "HEAD":
            route = self._routes.get(("GET", path))
        allowed = sorted(m for m, p in self._routes if p == path)
        return route, allowed

    def routes(self) -> list[Route]:
        return sorted(self._routes.values(), key=lambda r: (r.path, r.method))
