"""A reloaded ``[plugins.health]`` table applied in place (``HealthPlugin.reload``): unchanged
probes never flap, added ones gate readiness, removed ones leave the board at once; and the same
through a real ``sidecar-run --config`` and ``POST /reload``."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from sidecar_plugins.health import HealthConfig, HealthPlugin
from sidecar_plugins.health._changes import diff_probes
from sidecar_plugins.health._config import ProbeConfig, probe_names
from sidecar_plugins.health._monitor import Monitor

from sidecar_runtime import Response
from sidecar_runtime._config import decode_struct
from sidecar_runtime.testing import PluginHarness, plugin_harness
from tests.conftest import free_port, running_sidecar
from tests.plugins.health.helpers import HttpTarget, http_target, tcp_target, wait_for

FAST = {"period": "30ms", "timeout": "20ms"}


def config(*probes: dict[str, Any], **extra: Any) -> HealthConfig:
    decoded = decode_struct({"probes": list(probes), **extra}, HealthConfig, prefix=".health")
    assert isinstance(decoded, HealthConfig)
    return decoded


def ready(name: str, target: HttpTarget, **keys: Any) -> dict[str, Any]:
    return {"kind": "readiness", "name": name, "http": target.url, **FAST, **keys}


def by_name(cfg: HealthConfig) -> dict[str, ProbeConfig]:
    return dict(zip(probe_names(cfg.probes), cfg.probes, strict=True))


def plugin_of(harness: PluginHarness) -> HealthPlugin:
    plugin = harness.runner.plugin
    assert isinstance(plugin, HealthPlugin)
    return plugin


def monitor_of(harness: PluginHarness) -> Monitor:
    monitor = plugin_of(harness).monitor
    assert monitor is not None
    return monitor


def text(reply: Response) -> str:
    assert isinstance(reply.body, bytes)
    return reply.body.decode()


async def readyz(harness: PluginHarness) -> tuple[int, str]:
    reply = await harness.request("GET", "/readyz", query={"verbose": ""})
    return reply.status, text(reply)


async def running_and_ready(harness: PluginHarness) -> list[bool]:
    """Start the app, wait until ready, then record every flip of the overall readiness."""
    await harness.start_app()
    with anyio.fail_after(5):
        await harness.readiness.wait_ready()
    flips: list[bool] = []
    harness.readiness.on_change(flips.append)
    return flips


def test_changes_are_classified_by_name_kind_target_and_timing() -> None:
    """Same table: kept; timing only: retimed; new target or kind: replaced; new/gone names."""
    old = config(
        {"kind": "readiness", "http": "http://127.0.0.1:1/a"},
        {"kind": "readiness", "name": "t", "tcp": "127.0.0.1:2"},
        {"kind": "liveness", "name": "l", "tcp": "127.0.0.1:3"},
        {"kind": "startup", "name": "gone", "process": True},
    )
    new = config(
        {"kind": "readiness", "name": "readiness-http", "http": "http://127.0.0.1:1/a"},
        {"kind": "readiness", "name": "t", "tcp": "127.0.0.1:2", "period": "5s"},
        {"kind": "readiness", "name": "l", "tcp": "127.0.0.1:3"},
        {"kind": "liveness", "tcp": "127.0.0.1:4"},
    )
    changes = diff_probes(by_name(old), by_name(new))
    assert changes.changes == {
        "readiness-http": "kept",
        "t": "retimed",
        "l": "replaced",
        "liveness-tcp": "added",
    }
    assert changes.removed == ("gone",)
    assert changes.summary == {
        "kept": ["readiness-http"],
        "retimed": ["t"],
        "replaced": ["l"],
        "added": ["liveness-tcp"],
        "removed": ["gone"],
    }


@pytest.mark.anyio
async def test_reload_before_the_plugin_runs_asks_for_a_restart() -> None:
    """An instance that is not running cannot apply anything: reload answers False."""
    assert await HealthPlugin(HealthConfig()).reload(HealthConfig(watchdog=False)) is False


@pytest.mark.anyio
async def test_kept_and_retimed_probes_never_flap_and_a_removed_check_leaves_at_once() -> None:
    """A reload keeping one probe, retiming another and removing a third: readiness never
    flips, the kept probe keeps its object and counts, the removed one stops and is gone from
    /readyz?verbose and the metrics at once."""
    async with http_target() as a, http_target() as b, http_target() as c:
        old = {"probes": [ready("a", a), ready("b", b), ready("gone", c)]}
        async with plugin_harness(HealthPlugin, old, name="health") as harness:
            flips = await running_and_ready(harness)
            monitor = monitor_of(harness)
            before = {p.name: p for p in monitor.probes}
            await wait_for(lambda: before["a"].state.successes >= 2)
            successes = before["a"].state.successes
            sample = {"probe": "gone", "kind": "readiness", "outcome": "success"}
            results = "sidecar_health_probe_results_total"
            assert harness.metrics.get_sample_value(results, sample) is not None
            new = config(
                ready("a", a),
                ready("b", b, period="50ms", failure_threshold=5),
                max_response_bytes=100,
            )
            assert await plugin_of(harness).reload(new) is True
            assert "health/gone" not in harness.readiness.checks()
            assert harness.readiness.ready
            status, body = await readyz(harness)
            assert status == 200
            assert "gone" not in body
            assert "[+]health/a ok: HTTP 200" in body
            after = {p.name: p for p in monitor.probes}
            assert after["a"] is before["a"]
            assert after["a"].state.successes >= successes  # not started over
            assert after["b"] is before["b"]
            assert after["b"].state.status == "passing"
            assert after["b"].state.failure_threshold == 5
            assert harness.metrics.get_sample_value(results, sample) is None
            await wait_for(lambda: after["a"].state.successes >= successes + 3)
            hits = b.hits
            await wait_for(lambda: b.hits >= hits + 2)  # the retimed loop goes on
            hits = c.hits
            await anyio.sleep(0.15)  # five of its old periods
            assert c.hits <= hits + 1  # at most a check that was under way
            assert flips == []
            assert harness.readiness.ready


@pytest.mark.anyio
async def test_an_added_readiness_probe_gates_readiness_and_a_new_target_starts_over() -> None:
    """Adding a failing readiness probe makes a ready app unready at once, until it passes;
    changing a probe's target starts it over (failing until it passes)."""
    async with (
        http_target() as a,
        http_target() as b,
        http_target() as other,
        plugin_harness(HealthPlugin, {"probes": [ready("a", a)]}, name="health") as h,
    ):
        flips = await running_and_ready(h)
        b.status = 503
        plugin = plugin_of(h)
        assert await plugin.reload(config(ready("a", a), ready("b", b))) is True
        assert flips == [False]
        status, body = await readyz(h)
        assert status == 503
        assert "[+]health/a ok" in body
        assert "[-]health/b failed" in body
        await wait_for(lambda: b.hits >= 2)
        assert not h.readiness.ready
        b.status = 200
        with anyio.fail_after(5):
            await h.readiness.wait_ready()
        assert flips == [False, True]
        hits = other.hits
        assert await plugin.reload(config(ready("a", other), ready("b", b))) is True
        assert flips == [False, True, False]
        assert h.readiness.checks()["health/a"].ok is False
        with anyio.fail_after(5):
            await h.readiness.wait_ready()
        assert other.hits > hits
        assert plugin.config.probes[0].http == other.url


@pytest.mark.anyio
async def test_removing_the_pending_startup_probe_opens_the_startup_gate() -> None:
    """While a startup probe holds the others back, a reload without it starts them at once
    (and its board check goes), so the app becomes ready without a restart."""
    async with http_target() as a:
        startup = {"kind": "startup", "exec": ["false"], **FAST, "failure_threshold": 1000}
        old = {"probes": [startup, ready("a", a)]}
        async with plugin_harness(HealthPlugin, old, name="health") as h:
            pid = await h.start_app()
            monitor = monitor_of(h)
            await wait_for(lambda: monitor.probes[0].state.failures >= 2)
            assert a.hits == 0  # gated by the startup probe
            assert await plugin_of(h).reload(config(ready("a", a))) is True
            assert "health/startup-exec" not in h.readiness.checks()
            await wait_for(lambda: a.hits >= 1)
            with anyio.fail_after(5):
                await h.readiness.wait_ready()
            assert h.app.pid == pid


@pytest.mark.anyio
async def test_liveness_startup_session_and_watchdog_follow_the_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A liveness probe added while ready never makes the app unready; a startup probe added
    after the start counts as passed; the HTTP client opens and closes with the HTTP probes;
    the watchdog starts and stops with ``watchdog``."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "n"))
        async with tcp_target() as tcp, http_target() as web:
            gate = {"kind": "readiness", "tcp": f"127.0.0.1:{tcp.port}", **FAST}
            first = {"probes": [gate], "watchdog": False}
            harness: list[PluginHarness] = []
            try:
                async with plugin_harness(HealthPlugin, first, name="health") as h:
                    harness.append(h)
                    await _live_startup_session_watchdog(h, gate, web)
            finally:
                for h in harness:  # the harness leaves the runtime's notify socket open
                    h.runtime.notifier.close()


def has_session(plugin: HealthPlugin) -> bool:
    return plugin._session is not None


def pinging(plugin: HealthPlugin) -> bool:
    return plugin.watchdog is not None


async def _live_startup_session_watchdog(
    h: PluginHarness, gate: dict[str, Any], web: HttpTarget
) -> None:
    flips = await running_and_ready(h)
    plugin = plugin_of(h)
    assert not has_session(plugin)
    assert not pinging(plugin)
    live = {"kind": "liveness", "http": web.url, **FAST}
    late = {"kind": "startup", "exec": ["false"], **FAST}
    assert await plugin.reload(config(gate, live, late, watchdog=True)) is True
    assert has_session(plugin)
    await wait_for(lambda: web.hits >= 2)
    watchdog = plugin.watchdog
    assert watchdog is not None
    await wait_for(lambda: watchdog.pings >= 2)
    status, body = await readyz(h)
    assert status == 200
    assert "[+]health/startup-exec ok: added after the app's process started" in body
    assert flips == []
    assert h.app.statistics().restarts == 0  # the failing startup probe never ran
    assert await plugin.reload(config(gate, watchdog=False)) is True
    assert not has_session(plugin)
    assert plugin.watchdog is None
    await anyio.sleep(0.05)
    pings, hits = watchdog.pings, web.hits
    await anyio.sleep(0.15)
    assert watchdog.pings == pings
    assert web.hits <= hits + 1
    assert "health/startup-exec" not in h.readiness.checks()
    assert flips == []


SERVER_APP = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\\n")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def write_config(path: Path, admin: int, app: int, *, liveness: bool) -> None:
    command = [sys.executable, "-c", SERVER_APP, str(app)]
    probes = (
        "[[plugins.health.probes]]\n"
        f'kind = "readiness"\nhttp = "http://127.0.0.1:{app}/ready"\n'
        'period = "50ms"\ntimeout = "40ms"\n'
    )
    if liveness:
        probes += (
            f'[[plugins.health.probes]]\nkind = "liveness"\ntcp = "127.0.0.1:{app}"\n'
            'period = "50ms"\ntimeout = "40ms"\n'
        )
    path.write_text(
        f"[app]\ncommand = {json.dumps(command)}\n"
        f'[log]\nlevel = "info"\nformat = "json"\n'
        f'[plugins.admin]\nlisten = "127.0.0.1:{admin}"\n{probes}'
    )


def http(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - loopback
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Poller(threading.Thread):
    """GET /readyz as fast as it answers, counting the replies by status."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.statuses: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            status, _ = http(self.port, "/readyz")
            self.statuses[status] = self.statuses.get(status, 0) + 1
            time.sleep(0.002)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_post_reload_adds_a_liveness_probe_with_no_503_from_readyz(tmp_path: Path) -> None:
    """sidecar-run --config with a readiness probe; the file gains a liveness probe and
    POST /reload applies it in place: /readyz never answers 503 during the reload."""
    admin, app, path = free_port(), free_port(), tmp_path / "sidecar.toml"
    write_config(path, admin, app, liveness=False)
    with running_sidecar(["--config", str(path)]) as proc:
        wait_until(lambda: http(admin, "/readyz")[0] == 200)
        poller = Poller(admin)
        poller.start()
        try:
            wait_until(lambda: sum(poller.statuses.values()) >= 5)
            write_config(path, admin, app, liveness=True)
            code, body = http(admin, "/reload", method="POST")
            outcome = json.loads(body)
            assert code == 200, outcome
            wait_until(lambda: b"liveness-tcp ok" in http(admin, "/livez?verbose")[1])
            count = sum(poller.statuses.values())
            wait_until(lambda: sum(poller.statuses.values()) >= count + 5)
        finally:
            poller.stop.set()
            poller.join(timeout=10)
        assert poller.statuses.get(503, 0) == 0, poller.statuses
        assert set(poller.statuses) == {200}
        assert outcome["plugins_reloaded"] == ["health"]
        assert outcome["plugins_restarted"] == []
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    reloaded = [e for e in events if e["event"] == "health_reloaded"]
    assert len(reloaded) == 1
    assert reloaded[0]["added"] == ["liveness-tcp"]
    assert reloaded[0]["kept"] == ["readiness-http"]
