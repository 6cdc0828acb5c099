"""The main job, ``sidecar-run [options] -- CMD``: config → logging → plugins → the runtime.

Every failure that ends the command before or during the run is mapped to an exit status here,
in one place: 2 for config and usage errors (nothing started), 126/127 when the command cannot
be executed, the app's own status otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ._cli import parse_run_args
from ._errors import ConfigError, SidecarError

if TYPE_CHECKING:
    from ._config import Config
    from ._plugins import PluginSpec

__all__ = ["check_environment", "exit_now", "fail", "run"]


def check_environment(config: Any, origins: dict[str, str]) -> None:
    """What the config names must exist on this machine: the user, group and directory."""
    from ._supervisor import resolve_user

    try:
        resolve_user(config.app.user, config.app.group)
    except ValueError as err:
        key = "app.group" if "group" in str(err) else "app.user"
        msg = f"{origins.get(key, 'config')}: {key}: {err}"
        raise ConfigError(msg) from None
    workdir = config.app.working_dir
    if workdir is not None and not os.path.isdir(workdir):
        source = origins.get("app.working_dir", "config")
        msg = f"{source}: app.working_dir: no such directory (got {workdir!r})"
        raise ConfigError(msg)


def _reserve_std_fds() -> bool:
    """Open /dev/null on closed fds 0-2 so nothing of ours lands there. True if stdin was closed."""
    closed_stdin = False
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR if fd else os.O_RDONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)
            closed_stdin = closed_stdin or fd == 0
    return closed_stdin


def fail(err: SidecarError) -> int:
    sys.stderr.write(f"sidecar-run: {err}\n")
    sys.stderr.flush()
    return err.exit_code


def _first_sidecar_error(exc: BaseException) -> SidecarError | None:
    if isinstance(exc, SidecarError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_sidecar_error(inner)
            if found is not None:
                return found
    return None


def run(argv: Sequence[str]) -> int:
    """``sidecar-run [options] -- CMD``: the main job."""
    from ._signals import capture_early_signals

    capture_early_signals()
    stdin_closed = _reserve_std_fds()
    from ._config import load_config

    path, overrides = parse_run_args(argv)
    origins: dict[str, str] = {}
    try:
        config = load_config(path, overrides=overrides, origins=origins)
        if not config.app.command:
            msg = "no command to run: give one after '--' or set app.command in the config"
            raise ConfigError(msg)
        from ._logging import configure_logging

        configure_logging(config.log.level, config.log.format, config.log.file)
        from ._plugins import load_plugins

        plugins = load_plugins(config, origins=origins)
        from ._runtime import Runtime

        check_environment(config, origins)
    except SidecarError as err:
        return fail(err)
    import anyio

    holder: list[Runtime] = []

    def reload_config() -> tuple[Config, list[PluginSpec]]:
        """The configuration again, from the same file, environment and flags."""
        fresh_origins: dict[str, str] = {}
        fresh = load_config(path, overrides=overrides, origins=fresh_origins)
        return fresh, load_plugins(fresh, origins=fresh_origins)

    hup = config.signals.hup
    reload_signals = (
        frozenset({int(signal.SIGHUP)})
        if hup == "reload" or (hup == "auto" and path is not None)
        else frozenset()
    )

    async def main() -> int:
        runtime = Runtime(
            config,
            plugins,
            stdin_closed=stdin_closed,
            reload_config=reload_config,
            reload_signals=reload_signals,
        )
        holder.append(runtime)
        return await runtime.run()

    import gc

    gc.collect()
    gc.freeze()  # start-up's objects are permanent: no collector passes over them, at exit either
    try:
        status = anyio.run(main, backend="asyncio")
    except BaseException as exc:
        found = _first_sidecar_error(exc)
        if found is not None:
            return fail(found)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    spawn_error = holder[0].supervisor.spawn_error
    if spawn_error is not None:
        return fail(spawn_error)
    return status


def exit_now(code: int) -> NoReturn:
    """End a run without interpreter teardown (a full GC pass and module clean-up: ~50 ms).

    Everything that matters is already done: the app is reaped, its output written with
    ``os.write``, the plugins stopped. Only Python-level buffers remain, flushed here.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    from ._logging import flush_logs

    flush_logs()
    os._exit(code)
