"""systemd units for sidecar-run: options, ``ExecStart=`` and its quoting, the unit file itself.

``sidecar-run systemd-unit`` renders a ``Type=notify`` service whose timeouts, watchdog and
restart settings follow from the config (``_timing``), so that systemd and sidecar-run never act
against each other; ``sidecar-run check --unit`` (``_envcheck``) reads an existing unit and
warns where they would. The reasons behind each setting are in ``docs/how-to/systemd.md``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from . import __version__
from ._config import Config
from ._convert import format_duration, signal_name
from ._errors import ConfigError
from ._plugins import PluginSpec
from ._timing import (
    STOP_MARGIN,
    format_timespan,
    recovery_seconds,
    timeout_start_sec,
    timeout_stop_sec,
    watchdog_sec,
)

__all__ = [
    "UnitOptions",
    "escape_specifiers",
    "exec_start_argv",
    "quote_argument",
    "quote_executable",
    "render_unit",
    "sidecar_run_argv",
    "unit_options",
    "without_config",
]

_HARDENING = (
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectSystem", "full"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
)
_HOMES = ("/home", "/root", "/run/user")


class UnitOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the unit adds around ``ExecStart=`` (``sidecar-run systemd-unit`` flags)."""

    name: str
    description: str | None = None
    user: str | None = None
    group: str | None = None
    working_directory: str | None = None
    environment_files: tuple[str, ...] = ()
    reload_signal: str | None = None
    config_path: str | None = None


# -- quoting ---------------------------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]|[\x00-\x1f\x7f]""")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_specifiers(text: str) -> str:
    """``%`` → ``%%``: systemd expands ``%n``, ``%h``... in most settings."""
    return text.replace("%", "%%")


def quote_argument(arg: str) -> str:
    """One argument of a command line in a unit, read back by systemd as exactly ``arg``.

    ``%`` and ``$`` are doubled (specifiers and environment substitution); a word with
    whitespace, quotes, backslashes, ``;`` or control characters goes in double quotes with
    C-style escapes.
    """
    text = escape_specifiers(arg).replace("$", "$$")
    if text and not _NEEDS_QUOTES.search(text):
        return text
    escaped = "".join(
        _C_ESCAPES.get(c, f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c) for c in text
    )
    return f'"{escaped}"'


def quote_executable(path: str) -> str:
    """The program of ``ExecStart=``: an absolute path, taken literally (no ``$`` expansion)."""
    bad = sorted({c for c in path if c in "\"'\\" or ord(c) < 32 or ord(c) == 127})
    if not path.startswith("/") or bad:
        why = "is not absolute" if not path.startswith("/") else f"contains {''.join(bad)!r}"
        msg = f"{path!r} cannot be the program of ExecStart=: the path {why}"
        raise ConfigError(msg)
    text = escape_specifiers(path)
    return f'"{text}"' if re.search(r"[\s;]", text) else text


def _account(value: str, what: str) -> str:
    """A user or group name as systemd accepts it (or a numeric id)."""
    if not re.fullmatch(r"[0-9]+|[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?", value):
        msg = f"{what}: {value!r} is not a valid user or group name"
        raise ConfigError(msg)
    return value


def _plain_value(value: str, what: str) -> str:
    """A one-line setting value (a path, a name) with specifiers escaped."""
    if not value or re.search(r"[\x00-\x1f\x7f]", value) or value != value.strip():
        msg = f"{what}: {value!r} is not a valid value for a unit file"
        raise ConfigError(msg)
    return escape_specifiers(value)


# -- ExecStart -------------------------------------------------------------------------------------


def sidecar_run_argv() -> list[str]:
    """How systemd should start this sidecar-run: an absolute path to the console script."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "sidecar-run":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.access(found, os.X_OK):
            return [os.path.abspath(found)]
    beside = Path(sys.executable).parent / "sidecar-run"  # the same virtual environment
    if beside.is_file() and os.access(beside, os.X_OK):
        return [os.path.abspath(beside)]
    found = shutil.which("sidecar-run")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "sidecar_runtime"]


def _resolve_program(program: str, working_directory: str | None) -> str:
    if os.sep in program:
        if os.path.isabs(program) or working_directory is not None:
            return program
        return os.path.abspath(program)
    return shutil.which(program) or program


def exec_start_argv(
    program: Sequence[str],
    run_options: Sequence[str],
    command: Sequence[str] | None,
    options: UnitOptions,
) -> list[str]:
    """``ExecStart=``'s argv: sidecar-run, ``--config`` (absolute), the run options, ``-- CMD``."""
    argv = list(program)
    if options.config_path is not None:
        argv += ["--config", os.path.abspath(options.config_path)]
    argv += run_options
    if command:
        argv += ["--", _resolve_program(command[0], options.working_directory), *command[1:]]
    return argv


def _absolute(path: str) -> str:
    """An absolute path; a leading ``-`` (systemd: ignore if missing) is kept."""
    optional = path.startswith("-")
    return ("-" if optional else "") + os.path.abspath(path.removeprefix("-"))


def unit_options(config: Config, args: Any, *, config_path: str | None) -> UnitOptions:
    """The ``systemd-unit`` flags in ``args`` with their defaults filled in from ``config``.

    The name defaults to the command's file name; ``ExecReload=`` sends SIGHUP when sidecar-run
    reloads its config on it (``signals.hup``: ``reload``, or ``auto`` with a config file).
    """
    name = args.name or re.sub(r"[^A-Za-z0-9:_.-]", "-", os.path.basename(config.app.command[0]))
    hup = config.signals.hup
    reload = args.reload_signal or (
        "SIGHUP" if hup == "reload" or (hup == "auto" and config_path) else None
    )
    return UnitOptions(
        name=name,
        description=args.description,
        user=args.uid,
        group=args.gid,
        working_directory=os.path.abspath(args.working_directory)
        if args.working_directory
        else None,
        environment_files=tuple(_absolute(f) for f in args.environment_file),
        reload_signal=None if reload == "none" else reload,
        config_path=config_path,
    )


def without_config(options: Sequence[str]) -> list[str]:
    """Run options without ``--config FILE``: the unit names the file by its absolute path."""
    out, skip = [], False
    for word in options:
        if skip:
            skip = False
        elif word == "--config":
            skip = True
        elif not word.startswith("--config="):
            out.append(word)
    return out


# -- rendering -------------------------------------------------------------------------------------


def _unix_paths(value: Any) -> list[str]:
    """Every ``unix:/path`` address in a config table, however deep."""
    if isinstance(value, str):
        return [value.removeprefix("unix:")] if value.startswith("unix:/") else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _unix_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _unix_paths(v)]
    return []


def _runtime_directories(config: Config) -> list[str]:
    """``RuntimeDirectory=`` for every unix socket of an enabled plugin under ``/run/<dir>/``."""
    found: list[str] = []
    for table in config.plugins.values():
        if table.get("enabled", True) is False:
            continue
        for path in _unix_paths(table):
            parts = Path(path).parts
            if len(parts) > 3 and parts[:2] == ("/", "run") and parts[2] not in found:
                found.append(parts[2])
    return found


def _under_home(path: str | None) -> bool:
    return path is not None and any(path == home or path.startswith(home + "/") for home in _HOMES)


def _unit_section(config: Config, options: UnitOptions) -> list[str]:
    name = options.name
    restart = config.restart
    lines = [
        "[Unit]",
        "Description=" + _plain_value(options.description or f"{name} under sidecar-run", "name"),
        "After=network-online.target",
        "Wants=network-online.target",
    ]
    if restart.policy != "never":
        return lines
    if restart.max_restarts == "unlimited":
        return [*lines, "# restart.max_restarts is unlimited.", "StartLimitIntervalSec=0"]
    starts = restart.max_restarts + 1
    window = math.ceil(starts * (restart.stable_seconds + restart.delay))
    return [
        *lines,
        "# systemd restarts the app (restart.policy is never): restart.max_restarts restarts",
        "# in a row, each after a run shorter than restart.stable_seconds.",
        f"StartLimitIntervalSec={window}",
        f"StartLimitBurst={starts}",
    ]


def _process_lines(config: Config, argv: Sequence[str], options: UnitOptions) -> list[str]:
    command = " ".join([quote_executable(argv[0]), *map(quote_argument, argv[1:])])
    lines = ["Type=notify", "NotifyAccess=main", f"ExecStart={command}"]
    if options.reload_signal is not None:
        hup = config.signals.hup
        reloads = options.reload_signal == "SIGHUP" and (
            hup == "reload" or (hup == "auto" and options.config_path is not None)
        )
        what = "loads its config again" if reloads else "forwards it to the app"
        lines += [
            f"# systemctl reload: {options.reload_signal} to sidecar-run, which {what}.",
            f"ExecReload=/bin/kill -s {options.reload_signal} $MAINPID",
        ]
    if options.user is None:
        lines.append("# Runs as root: give --uid USER to run sidecar-run and the app unprivileged.")
    else:
        lines.append("User=" + _account(options.user, "--uid"))
    if options.group is not None:
        lines.append("Group=" + _account(options.group, "--gid"))
    if options.working_directory is not None:
        directory = _plain_value(options.working_directory, "--working-directory")
        lines.append(f"WorkingDirectory={directory}")
    for env_file in options.environment_files:
        lines.append("EnvironmentFile=" + _plain_value(env_file, "--environment-file"))
    lines.append(f"SyslogIdentifier={options.name}")
    return lines + [f"RuntimeDirectory={d}" for d in _runtime_directories(config)]


def _lifecycle_lines(config: Config, specs: Sequence[PluginSpec]) -> list[str]:
    stop, restart = config.stop, config.restart
    successes = sorted({c for c in restart.exit_codes if c != 0} | {128 + int(stop.signal)})
    lines = [
        "# SIGTERM to sidecar-run alone: it stops the app with stop.signal and its deadline;",
        "# systemd's final SIGKILL still reaches every process of the unit.",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"# stop.timeout {format_duration(stop.timeout)} + output.drain_timeout "
        f"{format_duration(config.output.drain_timeout)} + plugins' drain and stop "
        f"+ {format_duration(STOP_MARGIN)} margin.",
        f"TimeoutStopSec={timeout_stop_sec(config)}",
        "# READY=1 waits for restart.start_seconds and the startup and readiness probes.",
        f"TimeoutStartSec={timeout_start_sec(config, specs)}",
        f"# The app's death by stop.signal ({signal_name(stop.signal)}) and restart.exit_codes "
        "are successes.",
        "SuccessExitStatus=" + " ".join(map(str, successes)),
    ]
    watchdog = watchdog_sec(config, specs)
    if watchdog is not None:
        lines += [
            "# The health plugin pings at half of this while the app is live; half covers one",
            f"# restart in place ({format_duration(recovery_seconds(config))}: stop.timeout, "
            "backoff, start_seconds).",
            f"WatchdogSec={format_timespan(watchdog)}",
        ]
    if restart.policy == "never":
        lines += [
            "# restart.policy is never: systemd restarts the failed app.",
            "Restart=on-failure",
        ]
    else:
        lines += [
            f"# restart.policy is {restart.policy}: sidecar-run restarts the app itself; systemd",
            "# restarts only a sidecar-run that crashed, was killed or missed the watchdog.",
            "Restart=on-abnormal",
        ]
    return [*lines, f"RestartSec={format_timespan(max(round(restart.delay, 3), 0.1))}"]


def _hardening_lines(config: Config, options: UnitOptions) -> list[str]:
    lines = ["# Hardening that leaves sidecar-run free to signal and reap the app."]
    lines += [f"{key}={value}" for key, value in _HARDENING]
    if _under_home(options.working_directory) or _under_home(config.app.working_dir):
        return [*lines, "# ProtectHome= is left out: the app works under a home directory."]
    return [*lines, "ProtectHome=read-only"]


def render_unit(
    config: Config, specs: Sequence[PluginSpec], argv: Sequence[str], options: UnitOptions
) -> str:
    """The unit file for ``argv`` (from :func:`exec_start_argv`) run under ``config``."""
    name = options.name
    header = [
        f"# {name}.service, generated by `sidecar-run systemd-unit` (sidecar-run {__version__}).",
        f"#   sudo cp {name}.service /etc/systemd/system/",
        f"#   sudo systemctl daemon-reload && sudo systemctl enable --now {name}",
        "# Each setting is explained in sidecar-run's docs/how-to/systemd.md.",
    ]
    sections = [
        header,
        _unit_section(config, options),
        ["[Service]", *_process_lines(config, argv, options)],
        _lifecycle_lines(config, specs),
        _hardening_lines(config, options),
        ["[Install]", "WantedBy=multi-user.target"],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"
