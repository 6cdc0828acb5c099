"""The health plugin on a real core (``plugin_harness``): the readiness board, restarts through
the core, startup gating, endpoints, metrics, and bad targets that never crash it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import TaskStatus
from sidecar_plugins.health import HealthConfig, HealthPlugin
from sidecar_plugins.health._monitor import Monitor

from sidecar_runtime import AppState, PluginContext, Response
from sidecar_runtime.testing import PluginHarness, plugin_harness
from tests.conftest import free_port
from tests.plugins.health.helpers import (
    group_alive,
    http_target,
    pid_alive,
    read_pids,
    tcp_target,
    wait_for,
)

pytestmark = pytest.mark.anyio

FAST = {"period": "30ms", "timeout": "20ms"}


class Health(HealthPlugin):
    """The health plugin, keeping each instance so tests can look at its monitor."""

    instances: ClassVar[list[Health]] = []
    crash: ClassVar[anyio.Event | None] = None

    def __init__(self, config: HealthConfig, /) -> None:
        super().__init__(config)
        Health.instances.append(self)

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        crash = Health.crash
        async with anyio.create_task_group() as tg:
            await tg.start(super().run, ctx)
            task_status.started()
            if crash is not None:
                await crash.wait()
                Health.crash = None
                raise RuntimeError("crashed on purpose")

    @classmethod
    def latest_monitor(cls) -> Monitor:
        monitor = cls.instances[-1].monitor
        assert monitor is not None
        return monitor


def text(reply: Response) -> str:
    assert isinstance(reply.body, bytes)
    return reply.body.decode()


async def get(harness: PluginHarness, path: str, verbose: bool = False) -> tuple[int, str]:
    reply = await harness.request("GET", path, query={"verbose": ""} if verbose else None)
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    return reply.status, text(reply)


def board(harness: PluginHarness, name: str) -> bool:
    return harness.readiness.checks()[name].ok


def metric(harness: PluginHarness, name: str, **labels: str) -> float:
    value = harness.metrics.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


@pytest.mark.slow
async def test_default_config_ready_while_running_and_unready_at_shutdown() -> None:
    """Without probes /readyz follows the app's RUNNING; shutdown fails it at once, not /livez."""
    async with plugin_harness(Health, name="health") as harness:
        assert await get(harness, "/readyz") == (
            503,
            "[-]app failed: not started\nreadyz check failed\n",
        )
        assert await get(harness, "/livez") == (
            503,
            "[+]ping ok\n[-]app failed: the app is STOPPED\nlivez check failed\n",
        )
        await harness.start_app()
        with anyio.fail_after(5):
            await harness.app.wait_state(AppState.RUNNING)
        assert await get(harness, "/readyz") == (200, "ok\n")
        assert await get(harness, "/readyz", verbose=True) == (
            200,
            "[+]app ok: RUNNING\nreadyz check passed\n",
        )
        assert await get(harness, "/livez", verbose=True) == (
            200,
            "[+]ping ok\n[+]app ok: RUNNING\nlivez check passed\n",
        )
        assert await get(harness, "/healthz", verbose=True) == (
            200,
            "[+]ping ok\n[+]app ok: RUNNING\nhealthz check passed\n",
        )
        assert (await harness.request("HEAD", "/readyz")).status == 200
        assert metric(harness, "sidecar_health_ready") == 1.0
        assert metric(harness, "sidecar_health_live") == 1.0
        await harness.shutdown()
        assert await get(harness, "/readyz") == (
            503,
            "[+]app ok: RUNNING\n[-]shutdown failed: the runtime is shutting down\n"
            "readyz check failed\n",
        )
        assert (await get(harness, "/livez"))[0] == 200
        assert metric(harness, "sidecar_health_ready") == 0.0


async def test_readiness_check_is_on_the_board_before_started_and_follows_the_target() -> None:
    """The check fails from the start (READY=1 waits); it passes, then flaps per thresholds."""
    async with http_target() as target:
        probe = {"kind": "readiness", "http": target.url, "success_threshold": 2}
        config = {"probes": [{**probe, **FAST, "failure_threshold": 2}]}
        async with plugin_harness(Health, config, name="health") as harness:
            name = "health/readiness-http"
            assert harness.readiness.checks()[name].ok is False
            assert target.hits == 0  # nothing is probed before the app runs
            await harness.start_app()
            with anyio.fail_after(5):
                await wait_for(lambda: board(harness, name))
            assert target.hits >= 2
            target.flap = True  # never twice in a row: with thresholds of 2 nothing changes
            hits = target.hits
            await wait_for(lambda: target.hits >= hits + 6)
            assert board(harness, name)
            target.flap, target.status = False, 503
            await wait_for(lambda: not board(harness, name))
            status, body = await get(harness, "/readyz", verbose=True)
            assert status == 503
            assert (
                "[-]health/readiness-http failed: HTTP 503 (expected 200-399): all good in " in body
            )
            assert harness.app.statistics().restarts == 0  # readiness never restarts the app
            assert harness.app.state is AppState.STARTING
            assert harness.info["probes"] == {"readiness-http": "failing"}
            assert (
                metric(
                    harness,
                    "sidecar_health_probe_results_total",
                    probe="readiness-http",
                    kind="readiness",
                    outcome="failure",
                )
                >= 2
            )


async def test_liveness_failure_restarts_the_app_through_the_core() -> None:
    """failure_threshold failures of liveness: /livez fails and the core restarts the app."""
    async with http_target() as target:
        probe = {"kind": "liveness", "http": target.url, "failure_threshold": 2, **FAST}
        async with plugin_harness(Health, {"probes": [probe]}, name="health") as harness:
            pid = await harness.start_app()
            await wait_for(lambda: target.hits >= 2)
            target.status = 500
            with anyio.fail_after(5):
                await harness.app.wait_state(AppState.BACKOFF)
            assert harness.app.statistics().last_exit is not None
            assert harness.app.pid is None
            status, body = await get(harness, "/livez")
            assert status == 503
            assert "[-]app failed: the app is BACKOFF\n" in body
            assert "[-]health/liveness-http failed: HTTP 500 (expected 200-399): all good" in body
            labels = {"probe": "liveness-http", "kind": "liveness"}
            assert metric(harness, "sidecar_health_liveness_restarts_total", **labels) == 1
            assert metric(harness, "sidecar_health_live") == 0.0
            assert not pid_alive(pid)


async def test_startup_probe_gates_the_others_and_restarts_when_it_fails(tmp_path: Path) -> None:
    """Readiness is not probed until startup passes; a failing startup probe restarts the app."""
    flag = tmp_path / "started"
    async with http_target() as target:
        config = {
            "probes": [
                {
                    "kind": "startup",
                    "exec": ["test", "-e", str(flag)],
                    **FAST,
                    "failure_threshold": 30,
                },
                {"kind": "readiness", "http": target.url, **FAST},
            ]
        }
        async with plugin_harness(Health, config, name="health") as harness:
            await harness.start_app()
            monitor = Health.latest_monitor()
            await wait_for(lambda: (monitor.probes[0].state.failures or 0) >= 3)
            assert target.hits == 0
            assert not board(harness, "health/startup-exec")
            assert harness.readiness.checks()["health/readiness-http"].detail == (
                "waiting for the startup probes"
            )
            flag.touch()
            await wait_for(lambda: board(harness, "health/readiness-http"))
            assert board(harness, "health/startup-exec")
            assert target.hits >= 1

    config = {"probes": [{"kind": "startup", "exec": ["false"], **FAST, "failure_threshold": 2}]}
    async with plugin_harness(Health, config, name="health") as harness:
        await harness.start_app()
        with anyio.fail_after(5):
            await harness.app.wait_state(AppState.BACKOFF)
        labels = {"probe": "startup-exec", "kind": "startup"}
        assert metric(harness, "sidecar_health_liveness_restarts_total", **labels) == 1
        status, body = await get(harness, "/livez", verbose=True)
        assert status == 503
        assert "[-]health/startup-exec failed: exit 1 in " in body


async def test_bad_targets_fail_with_reasons_and_never_crash_the_plugin(tmp_path: Path) -> None:
    """Refused, unresolvable, endless, hanging and missing targets: failures, no crash, no leak."""
    pids = tmp_path / "pids"
    hang = ["sh", "-c", f"echo $$ >> {pids}; sleep 30 & echo $! >> {pids}; wait"]
    async with http_target() as endless:
        endless.endless = True
        slow = {"period": "100ms", "timeout": "60ms"}
        config = {
            "max_response_bytes": 4096,
            "probes": [
                {"kind": "readiness", "name": "refused", "tcp": f"127.0.0.1:{free_port()}", **slow},
                {"kind": "readiness", "name": "dns", "http": "http://no-such.invalid/", **slow},
                {"kind": "readiness", "name": "endless", "http": endless.url, **slow}
                | {"body_contains": "needle"},
                {"kind": "readiness", "name": "hang", "exec": hang, **slow},
                {"kind": "readiness", "name": "missing", "exec": ["no-such-cmd"], **slow},
            ],
        }
        async with plugin_harness(Health, config, name="health") as harness:
            await harness.start_app()
            names = ["refused", "dns", "endless", "hang", "missing"]
            monitor = Health.latest_monitor()
            with anyio.fail_after(10):
                await wait_for(lambda: all(p.state.failures >= 3 for p in monitor.probes))
            assert harness.plugin_state == "running"
            assert harness.runner.restarts == 0
            details = {p.name: p.last.detail for p in monitor.probes if p.last is not None}
            assert set(details) == set(names)
            assert details["refused"].endswith("Connection refused")
            assert details["endless"] == (
                "HTTP 200 but the body lacks 'needle' in its first 4096 bytes"
            )
            assert details["hang"] == "timed out after 60ms"
            assert details["missing"] == "exec: no-such-cmd: command not found in PATH"
            _, body = await get(harness, "/readyz")
            assert "[-]health/hang failed: timed out after 60ms\n" in body
        leftovers = list(read_pids(pids))
        assert leftovers
        await wait_for(lambda: not any(pid_alive(pid) for pid in leftovers))
        assert not any(group_alive(pid) for pid in leftovers)


async def test_metrics_are_unregistered_when_the_plugin_stops_or_crashes() -> None:
    """A crashed plugin starts again with its metrics registered once; stopping removes them."""
    crash = Health.crash = anyio.Event()
    async with tcp_target() as target:
        probe = {"kind": "readiness", "tcp": f"127.0.0.1:{target.port}", **FAST}
        async with plugin_harness(Health, {"probes": [probe]}, name="health") as harness:
            await harness.start_app()
            labels = {"probe": "readiness-tcp", "kind": "readiness", "outcome": "success"}
            await wait_for(
                lambda: metric(harness, "sidecar_health_probe_results_total", **labels) > 0
            )
            crash.set()
            await wait_for(lambda: harness.plugin_state == "backoff")
            check = harness.readiness.checks()["health/readiness-tcp"]
            assert (check.ok, check.detail) == (False, "the health plugin is not running")
            await wait_for(
                lambda: harness.runner.restarts == 1 and harness.plugin_state == "running"
            )
            await wait_for(
                lambda: metric(harness, "sidecar_health_probe_results_total", **labels) > 0
            )
            await wait_for(lambda: board(harness, "health/readiness-tcp"))
            registry = harness.metrics
        names = {m.name for m in registry.collect()}
        assert not any(name.startswith("sidecar_health") for name in names)
        assert not harness.readiness.checks()["health/readiness-tcp"].ok


async def test_status_info_lists_probes_and_liveness() -> None:
    """/status shows the plugin's probes with their status, and whether the app is live."""
    async with tcp_target() as target:
        probe = {"kind": "liveness", "tcp": f"127.0.0.1:{target.port}", **FAST}
        async with plugin_harness(Health, {"probes": [probe]}, name="health") as harness:
            await harness.start_app()
            await wait_for(lambda: Health.latest_monitor().probes[0].last is not None)
            reply = await harness.request("GET", "/status")
            info: dict[str, Any] = json.loads(text(reply))["plugins"]["health"]["info"]
            assert info == {"live": False, "probes": {"liveness-tcp": "passing"}}  # STARTING


async def test_a_registry_that_refuses_the_metrics_costs_only_the_metrics() -> None:
    """A metric name already taken: probing and readiness go on, the plugin never crashes."""
    from prometheus_client import Gauge

    async with tcp_target() as target:
        probe = {"kind": "readiness", "tcp": f"127.0.0.1:{target.port}", **FAST}
        async with plugin_harness(Health, {"probes": [probe]}, name="health") as harness:
            Gauge("sidecar_health_ready", "taken by someone else", registry=harness.metrics)
            await harness.start_app()
            await wait_for(lambda: board(harness, "health/readiness-tcp"))
            assert target.accepted >= 1
            assert harness.plugin_state == "running"
            assert harness.runner.restarts == 0
            assert harness.metrics.get_sample_value("sidecar_health_probe_results_total") is None
