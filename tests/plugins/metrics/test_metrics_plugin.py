"""The metrics plugin on a real core with real apps: what /metrics holds, in both formats."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from sidecar_plugins.metrics import MetricsPlugin
from sidecar_plugins.metrics._catalog import SPECS

from sidecar_runtime import AppState
from sidecar_runtime.testing import PluginHarness, plugin_harness, python_app
from tests.plugins.metrics.metrics_fakes import (
    OM_ACCEPT,
    OM_CT,
    TEXT_CT,
    app_endpoint,
    body_of,
    families,
    promtool_check,
    samples,
    value,
)

pytestmark = pytest.mark.anyio

SLEEPER = python_app("import time\ntime.sleep(60)")
MIB = 1 << 20


async def scrape(harness: PluginHarness, **headers: str) -> bytes:
    """GET /metrics through the route; the body, gunzipped."""
    reply = await harness.request("GET", "/metrics", headers=headers)
    assert reply.status == 200
    return body_of(reply)


async def scrape_until(harness: PluginHarness, done: Any) -> bytes:
    """Scrape every 50 ms until ``done(body)`` holds (10 s at most)."""
    with anyio.fail_after(10):
        while True:
            body = await scrape(harness)
            if done(body):
                return body
            await anyio.sleep(0.05)


def expected_names(collectors: Iterable[str]) -> set[str]:
    """The catalog's family names of ``collectors``."""
    return {s.name for s in SPECS if s.collector in collectors}


@pytest.mark.slow
async def test_default_scrape_serves_every_catalogued_series() -> None:
    """Runtime, app, tree and self series are all there, with HELP, for a running app."""
    async with plugin_harness(MetricsPlugin, name="metrics", app=SLEEPER) as harness:
        await harness.start_app()
        with anyio.fail_after(10):
            await harness.app.wait_state(AppState.RUNNING)
        body = await scrape(harness)
        text = body.decode()
        own = {"sidecar_metrics_vanished_processes_total", "sidecar_metrics_errors_total"}
        for name in expected_names(["runtime", "app", "app_tree"]) | own:
            assert f"# HELP {name} " in text, name
        assert value(body, "sidecar_app_up") == 1
        assert value(body, "sidecar_app_state", state="RUNNING") == 1
        assert value(body, "sidecar_app_state", state="BACKOFF") == 0
        assert value(body, "sidecar_app_starts_total") == 1
        assert value(body, "sidecar_app_tree_processes") == 1
        assert value(body, "sidecar_app_resident_memory_bytes") > MIB
        assert value(body, "sidecar_app_max_fds") > 0
        assert value(body, "sidecar_app_start_duration_seconds") >= 1.0
        assert value(body, "sidecar_app_start_time_seconds") == pytest.approx(time.time(), abs=30)
        assert value(body, "sidecar_plugin_state", plugin="metrics", state="running") == 1
        assert value(body, "process_cpu_seconds_total") > 0  # sidecar-run's own process
        assert "python_info" in samples(body)
        assert "sidecar_app_metrics_up" not in text  # no app endpoint configured
        assert not any(name.startswith("app_") for name in samples(body))


@pytest.mark.parametrize(
    ("code", "labels"),
    [("sys.exit(3)", {"code": "3"}), ("os.kill(os.getpid(), signal.SIGKILL)", {"signal": "KILL"})],
)
async def test_exits_by_code_and_signal(code: str, labels: dict[str, str]) -> None:
    """An exit is counted with its code, or with its signal's name when a signal killed it."""
    app = python_app(f"import os, signal, sys, time\ntime.sleep(0.2)\n{code}")
    async with plugin_harness(MetricsPlugin, name="metrics", app=app) as harness:
        await harness.start_app()
        with anyio.fail_after(10):
            await harness.app.wait_state(AppState.EXITED)
        body = await scrape(harness)
        assert samples(body)["sidecar_app_exits_total"] == [(labels, 1.0)]
        assert value(body, "sidecar_app_up") == 0
        assert value(body, "sidecar_app_tree_processes") == 0
        assert "sidecar_app_cpu_seconds_total" not in samples(body)  # no main process now


async def test_tree_sums_children_with_known_memory() -> None:
    """Children that each touch 24 MiB: tree RSS >= their sum, process count exact."""
    children, size = 3, 24
    app = python_app(
        f"""
        import os, time
        for _ in range({children}):
            if os.fork() == 0:
                block = bytearray({size} << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
        """
    )
    async with plugin_harness(MetricsPlugin, name="metrics", app=app) as harness:
        await harness.start_app()
        floor = children * size * MIB
        body = await scrape_until(
            harness,
            lambda b: (
                value(b, "sidecar_app_tree_processes") == children + 1
                # every child has touched all its memory (the main process is not counted)
                and value(b, "sidecar_app_tree_resident_memory_bytes")
                - value(b, "sidecar_app_resident_memory_bytes")
                >= floor
            ),
        )
        tree_rss = value(body, "sidecar_app_tree_resident_memory_bytes")
        main_rss = value(body, "sidecar_app_resident_memory_bytes")
        assert floor <= tree_rss <= floor + (children + 1) * 64 * MIB
        assert main_rss < tree_rss - floor * 0.9
        assert value(body, "sidecar_app_tree_threads") >= children + 1
        assert value(body, "sidecar_app_tree_open_fds") >= value(body, "sidecar_app_open_fds")
        assert value(body, "sidecar_app_tree_virtual_memory_bytes") > tree_rss
        assert value(body, "sidecar_app_tree_zombie_processes") == 0


async def test_tree_counters_never_go_down_as_children_exit() -> None:
    """Children burn CPU and exit one by one; the tree's CPU counter only grows, and keeps it."""
    app = python_app(
        """
        import os, time
        time.sleep(0.3)
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                end = time.process_time() + 0.15
                while time.process_time() < end:
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
        time.sleep(60)
        """
    )
    async with plugin_harness(MetricsPlugin, name="metrics", app=app) as harness:
        await harness.start_app()
        seen: list[float] = []
        faults: list[float] = []
        with anyio.fail_after(15):
            while True:
                body = await scrape(harness)
                got = samples(body)
                seen.append(sum(v for _, v in got["sidecar_app_tree_cpu_seconds_total"]))
                faults.append(sum(v for _, v in got["sidecar_app_tree_page_faults_total"]))
                if seen[-1] >= 0.4 and value(body, "sidecar_app_tree_processes") == 1:
                    break
                await anyio.sleep(0.03)
        assert seen == sorted(seen)
        assert faults == sorted(faults)
        main = sum(v for _, v in samples(body)["sidecar_app_cpu_seconds_total"])
        assert seen[-1] - main >= 0.3  # the exited children's CPU time stays in the tree


async def test_zombies_count_in_the_tree() -> None:
    """A child its parent never waited for is a zombie: counted, not taken for vanished."""
    app = python_app("import os, time\nif os.fork() == 0:\n    os._exit(0)\ntime.sleep(60)")
    config = {"collectors": {"app_pss_uss": True}}
    async with plugin_harness(MetricsPlugin, config, name="metrics", app=app) as harness:
        await harness.start_app()
        body = await scrape_until(
            harness, lambda b: value(b, "sidecar_app_tree_zombie_processes") == 1
        )
        assert value(body, "sidecar_app_tree_processes") == 2
        assert value(body, "sidecar_metrics_vanished_processes_total") == 0
        assert value(body, "sidecar_app_tree_unique_memory_bytes") > 0


async def test_collectors_can_be_turned_off_and_pss_uss_on() -> None:
    """Turned-off groups are absent; app_pss_uss adds PSS/USS/swap for the app and its tree."""
    config = {
        "collectors": {"process": False, "python": False, "app_tree": False, "app_pss_uss": True}
    }
    async with plugin_harness(MetricsPlugin, config, name="metrics", app=SLEEPER) as harness:
        await harness.start_app()
        body = await scrape_until(harness, lambda b: "sidecar_app_cpu_seconds_total" in samples(b))
        names = set(samples(body))
        assert not any(n.startswith(("process_", "python_", "sidecar_app_tree_")) for n in names)
        assert value(body, "sidecar_app_proportional_memory_bytes") > 0
        assert value(body, "sidecar_app_unique_memory_bytes") > 0
        assert "sidecar_app_swap_memory_bytes" in names
        assert "sidecar_app_up" in names
    off = {"collectors": {"app": False, "app_tree": False, "runtime": False}}
    async with plugin_harness(MetricsPlugin, off, name="metrics", app=SLEEPER) as harness:
        await harness.start_app()
        names = set(samples(await scrape(harness)))
        assert not any(n.startswith("sidecar_app") for n in names)
        assert "process_cpu_seconds_total" in names


async def test_const_labels_and_other_plugins_series() -> None:
    """Const labels reach every series: ours, another plugin's, and the app's merged ones."""
    async with app_endpoint() as endpoint:
        config = {
            "const_labels": {"pod": "web-1", "path": "ours"},
            "app_metrics": [{"url": endpoint.url}],
        }
        async with plugin_harness(MetricsPlugin, config, name="metrics", app=SLEEPER) as harness:
            jobs = Counter("other_plugin_jobs", "Jobs of another plugin.", registry=harness.metrics)
            jobs.inc(2)
            await harness.start_app()
            body = await scrape(harness)
            for name, series in samples(body).items():
                for labels, _ in series:
                    assert labels.get("pod") == "web-1", name
            assert value(body, "other_plugin_jobs_total") == 2
            # the app's own "path" label is kept as exported_path
            assert value(body, "app_http_requests_total", code="500", exported_path="/") == 1


async def test_both_formats_gzip_and_promtool() -> None:
    """Text passes promtool; OpenMetrics passes the strict parser (promtool only reads text)."""
    async with app_endpoint() as endpoint:
        config = {"app_metrics": [{"url": endpoint.url}], "const_labels": {"ns": "prod"}}
        async with plugin_harness(MetricsPlugin, config, name="metrics", app=SLEEPER) as harness:
            await harness.start_app()
            text_reply = await harness.request(
                "GET", "/metrics", headers={"accept-encoding": "gzip"}
            )
            assert text_reply.headers["Content-Type"] == TEXT_CT
            assert text_reply.headers["Content-Encoding"] == "gzip"
            text = body_of(text_reply)
            result = promtool_check(text)
            assert result.returncode == 0, result.stderr
            om_reply = await harness.request("GET", "/metrics", headers={"accept": OM_ACCEPT})
            assert om_reply.headers["Content-Type"] == OM_CT
            assert "Content-Encoding" not in om_reply.headers
            om = body_of(om_reply)
            assert om.endswith(b"# EOF\n")
            assert value(om, "app_queue_depth", OM_CT, ns="prod") == 3
            result = promtool_check(om)
            # promtool 2.x lints OpenMetrics as the text format: a counter's _total series then
            # looks like a family without HELP. Anything else (a parse error) fails here.
            assert result.returncode in (0, 3), result.stderr
            om_names = {f.name for f in families(om, OM_CT)}
            for line in result.stderr.splitlines():
                name, _, problem = line.partition(" ")
                assert problem == "no help text", line
                assert name.removesuffix("_total").removesuffix("_created") in om_names, line


async def test_broken_collector_of_another_plugin_costs_only_its_series() -> None:
    """A registered collector that raises is left out and counted; /metrics stays 200."""

    class Broken:
        def describe(self) -> list[Metric]:
            return []

        def collect(self) -> list[Metric]:
            raise RuntimeError("boom")

    async with plugin_harness(MetricsPlugin, name="metrics", app=SLEEPER) as harness:
        harness.metrics.register(Broken())
        await harness.start_app()
        await scrape(harness)
        body = await scrape(harness)
        assert value(body, "sidecar_metrics_errors_total", collector="Broken") == 2
        assert value(body, "sidecar_app_starts_total") == 1


async def test_stopping_unregisters_the_collectors() -> None:
    """After the plugin stops, the shared registry holds none of its collectors (it may rerun)."""
    async with plugin_harness(MetricsPlugin, name="metrics", app=SLEEPER) as harness:
        await harness.start_app()
        await scrape(harness)
        registry = harness.metrics
        assert any(f.name == "sidecar_app_up" for f in registry.collect())
    assert not any(
        f.name.startswith(("sidecar_", "process_", "python_")) for f in registry.collect()
    )


async def test_own_listener() -> None:
    """With listen set, /metrics is served there (GET, HEAD) and not on the admin routes."""
    async with plugin_harness(
        MetricsPlugin, {"listen": "127.0.0.1:0", "path": "/prom"}, name="metrics", app=SLEEPER
    ) as harness:
        assert (await harness.request("GET", "/prom")).status == 404  # not on the admin table
        url = f"http://{harness.info['listen']}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/prom", headers={"Accept": OM_ACCEPT}) as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"] == OM_CT
                assert (await reply.read()).endswith(b"# EOF\n")
            async with session.head(f"{url}/prom") as reply:
                assert reply.status == 200
                assert await reply.read() == b""
            async with session.get(f"{url}/metrics") as reply:
                assert reply.status == 404
            async with session.post(f"{url}/prom") as reply:
                assert reply.status == 405
