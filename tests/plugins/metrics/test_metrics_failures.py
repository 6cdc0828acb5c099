"""Bad input never breaks /metrics: broken, slow or huge app endpoints, vanished processes."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import aiohttp
import pytest
from sidecar_plugins.metrics import MetricsPlugin
from sidecar_plugins.metrics._app_scrape import AppMetricsMerger
from sidecar_plugins.metrics._config import Source
from sidecar_plugins.metrics._process_tree import AppProcessCollector
from sidecar_plugins.metrics._procfs import IOCounters, ProcFS
from sidecar_plugins.metrics._selfstats import SelfStats

from sidecar_runtime.testing import plugin_harness, python_app
from tests.conftest import free_port
from tests.plugins.metrics.metrics_fakes import (
    GOOD_OM,
    GOOD_TEXT,
    OM_CT,
    app_endpoint,
    body_of,
    samples,
    value,
)
from tests.plugins.metrics.test_metrics_merge import RecordingLog

pytestmark = pytest.mark.anyio

SLEEPER = python_app("import time\ntime.sleep(60)")


def source(url: str, *, timeout: float = 1.0, max_bytes: int = 1 << 20) -> Source:
    """An endpoint named app with the default prefix."""
    return Source("app", "app_", url, timeout, max_bytes)


async def test_every_kind_of_failure_is_counted_and_logged_on_change() -> None:
    """Each failure has its reason; a failing endpoint is logged once per change, not per scrape."""
    log = RecordingLog()
    async with app_endpoint() as endpoint, aiohttp.ClientSession() as session:
        refused = f"http://127.0.0.1:{free_port()}/metrics"
        merger = AppMetricsMerger(
            [source(endpoint.url, timeout=0.5, max_bytes=4096)], log, lambda: True
        )

        async def reason(**change: object) -> str | None:
            for key, new in change.items():
                setattr(endpoint, key, new)
            [result] = await merger.scrape(session)
            return None if result.failure is None else result.failure.reason

        assert await reason() is None
        assert await reason(body=b"<html>oops</html>", content_type="text/html") == "parse"
        assert await reason() == "parse"
        assert await reason(body=GOOD_TEXT, content_type="text/plain", delay=2.0) == "timeout"
        assert await reason(delay=0.0, body=b"x 1\n" * 2000) == "too_large"
        assert await reason(body=GOOD_TEXT, status=500) == "http_status"
        assert await reason(status=200, gzip=True) is None
        assert await reason(gzip=False, content_type="application/json") is None
        assert await reason(body=GOOD_OM, content_type=OM_CT) is None
        merger.sources[0] = source(refused)
        assert await reason() == "connection"
        assert endpoint.accept[0].startswith("application/openmetrics-text;version=1.0.0")
    failed = log.named("app_metrics_scrape_failed")
    assert [f["reason"] for f in failed] == [
        "parse",
        "timeout",
        "too_large",
        "http_status",
        "connection",
    ]
    assert all(level == "warning" for level, event, _ in log.events if event.endswith("failed"))
    assert len(log.named("app_metrics_scrape_recovered")) == 1


async def test_failures_before_the_app_runs_are_info() -> None:
    """While the app is not RUNNING an unreachable endpoint is expected: info, not warning."""
    log = RecordingLog()
    async with aiohttp.ClientSession() as session:
        merger = AppMetricsMerger([source(f"http://127.0.0.1:{free_port()}/")], log, lambda: False)
        await merger.scrape(session)
    assert [(level, event) for level, event, _ in log.events] == [
        ("info", "app_metrics_scrape_failed")
    ]


async def test_gzip_bomb_is_cut_at_max_bytes() -> None:
    """max_bytes counts decoded bytes: a small compressed body that inflates is refused."""
    async with app_endpoint() as endpoint, aiohttp.ClientSession() as session:
        endpoint.body = b"a 1\n" * (1 << 19)  # 2 MiB of text, ~4 KiB gzipped
        endpoint.gzip = True
        assert len(gzip.compress(endpoint.body)) < 64 << 10
        merger = AppMetricsMerger(
            [source(endpoint.url, max_bytes=64 << 10)], RecordingLog(), lambda: True
        )
        [result] = await merger.scrape(session)
        assert result.failure is not None
        assert result.failure.reason == "too_large"


@pytest.mark.parametrize(
    "change",
    [
        {"body": b"\x00\x01\x02 not metrics"},
        {"status": 503},
        {"delay": 5.0},
        {"body": b"# TYPE x counter\nx_total 1\n" * 50000},
    ],
    ids=["garbage", "status", "slow", "huge"],
)
async def test_a_broken_app_endpoint_never_breaks_metrics(change: dict[str, object]) -> None:
    """/metrics answers within the scraper's timeout, valid, with the endpoint down."""
    async with app_endpoint() as endpoint:
        for key, new in change.items():
            setattr(endpoint, key, new)
        config = {"app_metrics": [{"url": endpoint.url, "max_bytes": 100_000}]}
        async with plugin_harness(MetricsPlugin, config, name="metrics", app=SLEEPER) as harness:
            await harness.start_app()
            began = time.monotonic()
            reply = await harness.request(
                "GET", "/metrics", headers={"x-prometheus-scrape-timeout-seconds": "0.5"}
            )
            assert time.monotonic() - began < 1.5
            body = body_of(reply)
            assert reply.status == 200
            assert value(body, "sidecar_app_metrics_up", source="app") == 0
            assert value(body, "sidecar_app_starts_total") == 1
            assert not any(name.startswith("app_") for name in samples(body))


@pytest.fixture
def forked_app() -> Iterator[tuple[int, int]]:
    """A real app (pid) with one child (pid) that it waits for, in its own session."""
    code = """
        import os, sys, time
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        time.sleep(60)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        yield proc.pid, child
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


class VanishingProcFS(ProcFS):
    """/proc, where ``victim`` is killed and reaped just as its ``io`` is about to be read."""

    def __init__(self, victim: int) -> None:
        super().__init__()
        self.victim = victim

    def io(self, pid: int) -> IOCounters | None:
        if pid == self.victim:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.005)
        return super().io(pid)


def test_a_process_that_vanishes_mid_scrape_is_left_out_and_counted(
    forked_app: tuple[int, int],
) -> None:
    """The child dies between two reads: it is left out, counted, logged; the rest is served."""
    root, child = forked_app
    log = RecordingLog()
    stats = SelfStats(log)
    fs = VanishingProcFS(child)
    collector = AppProcessCollector(lambda: root, stats, fs=fs)
    families = {f.name: f for f in collector.collect()}
    assert families["sidecar_app_tree_processes"].samples[0].value == 1
    assert families["sidecar_app_resident_memory_bytes"].samples[0].value > 0
    assert stats.vanished == 1
    assert log.named("app_process_vanished") == [{"pid": child}]
    assert not log.named("metrics_collector_failed")
    vanished = {f.name: f for f in stats.collect()}["sidecar_metrics_vanished_processes"]
    assert vanished.samples[0].value == 1
    collector.close()


def test_a_root_that_is_gone_gives_empty_sums() -> None:
    """An app pid that no longer exists: no main-process series, zero sums, no error."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    stats = SelfStats(RecordingLog())
    collector = AppProcessCollector(lambda: gone.pid, stats)
    families = {f.name: f for f in collector.collect()}
    assert "sidecar_app_cpu_seconds" not in families
    assert families["sidecar_app_tree_processes"].samples[0].value == 0
    assert stats.errors == {}
