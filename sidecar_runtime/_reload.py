"""Reloading sidecar-run's own configuration (SIGHUP, ``POST /reload``) while the app runs.

The new configuration is loaded exactly as at start (file, ``SIDECAR_*`` environment, the
command line's flags) and checked in full before anything changes: an invalid one is rejected
with its one-line error and the running state stays untouched. Then, section by section:

* ``app``: the next start uses it; when it changed, the app is restarted gracefully (stop
  signal, wait, start: the restart backoff applies). Otherwise the app keeps running.
* ``restart``, ``stop``, ``signals``: applied in place.
* ``output``, ``log``, ``subreaper``, ``notify``: fixed for the life of the process; a change
  is reported (``reload_needs_restart``) and ignored.
* plugins: a removed table stops its plugin, a new one starts; a changed table is handed to the
  running plugin's ``reload(config)`` hook when it has one and it returns true (applied in
  place: log outputs, probes, proxy routes and certificates), otherwise the plugin is
  restarted with the new table; if that start fails, the old table is started again.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._errors import SidecarError

if TYPE_CHECKING:
    from ._config import Config
    from ._plugins import PluginRunner, PluginSpec
    from ._runtime import Runtime

__all__ = ["ConfigLoader", "ReloadOutcome", "ReloadStats", "Reloader"]

#: Loads and checks the configuration again; raises :class:`SidecarError` when it is invalid.
ConfigLoader = Callable[[], "tuple[Config, list[PluginSpec]]"]

_IN_PLACE = ("app", "restart", "stop", "signals")
_FIXED = ("output", "log", "subreaper", "notify")


class ReloadStats(msgspec.Struct):
    """Counters for ``/status`` and ``/metrics``."""

    succeeded: int = 0
    failed: int = 0
    last_success: float | None = None  # Unix time
    last_error: str | None = None


class ReloadOutcome(msgspec.Struct, frozen=True):
    """What one reload did (``ok`` false: nothing changed, ``error`` says why)."""

    ok: bool
    error: str | None = None
    changed: tuple[str, ...] = ()
    app_restarted: bool = False
    plugins_reloaded: tuple[str, ...] = ()
    plugins_restarted: tuple[str, ...] = ()
    plugins_started: tuple[str, ...] = ()
    plugins_stopped: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


class Reloader:
    """Applies a new configuration to a running :class:`Runtime`, one reload at a time."""

    def __init__(self, runtime: Runtime, load: ConfigLoader | None) -> None:
        self.runtime = runtime
        self.load = load
        self.stats = ReloadStats()
        self._lock = anyio.Lock()

    async def reload(self, reason: str) -> ReloadOutcome:
        """Load, check and apply the configuration again; never raises for a bad config."""
        log = self.runtime.log
        async with self._lock:
            if self.runtime.shutting_down:
                return self._failed("the runtime is shutting down", reason)
            if self.load is None:
                return self._failed("this runtime has no configuration to reload", reason)
            try:
                config, specs = self.load()
            except SidecarError as err:
                return self._failed(str(err), reason)
            if not config.app.command:
                return self._failed("no command to run: app.command is empty", reason)
            log.info("config_reload_started", reason=reason)
            outcome = await self._apply(config, specs)
        self.stats.succeeded += 1
        self.stats.last_success = time.time()
        self.stats.last_error = None
        log.info(
            "config_reloaded",
            reason=reason,
            changed=list(outcome.changed),
            app_restarted=outcome.app_restarted,
            plugins_reloaded=list(outcome.plugins_reloaded),
            plugins_restarted=list(outcome.plugins_restarted),
            plugins_started=list(outcome.plugins_started),
            plugins_stopped=list(outcome.plugins_stopped),
        )
        return outcome

    def _failed(self, error: str, reason: str) -> ReloadOutcome:
        self.stats.failed += 1
        self.stats.last_error = error
        self.runtime.log.error("config_reload_failed", reason=reason, error=error)
        return ReloadOutcome(ok=False, error=error)

    async def _apply(self, new: Config, specs: list[PluginSpec]) -> ReloadOutcome:
        rt = self.runtime
        old = rt.config
        changed = [s for s in (*_IN_PLACE, *_FIXED) if getattr(old, s) != getattr(new, s)]
        ignored = tuple(s for s in changed if s in _FIXED)
        if ignored:
            rt.log.warning("reload_needs_restart", sections=list(ignored))
        merged = msgspec.structs.replace(
            old,
            app=new.app,
            restart=new.restart,
            stop=new.stop,
            signals=new.signals,
            plugins=new.plugins,
        )
        rt.config = merged
        rt.supervisor.config = merged
        rt.signals.rewrite = merged.signals.rewrite_map()
        plugins = await self._apply_plugins(specs)
        if old.plugins != new.plugins:
            changed.append("plugins")
        app_restarted = old.app != new.app and rt.supervisor.request_restart(
            "the configuration was reloaded with a new app section"
        )
        return ReloadOutcome(
            ok=True,
            changed=tuple(changed),
            app_restarted=app_restarted,
            ignored=ignored,
            plugins_reloaded=plugins["plugins_reloaded"],
            plugins_restarted=plugins["plugins_restarted"],
            plugins_started=plugins["plugins_started"],
            plugins_stopped=plugins["plugins_stopped"],
        )

    async def _apply_plugins(self, specs: list[PluginSpec]) -> dict[str, tuple[str, ...]]:
        rt = self.runtime
        wanted = {spec.name: spec for spec in specs}
        done: dict[str, list[str]] = {
            "plugins_reloaded": [],
            "plugins_restarted": [],
            "plugins_started": [],
            "plugins_stopped": [],
        }
        for runner in list(rt.runners):
            name = runner.spec.name
            spec = wanted.pop(name, None)
            if spec is None:
                await _stop(runner)
                rt.runners.remove(runner)
                done["plugins_stopped"].append(name)
            elif spec.config != runner.spec.config or spec.critical != runner.spec.critical:
                if spec.critical == runner.spec.critical and await _reload_in_place(runner, spec):
                    runner.spec = spec
                    done["plugins_reloaded"].append(name)
                elif await rt.replace_runner(runner, spec):
                    done["plugins_restarted"].append(name)
        for spec in wanted.values():
            if await rt.add_runner(spec):
                done["plugins_started"].append(spec.name)
        return {key: tuple(value) for key, value in done.items()}


async def _stop(runner: PluginRunner) -> None:
    runner.scope.cancel()
    with anyio.move_on_after(5.0):
        await runner.done.wait()


async def _reload_in_place(runner: PluginRunner, spec: PluginSpec) -> bool:
    """Offer the new table to the running plugin's ``reload`` hook; true if it applied it."""
    hook: Any = getattr(runner.plugin, "reload", None)
    if hook is None or runner.state != "running":
        return False
    try:
        result = hook(spec.config)
        if inspect.isawaitable(result):
            result = await result
    except Exception as err:
        log = runner.make_logger(runner.spec.name)
        log.error("plugin_reload_failed", error=str(err), exc_info=err)
        return False
    return result is True
