"""Real things for the metrics tests: an app metrics endpoint on 127.0.0.1 that tests make good,
garbage, slow, huge or failing while it runs; parsers for /metrics bodies; promtool."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import anyio
import pytest
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sidecar_runtime import Response

TEXT_CT = "text/plain; version=0.0.4; charset=utf-8"
OM_CT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OM_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

GOOD_TEXT = b"""\
# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/"} 7
http_requests_total{code="500",path="/"} 1
# HELP process_cpu_seconds_total The app's own process collector.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
# HELP queue_depth Items waiting.
# TYPE queue_depth gauge
queue_depth 3
"""

GOOD_OM = b"""\
# TYPE jobs counter
# HELP jobs Jobs done.
jobs_total{kind="a"} 4
jobs_created{kind="a"} 1700000000.0
# TYPE build info
build_info{version="1.2"} 1
# TYPE latency_seconds histogram
# UNIT latency_seconds seconds
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
# EOF
"""


class AppEndpoint:
    """What the fake app endpoint answers; change the attributes while it runs."""

    def __init__(self) -> None:
        self.status = 200
        self.body = GOOD_TEXT
        self.content_type = TEXT_CT
        self.delay = 0.0
        self.gzip = False
        self.hits = 0
        self.accept: list[str] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.accept.append(request.headers.get("Accept", ""))
        if self.delay:
            await anyio.sleep(self.delay)
        body = gzip.compress(self.body) if self.gzip else self.body
        headers = {"Content-Type": self.content_type}
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        return web.Response(status=self.status, body=body, headers=headers)


@asynccontextmanager
async def app_endpoint() -> AsyncIterator[AppEndpoint]:
    """Serve an :class:`AppEndpoint` at ``http://127.0.0.1:<port>/metrics``."""
    endpoint = AppEndpoint()
    app = web.Application()
    app.router.add_get("/metrics", endpoint.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield endpoint
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


def body_of(reply: Response) -> bytes:
    """A reply's body, gunzipped if it is compressed."""
    assert isinstance(reply.body, bytes)
    if reply.headers.get("Content-Encoding") == "gzip":
        return gzip.decompress(reply.body)
    return reply.body


def families(body: bytes, content_type: str = TEXT_CT) -> list[Metric]:
    """Parse a /metrics body strictly by its content type (OpenMetrics or the text format)."""
    text = body.decode()
    parse: Callable[[str], Iterable[Metric]] = (
        parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_text
    )
    return list(parse(text))


def samples(
    body: bytes, content_type: str = TEXT_CT
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a /metrics body."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in families(body, content_type):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found


def value(body: bytes, name: str, content_type: str = TEXT_CT, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels``."""
    matches = [
        v for lbl, v in samples(body, content_type).get(name, []) if labels.items() <= lbl.items()
    ]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def promtool_path() -> str:
    """promtool, or skip the test: the Debian package ``prometheus`` provides it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    return path


def promtool_check(body: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``body``."""
    return subprocess.run(
        [promtool_path(), "check", "metrics"],
        input=body.decode(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
