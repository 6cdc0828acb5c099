"""The ``sidecar-run`` command: argparse front end, exit codes, and the subcommands.

``sidecar-run [options] [--config FILE] -- CMD ARGS...`` runs CMD under supervision. Subcommands
(only as the first word): ``check``, ``plugins``, ``status``, ``demo``, ``systemd-unit``,
``schema``. Exit status: the app's
own; 128+N when it died of signal N; 127/126 when CMD is not found / not executable; 2 for any
config or usage error (one line on stderr, nothing started); 70 when a critical plugin failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from ._convert import parse_duration, parse_signal
from ._flagtypes import (
    admin_value,
    checked,
    max_restarts_value,
    probe_value,
    proxy_overrides,
    proxy_value,
    rewrite_value,
    url_value,
)

__all__ = ["build_run_parser", "main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_EPILOG = """subcommands (as the first word):
  check         validate a config (same options) and print it resolved
  plugins       list installed plugins with their distribution and version
  status        show a running sidecar-run's state (from its admin listener)
  demo          run the bundled example legacy app under the default config
  systemd-unit  print a systemd service unit (Type=notify) for CMD and the config
  schema        print the JSON Schema of the config file
"""


def build_run_parser(
    prog: str = "sidecar-run", description: str | None = None
) -> argparse.ArgumentParser:
    """The options shared by a run and ``check`` (the reference docs are generated from it)."""
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [options] [--config FILE] -- CMD [ARGS...]",
        description=description or "Run CMD as a supervised child with in-process sidecars.",
        epilog=_EPILOG if description is None else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="config file (.toml, .yaml); default $SIDECAR_CONFIG")
    add(
        "--restart",
        choices=["never", "on-failure", "always"],
        help="restart policy (restart.policy)",
    )
    add(
        "--max-restarts",
        type=max_restarts_value,
        metavar="N",
        help="give up after N restarts in a row without a stable run, or 'unlimited'",
    )
    add(
        "--restart-delay",
        type=checked(parse_duration, "duration"),
        metavar="DURATION",
        help="first backoff step, e.g. 1s or 500ms (restart.delay)",
    )
    add(
        "--start-seconds",
        type=checked(parse_duration, "duration"),
        metavar="DURATION",
        help="how long the app must run to count as started (restart.start_seconds)",
    )
    add(
        "--stop-signal",
        type=checked(parse_signal, "signal"),
        metavar="SIG",
        help="signal that asks the app to stop, e.g. TERM, QUIT (stop.signal)",
    )
    add(
        "--stop-timeout",
        type=checked(parse_duration, "duration"),
        metavar="DURATION",
        help="the shutdown deadline; SIGKILL to the app's group after it (stop.timeout)",
    )
    add(
        "--pre-stop-delay",
        type=checked(parse_duration, "duration"),
        metavar="DURATION",
        help="keep serving this long after readiness turns false (stop.pre_stop_delay)",
    )
    add(
        "--forward-to",
        choices=["group", "child"],
        help="send forwarded signals to the app's process group or the app alone",
    )
    add(
        "--rewrite",
        type=rewrite_value,
        action="append",
        metavar="FROM:TO",
        help="rewrite a forwarded signal, e.g. HUP:USR1; TO 'none' drops it (repeatable)",
    )
    add(
        "--admin",
        type=admin_value,
        metavar="ADDR|off",
        help="admin listener: HOST:PORT, unix:PATH, or off (plugins.admin.listen)",
    )
    add(
        "--app-metrics",
        type=url_value,
        action="append",
        metavar="URL",
        help="merge the app's own Prometheus endpoint into /metrics (repeatable; "
        "plugins.metrics.app_metrics)",
    )
    add(
        "--probe",
        type=probe_value,
        action="append",
        metavar="KIND=TARGET",
        help="a health probe: KIND is startup, liveness or readiness; TARGET is "
        "http(s)://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND (repeatable; "
        "plugins.health.probes)",
    )
    add(
        "--proxy",
        type=proxy_value,
        action="append",
        metavar="LISTEN=UPSTREAM",
        help="a reverse proxy listener: LISTEN is HOST:PORT or unix:PATH, UPSTREAM is "
        "http://HOST:PORT, https://HOST:PORT or unix:PATH (repeatable; plugins.proxy)",
    )
    add("--tls-cert", metavar="FILE", help="PEM certificate (chain) for every --proxy listener")
    add("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    add(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA bundle: --proxy listeners require client certificates it signed (mTLS)",
    )
    add(
        "--tail",
        action="append",
        metavar="GLOB",
        help="tail files matching GLOB through rotation and ship their lines (repeatable; "
        "plugins.logs.files); alone, it ships to stdout as JSON lines",
    )
    add(
        "--log-output",
        action="append",
        metavar="SPEC",
        help="ship logs to SPEC: stdout, stderr, file:PATH, http(s)://..., loki+http(s)://..., "
        "elasticsearch+http(s)://..., fluentd+http://HOST:PORT/TAG or fluentd+tcp://HOST:PORT/TAG "
        "(repeatable; plugins.logs.log_output)",
    )
    add("--user", metavar="USER", help="run the app as this user (name or uid)")
    add("--group", metavar="GROUP", help="run the app with this group (name or gid)")
    add("--workdir", metavar="DIR", help="run the app in this directory (app.working_dir)")
    add(
        "--output",
        choices=["auto", "pipe", "pty", "inherit"],
        help="how the app's stdout/stderr are carried (output.mode)",
    )
    add(
        "--no-plugins",
        action="store_true",
        default=None,
        help="run no plugin at all, whatever the config says: a plain supervisor, like tini",
    )
    add(
        "--no-subreaper",
        action="store_true",
        default=None,
        help="do not register as child subreaper (orphans then go to PID 1)",
    )
    add(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        help="level of the runtime's own logs (default warning)",
    )
    add(
        "--log-format",
        choices=["json", "console", "auto"],
        help="json, console, or auto: console on a terminal, else json",
    )
    add("--log-file", metavar="FILE", help="write the runtime's logs here instead of stderr")
    add("--version", action="version", version=f"sidecar-run {__version__}")
    return parser


_FLAG_KEYS = {
    "restart": "restart.policy",
    "max_restarts": "restart.max_restarts",
    "restart_delay": "restart.delay",
    "start_seconds": "restart.start_seconds",
    "stop_signal": "stop.signal",
    "stop_timeout": "stop.timeout",
    "pre_stop_delay": "stop.pre_stop_delay",
    "forward_to": "signals.forward_to",
    "user": "app.user",
    "group": "app.group",
    "workdir": "app.working_dir",
    "output": "output.mode",
    "log_level": "log.level",
    "log_format": "log.format",
    "log_file": "log.file",
}


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def parse_run_args(
    argv: Sequence[str], prog: str = "sidecar-run", description: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """Parse a run's flags; return the config path and the overrides they make."""
    options, command = _split_command(argv)
    parser = build_run_parser(prog, description)
    if command is None:
        parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(options)
    if command is None:
        command = args.command or None
    overrides: dict[str, Any] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    if args.no_subreaper:
        overrides["subreaper"] = False
    if args.rewrite:
        overrides["signals.rewrite"] = dict(args.rewrite)
    if args.app_metrics:
        overrides["plugins.metrics.app_metrics"] = [{"url": url} for url in args.app_metrics]
    if args.probe:
        overrides["plugins.health.probes"] = list(args.probe)
    overrides.update(proxy_overrides(args, parser))
    if args.tail:
        overrides["plugins.logs.files"] = [{"paths": list(args.tail)}]
        if not args.log_output:
            overrides["plugins.logs.log_output"] = ["stdout"]
            overrides["plugins.logs.streams"] = []
    if args.log_output:
        overrides["plugins.logs.log_output"] = list(args.log_output)
    if args.admin == "off":
        overrides["plugins.admin.enabled"] = False
    elif args.admin is not None:
        overrides["plugins.admin.listen"] = args.admin
    if args.no_plugins:
        overrides = {k: v for k, v in overrides.items() if not k.startswith("plugins.")}
        overrides["plugins"] = {}
    if command is not None:
        if not command:
            parser.error("no command after '--'")
        overrides["app.command"] = command
    return args.config, overrides


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``sidecar-run`` console script and ``python -m sidecar_runtime``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _SUBCOMMANDS:
            from . import _commands

            code = getattr(_commands, _SUBCOMMANDS[args[0]])(args[1:])
        else:
            from ._run import exit_now, run

            exit_now(run(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


_SUBCOMMANDS = {
    "check": "check",
    "plugins": "plugins",
    "status": "status",
    "demo": "demo",
    "systemd-unit": "systemd_unit",
    "schema": "schema",
}
