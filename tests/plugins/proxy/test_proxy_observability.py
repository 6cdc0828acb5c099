"""What the proxy tells: ``request_finished`` access log events (sampled, errors always) and
the ``sidecar_proxy_*`` metrics on the shared registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from sidecar_plugins.proxy._accesslog import AccessLog, Outcome
from sidecar_plugins.proxy._config import AccessLogConfig

from sidecar_runtime._logging import configure_logging
from tests.plugins.proxy.helpers import aiohttp_upstream, config, running_proxy

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})


def outcome(status: int) -> Outcome:
    out = Outcome()
    out.status = status
    out.request_id = b"rid"
    return out


def emit(log: AccessLog, status: int) -> None:
    log.emit(
        method="GET",
        path="/",
        outcome=outcome(status),
        bytes_out=1,
        duration=0.001,
        client="127.0.0.1",
        identity=None,
    )


def test_sampling_keeps_every_error() -> None:
    """sample = 0 drops successful requests but never a 5xx; enabled = false drops all."""
    recorder = Recorder()
    sampled = AccessLog(recorder, msgspec.convert({"sample": 0.0}, AccessLogConfig))
    for status in (200, 404, 502, 503):
        emit(sampled, status)
    assert [e["status"] for e in recorder.events] == [502, 503]
    off = Recorder()
    emit(AccessLog(off, msgspec.convert({"enabled": False}, AccessLogConfig)), 500)
    assert off.events == []


@pytest.fixture
def info_log(tmp_path: Path) -> Iterator[Path]:
    """The runtime's log at info level into a file, reset to the default afterwards."""
    path = tmp_path / "log.jsonl"
    stream = configure_logging("info", "json", str(path))
    yield path
    configure_logging("warning")
    stream.close()


async def test_access_log_event_and_metrics(info_log: Path) -> None:
    """A proxied request logs one ``request_finished`` event with its fields, and the request
    counter, histograms and gauges appear in the exposition."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async with aiohttp_upstream(ok) as port, running_proxy(config(port)) as proxy:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                headers = {"X-Request-ID": "req-1"}
                async with session.get(f"{proxy.url}/p?q=1", headers=headers) as r:
                    assert await r.text() == "hello"
            async with session.get(f"{proxy.url}/p", data=b"body") as r:
                assert r.status == 200
        text = generate_latest(proxy.harness.metrics).decode()
    assert 'sidecar_proxy_requests_total{code_class="2xx",method="GET",route="route0"} 4.0' in text
    assert 'sidecar_proxy_request_duration_seconds_count{route="route0"} 4.0' in text
    assert 'sidecar_proxy_upstream_duration_seconds_count{upstream="app"} 4.0' in text
    assert "sidecar_proxy_requests_in_flight 0.0" in text
    assert 'sidecar_proxy_upstream_connections{state="idle",upstream="app"} 1.0' in text
    assert 'sidecar_proxy_circuit_open{threshold="requests",upstream="app"} 0.0' in text
    log_text = await anyio.Path(info_log).read_text()
    events = [json.loads(line) for line in log_text.splitlines()]
    finished = [e for e in events if e["event"] == "request_finished"]
    assert len(finished) == 4
    first = finished[0]
    assert first["request_id"] == "req-1"
    assert (first["method"], first["path"], first["status"]) == ("GET", "/p", 200)
    assert (first["route"], first["upstream"], first["retries"]) == ("route0", "app", 0)
    assert first["client"] == "127.0.0.1"
    assert first["bytes_out"] > len("hello")
    assert first["upstream_ms"] >= 0
    assert finished[-1]["bytes_in"] == 4
