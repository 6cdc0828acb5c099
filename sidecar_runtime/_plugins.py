"""Finding, configuring, ordering and running plugins.

Plugins are found through the entry-point group ``sidecar_runtime.plugins`` (the built-ins too).
A ``[plugins.<name>]`` table enables one; its reserved keys ``enabled`` and ``critical`` are read
here and the rest is decoded strictly into the plugin's ``Config``. Each plugin runs under a
:class:`PluginRunner`: a crash after start-up is logged with its traceback and the plugin is
started again with capped exponential backoff; a ``critical`` plugin's crash shuts the runtime
down gracefully instead. A failure before the first ``started()`` is a start-up error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from ._config import Config, decode_struct
from ._context import PluginContext, PluginInfo, Services
from ._errors import ConfigError, PluginError, SidecarError
from ._restart import _new_rng, backoff_delay

if TYPE_CHECKING:
    import random
    from importlib.metadata import EntryPoint

__all__ = ["ENTRY_POINT_GROUP", "PluginRunner", "PluginSpec", "discover", "load_plugins"]

ENTRY_POINT_GROUP = "sidecar_runtime.plugins"
_RESERVED = ("enabled", "critical")


class PluginSpec(msgspec.Struct, frozen=True):
    """An enabled plugin, configured and ready to construct."""

    name: str
    cls: type[Any]
    config: Any
    critical: bool = False
    after: tuple[str, ...] = ()


def discover() -> dict[str, EntryPoint]:
    """Installed plugins by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def describe_error(exc: BaseException) -> str:
    """One line for an exception, looking through single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SidecarError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_plugins(config: Config, *, origins: Mapping[str, str] | None = None) -> list[PluginSpec]:
    """Decode every enabled plugin's table and return them in start order."""
    tables = config.plugins
    if not any(t.get("enabled", True) is not False for t in tables.values()):
        return []
    available = discover()
    specs: list[PluginSpec] = []
    for name, raw in tables.items():
        table = dict(raw)
        flags = {}
        for key in _RESERVED:
            value = table.pop(key, key == "enabled")
            if not isinstance(value, bool):
                source = (origins or {}).get(f"plugins.{name}.{key}", "config")
                msg = f"{source}: plugins.{name}.{key}: expected true or false, got {value!r}"
                raise ConfigError(msg)
            flags[key] = value
        if not flags["enabled"]:
            continue
        if name not in available:
            known = ", ".join(sorted(available)) or "none"
            msg = f"plugins.{name}: no plugin named {name!r} is installed (installed: {known})"
            raise ConfigError(msg)
        try:
            cls = available[name].load()
        except Exception as err:
            msg = (
                f"plugin {name!r} ({available[name].value}) cannot be loaded: {describe_error(err)}"
            )
            raise PluginError(msg) from err
        plugin_config_type = getattr(cls, "Config", None)
        if plugin_config_type is None or not callable(getattr(cls, "run", None)):
            msg = f"plugin {name!r} ({available[name].value}) lacks a Config struct or run()"
            raise PluginError(msg)
        plugin_config = decode_struct(
            table, plugin_config_type, prefix=f".plugins.{name}", origins=origins
        )
        after = tuple(getattr(cls, "after", ()))
        specs.append(PluginSpec(name, cls, plugin_config, flags["critical"], after))
    return _order(specs)


def _order(specs: list[PluginSpec]) -> list[PluginSpec]:
    """Topological order by ``after``, otherwise the order of the config (stable)."""
    by_name = {s.name: s for s in specs}
    ordered: list[PluginSpec] = []
    visiting: set[str] = set()

    def visit(spec: PluginSpec, chain: tuple[str, ...]) -> None:
        if spec in ordered:
            return
        if spec.name in visiting:
            msg = f"plugins: start order has a cycle: {' -> '.join((*chain, spec.name))}"
            raise ConfigError(msg)
        visiting.add(spec.name)
        for dep in spec.after:
            if dep in by_name:
                visit(by_name[dep], (*chain, spec.name))
        visiting.discard(spec.name)
        ordered.append(spec)

    for spec in specs:
        visit(spec, ())
    return ordered


class PluginRunner(msgspec.Struct, eq=False):
    """Runs one plugin, restarting it with backoff when it crashes after start-up."""

    spec: PluginSpec
    services: Services
    make_logger: Callable[[str], Any]
    on_critical: Callable[[str, str], None]
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_seconds: float = 10.0
    state: str = "stopped"
    restarts: int = 0
    last_error: str | None = None
    info: dict[str, Any] = msgspec.field(default_factory=dict)
    plugin: Any = None  # the instance of the current run (a reload hands it its new table)
    scope: anyio.CancelScope = msgspec.field(default_factory=anyio.CancelScope)
    done: anyio.Event = msgspec.field(default_factory=anyio.Event)
    _rng: random.Random = msgspec.field(default_factory=lambda: _new_rng())

    def snapshot(self) -> PluginInfo:
        return PluginInfo(
            self.spec.name,
            self.state,
            self.spec.critical,
            self.restarts,
            self.last_error,
            dict(self.info),
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                await self._loop(task_status)
        finally:
            if self.state not in ("failed", "finished"):
                self.state = "stopped"
            self.done.set()

    async def _loop(self, task_status: TaskStatus[None]) -> None:
        name = self.spec.name
        log = self.make_logger(name)
        first, streak = True, 0
        while True:
            ctx = PluginContext(name, self.services, log=log, info=self.info)
            self.state = "starting"
            began = time.monotonic()
            try:
                try:
                    plugin = self.plugin = self.spec.cls(self.spec.config)
                    async with anyio.create_task_group() as tg:
                        await tg.start(_run_plugin, plugin, ctx)
                        self.state = "running"
                        log.info("plugin_started", restarts=self.restarts)
                        if first:
                            first = False
                            task_status.started()
                finally:
                    ctx._close()  # routes, subscriptions and hooks go with the run, at once
            except Exception as err:
                error = describe_error(err)
                self.last_error = error
                if first:
                    msg = f"plugin {name!r} failed to start: {error}"
                    raise PluginError(msg) from err
                log.error("plugin_failed", error=error, exc_info=err)
                if self.spec.critical:
                    self.state = "failed"
                    self.on_critical(name, error)
                    return
                streak = 1 if time.monotonic() - began >= self.stable_seconds else streak + 1
                delay = backoff_delay(
                    streak,
                    initial=self.backoff_initial,
                    maximum=self.backoff_max,
                    multiplier=2.0,
                    jitter=0.2,
                    rng=self._rng,
                )
                self.state = "backoff"
                log.info("plugin_restart_scheduled", delay=round(delay, 3))
                await anyio.sleep(delay)
                self.restarts += 1
                continue
            self.state = "finished"
            log.info("plugin_finished")
            if first:
                task_status.started()
            return


async def _run_plugin(
    plugin: Any, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    await plugin.run(ctx, task_status=task_status)
