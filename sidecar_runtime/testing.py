"""Helpers for testing plugins in isolation (like ``trio.testing``).

``python_app(code)`` is the argv of a tiny fake app. ``plugin_harness(PluginClass, {...})`` runs
one plugin on a real core (reaper, readiness board, route table, event and output hubs), without
an HTTP listener: call its routes with :meth:`PluginHarness.request`, feed it output lines with
:meth:`PluginHarness.emit_output`, start and stop a real app with :meth:`PluginHarness.start_app`.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._config import AppConfig, Config, StopConfig, decode_struct
from ._context import AppHandle
from ._errors import SidecarError
from ._events import OutputLine
from ._http import Request, Response
from ._plugins import PluginRunner, PluginSpec
from ._readiness import Readiness
from ._runtime import Runtime
from ._state import AppState
from ._types import Duration

__all__ = ["PluginHarness", "plugin_harness", "python_app"]


def python_app(code: str) -> list[str]:
    """The argv of a fake app running ``code`` (dedented) in this Python interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


class PluginHarness:
    """One plugin running on a real core; see :func:`plugin_harness`."""

    def __init__(self, runtime: Runtime, runner: PluginRunner, tg: TaskGroup) -> None:
        self.runtime = runtime
        self.runner = runner
        self._tg = tg
        self.app = AppHandle(runtime.supervisor)

    @property
    def readiness(self) -> Readiness:
        return self.runtime.readiness

    @property
    def plugin_state(self) -> str:
        return self.runner.state

    @property
    def info(self) -> Mapping[str, Any]:
        return dict(self.runner.info)

    @property
    def metrics(self) -> Any:
        """The shared ``prometheus_client.CollectorRegistry``."""
        return self.runtime.services.registry

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        client: str = "127.0.0.1",
    ) -> Response:
        """Call a mounted route directly; 404/405 replies as the admin listener gives them."""
        route, allowed = self.runtime.routes.resolve(method, path)
        if route is None:
            return Response.text(
                "method not allowed\n" if allowed else "not found\n", 405 if allowed else 404
            )
        request = Request(
            method=method.upper(),
            path=path,
            query=dict(query or {}),
            headers={k.lower(): v for k, v in (headers or {}).items()},
            body=body,
            client=client,
        )
        return await route.handler(request)

    async def emit_output(self, data: bytes, stream: str = "stdout", pid: int = 0) -> None:
        """Publish one line of app output to output subscribers."""
        await self.runtime.output_hub.publish(OutputLine(stream, data, pid))

    async def start_app(self) -> int:
        """Spawn the harness's app; return its pid."""
        await self._tg.start(self.runtime.supervisor.run)
        pid = self.runtime.supervisor.pid
        assert pid is not None, "the app exited at once"
        return pid

    async def stop_app(self) -> None:
        """Stop the app (stop signal, then SIGKILL at the deadline) and wait for it."""
        sup = self.runtime.supervisor
        if sup.state is AppState.STOPPED:
            return
        sup.request_stop()
        await sup.finished.wait()

    async def end_output(self) -> None:
        """End the app's output as the runtime does once the app exited and its pipes were read
        to the end: subscribers get the end of stream, then the drain hooks run."""
        self.runtime.output_hub.close()
        await self.runtime._run_hooks(
            time.monotonic() + self.runtime.config.stop.timeout, drain=True
        )

    async def shutdown(self) -> None:
        """Begin shutdown as the runtime would: readiness false, shutdown hooks run."""
        self.runtime.readiness.begin_shutdown()
        self.runtime.shutdown_event.set()
        await self.runtime._run_hooks(time.monotonic() + self.runtime.config.stop.timeout)


@asynccontextmanager
async def plugin_harness(
    plugin_cls: type[Any],
    config: Mapping[str, Any] | None = None,
    *,
    name: str = "plugin-under-test",
    app: list[str] | None = None,
    critical: bool = False,
    stop_timeout: float = 5.0,
) -> AsyncIterator[PluginHarness]:
    """Run ``plugin_cls`` with ``config`` (decoded strictly, as the loader does) until exit."""
    command = app or python_app("import time\nwhile True: time.sleep(3600)")
    core = Config(
        app=AppConfig(command=command),
        stop=StopConfig(timeout=Duration(stop_timeout)),
        plugins={},
    )
    plugin_config = decode_struct(dict(config or {}), plugin_cls.Config, prefix=f".plugins.{name}")
    spec = PluginSpec(name, plugin_cls, plugin_config, critical)
    runtime = Runtime(core, [spec])
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.reaper.run)
            runtime.capture.bind(tg)
            runner = runtime.runners[0]
            await tg.start(runner.run)
            harness = PluginHarness(runtime, runner, tg)
            try:
                yield harness
            finally:
                with anyio.CancelScope(shield=True):
                    # the order of a real shutdown: app, output to its end, then the plugin
                    await harness.stop_app()
                    await runtime.capture.close(runtime.config.output.drain_timeout)
                    runtime.events.close()
                    runner.scope.cancel()
                    await runner.done.wait()
                    runtime.notifier.close()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        errors = _sidecar_errors(group)
        if len(errors) == 1:  # a plugin that failed to start: raise its error as it is
            raise errors[0] from group
        raise


def _sidecar_errors(group: BaseExceptionGroup[BaseException]) -> list[SidecarError]:
    found: list[SidecarError] = []
    for exc in group.exceptions:
        if isinstance(exc, SidecarError):
            found.append(exc)
        elif isinstance(exc, BaseExceptionGroup):
            found += _sidecar_errors(exc)
    return found
