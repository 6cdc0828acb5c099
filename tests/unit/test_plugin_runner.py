"""Plugins on a real core through ``sidecar_runtime.testing``: routes, restarts, failures, app."""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus

from sidecar_runtime import (
    AppExited,
    AppStarted,
    AppState,
    ConfigError,
    Duration,
    Event,
    OutputLine,
    PluginContext,
    PluginError,
    Request,
    Response,
    StateChanged,
)
from sidecar_runtime._runtime import EXIT_CRITICAL_PLUGIN
from sidecar_runtime.testing import plugin_harness, python_app

pytestmark = pytest.mark.anyio


class ProbeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    greeting: str = "hello"
    grace: Duration = Duration(1.0)


class Probe:
    """A plugin that mounts routes, records what it sees, and crashes when told to."""

    Config = ProbeConfig
    instances: ClassVar[list[Probe]] = []

    def __init__(self, config: ProbeConfig, /) -> None:
        self.config = config
        self.ctx: PluginContext | None = None
        self.crash = anyio.Event()
        self.lines: list[OutputLine] = []
        self.events: list[Event] = []
        self.hook_ran = False
        Probe.instances.append(self)

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.ctx = ctx
        output = ctx.subscribe_output()
        events = ctx.subscribe_events()

        async def hello(request: Request) -> Response:
            name = request.query.get("name", "world")
            return Response.text(f"{self.config.greeting}, {name} ({self.config.grace:g}s)")

        async def echo(request: Request) -> Response:
            return Response.json({"body": request.body.decode(), "client": request.client})

        async def hook() -> None:
            self.hook_ran = True

        ctx.add_route("GET", "/hello", hello)
        ctx.add_route("POST", "/echo", echo, mutating=True)
        ctx.on_shutdown(hook)
        ctx.set_info(greeting=self.config.greeting)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._collect, output, self.lines)
            tg.start_soon(self._collect, events, self.events)
            task_status.started()
            await self.crash.wait()
            raise RuntimeError("probe crashed on purpose")

    @staticmethod
    async def _collect(sub: Any, into: list[Any]) -> None:
        async for item in sub:
            into.append(item)


@pytest.fixture(autouse=True)
def fresh_instances() -> Iterator[None]:
    """Each test sees only the Probe instances it created."""
    Probe.instances.clear()
    yield
    Probe.instances.clear()


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``predicate`` until it is true, failing after ``seconds``."""
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - runner state has no change event to wait on
            await anyio.sleep(0.005)


def body(response: Response) -> bytes:
    assert isinstance(response.body, bytes)
    return response.body


def app_pid(ctx: PluginContext) -> int | None:
    """The app's pid read afresh (mypy would keep an earlier narrowing)."""
    return ctx.app.pid


def probe() -> Probe:
    """The current (latest) Probe instance."""
    return Probe.instances[-1]


async def test_plugin_route_is_served() -> None:
    """A route the plugin mounts answers through harness.request, with its decoded config."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe, {"greeting": "hi", "grace": "500ms"}) as harness:
            assert harness.plugin_state == "running"
            reply = await harness.request("GET", "/hello", query={"name": "bob"})
            assert reply.status == 200
            assert body(reply) == b"hi, bob (0.5s)"
            assert reply.headers["Content-Type"].startswith("text/plain")
            echoed = await harness.request("POST", "/echo", body=b"ping")
            assert json.loads(body(echoed)) == {"body": "ping", "client": "127.0.0.1"}
            assert harness.info == {"greeting": "hi"}


async def test_unknown_path_is_404_and_wrong_method_is_405() -> None:
    """Unknown paths give 404; a known path with another method gives 405."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            assert (await harness.request("GET", "/nope")).status == 404
            assert (await harness.request("POST", "/hello")).status == 405
            assert (await harness.request("GET", "/echo")).status == 405
            head = await harness.request("HEAD", "/hello")
            assert head.status == 200


async def test_core_status_route_lists_the_plugin() -> None:
    """The core's GET /status shows the app state and the plugin's state and info."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe, {"greeting": "yo"}, name="probe") as harness:
            reply = await harness.request("GET", "/status")
            data = json.loads(body(reply))
            assert data["state"] == "STOPPED"
            assert data["pid"] is None
            assert data["plugins"]["probe"]["state"] == "running"
            assert data["plugins"]["probe"]["info"] == {"greeting": "yo"}


async def test_crashed_plugin_is_restarted_and_its_routes_remounted() -> None:
    """A crash after started() backs off, restarts the plugin, and its routes work again."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            harness.runner.backoff_initial = 0.2
            first = probe()
            first.crash.set()
            await wait_until(lambda: harness.plugin_state == "backoff")
            assert harness.runner.restarts == 0
            assert harness.runner.last_error == "RuntimeError: probe crashed on purpose"
            await wait_until(lambda: harness.plugin_state == "running")
            assert harness.runner.restarts == 1
            assert len(Probe.instances) == 2
            assert probe() is not first
            reply = await harness.request("GET", "/hello")
            assert reply.status == 200
            # Crash again: the restart counter keeps growing.
            probe().crash.set()
            await wait_until(lambda: harness.runner.restarts == 2)
            await wait_until(lambda: harness.plugin_state == "running")
            assert (await harness.request("GET", "/hello")).status == 200


async def test_crashed_plugin_routes_are_removed_while_it_is_down() -> None:
    """While a crashed plugin waits in backoff its routes are unmounted (404)."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            harness.runner.backoff_initial = 0.5
            probe().crash.set()
            await wait_until(lambda: harness.plugin_state == "backoff")
            reply = await harness.request("GET", "/hello")
            assert reply.status == 404
            paths = [route.path for route in harness.runtime.routes.routes()]
            assert paths == ["/reload", "/restart", "/status"]  # the core's routes only


async def test_plugin_failing_before_started_raises_plugin_error() -> None:
    """A plugin that raises before started() makes plugin_harness raise PluginError."""

    class Broken:
        Config = ProbeConfig

        def __init__(self, config: ProbeConfig, /) -> None:
            pass

        async def run(
            self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            raise OSError("port in use")

    entered = False
    with (
        anyio.fail_after(10),
        pytest.RaisesGroup(
            pytest.RaisesExc(PluginError, match=r"'broken' failed to start: OSError: port in use"),
            allow_unwrapped=True,
        ),
    ):
        async with plugin_harness(Broken, name="broken"):
            entered = True
    assert not entered


async def test_critical_plugin_crash_requests_shutdown() -> None:
    """A critical plugin's crash marks it failed and asks the runtime to shut down (exit 70)."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe, critical=True, name="vital") as harness:
            runtime = harness.runtime
            stopping_before = runtime.signals.stopping
            probe().crash.set()
            await wait_until(lambda: harness.plugin_state == "failed")
            assert harness.runner.restarts == 0
            assert not stopping_before
            assert runtime.signals.stopping
            assert runtime.exit_status() == EXIT_CRITICAL_PLUGIN
            assert len(Probe.instances) == 1
            status = json.loads(body(await harness.request("GET", "/status")))
            assert status["plugins"]["vital"]["state"] == "failed"
            assert status["plugins"]["vital"]["critical"] is True


async def test_emitted_output_reaches_output_subscribers() -> None:
    """Lines published with emit_output arrive at ctx.subscribe_output() in order."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            await harness.emit_output(b"one")
            await harness.emit_output(b"two", stream="stderr", pid=42)
            await wait_until(lambda: len(probe().lines) == 2)
            first, second = probe().lines
            assert (first.stream, first.data) == ("stdout", b"one")
            assert (second.stream, second.data, second.pid) == ("stderr", b"two", 42)


@pytest.mark.slow
async def test_real_app_is_visible_through_the_app_handle() -> None:
    """start_app runs a real app: ctx.app.pid, statistics(), events and output reflect it."""
    app = python_app(
        """
        import sys, time
        print("hello from app", flush=True)
        time.sleep(60)
        """
    )
    with anyio.fail_after(15):
        async with plugin_harness(Probe, app=app, stop_timeout=5) as harness:
            pid = await harness.start_app()
            ctx = probe().ctx
            assert ctx is not None
            assert ctx.app.pid == pid
            process = ctx.app.process()
            assert process is not None
            assert process.pid == pid
            stats = ctx.app.statistics()
            assert (stats.state, stats.pid, stats.starts, stats.restarts) == (
                AppState.STARTING,
                pid,
                1,
                0,
            )
            assert await ctx.app.wait_state(AppState.RUNNING) is AppState.RUNNING
            await wait_until(lambda: any(line.data == b"hello from app" for line in probe().lines))
            line = next(line for line in probe().lines if line.data == b"hello from app")
            assert line.pid == pid
            await harness.stop_app()
            stats = ctx.app.statistics()
            assert stats.state is AppState.EXITED
            assert stats.pid is None
            assert app_pid(ctx) is None
            assert stats.last_exit is not None
            assert stats.last_exit.signal == signal.SIGTERM
            await wait_until(
                lambda: any(
                    isinstance(e, StateChanged) and e.new is AppState.EXITED for e in probe().events
                )
            )
            assert any(isinstance(e, AppExited) and e.pid == pid for e in probe().events)
            kinds = [type(e) for e in probe().events]
            assert kinds[0] is StateChanged
            assert AppStarted in kinds
            changes = [(e.old, e.new) for e in probe().events if isinstance(e, StateChanged)]
            assert changes == [
                (AppState.STOPPED, AppState.STARTING),
                (AppState.STARTING, AppState.RUNNING),
                (AppState.RUNNING, AppState.STOPPING),
                (AppState.STOPPING, AppState.EXITED),
            ]


async def test_app_signal_via_handle() -> None:
    """ctx.app.send_signal reaches the app, whose exit the statistics then show."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            ctx = probe().ctx
            assert ctx is not None
            assert ctx.app.send_signal(signal.SIGUSR1) is False  # no app yet
            pid = await harness.start_app()
            assert ctx.app.send_signal(signal.SIGKILL)
            await ctx.app.wait_state(AppState.EXITED)
            stats = ctx.app.statistics()
            assert stats.last_exit is not None
            assert stats.last_exit.signal == signal.SIGKILL
            assert pid != 0


async def test_spawned_helper_is_reaped_by_the_core() -> None:
    """ctx.spawn starts a helper whose exit status the core's reaper delivers."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            ctx = probe().ctx
            assert ctx is not None
            child = ctx.spawn([sys.executable, "-c", "import sys; sys.exit(3)"])
            assert child.pid > 0
            status = await child.wait()
            assert status.code == 3
            assert not child.running
            assert child.pid not in harness.runtime.reaper._children
            killed = ctx.spawn(["sleep", "30"])
            assert killed.send_signal(signal.SIGTERM, group=True)
            assert (await killed.wait()).signal == signal.SIGTERM


async def test_shutdown_runs_hooks_and_clears_readiness() -> None:
    """harness.shutdown() turns readiness false and runs the plugin's shutdown hooks."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            ctx = probe().ctx
            assert ctx is not None
            shutting_down_before = ctx.shutting_down
            await harness.shutdown()
            assert not shutting_down_before
            assert probe().hook_ran
            assert ctx.shutting_down
            assert harness.readiness.shutting_down
            assert not harness.readiness.ready
            with anyio.fail_after(1):
                await ctx.wait_shutdown()


async def test_plugin_readiness_check_holds_readiness() -> None:
    """A failing check registered by a plugin keeps the board not ready."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            ctx = probe().ctx
            assert ctx is not None
            ctx.readiness.set("app", True)
            ctx.readiness.set("probe", False, "warming up")
            assert not harness.readiness.ready
            ctx.readiness.set("probe", True)
            assert harness.readiness.ready


async def test_routes_are_removed_when_the_plugin_stops() -> None:
    """When the harness ends, the plugin is stopped and its routes and hooks are gone."""
    with anyio.fail_after(10):
        async with plugin_harness(Probe) as harness:
            runtime = harness.runtime
            paths = {r.path for r in runtime.routes.routes()}
            assert paths == {"/reload", "/restart", "/status", "/hello", "/echo"}
        assert harness.plugin_state == "stopped"
        assert [r.path for r in runtime.routes.routes()] == ["/reload", "/restart", "/status"]
        assert runtime.services.hooks == []


async def test_plugin_that_returns_is_finished() -> None:
    """A plugin whose run() returns after started() is 'finished' and not restarted."""

    class OneShot:
        Config = ProbeConfig

        def __init__(self, config: ProbeConfig, /) -> None:
            pass

        async def run(
            self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()

    with anyio.fail_after(10):
        async with plugin_harness(OneShot) as harness:
            await wait_until(lambda: harness.plugin_state == "finished")
            assert harness.runner.restarts == 0


async def test_mutating_route_must_be_post() -> None:
    """Mounting a mutating route on GET fails the plugin's start-up."""

    class BadRoute:
        Config = ProbeConfig

        def __init__(self, config: ProbeConfig, /) -> None:
            pass

        async def run(
            self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            async def handler(request: Request) -> Response:
                return Response()

            ctx.add_route("GET", "/x", handler, mutating=True)
            task_status.started()

    with (
        anyio.fail_after(10),
        pytest.RaisesGroup(
            pytest.RaisesExc(PluginError, match="must be POST"), allow_unwrapped=True
        ),
    ):
        async with plugin_harness(BadRoute):
            pass


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bogus": 1}, "plugins.probe.bogus: unknown key"),
        ({"grace": "soon"}, "plugins.probe.grace: invalid duration 'soon'"),
        ({"greeting": 5}, "plugins.probe.greeting: Expected `str`, got `int`"),
    ],
)
async def test_plugin_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    """Bad plugin config is a ConfigError naming plugins.<name>.<key> before anything starts."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        async with plugin_harness(Probe, config, name="probe"):
            pass
    assert Probe.instances == []
