"""``/livez``, ``/readyz`` and ``/healthz`` in the style of kube-apiserver.

A passing check answers ``200`` with the body ``ok``. A failing one answers ``503`` with one line
per check and a verdict, the same listing ``?verbose`` gives for a passing one::

    [+]ping ok
    [+]app ok: RUNNING
    [-]health/readiness-http failed: HTTP 503 (expected 200-399) in 2.1ms
    readyz check failed

``/readyz`` reads the readiness board (every plugin's checks and the core's ``app`` check), so
it says exactly what ``READY=1`` and the proxy go by; during the shutdown it fails at once.
``/livez`` reads :meth:`Monitor.live_checks`; ``/healthz`` is its legacy alias, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar_runtime import PluginContext, Request, Response

from ._config import format_seconds
from ._monitor import CheckLine, Monitor

__all__ = ["Endpoints", "format_line", "render"]

_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _verbose(query: Mapping[str, str]) -> bool:
    if "verbose" not in query:
        return False
    return query["verbose"].lower() not in ("0", "false", "no")


def format_line(line: CheckLine) -> str:
    """``[+]name ok: detail in 1.2ms`` or ``[-]name failed: detail in 1.2ms``."""
    took = f" in {format_seconds(line.duration)}" if line.duration is not None else ""
    if line.ok:
        return f"[+]{line.name} ok" + (f": {line.detail}{took}" if line.detail else "")
    return f"[-]{line.name} failed: {line.detail or 'failed'}{took}"


def render(what: str, lines: Sequence[CheckLine], ok: bool, *, verbose: bool) -> Response:
    """The kube-apiserver-style reply for ``what`` (``livez``, ``readyz``, ``healthz``)."""
    if ok and not verbose:
        text = "ok"
    else:
        verdict = "passed" if ok else "failed"
        text = "\n".join([*(format_line(line) for line in lines), f"{what} check {verdict}"])
    return Response(200 if ok else 503, _HEADERS, (text + "\n").encode())


class Endpoints:
    """The three handlers, mounted on the admin listener."""

    def __init__(self, ctx: PluginContext, monitor: Monitor) -> None:
        self.ctx = ctx
        self.monitor = monitor

    def mount(self) -> None:
        self.ctx.add_route("GET", "/livez", self.livez)
        self.ctx.add_route("GET", "/readyz", self.readyz)
        self.ctx.add_route("GET", "/healthz", self.healthz)

    def ready_checks(self) -> tuple[list[CheckLine], bool]:
        """The readiness board as lines, and its verdict (the board's, nothing else)."""
        board = self.ctx.readiness
        lines = []
        for name, result in board.checks().items():
            mine = self.monitor.describe(name)  # this plugin's probes add their duration
            if mine is not None:
                lines.append(CheckLine(name, result.ok, mine.detail, mine.duration))
            else:
                lines.append(CheckLine(name, result.ok, result.detail))
        if board.shutting_down:
            lines.append(CheckLine("shutdown", False, "the runtime is shutting down"))
        return lines, board.ready

    async def livez(self, request: Request) -> Response:
        """GET /livez: 200 `ok` while the app is live, else 503 listing each check (`?verbose`)."""
        lines = self.monitor.live_checks()
        return render("livez", lines, all(x.ok for x in lines), verbose=_verbose(request.query))

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: the same as `/livez` (Kubernetes' legacy name)."""
        lines = self.monitor.live_checks()
        return render("healthz", lines, all(x.ok for x in lines), verbose=_verbose(request.query))

    async def readyz(self, request: Request) -> Response:
        """GET /readyz: 200 `ok` while the readiness board is ready, else 503 listing each check."""
        lines, ok = self.ready_checks()
        return render("readyz", lines, ok, verbose=_verbose(request.query))
