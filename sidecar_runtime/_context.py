"""The plugin API: the :class:`Plugin` protocol, and the context and app handle it is given.

A plugin sees only what is here. Everything it registers through its context (routes,
subscriptions, shutdown hooks) belongs to that run of the plugin and is removed when the run
ends, so a crashed plugin restarted with backoff leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, final, runtime_checkable

import anyio
import msgspec
from anyio.abc import TaskStatus

from ._events import Event, Hub, OutputLine, Subscription
from ._http import Handler, Route, RouteTable
from ._readiness import Readiness
from ._reaper import Child, Reaper
from ._spawn import SpawnRequest
from ._state import AppState

if TYPE_CHECKING:
    import psutil
    from prometheus_client import CollectorRegistry

    from ._output import StreamStats
    from ._supervisor import AppStats, AppSupervisor

__all__ = [
    "AppHandle",
    "Plugin",
    "PluginContext",
    "PluginInfo",
    "RuntimeStats",
    "Services",
    "ShutdownHook",
]

ShutdownHook = Callable[[], Awaitable[None]]


@runtime_checkable
class Plugin(Protocol):
    """What a plugin class provides. Found through the entry-point group
    ``sidecar_runtime.plugins``; enabled by a ``[plugins.<name>]`` table in the config.

    ``Config`` is a msgspec Struct the table is decoded into (strictly) before ``__init__``.
    ``run`` sets up, calls ``task_status.started()`` once it is ready (ports bound), runs until
    cancelled and cleans up. Optional class attribute ``after``: names of plugins that, when
    enabled, start before this one and stop after it. Optional classmethod
    ``check_warnings(config) -> list[str]``: what ``sidecar-run check`` should warn about.
    """

    Config: ClassVar[type[Any]]

    def __init__(self, config: Any, /) -> None: ...

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None: ...


class PluginInfo(msgspec.Struct, frozen=True):
    """A plugin's state as ``/status`` shows it."""

    name: str
    state: str
    critical: bool
    restarts: int
    last_error: str | None
    info: Mapping[str, Any]


class RuntimeStats(msgspec.Struct, frozen=True):
    """A snapshot of the runtime's own counters."""

    version: str
    pid: int
    started_at: float
    orphans_reaped: int
    output_bytes: Mapping[str, int]
    output_lines: Mapping[str, int]
    output_dropped: int
    plugins: Sequence[PluginInfo]
    shutting_down: bool
    reloads_succeeded: int = 0
    reloads_failed: int = 0
    last_reload_success: float | None = None  # Unix time of the last applied reload


class Services(msgspec.Struct, eq=False):
    """What the runtime shares with every plugin context (not for plugins to build)."""

    supervisor: AppSupervisor
    reaper: Reaper
    readiness: Readiness
    events: Hub[Event]
    output: Hub[OutputLine]
    output_stats: Mapping[str, StreamStats]
    routes: RouteTable
    shutdown: anyio.Event
    request_shutdown: Callable[[str], None]
    plugin_infos: Callable[[], list[PluginInfo]]
    version: str
    notify: Callable[..., bool] = lambda **fields: False
    default_output_buffer: int = 4096
    hooks: list[tuple[str, ShutdownHook]] = msgspec.field(default_factory=list)
    drain_hooks: list[tuple[str, ShutdownHook]] = msgspec.field(default_factory=list)
    started_at: float = msgspec.field(default_factory=time.time)
    reload_stats: Any = None  # the runtime's ReloadStats
    _registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
        return self._registry


@final
class AppHandle:
    """The plugin's view of the app. Sync methods never block; async ones wait."""

    def __init__(self, supervisor: AppSupervisor) -> None:
        self._sup = supervisor
        self._process: psutil.Process | None = None

    @property
    def state(self) -> AppState:
        return self._sup.state

    @property
    def pid(self) -> int | None:
        """The running app's pid (also its process group id), or None."""
        return self._sup.pid

    def process(self) -> psutil.Process | None:
        """A ``psutil.Process`` for the running app (cached per pid), or None."""
        pid = self.pid
        if pid is None:
            return None
        if self._process is None or self._process.pid != pid:
            import psutil

            try:
                self._process = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return None
        return self._process

    def send_signal(self, sig: int) -> bool:
        """Signal the app as forwarded signals are (to its group or to it alone)."""
        return self._sup.send_signal(sig)

    def request_restart(self, reason: str) -> bool:
        """Stop the app gracefully and start it again (respecting backoff). False if not running."""
        return self._sup.request_restart(reason)

    async def wait_state(self, *states: AppState) -> AppState:
        """Wait until the app is in one of ``states``."""
        return await self._sup.wait_state(*states)

    def statistics(self) -> AppStats:
        """A frozen snapshot: state, pid, starts, restarts, last exit."""
        return self._sup.statistics()


@final
class PluginContext:
    """What one run of a plugin may use. Created by the runtime (or ``sidecar_runtime.testing``)."""

    def __init__(
        self, name: str, services: Services, *, log: Any, info: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.log = log
        self.app = AppHandle(services.supervisor)
        self.readiness: Readiness = services.readiness
        self._services = services
        self._routes: list[Route] = []
        self._subs: list[Subscription[Any]] = []
        self._hooks: list[tuple[str, ShutdownHook]] = []
        self._drain_hooks: list[tuple[str, ShutdownHook]] = []
        self._info = info if info is not None else {}

    @property
    def metrics(self) -> CollectorRegistry:
        """The runtime's one Prometheus registry, served at ``/metrics``."""
        return self._services.registry

    @property
    def routes(self) -> RouteTable:
        """Every mounted route (the admin plugin serves them)."""
        return self._services.routes

    def add_route(
        self, method: str, path: str, handler: Handler, *, mutating: bool = False
    ) -> None:
        """Mount ``handler`` on the admin listener at ``method path``."""
        self._routes.append(
            self._services.routes.add(method, path, handler, owner=self.name, mutating=mutating)
        )

    def subscribe_events(self, max_buffer: int = 256) -> Subscription[Event]:
        """Lifecycle events: state changes, starts, exits, shutdown. Dropped (counted) if full."""
        sub = self._services.events.subscribe(max_buffer, "drop")
        self._subs.append(sub)
        return sub

    def subscribe_output(
        self, max_buffer: int | None = None, overflow: Literal["drop", "block"] = "drop"
    ) -> Subscription[OutputLine]:
        """The app's output as lines. ``drop`` (default): a full buffer drops the newest line and
        counts it, the app is never slowed. ``block``: the app's output waits for this
        subscriber (use only with a consumer that never stalls, e.g. one that spools to disk).
        Subscribe before calling ``task_status.started()`` to see the first line."""
        size = self._services.default_output_buffer if max_buffer is None else max_buffer
        sub = self._services.output.subscribe(size, overflow)
        self._subs.append(sub)
        return sub

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Child:
        """Start a helper process through the core (own process group, reaped by the core)."""
        request = SpawnRequest(
            argv=list(argv), env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr
        )
        return self._services.reaper.spawn(request)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run ``hook`` when shutdown begins, before the app is stopped (e.g. drain a proxy).

        Hooks of all plugins run concurrently, bounded by the stop deadline."""
        entry = (self.name, hook)
        self._hooks.append(entry)
        self._services.hooks.append(entry)

    def on_drain(self, hook: ShutdownHook) -> None:
        """Run ``hook`` late in shutdown: after the app has exited and its output was read to the
        end (every line delivered to output subscribers, then their end of stream), before plugins
        are stopped. For shipping what is left (the logs plugin flushes its outputs here).

        Hooks of all plugins run concurrently, bounded by what is left of the stop deadline, but
        never less than the plugin stop grace (5 s)."""
        entry = (self.name, hook)
        self._drain_hooks.append(entry)
        self._services.drain_hooks.append(entry)

    async def wait_shutdown(self) -> None:
        """Return once the runtime has begun its graceful shutdown."""
        await self._services.shutdown.wait()

    @property
    def shutting_down(self) -> bool:
        return self._services.shutdown.is_set()

    def request_shutdown(self, reason: str) -> None:
        """Ask the runtime to shut down gracefully (stops the app)."""
        self._services.request_shutdown(f"{self.name}: {reason}")

    def notify(self, **fields: str | int) -> bool:
        """Send sd_notify fields (``WATCHDOG=1``, ``STATUS=...``); False without NOTIFY_SOCKET."""
        return self._services.notify(**fields)

    def set_info(self, **fields: Any) -> None:
        """Publish facts about this plugin in ``/status`` (e.g. its bound address)."""
        self._info.update(fields)

    def runtime_statistics(self) -> RuntimeStats:
        """A snapshot of the runtime's counters (for the metrics plugin)."""
        s = self._services
        return RuntimeStats(
            version=s.version,
            pid=_getpid(),
            started_at=s.started_at,
            orphans_reaped=s.reaper.orphans_reaped,
            output_bytes={k: v.bytes for k, v in s.output_stats.items()},
            output_lines={k: v.lines for k, v in s.output_stats.items()},
            output_dropped=s.output.dropped,
            plugins=s.plugin_infos(),
            shutting_down=s.shutdown.is_set(),
            reloads_succeeded=getattr(s.reload_stats, "succeeded", 0),
            reloads_failed=getattr(s.reload_stats, "failed", 0),
            last_reload_success=getattr(s.reload_stats, "last_success", None),
        )

    def _close(self) -> None:
        """Remove everything this run registered (called by the runner)."""
        for route in self._routes:
            self._services.routes.remove(route)
        for sub in self._subs:
            sub.close()
        for hook in self._hooks:
            if hook in self._services.hooks:
                self._services.hooks.remove(hook)
        for hook in self._drain_hooks:
            if hook in self._services.drain_hooks:
                self._services.drain_hooks.remove(hook)
        self._drain_hooks.clear()
        self._routes.clear()
        self._subs.clear()
        self._hooks.clear()


def _getpid() -> int:
    import os

    return os.getpid()
